"""Following RUN/metrics.jsonl while training appends to it, and the run state it describes.

Nothing here imports Textual: the tail and the state are plain objects, driven by the app.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ..metrics_log import read_records
from ..tasks import BUILTIN, TaskSpec, dev_table_metrics

# Dev-table rows kept; the best row is kept even when older.
MAX_EVAL_ROWS = 200
# Train records used for the speed behind the ETA: recent enough to follow a change of pace.
PACE_WINDOW = 20


@dataclass
class Poll:
    """What one look at the file found: new records, and whether to forget earlier ones."""

    records: list[dict] = field(default_factory=list)
    reset: bool = False  # the file was replaced or truncated: it is read again from the start


class MetricsTail:
    """Reads the records appended to a metrics.jsonl since the last poll.

    The file may not exist yet (training just started), may end in a half-written line (left
    for the next poll), may hold a garbage line (skipped), and may be replaced or truncated
    (read again from the start).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self._identity: tuple[int, int] | None = None

    def poll(self) -> Poll:
        """New complete records since the last call."""
        try:
            st = self.path.stat()
        except OSError:  # not there yet, or an unreachable shared disk: try again next time
            return Poll()
        identity = (st.st_dev, st.st_ino)
        reset = self._identity is not None and (identity != self._identity or st.st_size < self.offset)
        if reset:
            self.offset = 0
        self._identity = identity
        if st.st_size == self.offset:
            return Poll(reset=reset)
        try:
            records, self.offset = read_records(self.path, self.offset)
        except OSError:
            return Poll(reset=reset)
        return Poll(records, reset)


def checkpoint_identity(run_dir: Path) -> tuple | None:
    """Which checkpoint the run offers now (best/, else last/) and which version of it.

    Checkpoints are replaced atomically, so a new inode or mtime of bertmtl.json means a new one.
    """
    for sub in ("best", "last"):
        try:
            st = (run_dir / sub / "bertmtl.json").stat()
        except OSError:
            continue
        return sub, st.st_ino, st.st_mtime_ns
    return None


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


class RunState:
    """Everything the monitor shows, folded from metrics records in order.

    `specs`: the run's tasks until its start record names them (records of older runs do not:
    theirs are the built-in three). They name the dev metrics kept from eval records, the
    dev table's columns and the curves' colours.
    """

    def __init__(self, specs=BUILTIN):
        self.default_specs = tuple(specs)
        self.reset()

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
    def colors(self) -> dict[str, str]:
        return {s.name: s.color for s in self.specs}

    @property
    def labels(self) -> dict[str, str]:
        return {s.name: s.tui_label for s in self.specs}

    def reset(self) -> None:
        """Forget everything (the file is being read again from its start)."""
        self.specs: tuple[TaskSpec, ...] = self.default_specs
        self.config: dict = {}
        self.total_steps: int | None = None
        self.steps_per_epoch: int | None = None
        self.examples: dict = {}
        self.device: str | None = None
        self.world_size = 1
        self.loss: dict[str, list[tuple[int, float]]] = {}
        self.smart: dict[str, list[tuple[int, float]]] = {}
        self.evals: list[dict] = []
        self.best_step: int | None = None
        self.best_overall: float | None = None
        self.step = 0
        self.epoch = 0.0
        self.lr: float | None = None
        self.examples_per_s: float | None = None
        self.status = "waiting"  # waiting | running | finished | stopped | nonfinite
        self.nonfinite = 0
        self.records = 0
        self._pace: deque[tuple[float, int]] = deque(maxlen=PACE_WINDOW)

    # -- folding records -----------------------------------------------------------------

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
        self.status = "running"
        self._pace.clear()  # the time between a stop and a resume is not training speed

    def _on_resume(self, rec: dict) -> None:
        # Training restarts from the saved step: points logged after it (by a run that died
        # before saving) are redone, so drop them rather than draw the curve going back.
        step = int(rec["step"])
        for series in (*self.loss.values(), *self.smart.values()):
            while series and series[-1][0] > step:
                series.pop()
        self.evals = [e for e in self.evals if e["step"] <= step]
        self._start_best_from_evals()
        self._on_start(rec)

    def _start_best_from_evals(self) -> None:
        best = [e for e in self.evals if e.get("best")]
        self.best_step = best[-1]["step"] if best else None
        self.best_overall = best[-1].get("overall") if best else None

    def _on_train(self, rec: dict) -> None:
        step = int(rec["step"])
        for task, value in (rec.get("loss") or {}).items():
            if _finite(value):
                self.loss.setdefault(task, []).append((step, float(value)))
        for task, value in (rec.get("smart") or {}).items():
            if _finite(value):
                self.smart.setdefault(task, []).append((step, float(value)))
        self.step = step
        self.epoch = float(rec.get("epoch", self.epoch))
        self.lr = rec.get("lr", self.lr)
        self.examples_per_s = rec.get("examples_per_s", self.examples_per_s)
        if _finite(rec.get("time")):
            self._pace.append((float(rec["time"]), step))
        if self.status == "waiting":
            self.status = "running"

    def _on_eval(self, rec: dict) -> None:
        row = {k: rec.get(k) for k in ("step", "epoch", *self.metric_keys, "overall")}
        row["step"] = int(row["step"])
        row["best"] = bool(rec.get("best"))
        self.evals.append(row)
        if row["best"]:
            self.best_step, self.best_overall = row["step"], row["overall"]
        elif _finite(rec.get("best_overall")) and self.best_overall is None:
            self.best_overall = rec["best_overall"]
        if len(self.evals) > MAX_EVAL_ROWS:
            keep = [e for e in self.evals[:-MAX_EVAL_ROWS] if e["step"] == self.best_step]
            self.evals = keep + self.evals[-MAX_EVAL_ROWS:]

    def _on_nonfinite(self, rec: dict) -> None:
        self.nonfinite = int(rec.get("consecutive", self.nonfinite + 1))

    def _on_end(self, rec: dict) -> None:
        self.status = rec.get("status", "finished")
        self.step = int(rec.get("step", self.step))
        if self.steps_per_epoch:
            self.epoch = self.step / self.steps_per_epoch

    # -- derived numbers -----------------------------------------------------------------

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
        return min(1.0, self.step / self.total_steps)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the pace of the recent train records (None when unknown or over)."""
        if self.status != "running" or not self.total_steps or len(self._pace) < 2:
            return None
        (t0, s0), (t1, s1) = self._pace[0], self._pace[-1]
        if t1 <= t0 or s1 <= s0:
            return None
        return max(0.0, (self.total_steps - self.step) * (t1 - t0) / (s1 - s0))


def format_duration(seconds: float | None) -> str:
    """1h 02m, 3m 20s, 45s; an en dash when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"
