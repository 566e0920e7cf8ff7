"""A run directory: its layout, its writer lock, reading its checkpoints, and the one fold of its
metrics.jsonl into what the run knows (no torch at import: `bertmtl runs` and the TUI read it).

    RUN/
      metrics.jsonl     one JSON record per line: start/resume, train, eval, nonfinite, end
      summary.json      written at the end: status, steps, best overall, the last metrics
      train_args.json   the run's options
      messages.log      what the run said (warnings, notices, evaluations), a timestamped line each
      progress.json     the step bar's state (step, total, phase), replaced at most twice a second
      train.log         the console output of a run `bertmtl tui --train` started (made before it starts)
      .writer.lock      held by the process that trains the run (WriterLock)
      best/, last/      checkpoints (last/ with the state to resume from), each:
        bertmtl.json            the marker: format, bertmtl version, step, epoch; written last
        multitask.safetensors   encoder (`encoder.*`) and heads, under our parameter names
        config.json, heads.json, tasks.json, train_args.json, metrics.json, vocab.txt (or tokenizer.json), ...
        optimizer.safetensors, trainer_state.json (last/ only: what resuming needs)

runs/checkpoint.py writes checkpoints and builds models from them; this module reads their files.
A checkpoint is not a Hugging Face model: no `model.safetensors`, so transformers refuses it
rather than loading a random encoder; format 1 checkpoints (weights in model.safetensors) are
still read.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections import deque
from pathlib import Path

from .. import __version__, fsutil
from ..errors import UserError
from .locks import OwnerLock, is_locked, lock_owner
from .status import Status
from ..tasks import BUILTIN, TaskSpec, dev_table_metrics

# -- the layout ---------------------------------------------------------------------------------

METRICS_LOG = "metrics.jsonl"
SUMMARY = "summary.json"
TRAIN_ARGS = "train_args.json"
MESSAGES = "messages.log"
PROGRESS = "progress.json"
TRAIN_LOG = "train.log"
WRITER_LOCK = ".writer.lock"
BEST, LAST = "best", "last"
MARKER = "bertmtl.json"  # a checkpoint is a directory with this file (written last)
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.safetensors"
# The last dev evaluation's raw outputs, labels and example ids per task (write_dev_outputs).
DEV_OUTPUTS = "dev_outputs.safetensors"
FORMAT = 2
# The weights file of each checkpoint format we read.
WEIGHTS_FILE = {1: "model.safetensors", 2: "multitask.safetensors"}
# A checkpoint's own files beside its weights: the encoder's config (HF's name), the heads and task
# list, the task specs, the options it was trained with, its dev metrics.
ENCODER_CONFIG, HEADS, TASK_SPECS, METRICS = "config.json", "heads.json", "tasks.json", "metrics.json"
REQUIRED_FILES = (MARKER, ENCODER_CONFIG, HEADS)
# A checkpoint's tokenizer: WordPiece's vocab.txt, or the tokenizer.json of the other families.
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a bertmtl checkpoint (rather than an HF encoder directory or a run)."""
    return (Path(path) / MARKER).is_file()


def is_run(path: str | Path) -> bool:
    return (Path(path) / METRICS_LOG).is_file()


def holds_run(path: Path) -> bool:
    """Whether `path` is a training run (its log, or a writer lock: a run still starting) or a checkpoint."""
    return any(os.path.lexists(Path(path) / name) for name in (METRICS_LOG, WRITER_LOCK, MARKER))


def checkpoint_identity(run_dir: Path) -> tuple | None:
    """Which checkpoint the run offers now (best/, else last/) and which version of it.

    Checkpoints are replaced atomically, so a new inode or mtime of the marker means a new one.
    """
    for sub in (BEST, LAST):
        try:
            st = (Path(run_dir) / sub / MARKER).stat()
        except OSError:
            continue
        return sub, st.st_ino, st.st_mtime_ns
    return None


# -- reading checkpoints -------------------------------------------------------------------------

def read_json(path: Path) -> dict:
    """A JSON object from a checkpoint or run file, or a UserError naming the file."""
    return fsutil.read_json(path, missing="missing (an incomplete or foreign checkpoint)", damaged="damaged JSON")


