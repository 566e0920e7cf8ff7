"""Further masked-LM pretraining (`bertmtl pretrain`): a training run whose one task is masked LM.

It runs through the training loop like any other run (training/loop.py: checkpoints, --resume, a clean
Ctrl-C stop, the non-finite policy, torchrun, --report-to), with masked LM as its task
(tasks/kinds.py: MaskedLM) on the train files' text (data/mlm_text.py) and the options and defaults
of train_config.PRETRAIN_OPTIONS. Its dev scores are on held-out text with fixed masks: a
fresh head as it is (step 0), after its head-only steps ("before"), and at the end ("after").
`bertmtl train --encoder RUN` starts from the result; `bertmtl export RUN --format hf` writes it
for transformers (a BertForMaskedLM / MPNetForMaskedLM directory).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from ..errors import UserError
from ..runs.rundir import holds_run, is_checkpoint, is_run, read_json
from ..runs.state import RunState
from ..tasks import MLM
from ..configuration.train_config import PRETRAIN_DEFAULTS, TrainConfig


def pretrain_config(**options) -> TrainConfig:
    """The TrainConfig of a pretraining run: `bertmtl pretrain`'s defaults, then `options` (a
    TypeError names one that is not an option, as TrainConfig(...) does)."""
    return dataclasses.replace(TrainConfig(**copy.deepcopy(PRETRAIN_DEFAULTS)), **options)


LEGACY_REPORT = "pretrain.json"  # what `bertmtl pretrain` wrote beside its HF directory before 0.2


def remove_earlier(out: Path) -> None:
    """`bertmtl pretrain --overwrite`: remove the earlier output at `out`, a run (refused while a
    process writes it) or a pre-0.2 output (its pretrain.json). Anything else is refused, so a
    mistyped --out deletes nothing."""
    from ..runs.catalog import plan_delete, remove

    if not (holds_run(out) or (out / LEGACY_REPORT).is_file()):
        if any(out.iterdir()):
            raise UserError(f"--out {out}: holds files that are not a pretraining run; --overwrite replaces only "
                            f"runs (and pre-0.2 pretrain outputs), so choose another --out")
        return
    remove(plan_delete(out))


def report(path: Path) -> dict:
    """The held-out masked-LM scores of a pretraining run: "before" (its first evaluation after any
    head-only steps), "after" (its last), and "initial" (a fresh head before any step), each
    {"loss", "perplexity", "accuracy", "tokens"}; "steps" and "head_steps".

    `path` may be the run, one of its checkpoints, a pre-0.2 output (its pretrain.json) or any
    other directory with an MLM head, which has no scores: {"steps": None, "head_steps": 0}.
    """
    path = Path(path)
    run_dir = path if is_run(path) else path.parent if is_checkpoint(path) and is_run(path.parent) else None
    if run_dir is None:
        legacy = path / LEGACY_REPORT
        if legacy.is_file():
            d = read_json(legacy)
            return {k: d[k] for k in ("steps", "head_steps", "initial", "before", "after") if k in d}
        return {"steps": None, "head_steps": 0}
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
