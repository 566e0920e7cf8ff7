"""The paper's ablation table (Table 1) and the combiner comparison with our stack: `bertmtl ablate`.

Every row is `train()` with a shared budget, once per seed (`--seeds N`: the same seeds, so the
same data order, for every row), scored on dev with all three heads. A table is a sweep with fixed
rows (sweep/spec.py), and its report is the sweep's (sweep/report.py): the spec's report section
adds the titles, telemetry columns, the paper's cells and the notes. Three tables (`--table`):

- paper: the SST-only baseline, simple multi-task (summed losses), further MLM pretraining +
  SMART + PCGrad, the final recipe (SMART + PCGrad, AdamW), and the final recipe with AdamaxW.
  The paper's numbers are printed beside ours where we have them, never invented.
- combiners: every `--combine` method with everything else equal (SMART off, so that only the
  combiner differs), with the task-conflict telemetry of each row (how often the tasks'
  gradients conflicted, how far the combiner moved the update from the plain sum) and a picture
  of one run's telemetry (conflicts.svg).
- weightings: every `--loss-weighting` on the plain sum, with the final loss weights.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..configuration.configs import ABLATION_TABLES, AblateConfig
from ..tasks.files import task_files
from ..tasks import BASELINE_TASKS, BUILTIN, TASKS, metric_labels
from ..errors import UserError
from .spec import ROW


@dataclass(frozen=True)
class Row:
    """One line of the table: a name, its title, and how its training differs from the defaults."""

    name: str
    title: str
    short: str  # for the terminal table
    train: dict
    pretrained_mlm: bool = False
    per_budget: object = None  # steps per row -> more train options (what a method's period is at this budget)


PAPER_ROWS: dict[str, Row] = {r.name: r for r in (
    Row("baseline", "Baseline: SST only (sum, no SMART)", "baseline (SST only)", {"tasks": list(BASELINE_TASKS), "combine": "sum", "smart": False}),
    Row("multitask", "Simple multi-task (sum, no SMART)", "multi-task (sum)", {"combine": "sum", "smart": False}),
    Row("pretrain", "+ further MLM pretraining, SMART, PCGrad", "+ MLM pretraining", {"combine": "pcgrad", "smart": True}, pretrained_mlm=True),
    Row("final", "Final: SMART + PCGrad (AdamW)", "final (AdamW)", {"combine": "pcgrad", "smart": True, "optimizer": "adamw"}),
    Row("adamaxw", "Final with AdamaxW", "final (AdamaxW)", {"combine": "pcgrad", "smart": True, "optimizer": "adamaxw"}),
)}

# Every combiner with the defaults otherwise, SMART off: its cost would double each row's and it
# is a regulariser of its own, not a way of combining the tasks. Telemetry on for every row, the
# plain sum too, so that each row says how much its tasks conflicted.
COMBINER_ROWS: dict[str, Row] = {c: Row(c, f"--combine {c}", c, {"combine": c, "smart": False, "telemetry": "on"})
                                 for c in ABLATION_TABLES["combiners"]}
# Every loss weighting on the plain sum (the papers' setting), telemetry on, SMART off.
# DWA's period is an epoch, longer than a budgeted row: a tenth of the row instead, so that its
# weights move nine times.
WEIGHTING_ROWS: dict[str, Row] = {w: Row(w, f"--loss-weighting {w}", w, {"combine": "sum", "loss_weighting": w,
                                                                       "smart": False, "telemetry": "on"},
                                         per_budget=(lambda steps: {"dwa_window": max(1, steps // 10)})
                                         if w == "dwa" else None)
                                  for w in ABLATION_TABLES["weightings"]}
ROWS: dict[str, Row] = {**PAPER_ROWS, **COMBINER_ROWS, **WEIGHTING_ROWS}

METRICS = (*metric_labels(BUILTIN, primary_only=True), ("overall", "Overall"))
# The combiners table's telemetry columns (the sweep report's: sweep/spec.py REPORT_COLUMNS).
TELEMETRY = ("conflicting", "update_cos", "update_norm_ratio")

# The CS224N report (bert-base) gives figures for its final model only; other cells are "—".
PAPER = {"final": {"sst_acc": 0.514, "para_acc": 0.789, "sts_corr": 0.727, "overall": 0.677}}
COMBINERS_NOTE = ("Every row trains the three tasks with the same options, budget, seeds and data order; only "
                  "--combine differs (SMART off). Conflicting pairs: the mean fraction of task pairs whose "
                  "gradients had a negative cosine; cos(update, sum) and |update| / |sum|: how far the combiner "
                  "moved the update from the plain sum of the task gradients (1 and 1 for sum).")
WEIGHTINGS_NOTE = ("Every row trains the three tasks with --combine sum and the same options, budget, seeds and "
                   "data order; only --loss-weighting differs (SMART off). Conflicting pairs: the mean fraction "
                   "of task pairs whose weighted gradients had a negative cosine. Final loss weights: the last "
                   "log record's, of the first seed (every seed's are in its run's metrics.jsonl).")
PAPER_NOTE = ("Paper: the CS224N report's Table 1 (bert-base). Only its final row (SMART + PCGrad, no further "
              "pretraining) is available to us; \"—\" marks paper cells we do not have (not invented).")
BASELINE_NOTE = ("The baseline trains on SST only; its paraphrase and similarity heads are untrained, so they score "
                 "the cosine similarity of the encoder's sentence embeddings through the heads' initial scale and offset.")


@dataclass(frozen=True)
class Table:
    """One of `--table`'s tables: its rows, what it prints beside our metrics, its notes."""

    name: str
    title: str
    rows: dict[str, Row]
    paper: dict = field(default_factory=dict)  # row -> the paper's metrics, where it has them
    columns: tuple = ()  # telemetry columns (TELEMETRY's names)
    notes: tuple = ()
    loss_weights: bool = False  # a column of the final loss weights
    baseline: str | None = None  # the row the others are compared with (paired bootstrap)