def check_checkpoint_dir(path: Path) -> dict:
    """Validate that `path` is a bertmtl checkpoint of a format we read; return its marker's contents."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such checkpoint directory")
    if not is_checkpoint(path) and is_checkpoint(path / BEST):
        raise UserError(f"{path} is a run directory; use {path / BEST} (or {path / LAST})")
    info = read_json(path / MARKER)
    if info.get("format") not in WEIGHTS_FILE:
        readable = " or ".join(map(str, WEIGHTS_FILE))
        raise UserError(f"{path}: checkpoint format {info.get('format')!r} is not {readable} "
                        f"(written by bertmtl {info.get('version', '?')}; this is {__version__})")
    missing = [f for f in (*REQUIRED_FILES, WEIGHTS_FILE[info["format"]]) if not (path / f).is_file()]
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES))
    if missing:
        raise UserError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}")
    return info


def read_specs(path: Path) -> list:
    """The task specs a checkpoint's heads were built from (tasks.json), or the built-in three."""
    path = Path(path)
    if not (path / TASK_SPECS).is_file():
        return list(BUILTIN)
    try:
        return [TaskSpec.from_dict(d) for d in read_json(path / TASK_SPECS)["tasks"]]
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path / TASK_SPECS}: unexpected content ({e})") from None


def read_tensors(path: Path, device="cpu") -> dict:
    """A safetensors file's tensors, or a UserError saying it is missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"{path}: missing")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path}: damaged or truncated safetensors file ({e})") from None


def checkpoint_weights(path: Path, info: dict | None = None) -> dict:
    """A checkpoint's tensors under our names: `encoder.*` and the heads."""
    info = info or check_checkpoint_dir(path)
    return read_tensors(Path(path) / WEIGHTS_FILE[info["format"]])


