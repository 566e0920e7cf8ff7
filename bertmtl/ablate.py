"""The paper's ablation table (Table 1) with our stack: `bertmtl ablate`.

Every row is one call of `train()` with a shared budget and seed, scored on dev with all three
heads. Rows: the SST-only baseline, simple multi-task (summed losses), further MLM pretraining
+ SMART + PCGrad, the final recipe (SMART + PCGrad, AdamW), and the final recipe with AdamaxW.
The paper's numbers are printed beside ours where we have them, never invented.
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .configs import AblateConfig
from .taskfiles import task_files
from .tasks import BASELINE_TASKS, BUILTIN, TASKS, metric_labels
from .errors import UserError


@dataclass(frozen=True)
class Row:
    """One line of the table: a name, its title, and how its training differs from the defaults."""

    name: str
    title: str
    short: str  # for the terminal table
    train: dict
    pretrained_mlm: bool = False


ROWS: dict[str, Row] = {r.name: r for r in (
    Row("baseline", "Baseline: SST only (sum, no SMART)", "baseline (SST only)", {"tasks": list(BASELINE_TASKS), "combine": "sum", "smart": False}),
    Row("multitask", "Simple multi-task (sum, no SMART)", "multi-task (sum)", {"combine": "sum", "smart": False}),
    Row("pretrain", "+ further MLM pretraining, SMART, PCGrad", "+ MLM pretraining", {"combine": "pcgrad", "smart": True}, pretrained_mlm=True),
    Row("final", "Final: SMART + PCGrad (AdamW)", "final (AdamW)", {"combine": "pcgrad", "smart": True, "optimizer": "adamw"}),
    Row("adamaxw", "Final with AdamaxW", "final (AdamaxW)", {"combine": "pcgrad", "smart": True, "optimizer": "adamaxw"}),
)}

METRICS = (*metric_labels(BUILTIN, primary_only=True), ("overall", "Overall"))

# The CS224N report (bert-base) gives figures for its final model only; other cells are "—".
PAPER = {"final": {"sst_acc": 0.514, "para_acc": 0.789, "sts_corr": 0.727, "overall": 0.677}}
PAPER_NOTE = ("Paper: the CS224N report's Table 1 (bert-base). Only its final row (SMART + PCGrad, no further "
              "pretraining) is available to us; \"—\" marks paper cells we do not have (not invented).")
BASELINE_NOTE = ("The baseline trains on SST only; its paraphrase and similarity heads are untrained, so they score "
                 "the cosine similarity of the encoder's sentence embeddings through the heads' initial scale and offset.")


def budget(cfg: AblateConfig) -> dict:
    """What limited the runs, in words and numbers (printed with the table)."""
    if cfg.epochs is not None:
        b = {"mode": "epochs", "epochs_per_row": cfg.epochs}
        text = f"{cfg.epochs:g} epoch(s) per row"
    else:
        b = {"mode": "steps", "steps_per_row": cfg.budget_steps}
        text = f"{cfg.budget_steps} steps per row (one step = one batch of each trained task)"
    b.update(batch_size=cfg.batch_size, max_length=cfg.max_length, dev_limit=cfg.dev_limit,
             pretrain_steps=cfg.pretrain_steps if cfg.pretrained_mlm is None else None, seed=cfg.seed, lr=cfg.lr)
    text += f", batch {cfg.batch_size}, max length {cfg.max_length}, seed {cfg.seed}, lr {cfg.lr:g}"
    text += f", dev: {'all examples' if not cfg.dev_limit else f'a fixed subset of {cfg.dev_limit} per task'}"
    if "pretrain" in cfg.rows:
        text += (f", further pretraining: {cfg.pretrain_steps} MLM steps" if cfg.pretrained_mlm is None
                 else f", further pretraining: taken from {cfg.pretrained_mlm}")
    b["text"] = text
    return b


def machine() -> dict:
    """Where the numbers were measured."""
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}"


def markdown(result: dict) -> str:
    """The table as Markdown, with its budget, command, machine and notes."""
    cols = [label for _, label in METRICS]
    lines = ["# Ablation (the paper's Table 1 with bertmtl)", "",
             "| Row | " + " | ".join(cols) + " | " + " | ".join(f"Paper {c}" for c in cols) + " | Wall time |",
             "|---" * (2 * len(cols) + 2) + "|"]
    for r in result["rows"]:
        ours = [_fmt((r["metrics"] or {}).get(k)) for k, _ in METRICS]
        paper = [_fmt((r["paper"] or {}).get(k)) for k, _ in METRICS]
        lines.append(f"| {r['title']} | " + " | ".join(ours) + " | " + " | ".join(paper) + f" | {r['wall_s']:.0f} s |")
    lines += ["", f"**Budget:** {result['budget']['text']}.", "",
              f"**Command:** `{result['command']}`", "",
              "**Machine:** " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()) + f"; device {result['device']}.", "",
              f"**Total wall time:** {result['wall_s']:.0f} s.", ""]
    if result.get("pretrain"):
        p = result["pretrain"]
        lines += [f"**Further pretraining:** {p['source']}: held-out MLM perplexity "
                  f"{_fmt(p.get('before_perplexity'))} before, {_fmt(p.get('after_perplexity'))} after "
                  f"({p.get('steps', '?')} steps, {p.get('wall_s', 0):.0f} s).", ""]
    lines += [f"Notes: {PAPER_NOTE} {BASELINE_NOTE} Overall = mean of SST accuracy, Quora accuracy and STS "
              f"Pearson r, on dev.", ""]
    return "\n".join(lines)


def print_table(result: dict, console=None) -> None:
    """The table in the terminal (Rich), ours beside the paper's."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="Ablation: ours (paper)", show_header=True, header_style="bold")
    table.add_column("Row")
    for _, label in METRICS:
        table.add_column(label, justify="right")
    table.add_column("time", justify="right")
    for r in result["rows"]:
        cells = [f"{_fmt((r['metrics'] or {}).get(k))} ({_fmt((r['paper'] or {}).get(k))})" for k, _ in METRICS]
        table.add_row(ROWS[r["name"]].short if r.get("name") in ROWS else r["title"], *cells, f"{r['wall_s']:.0f} s")
    console.print(table)
    console.print(f"budget: {result['budget']['text']}", markup=False, highlight=False)
    console.print(PAPER_NOTE, markup=False, highlight=False)