TABLES: dict[str, Table] = {
    "paper": Table("paper", "Ablation (the paper's Table 1 with bertmtl)", PAPER_ROWS, PAPER,
                   notes=(PAPER_NOTE, BASELINE_NOTE), baseline="multitask"),
    "combiners": Table("combiners", "Gradient combiners (bertmtl ablate --table combiners)", COMBINER_ROWS,
                       columns=TELEMETRY, notes=(COMBINERS_NOTE,), baseline="sum"),
    "weightings": Table("weightings", "Loss weightings (bertmtl ablate --table weightings)", WEIGHTING_ROWS,
                        columns=TELEMETRY[:1], notes=(WEIGHTINGS_NOTE,), loss_weights=True, baseline="none"),
}


def budget_text(cfg: AblateConfig) -> str:
    """What limited the runs, in words (the report's first note; the numbers are the spec's base)."""
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    text = (f"{cfg.epochs:g} epoch(s) per row" if cfg.epochs is not None else
            f"{cfg.budget_steps} steps per row (one step = one batch of each trained task)")
    text += f", batch {cfg.batch_size}, max length {cfg.max_length}, lr {cfg.lr:g}, " + (
        f"seed {cfg.seed}" if len(seeds) == 1 else f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}; mean ± sd)")
    text += f", dev: {'all examples' if not cfg.dev_limit else f'a fixed subset of {cfg.dev_limit} per task'}"
    if "pretrain" in (cfg.rows or ()):
        text += (f", further pretraining: {cfg.pretrain_steps} MLM steps" if cfg.pretrained_mlm is None
                 else f", further pretraining: taken from {cfg.pretrained_mlm}")
    return text


