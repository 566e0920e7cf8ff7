"""How a training run reports itself: a Rich progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path


class ThroughputWindow:
    """Mean losses and examples per second between two log lines (training and pretraining).

    `add` one step's losses (and SMART terms, when `smart`), `record` the averages since the
    last record; the window then starts again.
    """

    def __init__(self, names: list[str], smart: bool = True):
        self.names, self.smart = list(names), smart
        self._reset()

    def _reset(self) -> None:
        self.loss = {t: 0.0 for t in self.names}
        self.smart_sum = {t: 0.0 for t in self.names} if self.smart else {}
        self.count = {t: 0 for t in self.names}  # steps that had the task (all of them, but with sampling)
        self.n, self.examples, self.t0 = 0, 0, time.perf_counter()

    def add(self, examples: int, losses: dict[str, float], smart: dict[str, float] | None = None) -> None:
        self.n += 1
        self.examples += examples
        for t in self.names:
            if t not in losses:
                continue  # not sampled this step (--sampling proportional)
            self.count[t] += 1
            self.loss[t] += losses[t]
            if self.smart:
                self.smart_sum[t] += (smart or {}).get(t, 0.0)

    def record(self) -> dict:
        """{"loss": {name: mean}, "smart": {name: mean}, "examples_per_s": ...}, then start a new window.

        A task absent from every step of the window has no entry."""
        elapsed = time.perf_counter() - self.t0
        rec = {"loss": {t: v / self.count[t] for t, v in self.loss.items() if self.count[t]},
               "smart": {t: v / self.count[t] for t, v in self.smart_sum.items() if self.count[t]},
               "examples_per_s": self.examples / max(elapsed, 1e-9)}
        self._reset()
        return rec


def _fmt_losses(rec: dict) -> str:
    parts = [f"{t} {v:.3f}" for t, v in rec.get("loss", {}).items()]
    smart = {t: v for t, v in rec.get("smart", {}).items() if v}
    if smart:
        parts.append("smart " + "/".join(f"{v:.2g}" for v in smart.values()))
    return "  ".join(parts)


def format_metrics(m: dict, specs=None) -> str:
    """One line of dev metrics: each task's metrics (built-in tasks by default), then overall."""
    from ..tasks import BUILTIN, metric_labels

    keys = (*metric_labels(BUILTIN if specs is None else specs), ("overall", "overall"))
    # A metric evaluated but undefined (None: see evaluate.undefined_reason) shows as such, not as a gap.
    return "  ".join(f"{label} {'undefined' if m[k] is None else f'{m[k]:.3f}'}" for k, label in keys if k in m)


