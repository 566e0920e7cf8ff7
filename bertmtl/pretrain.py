"""Further masked-LM pretraining (`bertmtl pretrain`): a training run whose one task is masked LM.

It runs through the training loop like any other run (engine.py: checkpoints, --resume, a clean
Ctrl-C stop, the non-finite policy, torchrun, --report-to), with masked LM as its task
(tasks/kinds.py: MaskedLM) on the train files' text (mlm_text.py) and the options and defaults
of train_config.PRETRAIN_OPTIONS. Its dev scores are on held-out text with fixed masks: a
fresh head as it is (step 0), after its head-only steps ("before"), and at the end ("after").
`bertmtl train --encoder RUN` starts from the result; `bertmtl export RUN --format hf` writes it
for transformers (a BertForMaskedLM / MPNetForMaskedLM directory).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from .rundir import RunState
from .tasks import MLM
from .train_config import PRETRAIN_DEFAULTS, TrainConfig


def pretrain_config(**options) -> TrainConfig:
    """The TrainConfig of a pretraining run: `bertmtl pretrain`'s defaults, then `options` (a
    TypeError names one that is not an option, as TrainConfig(...) does)."""
    return dataclasses.replace(TrainConfig(**copy.deepcopy(PRETRAIN_DEFAULTS)), **options)


def report(run_dir: Path) -> dict:
    """The held-out masked-LM scores of a pretraining run: "before" (its first evaluation after any
    head-only steps), "after" (its last), and "initial" (a fresh head before any step), each
    {"loss", "perplexity", "accuracy", "tokens"}."""
    state = RunState.of(run_dir)
    head_steps = state.config.get("head_steps") or 0

    def scores(rec: dict) -> dict:
        return {m: rec.get(MLM.metric_key(m)) for m in ("loss", "perplexity", "accuracy")} | \
            {"tokens": rec.get(MLM.count_key), "step": rec["step"]}

    evals = [e for e in state.eval_records if MLM.metric_key("loss") in e]
    out: dict = {"steps": state.step, "head_steps": head_steps}
    if not evals:
        return out
    if head_steps and evals[0]["step"] == 0:
        out["initial"] = scores(evals[0])
    before = next((e for e in evals if e["step"] == head_steps), evals[0])
    out["before"], out["after"] = scores(before), scores(evals[-1])
    return out