def checkpoint_part(path: Path, part: str) -> dict:
    """One part of a checkpoint's weights: "encoder" (under the encoder's own names) or "heads"."""
    state = checkpoint_weights(path)
    if part == "encoder":
        return {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    return {k: v for k, v in state.items() if not k.startswith("encoder.")}


# -- the writer lock ------------------------------------------------------------------------

# A run logs at least every --log-every steps and fsyncs every evaluation; silence this long
# on a run whose lock we cannot check means its writer is gone.
RECENT_S = 600


class WriterLock(OwnerLock):
    """RUN/.writer.lock, held by the process that trains the run from before its first write to its end.

    A second `bertmtl train` on the same run (a shared --out, a --resume of a run still training)
    is refused with the holder's pid and host.
    """

    def __init__(self, run_dir: Path):
        super().__init__(Path(run_dir) / WRITER_LOCK, f"run {run_dir}")


def writer_alive(run_dir: Path) -> bool:
    """Whether a process trains the run now: it holds RUN/.writer.lock (a run that ends, even with an
    error, removes it); where the lock cannot be seen (a lock file naming another host: a shared
    disk), whether metrics.jsonl was written in the last RECENT_S seconds."""
    path = Path(run_dir) / WRITER_LOCK
    log = Path(run_dir) / METRICS_LOG
    recent = log.is_file() and time.time() - log.stat().st_mtime < RECENT_S
    if lock_owner(path).get("host") not in (None, socket.gethostname()):
        return recent  # another machine's lock is invisible here
    locked = is_locked(path)
    return recent if locked is None else locked


# -- what a run knows: the one fold of metrics.jsonl ---------------------------------------------

# Dev-table rows kept; the best row is kept even when older.
MAX_EVAL_ROWS = 200
# Train records used for the speed behind the ETA: recent enough to follow a change of pace.
PACE_WINDOW = 20
# Keys of an eval record that are not dev metrics.
EVAL_META = {"type", "split", "step", "epoch", "best", "best_overall", "time"}


def write_dev_outputs(run_dir: Path, kept: dict) -> None:
    """RUN/dev_outputs.safetensors from evaluate()'s `keep`: replaced whole at each evaluation
    (a reader sees the last one or the one before, never a mix)."""
    import json

    tensors, ids = {}, {}
    for task, (task_ids, outputs, labels) in kept.items():
        tensors[f"{task}.outputs"], tensors[f"{task}.labels"] = outputs, labels
        ids[task] = task_ids
    path = Path(run_dir) / DEV_OUTPUTS
    tmp = path.with_name(path.name + ".tmp")
    fsutil.save_safetensors(tmp, tensors, {"ids": json.dumps(ids)})
    os.replace(tmp, path)


def read_dev_outputs(run_dir: Path) -> dict | None:
    """{task: (ids, outputs, labels)} of a run's last dev evaluation; None for a run without one
    (older runs did not keep them) or whose file is damaged."""
    import json

    from safetensors import safe_open

    from safetensors import SafetensorError

    path = Path(run_dir) / DEV_OUTPUTS
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as fh:
            ids = json.loads(fh.metadata()["ids"])
            return {task: (task_ids, fh.get_tensor(f"{task}.outputs"), fh.get_tensor(f"{task}.labels"))
                    for task, task_ids in ids.items()}
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # damaged: the run's comparisons are left out, as an older run's without outputs


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# What a train record holds of the task-conflict telemetry (mtl/telemetry.py writes it).
TELEMETRY_KEYS = ("cos", "conflict", "grad_norm", "weight", "loss_weight", "conflicting", "update_cos",
                  "update_norm_ratio")


def _step_of(point) -> int:
    return point["step"] if isinstance(point, dict) else point[0]


def conflict_summary(records: list[dict]) -> dict:
    """Per task pair over a run's telemetry records: how often they conflicted (the mean of the
    windows' fractions of steps with a negative gradient cosine), their mean and lowest windowed
    cosine, and the number of windows."""
    pairs: dict[str, dict] = {}
    for rec in records:
        for pair, c in (rec.get("cos") or {}).items():
            if not _finite(c):
                continue
            p = pairs.setdefault(pair, {"windows": 0, "conflict": 0.0, "cos": 0.0, "min_cos": c})
            p["windows"] += 1
            p["cos"] += c
            p["conflict"] += (rec.get("conflict") or {}).get(pair, 1.0 if c < 0 else 0.0)
            p["min_cos"] = min(p["min_cos"], c)
    return {pair: {"conflict_fraction": p["conflict"] / p["windows"], "mean_cos": p["cos"] / p["windows"],
                   "min_cos": p["min_cos"], "windows": p["windows"]} for pair, p in pairs.items()}


class RunState:
    """Everything a run's metrics.jsonl says, folded from its records in order: what `bertmtl runs`
    lists and what the TUI draws read this one fold.

    `specs`: the run's tasks until its start record names them (records of older runs do not:
    theirs are the built-in three). They name the dev metrics of the eval rows, the dev table's
    columns and the curves' colours. A resume drops what was logged after the step it resumes
    from (a run that died before saving logged steps it then repeats).
    """

    def __init__(self, specs=None):
        self.default_specs = tuple(BUILTIN if specs is None else specs)
        self.reset()

    @classmethod
    def of(cls, run_dir: Path) -> "RunState":
        """The state of a run directory's metrics.jsonl as it is now."""
        from ..sinks.metrics_log import read_records

        state = cls()
        state.apply(read_records(Path(run_dir) / METRICS_LOG)[0])
        return state

    @property
    def metric_keys(self) -> tuple[str, ...]:
        return tuple(k for s in self.specs for k in s.metric_keys)

    @property
    def dev_metrics(self) -> list[tuple[str, str]]:
        """(metric key, header) of the dev table's metric columns, primary metrics first."""
        return dev_table_metrics(self.specs)

    @property
    def dev_columns(self) -> tuple[str, ...]:
        """Headers of the dev table: star, step, overall, then the metrics (dev_metrics)."""
        return ("", "step", "overall", *(label for _, label in self.dev_metrics))

    @property
    def cos_series(self) -> dict[str, list[tuple[int, float]]]:
        """Each task pair's windowed gradient cosine against step (the telemetry records)."""
        out: dict[str, list[tuple[int, float]]] = {}
        for rec in self.telemetry:
            for pair, c in (rec.get("cos") or {}).items():
                if _finite(c):
                    out.setdefault(pair, []).append((rec["step"], float(c)))
        return out

    @property
    def colors(self) -> dict[str, str]:
        return {s.name: s.color for s in self.specs}

    @property
    def labels(self) -> dict[str, str]:
        return {s.name: s.tui_label for s in self.specs}

    def reset(self) -> None:
        """Forget everything (the file is being read again from its start)."""
        self.specs = self.default_specs
        self.config: dict = {}
        self.started: float | None = None  # time of the first record
        self._seconds = 0.0  # training time of the sessions before the current one
        self._session: list[float] | None = None  # [first, latest] record time of the current session
        self.total_steps: int | None = None
        self.steps_per_epoch: int | None = None
        self.examples: dict = {}
        self.device: str | None = None
        self.world_size = 1
        self.loss: dict[str, list[tuple[int, float]]] = {}
        self.smart: dict[str, list[tuple[int, float]]] = {}
        self.telemetry: list[dict] = []  # the task-conflict part of each train record (mtl/telemetry.py)
        self.evals: list[dict] = []  # dev-table rows: step, epoch, the specs' metrics, overall, best
        self.eval_records: list[dict] = []  # the same evaluations, every field
        self.best_step: int | None = None
        self.best_overall: float | None = None
        self.step = 0
        self.epoch = 0.0
        self.lr: float | None = None
        self.lr_series: list[tuple[int, float]] = []  # the learning rate of each train record
        self.bar: dict | None = None  # RUN/progress.json as last read (apply_progress)
        self.examples_per_s: float | None = None
        self.status = Status.WAITING  # RUNNING: no end record since the last start; else the end's status
        self.nonfinite = 0
        self.records = 0
        self._pace: deque[tuple[float, int]] = deque(maxlen=PACE_WINDOW)

    def apply(self, records: list[dict]) -> None:
        """Fold new records into the state; unknown or malformed ones are ignored."""
        for rec in records:
            handler = getattr(self, f"_on_{rec.get('type')}", None)
            if handler is None:
                continue
            try:
                handler(rec)
            except (TypeError, ValueError, KeyError, AttributeError):
                continue  # a record of the right type with the wrong shape: skip it, as a garbage line
            self.records += 1
            if _finite(rec.get("time")):
                self._clock(rec["type"], float(rec["time"]))

    def _clock(self, kind: str, t: float) -> None:
        if self.started is None:
            self.started = t
        if kind in ("start", "resume") or self._session is None:
            # A resumed run starts a new session: the time it lay stopped (killed, waiting for a
            # worker) is not training time.
            if self._session is not None:
                self._seconds += self._session[1] - self._session[0]
            self._session = [t, t]
        else:
            self._session[1] = max(self._session[1], t)

    @property
    def training_seconds(self) -> float | None:
        """Wall time spent training: from each start or resume to the last record after it, summed
        over the run's sessions (None before any timed record)."""
        if self._session is None:
            return None
        return self._seconds + self._session[1] - self._session[0]

    def _on_start(self, rec: dict) -> None:
        if rec.get("tasks"):
            self.specs = tuple(TaskSpec.from_dict(d) for d in rec["tasks"])
        self.config = dict(rec.get("config") or {})
        self.total_steps = rec.get("total_steps")
        self.steps_per_epoch = rec.get("steps_per_epoch")
        self.examples = dict(rec.get("examples") or {})
        self.device = rec.get("device")
        self.world_size = rec.get("world_size", 1)
        self.step = int(rec.get("step", 0))
        if self.steps_per_epoch:
            self.epoch = self.step / self.steps_per_epoch
        self.status = Status.RUNNING
        self._pace.clear()  # the time between a stop and a resume is not training speed

    def _on_resume(self, rec: dict) -> None:
        # Training restarts from the saved step: points logged after it are redone, so drop them
        # rather than draw the curve going back or count an evaluation twice.
        step = int(rec["step"])
        for series in (*self.loss.values(), *self.smart.values(), self.telemetry, self.lr_series):
            while series and _step_of(series[-1]) > step:
                series.pop()
        self.evals = [e for e in self.evals if e["step"] <= step]
        self.eval_records = [e for e in self.eval_records if e["step"] <= step]
        self.best_step = self.best_overall = None
        for e in self.evals:
            self._consider(e)
        self._on_start(rec)

    def _consider(self, row: dict) -> None:
        """The best evaluation is the one with the highest finite overall score, the first of equals:
        what RUN/best holds (saved whenever the score improved)."""
        if _finite(row.get("overall")) and (self.best_overall is None or row["overall"] > self.best_overall):
            self.best_step, self.best_overall = row["step"], row["overall"]

    def _on_train(self, rec: dict) -> None:
        step = int(rec["step"])
        for task, value in (rec.get("loss") or {}).items():
            if _finite(value):
                self.loss.setdefault(task, []).append((step, float(value)))
        for task, value in (rec.get("smart") or {}).items():
            if _finite(value):
                self.smart.setdefault(task, []).append((step, float(value)))
        if isinstance(rec.get("cos"), dict):
            self.telemetry.append({"step": step, **{k: rec[k] for k in TELEMETRY_KEYS if k in rec}})
        self.step = step
        self.epoch = float(rec.get("epoch", self.epoch))
        self.lr = rec.get("lr", self.lr)
        if _finite(rec.get("lr")):
            self.lr_series.append((step, float(rec["lr"])))
        self.examples_per_s = rec.get("examples_per_s", self.examples_per_s)
        if _finite(rec.get("time")):
            self._pace.append((float(rec["time"]), step))
        if self.status == Status.WAITING:
            self.status = Status.RUNNING

    def _on_eval(self, rec: dict) -> None:
        row = {k: rec.get(k) for k in ("step", "epoch", *self.metric_keys, "overall")}
        row["step"] = int(row["step"])
        # An undefined (None) or NaN overall never made best/, whatever an older log's flag says.
        row["best"] = bool(rec.get("best")) and _finite(rec.get("overall"))  # marked in the TUI's table
        self.evals.append(row)
        self.eval_records.append({**rec, "step": row["step"]})
        self._consider(row)
        if len(self.evals) > MAX_EVAL_ROWS:
            keep = [e for e in self.evals[:-MAX_EVAL_ROWS] if e["step"] == self.best_step]
            self.evals = keep + self.evals[-MAX_EVAL_ROWS:]
            self.eval_records = [e for e in self.eval_records if e["step"] in {r["step"] for r in self.evals}]

    def _on_nonfinite(self, rec: dict) -> None:
        self.nonfinite = int(rec.get("consecutive", self.nonfinite + 1))

    def _on_end(self, rec: dict) -> None:
        self.status = Status.of(rec.get("status", Status.FINISHED))
        self.step = int(rec.get("step", self.step))
        if self.steps_per_epoch:
            self.epoch = self.step / self.steps_per_epoch

    # -- derived ----------------------------------------------------------------------------

    @property
    def best(self) -> dict:
        """The dev metrics of the best evaluation (what RUN/best holds), every metric it logged."""
        rec = next((e for e in reversed(self.eval_records) if e["step"] == self.best_step), None)
        return {k: v for k, v in rec.items() if k not in EVAL_META} if rec is not None else {}

    @property
    def epochs(self) -> float | None:
        """The run's length in epochs (from its configuration)."""
        if self.total_steps and self.steps_per_epoch:
            return self.total_steps / self.steps_per_epoch
        return self.config.get("epochs")

    @property
    def fraction(self) -> float:
        """Share of the run done, 0..1."""
        if not self.total_steps:
            return 0.0
        return min(1.0, self.live_step / self.total_steps)

    def apply_progress(self, bar) -> None:
        """The step bar's state a run writes between its records (RUN/progress.json: progress.RunReporter)."""
        ok = isinstance(bar, dict) and all(_finite(bar.get(k)) for k in ("step", "total", "start_step", "started", "time"))
        self.bar = bar if ok else None

    @property
    def _live_bar(self) -> dict | None:
        """The bar of the session that runs now (not one left by an earlier session or run)."""
        bar = self.bar
        if bar is None or self.status != Status.RUNNING or bar.get("phase") == "ended":
            return None
        if self._session is not None and bar["started"] < self._session[0] - 1:
            return None  # an earlier session's (the bar starts after the session's start record)
        return bar

    @property
    def live_step(self) -> int:
        """The step the run is at: the bar's (every step) while it runs, else the records'."""
        bar = self._live_bar
        return max(self.step, int(bar["step"])) if bar is not None else self.step

    @property
    def phase(self) -> str | None:
        """What a running run does now: training or evaluating (None when unknown or over)."""
        bar = self._live_bar
        return bar.get("phase") if bar is not None else None

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left: at the pace of this session's steps so far (the bar), else of the recent train
        records (None when unknown or over)."""
        if self.status != Status.RUNNING or not self.total_steps:
            return None
        bar = self._live_bar
        if bar is not None and bar["step"] > bar["start_step"] and bar["time"] > bar["started"]:
            pace = (bar["time"] - bar["started"]) / (bar["step"] - bar["start_step"])
            return max(0.0, (bar["total"] - bar["step"]) * pace)
        if len(self._pace) < 2:
            return None
        (t0, s0), (t1, s1) = self._pace[0], self._pace[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        return max(0.0, (self.total_steps - self.step) * (t1 - t0) / (s1 - s0))

    @property
    def dev_series(self) -> dict[str, list[tuple[int, float]]]:
        """Overall and each task's primary dev metric against step (the dev-score curves)."""
        keys = ["overall", *(s.primary_metric for s in self.specs)]
        return {k: [(e["step"], float(e[k])) for e in self.evals if _finite(e.get(k))] for k in keys}
