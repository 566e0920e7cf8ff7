"""The paper's ablation table (Table 1) and the combiner comparison with our stack: `bertmtl ablate`.

Every row is `train()` with a shared budget, once per seed (`--seeds N`: the same seeds, so the
same data order, for every row), scored on dev with all three heads; the table gives the mean
and standard deviation over seeds. Two tables (`--table`):

- paper: the SST-only baseline, simple multi-task (summed losses), further MLM pretraining +
  SMART + PCGrad, the final recipe (SMART + PCGrad, AdamW), and the final recipe with AdamaxW.
  The paper's numbers are printed beside ours where we have them, never invented.
- combiners: every `--combine` method with everything else equal (SMART off, so that only the
  combiner differs), with the task-conflict telemetry of each row (how often the tasks'
  gradients conflicted, how far the combiner moved the update from the plain sum) and a picture
  of one run's telemetry (conflicts.svg).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..configuration.configs import ABLATION_TABLES, AblateConfig
from ..tasks.files import task_files
from ..tasks import BASELINE_TASKS, BUILTIN, TASKS, metric_labels
from ..errors import UserError


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
# The combiners table's telemetry columns: means over a row's log records and seeds.
TELEMETRY = (("conflicting", "Conflicting pairs"), ("update_cos", "cos(update, sum)"),
             ("update_norm_ratio", "|update| / |sum|"))

# The CS224N report (bert-base) gives figures for its final model only; other cells are "—".
PAPER = {"final": {"sst_acc": 0.514, "para_acc": 0.789, "sts_corr": 0.727, "overall": 0.677}}
COMBINERS_NOTE = ("Every row trains the three tasks with the same options, budget, seeds and data order; only "
                  "--combine differs (SMART off). Conflicting pairs: the mean fraction of task pairs whose "
                  "gradients had a negative cosine; cos(update, sum) and |update| / |sum|: how far the combiner "
                  "moved the update from the plain sum of the task gradients (1 and 1 for sum).")
WEIGHTINGS_NOTE = ("Every row trains the three tasks with --combine sum and the same options, budget, seeds and "
                   "data order; only --loss-weighting differs (SMART off). Conflicting pairs: the mean fraction "
                   "of task pairs whose weighted gradients had a negative cosine. Final loss weights: the last "
                   "log record's, of the first seed (every seed's are in ablation.json).")
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
    columns: tuple = ()  # telemetry columns (TELEMETRY)
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


def seeds_of(cfg: AblateConfig) -> list[int]:
    return [cfg.seed + i for i in range(cfg.seeds)]


def budget(cfg: AblateConfig) -> dict:
    """What limited the runs, in words and numbers (printed with the table)."""
    if cfg.epochs is not None:
        b = {"mode": "epochs", "epochs_per_row": cfg.epochs}
        text = f"{cfg.epochs:g} epoch(s) per row"
    else:
        b = {"mode": "steps", "steps_per_row": cfg.budget_steps}
        text = f"{cfg.budget_steps} steps per row (one step = one batch of each trained task)"
    b.update(batch_size=cfg.batch_size, max_length=cfg.max_length, dev_limit=cfg.dev_limit,
             pretrain_steps=cfg.pretrain_steps if cfg.pretrained_mlm is None else None, seed=cfg.seed, lr=cfg.lr,
             seeds=seeds_of(cfg))
    seeds = seeds_of(cfg)
    text += f", batch {cfg.batch_size}, max length {cfg.max_length}, lr {cfg.lr:g}, " + (
        f"seed {cfg.seed}" if len(seeds) == 1 else f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}; mean ± sd)")
    text += f", dev: {'all examples' if not cfg.dev_limit else f'a fixed subset of {cfg.dev_limit} per task'}"
    if "pretrain" in (cfg.rows or ()):
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


def _cell(row: dict, key: str) -> str:
    """A row's metric: the value of one seed, or mean ± sd over several."""
    v = (row.get("metrics") or {}).get(key)
    sd = (row.get("std") or {}).get(key)
    return _fmt(v) if sd is None or v is None else f"{v:.3f} ± {sd:.3f}"


def weights_text(weights: dict | None) -> str:
    return ", ".join(f"{t} {w:.2f}" for t, w in weights.items()) if weights else "—"