def _clock(seconds: float) -> str:
    """12.3 -> '0:00:12', as Rich's time columns show it."""
    s = int(max(0.0, seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class PlainReporter:
    """One line per logged step and per evaluation, to stderr (pipes and logs stay readable).

    The loop calls `advance(step)` after every step and `step(record)` every --log-every steps;
    `evaluating(n)` wraps a dev evaluation of n examples (its progress, where there is a bar).
    """

    specs = None  # the run's tasks (set by training), which name the metrics of evaluations

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self._warned: set[str] = set()
        self._t0, self._first = time.perf_counter(), 0

    def eta(self, step: int) -> float | None:
        """Seconds left to the last step at the pace of this process's steps so far (None before one)."""
        done = step - self._first
        if done <= 0:
            return None
        return (time.perf_counter() - self._t0) / done * max(0, self.total - step)

    def warn_undefined(self, rec: dict) -> None:
        """A warning per undefined metric of an evaluation, each distinct one once per run (one
        undefined because of the dev data is so at every evaluation)."""
        from ..tasks import BUILTIN, undefined_warnings

        for line in undefined_warnings(rec, BUILTIN if self.specs is None else self.specs):
            if line not in self._warned:
                self._warned.add(line)
                self.message(f"warning: {line}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
        self.total, self._t0, self._first = total_steps, time.perf_counter(), start_step
        self.message(f"training for {total_steps} steps ({steps_per_epoch} per epoch), starting at step {start_step}")

    def advance(self, step: int) -> None:
        """After every step (a log line comes every --log-every steps only)."""

    def step(self, rec: dict) -> None:
        eta = self.eta(rec["step"])
        self.message(f"step {rec['step']}/{self.total}  epoch {rec['epoch']:.2f}  {_fmt_losses(rec)}  "
                     f"lr {rec['lr']:.2e}  {rec['examples_per_s']:.0f} ex/s" +
                     (f"  eta {_clock(eta)}" if eta is not None else ""))

    @contextlib.contextmanager
    def evaluating(self, examples: int):
        """Around a dev evaluation of `examples` examples; yields advance(n) for each batch scored."""
        self.message(f"evaluating on {examples} dev examples ...")
        yield lambda n=1: None

    def evaluation(self, rec: dict) -> None:
        self.message(f"eval @ step {rec['step']}: {format_metrics(rec, self.specs)}" +
                     ("  (best)" if rec.get("best") else ""))
        self.warn_undefined(rec)

    def message(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=self.stream, flush=True)


class RichReporter(PlainReporter):
    """A live progress bar with per-task losses; evaluations and warnings print above it."""

    def __init__(self):
        from rich.console import Console

        super().__init__()
        self.console = Console(stderr=True)
        self.progress = None

    def __enter__(self):
        from rich.progress import TextColumn

        self.progress = _rich_progress(TextColumn("{task.fields[info]}"), console=self.console, transient=False)
        self.progress.__enter__()
        self.task = None
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)
        return False

    def start(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
        self.total, self._t0, self._first = total_steps, time.perf_counter(), start_step
        self.steps_per_epoch, self._info = steps_per_epoch, ""
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step,
                                           info=self._line(start_step))

    def _line(self, step: int) -> str:
        return f"epoch {step / self.steps_per_epoch:.2f}  {self._info}".rstrip()

    def advance(self, step: int) -> None:
        # Every step, so the bar and its ETA move from the first steps on, not every --log-every.
        self.progress.update(self.task, completed=step, info=self._line(step))

    def step(self, rec: dict) -> None:
        self._info = f"{_fmt_losses(rec)}  {rec['examples_per_s']:.0f} ex/s"
        self.progress.update(self.task, completed=rec["step"], info=self._line(rec["step"]))

    @contextlib.contextmanager
    def evaluating(self, examples: int):
        task = self.progress.add_task("dev eval", total=examples, info="examples")
        try:
            yield lambda n=1: self.progress.advance(task, n)
        finally:
            self.progress.remove_task(task)

    def evaluation(self, rec: dict) -> None:
        self.console.print(f"eval @ step {rec['step']}: {format_metrics(rec, self.specs)}" + ("  [green](best)" if rec.get("best") else ""))
        self.warn_undefined(rec)

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)


class SilentReporter(PlainReporter):
    """Reports nothing (tests, non-zero ranks)."""

    def message(self, text: str) -> None:
        pass

    def start(self, *a) -> None:
        self.total = a[0]

    def step(self, rec: dict) -> None:
        pass

    @contextlib.contextmanager
    def evaluating(self, examples: int):
        yield lambda n=1: None

    def evaluation(self, rec: dict) -> None:
        pass


def default_reporter():
    """The command line's: a live bar on a terminal, else one line per logged step."""
    return RichReporter() if sys.stderr.isatty() else PlainReporter()


LOGGER = "bertmtl"


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a record comes (not when it was made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def library_logger() -> logging.Logger:
    """The `bertmtl` logger that `train()` reports through when Python calls it, at level INFO unless
    the caller set one. Where the application has configured logging (a handler here or on the root
    logger), its lines go there; otherwise bertmtl gives it a handler of its own on first use (stderr,
    `[HH:MM:SS] text`, as the command line prints) that does not propagate, so nothing prints twice.
    Quiet it with `logging.getLogger("bertmtl").setLevel(logging.WARNING)`."""
    log = logging.getLogger(LOGGER)
    if not getattr(log, "_bertmtl_ready", False):
        if not log.hasHandlers():
            handler = _Stderr()
            handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
            log.addHandler(handler)
            log.propagate = False
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
        log._bertmtl_ready = True
    return log


class LoggingReporter(PlainReporter):
    """`train()`'s reporter for Python callers: the command line's lines, as records of the `bertmtl`
    logger (warnings at WARNING, the rest at INFO)."""

    def message(self, text: str) -> None:
        library_logger().log(logging.WARNING if text.startswith("warning:") else logging.INFO, text)


class RunReporter:
    """A run's reporter on its main process: the console's (a Rich bar, log lines, or nothing) and
    the run's own record of what it said and how far it is, for whoever watches the run from
    elsewhere (the TUI, a later look):

    - RUN/messages.log: every message and evaluation line, timestamped (the TUI's log pane);
    - RUN/progress.json: the step bar's state (step, the bar's total, where this session started
      and when, the phase), at most every PROGRESS_EVERY_S: per-step progress and an ETA between
      the metrics log's records, which come every --log-every steps.

    Neither file may stop a run: a failed write is skipped (metrics.jsonl is the record)."""

    PROGRESS_EVERY_S = 0.5

    def __init__(self, console):
        self.console = console
        self._dir: Path | None = None
        self._pending: list[str] = []  # lines said before the run directory was known
        self._bar: dict | None = None
        self._written = 0.0

    def __getattr__(self, name):  # everything else is the console reporter's
        if name == "console":  # not set yet (a copy being made): no endless lookup
            raise AttributeError(name)
        return getattr(self.console, name)

    @property
    def specs(self):
        return self.console.specs

    @specs.setter
    def specs(self, value) -> None:
        self.console.specs = value

    def attach(self, run_dir: Path) -> None:
        """Start writing into `run_dir` (what was said before goes first)."""
        self._dir = Path(run_dir)
        pending, self._pending = self._pending, []
        for line in pending:
            self._append(line)

    def _log(self, text: str) -> None:
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}"
        if self._dir is None:
            self._pending.append(line)
        else:
            self._append(line)

    def _append(self, line: str) -> None:
        from .rundir import MESSAGES

        try:
            with open(self._dir / MESSAGES, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError:
            pass

    def _save_bar(self, force: bool = False) -> None:
        import json
        import os

        from .rundir import PROGRESS

        now = time.time()
        if self._dir is None or self._bar is None or (not force and now - self._written < self.PROGRESS_EVERY_S):
            return
        self._written = now
        path = self._dir / PROGRESS
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(json.dumps({**self._bar, "time": now}), encoding="utf-8")
            os.replace(tmp, path)  # a reader sees the old state or the new one, never half of one
        except OSError:
            pass

    def __enter__(self):
        self.console.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar["phase"] = "ended"
            self._save_bar(force=True)
        return self.console.__exit__(*exc)

    def message(self, text: str) -> None:
        self.console.message(text)
        self._log(text)

    def start(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
        self.console.start(total_steps, start_step, steps_per_epoch)
        self._bar = {"step": start_step, "total": total_steps, "start_step": start_step, "started": time.time(),
                     "steps_per_epoch": steps_per_epoch, "phase": "training"}
        self._save_bar(force=True)

    def advance(self, step: int) -> None:
        self.console.advance(step)
        if self._bar is not None:
            self._bar["step"] = step
            self._save_bar()

    def step(self, rec: dict) -> None:
        self.console.step(rec)

    @contextlib.contextmanager
    def evaluating(self, examples: int):
        if self._bar is not None:
            self._bar.update(phase="evaluating", examples=examples)
            self._save_bar(force=True)
        try:
            with self.console.evaluating(examples) as advance:
                yield advance
        finally:
            if self._bar is not None:
                self._bar["phase"] = "training"
                self._save_bar(force=True)

    def evaluation(self, rec: dict) -> None:
        self.console.evaluation(rec)
        self._log(f"eval @ step {rec['step']}: {format_metrics(rec, self.specs)}" + ("  (best)" if rec.get("best") else ""))


@contextlib.contextmanager
def progress_bar(description: str, total: int, quiet: bool = False):
    """A Rich bar on a terminal (nothing otherwise); yields `advance(n=1)`."""
    if quiet or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.console import Console

    with _rich_progress(console=Console(stderr=True), transient=True) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)


# The ETA's pace is averaged over this long (Rich's default, 30 s, holds no two samples when a step
# takes longer, as on a slow CPU, and the ETA then shows -:--:--).
ETA_WINDOW_S = 600


def _rich_progress(*extra_columns, console, transient: bool):
    """The one bar layout: the task's name, bar, done/total, any extra columns, elapsed time, ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *extra_columns,
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                    transient=transient, speed_estimate_period=ETA_WINDOW_S)