def print_table(report: dict, table: Table, console=None) -> None:
    """The table in the terminal (Rich): the sweep report's rows, ours beside the paper's where it has them."""
    from rich.console import Console
    from rich.table import Table as RichTable

    from .report import mean_sd

    def _mean(s: dict) -> str:
        return "—" if s["mean"] is None else f"{s['mean']:.3f}"

    console = console or Console()
    rich = RichTable(title="Ablation: ours (paper)" if table.paper else table.title, show_header=True,
                     header_style="bold")
    rich.add_column("Row")
    for _, label in (*METRICS, *report["columns"]):
        rich.add_column(label, justify="right")
    rich.add_column("time", justify="right")
    for r in report["configurations"]:
        paper = r.get("reference") or {}
        cells = [mean_sd(r["summary"][k]) + (f" ({paper[k]:.3f})" if k in paper else " (—)" if table.paper else "")
                 for k, _ in METRICS]
        cells += [_mean(r["telemetry"][k]) for k, _ in report["columns"]]  # (± sd: in report.md)
        name = r["params"][ROW]
        rich.add_row(ROWS[name].short if name in ROWS else name, *cells, f"{r['training_s']:.0f} s")
    console.print(rich)
    for note in (*report["notes"][:1], *table.notes[:1]):  # the budget, and what the rows share
        console.print(note, markup=False, highlight=False)


def chosen_rows(cfg: AblateConfig) -> list[str]:
    """The rows to run, in their table's order; a row of another table is an error."""
    table = TABLES[cfg.table]
    if cfg.rows is None:
        return list(table.rows)
    bad = [r for r in cfg.rows if r not in table.rows]
    if bad:
        raise UserError(f"--rows: {', '.join(bad)} not in --table {cfg.table}; its rows: {', '.join(table.rows)}")
    return [r for r in table.rows if r in cfg.rows]


def ablate(cfg: AblateConfig, reporter_factory=None) -> dict:
    """Train every chosen row as a sweep with fixed rows; its report (OUT/report.md, .json, .svg) is the
    table. Returns the report."""
    from ..runs.locks import OwnerLock
    from ..runs.ownership import check_output

    cfg.validate()  # every number finite and in range before the first row trains (configuration/options.py)
    rows = chosen_rows(cfg)
    if cfg.epochs is None and cfg.budget_steps is None:
        raise UserError("give a budget: --budget-steps N (>= 1) or --epochs E")
    inputs = task_files(cfg.data_dir, TASKS)
    out = Path(cfg.out)
    check_output(out, {**inputs, "--encoder": cfg.encoder, "--pretrained-mlm": cfg.pretrained_mlm})
    out.mkdir(parents=True, exist_ok=True)
    lock = OwnerLock(out / ".ablate.lock", f"--out {out}")  # before --overwrite deletes anything there
    try:
        return _ablate(cfg, rows, out, reporter_factory)
    finally:
        lock.release()


SPEC_NAME = "ablation-spec.json"  # the table as a sweep spec (rows), beside the study and runs


def row_options(row: Row, cfg: AblateConfig, mlm_dir: str | None) -> dict:
    """A row's own train options (over the ablation's base), at this budget."""
    more = row.per_budget(cfg.budget_steps) if row.per_budget and cfg.epochs is None else {}
    return {**row.train, **more, **({"encoder": mlm_dir} if row.pretrained_mlm else {})}