def markdown(result: dict) -> str:
    """The table as Markdown, with its budget, command, machine and notes."""
    table = TABLES[result.get("table", "paper")]
    cols = [label for _, label in METRICS]
    paper_cols = [f"Paper {c}" for c in cols] if table.paper else []
    tele = [label for _, label in table.columns] + (["Final loss weights"] if table.loss_weights else [])
    head = ["Row", *cols, *tele, *paper_cols, "Wall time"]
    lines = [f"# {table.title}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in result["rows"]:
        cells = [_cell(r, k) for k, _ in METRICS] + [_cell({"metrics": r.get("telemetry"),
                                                           "std": r.get("telemetry_std")}, k) for k, _ in table.columns]
        if table.loss_weights:
            cells.append(weights_text(r["seeds"][0].get("loss_weight")) if r.get("seeds") else "—")
        if table.paper:
            cells += [_fmt((r["paper"] or {}).get(k)) for k, _ in METRICS]
        lines.append(f"| {r['title']} | " + " | ".join(cells) + f" | {r['wall_s']:.0f} s |")
    lines += ["", f"**Budget:** {result['budget']['text']}.", "",
              f"**Command:** `{result['command']}`", "",
              "**Machine:** " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()) + f"; device {result['device']}.", "",
              f"**Total wall time:** {result['wall_s']:.0f} s.", ""]
    if result.get("pretrain"):
        p = result["pretrain"]
        steps = f"{p.get('steps', '?')} steps" + (f", the first {p['head_steps']} head-only" if p.get("head_steps") else "")
        when = f"{p['wall_s']:.0f} s" if p.get("wall_s") is not None else "time unknown"
        lines += [f"**Further pretraining:** {p['source']}: held-out MLM perplexity "
                  f"{_fmt(p.get('before_perplexity'))} before, {_fmt(p.get('after_perplexity'))} after "
                  f"({steps}; {when}).", ""]
    if result.get("baseline") and any(r.get("vs_baseline") for r in result["rows"]):
        from .stats import describe_difference

        lines += [f"**Against {ROWS[result['baseline']].title}** (paired bootstrap over the dev examples both "
                  f"scored, pooled over seeds, {result.get('config', {}).get('bootstrap', 1000)} replicates: the "
                  "difference, its 95% interval, a two-sided p-value; \"within noise\" where the interval covers "
                  "zero):", "", "| Row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for r in result["rows"]:
            if r.get("vs_baseline"):
                lines.append(f"| {r['title']} | " + " | ".join(describe_difference(r["vs_baseline"].get(k))
                                                              for k, _ in METRICS) + " |")
        lines.append("")
    if result.get("picture"):
        lines += [f"![task-conflict telemetry of one run]({result['picture']['file']})", "",
                  f"The picture: {result['picture']['caption']}", ""]
    lines += ["Notes: " + " ".join(table.notes) + " Overall = mean of SST accuracy, Quora accuracy and STS "
              "Pearson r, on dev." + (" ± is one standard deviation over seeds." if result["budget"].get("seeds", [0])[1:]
                                      else ""), ""]
    return "\n".join(lines)


def print_table(result: dict, console=None) -> None:
    """The table in the terminal (Rich), ours beside the paper's where it has them."""
    from rich.console import Console
    from rich.table import Table as RichTable

    console = console or Console()
    table = TABLES[result.get("table", "paper")]
    rich = RichTable(title="Ablation: ours (paper)" if table.paper else table.title, show_header=True,
                     header_style="bold")
    rich.add_column("Row")
    for _, label in (*METRICS, *table.columns):
        rich.add_column(label, justify="right")
    rich.add_column("time", justify="right")
    for r in result["rows"]:
        cells = [_cell(r, k) + (f" ({_fmt((r['paper'] or {}).get(k))})" if table.paper else "") for k, _ in METRICS]
        cells += [_fmt((r.get("telemetry") or {}).get(k)) for k, _ in table.columns]
        rich.add_row(ROWS[r["name"]].short if r.get("name") in ROWS else r["title"], *cells, f"{r['wall_s']:.0f} s")
    console.print(rich)
    console.print(f"budget: {result['budget']['text']}", markup=False, highlight=False)
    for note in table.notes[:1]:
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
    """Train every chosen row, write OUT/ablation.md and OUT/ablation.json; returns the result."""
    from ..runs.locks import OwnerLock
    from ..runs.ownership import check_output

    t0 = time.perf_counter()
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
        return _ablate(cfg, rows, out, reporter_factory, t0)
    finally:
        lock.release()


SPEC_NAME = "ablation-spec.json"  # the table as a sweep spec (rows), beside the study and runs


def row_options(row: Row, cfg: AblateConfig, mlm_dir: str | None) -> dict:
    """A row's own train options (over the ablation's base), at this budget."""
    more = row.per_budget(cfg.budget_steps) if row.per_budget and cfg.epochs is None else {}
    return {**row.train, **more, **({"encoder": mlm_dir} if row.pretrained_mlm else {})}


def sweep_spec(cfg: AblateConfig, rows: list[str], mlm_dir: str | None) -> dict:
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
            "rows": {name: row_options(ROWS[name], cfg, mlm_dir) for name in rows}}
    if table.baseline in rows:
        spec["baseline"] = {"row": table.baseline}
    return spec


