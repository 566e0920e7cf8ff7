"""What a run knows: the one fold of its metrics.jsonl (RunState, what `bertmtl runs`, the TUI and
sweep reports read), and the counters a training run keeps (TrainingState: what the loop updates,
trainer_state.json and summary.json record). Both decide the best evaluation by `improves`. No torch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path

from ..numbers import is_finite
from ..tasks import BUILTIN, TaskSpec, dev_table_metrics
from .rundir import METRICS_LOG
from .status import Status


# -- what a run knows: the one fold of metrics.jsonl ---------------------------------------------

# Dev-table rows kept; the best row is kept even when older.
MAX_EVAL_ROWS = 200
# Train records used for the speed behind the ETA: recent enough to follow a change of pace.
PACE_WINDOW = 20
# Keys of an eval record that are not dev metrics.
EVAL_META = {"type", "split", "step", "epoch", "best", "best_overall", "time"}


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
            if not is_finite(c):
                continue
            p = pairs.setdefault(pair, {"windows": 0, "conflict": 0.0, "cos": 0.0, "min_cos": c})
            p["windows"] += 1
            p["cos"] += c
            p["conflict"] += (rec.get("conflict") or {}).get(pair, 1.0 if c < 0 else 0.0)
            p["min_cos"] = min(p["min_cos"], c)
    return {pair: {"conflict_fraction": p["conflict"] / p["windows"], "mean_cos": p["cos"] / p["windows"],
                   "min_cos": p["min_cos"], "windows": p["windows"]} for pair, p in pairs.items()}


def improves(score, best: float | None) -> bool:
    """Whether an evaluation's overall score becomes the best: the highest finite score, the first of
    equals (an undefined or NaN score never does). What RUN/best holds, and what the fold marks."""
    return is_finite(score) and (best is None or score > best)


@dataclass
class TrainingState:
    """How far a training run is and how it stands: the loop updates it, last/'s trainer_state.json
    and summary.json record it, a resume reads it back (RunState rebuilds the same from the log)."""

    step: int = 0  # optimizer steps taken (skipped non-finite steps count: their batches are consumed)
    best: float | None = None  # the best overall dev score so far (improves)
    since_best: int = 0  # evaluations since the best one (--patience)
    nonfinite: int = 0  # consecutive steps with a non-finite loss
    diverged: bool = False  # the weights themselves became non-finite
    ended: Status | None = None  # the status of its end record, once written

    def consider(self, score, has_dev: bool = True) -> bool:
        """Take an evaluation's overall score; whether it is the best so far. Without dev sets there
        is nothing to be patient about; an undefined score is no improvement."""
        best = improves(score, self.best)
        if best:
            self.best = score
        if has_dev:
            self.since_best = 0 if best else self.since_best + 1
        return best

    def resume_fields(self) -> dict:
        """The counters trainer_state.json holds (beside the optimizer's and the data order's state)."""
        return {"step": self.step, "best": self.best, "since_best": self.since_best, "nonfinite": self.nonfinite}

    @classmethod
    def resumed(cls, trainer_state: dict) -> "TrainingState":
        """The counters of a checked trainer_state.json (runs/checkpoint.py check_trainer_state)."""
        return cls(step=trainer_state["step"], best=trainer_state.get("best"),
                   since_best=trainer_state.get("since_best", 0), nonfinite=trainer_state.get("nonfinite", 0))

    def end_fields(self, status: Status) -> dict:
        """What the end record and summary.json say of how the run stands."""
        return {"status": status, "step": self.step, "best_overall": self.best}


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
                if is_finite(c):
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
            if is_finite(rec.get("time")):
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
        if improves(row.get("overall"), self.best_overall):
            self.best_step, self.best_overall = row["step"], row["overall"]

    def _on_train(self, rec: dict) -> None:
        step = int(rec["step"])
        for task, value in (rec.get("loss") or {}).items():
            if is_finite(value):
                self.loss.setdefault(task, []).append((step, float(value)))
        for task, value in (rec.get("smart") or {}).items():
            if is_finite(value):
                self.smart.setdefault(task, []).append((step, float(value)))
        if isinstance(rec.get("cos"), dict):
            self.telemetry.append({"step": step, **{k: rec[k] for k in TELEMETRY_KEYS if k in rec}})
        self.step = step
        self.epoch = float(rec.get("epoch", self.epoch))
        self.lr = rec.get("lr", self.lr)
        if is_finite(rec.get("lr")):
            self.lr_series.append((step, float(rec["lr"])))
        self.examples_per_s = rec.get("examples_per_s", self.examples_per_s)
        if is_finite(rec.get("time")):
            self._pace.append((float(rec["time"]), step))
        if self.status == Status.WAITING:
            self.status = Status.RUNNING

    def _on_eval(self, rec: dict) -> None:
        row = {k: rec.get(k) for k in ("step", "epoch", *self.metric_keys, "overall")}
        row["step"] = int(row["step"])
        # An undefined (None) or NaN overall never made best/, whatever an older log's flag says.
        row["best"] = bool(rec.get("best")) and is_finite(rec.get("overall"))  # marked in the TUI's table
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
        ok = isinstance(bar, dict) and all(is_finite(bar.get(k)) for k in ("step", "total", "start_step", "started", "time"))
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
        return {k: [(e["step"], float(e[k])) for e in self.evals if is_finite(e.get(k))] for k in keys}