def ablate(cfg: AblateConfig, reporter_factory=None) -> dict:
    """Train every chosen row, write OUT/ablation.md and OUT/ablation.json; returns the result."""
    from .locks import OwnerLock
    from .ownership import check_output

    t0 = time.perf_counter()
    cfg.validate()  # every number finite and in range before the first row trains (options.py)
    rows = [r for r in ROWS if r in cfg.rows]
    if cfg.epochs is None and cfg.budget_steps is None:
        raise UserError("give a budget: --budget-steps N (>= 1) or --epochs E")
    inputs = task_files(cfg.data_dir, TASKS)
    out = Path(cfg.out)
    check_output(out, {**inputs, "--encoder": cfg.encoder, "--pretrained-mlm": cfg.pretrained_mlm})
    out.mkdir(parents=True, exist_ok=True)
    lock = OwnerLock(out / ".ablate.lock", f"--out {out}")  # before --overwrite deletes anything there
    try:
        return _ablate(cfg, rows, out, reporter_factory, t0)
    finally:
        lock.release()


def _ablate(cfg: AblateConfig, rows: list[str], out: Path, reporter_factory, t0: float) -> dict:
    from .fsutil import write_bytes, write_json
    from .pretrain import pretrain_config, report
    from .device import pick_device
    from .engine import train
    from .train_config import TrainConfig

    runs = out / "runs"
    pretrains_here = "pretrain" in rows and cfg.pretrained_mlm is None  # into out/pretrained-mlm, a run
    for d in [runs / name for name in rows] + ([out / "pretrained-mlm"] if pretrains_here else []):
        if d.exists():
            if not cfg.overwrite:
                raise UserError(f"{d} exists from an earlier ablation; pass --overwrite or another --out")
            shutil.rmtree(d)
    device = pick_device(cfg.device)
    new_reporter = reporter_factory or (lambda: None)

    result: dict = {"budget": budget(cfg), "command": cfg.command or "(called from Python)", "machine": machine(),
                    "device": str(device), "config": asdict(cfg), "rows": [], "pretrain": None,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S")}

    mlm_dir = cfg.pretrained_mlm
    if "pretrain" in rows:
        wall = 0.0
        if pretrains_here:  # further pretraining first, as `bertmtl pretrain` runs it
            tp = time.perf_counter()
            mlm_dir = str(out / "pretrained-mlm")
            train(pretrain_config(data_dir=cfg.data_dir, out=mlm_dir, encoder=cfg.encoder, max_steps=cfg.pretrain_steps,
                                  batch_size=max(cfg.batch_size, 16), max_length=cfg.max_length, seed=cfg.seed,
                                  device=cfg.device, mlm_heldout_max=min(500, cfg.dev_limit or 500),
                                  log_every=max(1, cfg.pretrain_steps // 20)), reporter=new_reporter())
            wall = time.perf_counter() - tp
        r = report(Path(mlm_dir))
        result["pretrain"] = {"source": mlm_dir, "steps": r["steps"], "wall_s": wall,
                              "before_perplexity": (r.get("before") or {}).get("perplexity"),
                              "after_perplexity": (r.get("after") or {}).get("perplexity"),
                              "head": "initialised" if "initial" in r else "checkpoint"}

    for name in rows:
        row = ROWS[name]
        overrides = dict(row.train)
        tc = TrainConfig(data_dir=cfg.data_dir, out=str(runs / name),
                         encoder=mlm_dir if row.pretrained_mlm else cfg.encoder, dev_limit=cfg.dev_limit,
                         batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size, max_length=cfg.max_length,
                         lr=cfg.lr, seed=cfg.seed, device=cfg.device, precision=cfg.precision)
        if cfg.epochs is not None:
            tc.epochs = cfg.epochs
        else:  # the whole schedule (warm-up, decay) fits the budget; one dev evaluation at its end
            tc.epochs, tc.steps_per_epoch = 1.0, cfg.budget_steps
            tc.log_every = max(1, cfg.budget_steps // 10)
        for k, v in overrides.items():
            setattr(tc, k, list(v) if isinstance(v, list) else v)
        tr = time.perf_counter()
        summary = train(tc, reporter=new_reporter())
        wall = time.perf_counter() - tr
        metrics = summary.get("last_metrics") or {}
        result["rows"].append({"name": name, "title": row.title, "metrics": {k: metrics.get(k) for k, _ in METRICS},
                               "dev_n": {s.count_key: metrics.get(s.count_key) for s in BUILTIN},
                               "paper": PAPER.get(name), "wall_s": wall, "steps": summary.get("step"),
                               "status": summary.get("status"), "train": {k: getattr(tc, k) for k in (
                                   "tasks", "combine", "smart", "optimizer", "encoder", "epochs", "steps_per_epoch",
                                   "precision")}})
        if not cfg.keep_checkpoints:  # the metrics and logs stay; the weights are large
            for sub in ("best", "last"):
                shutil.rmtree(runs / name / sub, ignore_errors=True)
    result["wall_s"] = time.perf_counter() - t0
    write_json(out / "ablation.json", result)
    write_bytes(out / "ablation.md", markdown(result).encode())
    return result