def run_dir_of(out: Path, row: str, seed: int) -> Path:
    """A row's run for one seed: the sweep's name for it (OUT/runs/row=ROW-HASH-sSEED)."""
    from .spec import ROW
    from .study import run_dir_of as sweep_run

    return sweep_run(out, {ROW: row}, seed)


def run_telemetry(state) -> tuple[dict, dict | None]:
    """From a run's state (rundir.RunState): the means of its telemetry scalars over its records
    (TELEMETRY's keys), and the loss weights of its last record (None without a loss weighting)."""
    from .stats import mean_ci

    records = state.telemetry
    means = {k: mean_ci([r.get(k) for r in records])["mean"] for k, _ in TELEMETRY}
    return means, next((r["loss_weight"] for r in reversed(records) if r.get("loss_weight")), None)


def _clear(out: Path, pretrains_here: bool) -> None:
    """--overwrite: an earlier ablation's runs, study, spec and reports go (this one's own files only)."""
    from .report import SPEC_FILE

    for d in ("runs", *(["pretrained-mlm"] if pretrains_here else [])):
        shutil.rmtree(out / d, ignore_errors=True)
    for f in ("study.db", SPEC_FILE, SPEC_NAME, "report.md", "report.json", "report.svg"):
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


def _ablate(cfg: AblateConfig, rows: list[str], out: Path, reporter_factory, t0: float) -> dict:
    """The rows as one Optuna study (sweep/study.py: --workers, --storage, kill -9 and rerun safe),
    then the table from their runs."""
    from ..training.stopping import stop_on_signals

    # One stop for the pretraining and the rows' sweep: a signal in between starts nothing more.
    with stop_on_signals(lambda text: print(text, file=sys.stderr, flush=True)):
        return _ablate_stages(cfg, rows, out, reporter_factory, t0)