def sweep_spec(cfg: AblateConfig, rows: list[str], mlm_dir: str | None, notes: list[str] = ()) -> dict:
    """The ablation as a sweep spec with fixed rows (sweep/spec.py): every row over the same base
    (budget, data, seeds), compared with the table's baseline row."""
    base = {"data_dir": cfg.data_dir, "encoder": cfg.encoder, "dev_limit": cfg.dev_limit, "batch_size": cfg.batch_size,
            "eval_batch_size": cfg.eval_batch_size, "max_length": cfg.max_length, "lr": cfg.lr, "seed": cfg.seed,
            "device": cfg.device, "precision": cfg.precision}
    if cfg.epochs is not None:
        base["epochs"] = cfg.epochs
    else:  # the whole schedule (warm-up, decay) fits the budget; one dev evaluation at its end
        base.update(epochs=1.0, steps_per_epoch=cfg.budget_steps, log_every=max(1, cfg.budget_steps // 10))
    base = {k: v for k, v in base.items() if v is not None}  # None: train's default
    table = TABLES[cfg.table]
    spec = {"name": f"ablate-{cfg.table}", "base": base, "seeds": cfg.seeds,
            "rows": {name: row_options(ROWS[name], cfg, mlm_dir) for name in rows},
            # the table as the sweep report shows it: titles, telemetry, the paper's cells, notes
            "report": {"title": table.title, "titles": {name: ROWS[name].title for name in rows},
                       "columns": list(table.columns), "loss_weights": table.loss_weights,
                       "picture": bool(table.columns), "notes": list(notes),
                       **({"reference": {"label": "Paper", "values": {r: v for r, v in table.paper.items() if r in rows}}}
                          if table.paper else {})}}
    if table.baseline in rows:
        spec["baseline"] = {"row": table.baseline}
    return spec


def run_dir_of(out: Path, row: str, seed: int) -> Path:
    """A row's run for one seed: the sweep's name for it (OUT/runs/row=ROW-HASH-sSEED)."""
    from .spec import ROW
    from .study import run_dir_of as sweep_run

    return sweep_run(out, {ROW: row}, seed)


def _clear(out: Path, pretrains_here: bool) -> None:
    """--overwrite: an earlier ablation's runs, study, spec and reports go (this one's own files only)."""
    from .report import SPEC_FILE

    for d in ("runs", *(["pretrained-mlm"] if pretrains_here else [])):
        shutil.rmtree(out / d, ignore_errors=True)
    for f in ("study.db", SPEC_FILE, SPEC_NAME, "report.md", "report.json", "report.svg", "conflicts.svg"):
        (out / f).unlink(missing_ok=True)


def _pretrain(cfg: AblateConfig, mlm_dir: Path, reporter) -> None:
    """Further pretraining for the 'pretrain' row into OUT/pretrained-mlm, as `bertmtl pretrain` runs
    it: a finished one of an earlier run of the same command is kept, a stopped one goes on from its
    last/. Stopped by a signal, the whole ablation stops (the rows must not train on half of it)."""
    from ..training.loop import train
    from ..fsutil import read_json
    from ..training.pretrain import pretrain_config
    from ..runs.rundir import LAST, METRICS_LOG, SUMMARY, TRAINER_STATE
    from ..runs.catalog import run_info
    from ..runs.status import Status
    from ..training.stopping import Stopped

    summary = mlm_dir / SUMMARY
    if summary.is_file() and read_json(summary, "missing").get("status") == Status.FINISHED:
        return
    status = Status.of(run_info(mlm_dir)["status"]) if (mlm_dir / METRICS_LOG).is_file() else None
    resume = mlm_dir if status is not None and status.resumable and (mlm_dir / LAST / TRAINER_STATE).is_file() \
        else None
    if resume is None:  # nothing to go on from: trained again from the start
        shutil.rmtree(mlm_dir, ignore_errors=True)
    done = train(pretrain_config(data_dir=cfg.data_dir, out=str(mlm_dir), encoder=cfg.encoder,
                                 max_steps=cfg.pretrain_steps, batch_size=max(cfg.batch_size, 16),
                                 max_length=cfg.max_length, seed=cfg.seed, device=cfg.device,
                                 mlm_heldout_max=min(500, cfg.dev_limit or 500),
                                 log_every=max(1, cfg.pretrain_steps // 20)), resume=resume, reporter=reporter)
    if done["status"] != Status.FINISHED:
        raise Stopped(f"ablation stopped in its further pretraining, at step {done['step']} (saved in "
                      f"{mlm_dir / LAST}); the same command goes on from there:\n  {cfg.command or 'bertmtl ablate ...'}")


def _ablate(cfg: AblateConfig, rows: list[str], out: Path, reporter_factory) -> dict:
    """The rows as one Optuna study (sweep/study.py: --workers, --storage, kill -9 and rerun safe),
    then the table from their runs."""
    from ..training.stopping import stop_on_signals

    # One stop for the pretraining and the rows' sweep: a signal in between starts nothing more.
    with stop_on_signals(lambda text: print(text, file=sys.stderr, flush=True)):
        return _ablate_stages(cfg, rows, out, reporter_factory)


def _ablate_stages(cfg: AblateConfig, rows: list[str], out: Path, reporter_factory) -> dict:
    from ..configuration.configs import SweepConfig
    from ..training.pretrain import report as pretrain_report
    from ..runs.rundir import BEST, LAST, is_run
    from ..runs.state import RunState
    from ..fsutil import write_bytes
    from .report import SPEC_FILE
    from .run import run_sweep

    table = TABLES[cfg.table]
    pretrains_here = "pretrain" in rows and cfg.pretrained_mlm is None  # into out/pretrained-mlm, a run
    if cfg.overwrite:
        _clear(out, pretrains_here)
    elif (out / "runs").exists() and not (out / SPEC_FILE).exists():
        raise UserError(f"{out / 'runs'} exists from an earlier ablation; pass --overwrite or another --out")
    new_reporter = reporter_factory or (lambda: None)
    notes = [f"Budget: {budget_text(cfg)}.", f"Command: `{cfg.command or '(called from Python)'}`."]
    mlm_dir = cfg.pretrained_mlm
    if "pretrain" in rows:
        if pretrains_here:
            mlm_dir = str(out / "pretrained-mlm")
            _pretrain(cfg, Path(mlm_dir), new_reporter())
        notes.append(pretraining_note(pretrain_report(Path(mlm_dir)), mlm_dir,
                                      RunState.of(Path(mlm_dir)).training_seconds if is_run(mlm_dir) else None))
    notes += [*table.notes, "Overall = mean of SST accuracy, Quora accuracy and STS Pearson r, on dev."]
    spec_path = out / SPEC_NAME
    spec_dict = sweep_spec(cfg, rows, mlm_dir, notes)
    write_bytes(spec_path, (json.dumps(spec_dict, indent=2) + "\n").encode())  # rows in the table's order
    try:
        report = run_sweep(SweepConfig(spec=str(spec_path), out=str(out), storage=cfg.storage, workers=cfg.workers,
                                       heartbeat=cfg.heartbeat, bootstrap=cfg.bootstrap, command=cfg.command),
                           say=lambda _: None)
    except UserError as e:
        if "holds another sweep" in e.message:
            raise UserError(f"{out} holds an ablation with other rows or options; pass --overwrite or another "
                            f"--out") from None
        raise
    if not cfg.keep_checkpoints:  # the metrics and logs stay (the report reads them); the weights are large
        for r in report["configurations"]:
            for run in r["runs"]:
                for sub in (BEST, LAST):
                    shutil.rmtree(Path(run) / sub, ignore_errors=True)
    return report


def pretraining_note(r: dict, source: str, wall_s: float | None) -> str:
    """The report's line on the further pretraining the 'pretrain' row starts from."""
    steps = f"{r.get('steps', '?')} steps" + (f", the first {r['head_steps']} head-only" if r.get("head_steps") else "")
    when = f"{wall_s:.0f} s" if wall_s is not None else "time unknown"
    before, after = ((r.get(k) or {}).get("perplexity") for k in ("before", "after"))
    shown = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    return (f"Further pretraining: {source}: held-out MLM perplexity {shown(before)} before, {shown(after)} after "
            f"({steps}; {when}).")