def _ablate_stages(cfg: AblateConfig, rows: list[str], out: Path, reporter_factory, t0: float) -> dict:
    from ..configuration.configs import SweepConfig
    from ..model.device import pick_device
    from ..fsutil import read_json, write_bytes, write_json
    from ..training.pretrain import report
    from ..runs.rundir import BEST, LAST, SUMMARY, is_run
    from ..runs.state import RunState
    from .report import SPEC_FILE
    from .run import run_sweep
    from .spec import ROW, read_spec

    table = TABLES[cfg.table]
    pretrains_here = "pretrain" in rows and cfg.pretrained_mlm is None  # into out/pretrained-mlm, a run
    if cfg.overwrite:
        _clear(out, pretrains_here)
    elif (out / "runs").exists() and not (out / SPEC_FILE).exists():
        raise UserError(f"{out / 'runs'} exists from an earlier ablation; pass --overwrite or another --out")
    device = pick_device(cfg.device)
    new_reporter = reporter_factory or (lambda: None)

    result: dict = {"table": cfg.table, "budget": budget(cfg), "command": cfg.command or "(called from Python)",
                    "machine": machine(), "device": str(device), "config": asdict(cfg), "rows": [], "pretrain": None,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S")}

    mlm_dir = cfg.pretrained_mlm
    if "pretrain" in rows:
        if pretrains_here:
            mlm_dir = str(out / "pretrained-mlm")
            _pretrain(cfg, Path(mlm_dir), new_reporter())
        r = report(Path(mlm_dir))
        # Its own log's time, whether it ran now, in an earlier run of this command, or beforehand
        # (--pretrained-mlm: a run of `bertmtl pretrain`; another directory has no log: None).
        wall = RunState.of(Path(mlm_dir)).training_seconds if is_run(mlm_dir) else None
        result["pretrain"] = {"source": mlm_dir, "steps": r["steps"], "head_steps": r.get("head_steps") or 0, "wall_s": wall,
                              "before_perplexity": (r.get("before") or {}).get("perplexity"),
                              "after_perplexity": (r.get("after") or {}).get("perplexity"),
                              "head": "initialised" if "initial" in r else "checkpoint"}

    spec_path = out / SPEC_NAME
    spec_dict = sweep_spec(cfg, rows, mlm_dir)
    write_bytes(spec_path, (json.dumps(spec_dict, indent=2) + "\n").encode())  # rows in the table's order
    try:
        run_sweep(SweepConfig(spec=str(spec_path), out=str(out), storage=cfg.storage, workers=cfg.workers,
                              heartbeat=cfg.heartbeat, bootstrap=cfg.bootstrap, command=cfg.command), say=lambda _: None)
    except UserError as e:
        if "holds another sweep" in e.message:
            raise UserError(f"{out} holds an ablation with other rows or options; pass --overwrite or another "
                            f"--out") from None
        raise
    spec = read_spec(spec_path)
    for name in rows:
        per_seed = []
        for seed in spec.seed_list():
            run_dir = run_dir_of(out, name, seed)
            summary = read_json(run_dir / SUMMARY, "missing")
            metrics = summary.get("last_metrics") or {}
            state = RunState.of(run_dir)  # its log, read once
            telemetry, loss_weight = run_telemetry(state)
            per_seed.append({"seed": seed, "run": str(run_dir), "metrics": {k: metrics.get(k) for k, _ in METRICS},
                             "dev_n": {s.count_key: metrics.get(s.count_key) for s in BUILTIN},
                             "telemetry": telemetry if table.columns else None,
                             "wall_s": state.training_seconds,
                             "steps": summary.get("step"), "status": summary.get("status"), "loss_weight": loss_weight})
            if not cfg.keep_checkpoints:  # the metrics and logs stay; the weights are large
                for sub in (BEST, LAST):
                    shutil.rmtree(run_dir / sub, ignore_errors=True)
        result["rows"].append(summarise_row(name, per_seed, spec.config({ROW: name}, seed, run_dir), table))
    compare_with_baseline(result, table, cfg.bootstrap)
    if table.columns and result["rows"]:
        result["picture"] = conflict_picture(out, result["rows"])
    result["wall_s"] = time.perf_counter() - t0
    result["study"] = {"spec": SPEC_NAME, "storage": cfg.storage or "sqlite: study.db", "report": "report.md"}
    write_json(out / "ablation.json", result)
    write_bytes(out / "ablation.md", markdown(result).encode())
    return result


def compare_with_baseline(result: dict, table: Table, replicates: int) -> None:
    """Each row against the table's baseline row (where both ran): a paired bootstrap over the
    dev examples both scored, pooled over seeds (stats.paired_bootstrap), per metric."""
    from ..runs.rundir import read_dev_outputs
    from ..runs.state import RunState
    from .stats import paired_bootstrap

    rows = {r["name"]: r for r in result["rows"]}
    base = rows.get(table.baseline)
    if base is None:
        return
    result["baseline"] = base["name"]
    outputs = {name: [read_dev_outputs(Path(s["run"])) for s in r["seeds"]] for name, r in rows.items()}
    if not all(outputs[base["name"]]):
        return
    specs = {s.name: s for s in RunState.of(Path(base["seeds"][0]["run"])).specs}
    for name, r in rows.items():
        if name != base["name"] and all(outputs[name]):
            r["vs_baseline"] = {k: paired_bootstrap(outputs[base["name"]], outputs[name], specs, k, n=replicates)
                                for k, _ in METRICS}


def summarise_row(name: str, per_seed: list[dict], tc, table: Table) -> dict:
    """A row of the table from its seeds' runs: mean, sd (with several seeds) and t interval of
    every metric, and the mean and sd of the telemetry (stats.mean_ci)."""
    from .stats import mean_ci
    from ..tasks import metric_range

    def fold(part: str, keys, within=lambda k: None) -> tuple[dict, dict, dict | None]:
        stats = {k: mean_ci([(s[part] or {}).get(k) for s in per_seed], within(k)) for k in keys}
        return ({k: c["mean"] for k, c in stats.items()}, stats,
                {k: c["sd"] for k, c in stats.items()} if len(per_seed) > 1 else None)

    metrics, ci, std = fold("metrics", [k for k, _ in METRICS], lambda k: metric_range(BUILTIN, k))
    first = per_seed[0]
    row = {"name": name, "title": ROWS[name].title, "metrics": metrics, "std": std, "dev_n": first["dev_n"],
           "paper": table.paper.get(name), "wall_s": sum(s["wall_s"] or 0.0 for s in per_seed), "steps": first["steps"],
           "status": first["status"] if all(s["status"] == first["status"] for s in per_seed) else "mixed",
           "ci": ci,
           "seeds": per_seed, "train": {k: getattr(tc, k) for k in (
               "tasks", "combine", "loss_weighting", "smart", "optimizer", "encoder", "epochs", "steps_per_epoch", "precision")}}
    if table.columns:
        row["telemetry"], _, row["telemetry_std"] = fold("telemetry", [k for k, _ in table.columns])
    return row


def conflict_picture(out: Path, rows: list[dict]) -> dict:
    """conflicts.svg: the telemetry of the first row's first seed (sweep/pictures.py)."""
    from ..fsutil import write_bytes
    from .pictures import conflict_svg
    from ..runs.state import RunState

    run = rows[0]["seeds"][0]
    svg = conflict_svg(RunState.of(Path(run["run"])), title=f"{rows[0]['title']}, seed {run['seed']}")
    write_bytes(out / "conflicts.svg", svg.encode())
    return {"file": "conflicts.svg", "run": run["run"],
            "caption": f"{rows[0]['title']} (seed {run['seed']}): each task pair's gradient cosine over the run "
                       "(left: its mean, red where the tasks conflict) and per log window (right)."}
