"""How a training run reports itself: a Rich progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import contextlib
import sys
import time


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
    from .tasks import BUILTIN, metric_labels

    keys = (*metric_labels(BUILTIN if specs is None else specs), ("overall", "overall"))
    # A metric evaluated but undefined (None: see evaluate.undefined_reason) shows as such, not as a gap.
    return "  ".join(f"{label} {'undefined' if m[k] is None else f'{m[k]:.3f}'}" for k, label in keys if k in m)


class PlainReporter:
    """One line per logged step and per evaluation, to stderr (pipes and logs stay readable)."""

    specs = None  # the run's tasks (set by training), which name the metrics of evaluations

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self._warned: set[str] = set()

    def warn_undefined(self, rec: dict) -> None:
        """A warning per undefined metric of an evaluation, each distinct one once per run (one
        undefined because of the dev data is so at every evaluation)."""
        from .tasks import BUILTIN, undefined_warnings

        for line in undefined_warnings(rec, BUILTIN if self.specs is None else self.specs):
            if line not in self._warned:
                self._warned.add(line)
                self.message(f"warning: {line}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
        self.total = total_steps
        self.message(f"training for {total_steps} steps ({steps_per_epoch} per epoch), starting at step {start_step}")

    def step(self, rec: dict) -> None:
        self.message(f"step {rec['step']}/{self.total}  epoch {rec['epoch']:.2f}  {_fmt_losses(rec)}  "
                     f"lr {rec['lr']:.2e}  {rec['examples_per_s']:.0f} ex/s")

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

        self.progress = _rich_progress("train", TextColumn("epoch {task.fields[epoch]:.2f}"),
                                       TextColumn("{task.fields[losses]}"), TextColumn("{task.fields[speed]}"),
                                       console=self.console, transient=False)
        self.progress.__enter__()
        self.task = None
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)
        return False

    def start(self, total_steps: int, start_step: int, steps_per_epoch: int) -> None:
        self.total = total_steps
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, epoch=0.0,
                                           losses="", speed="")

    def step(self, rec: dict) -> None:
        self.progress.update(self.task, completed=rec["step"], epoch=rec["epoch"], losses=_fmt_losses(rec),
                             speed=f"{rec['examples_per_s']:.0f} ex/s")

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

    def evaluation(self, rec: dict) -> None:
        pass


def default_reporter():
    return RichReporter() if sys.stderr.isatty() else PlainReporter()


@contextlib.contextmanager
def progress_bar(description: str, total: int, quiet: bool = False):
    """A Rich bar on a terminal (nothing otherwise); yields `advance(n=1)`."""
    if quiet or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.console import Console

    with _rich_progress(description, console=Console(stderr=True), transient=True) as p:
        task = p.add_task(description, total=total)
        yield lambda n=1: p.advance(task, n)


def _rich_progress(description: str, *extra_columns, console, transient: bool):
    """The one bar layout: name, bar, done/total, any extra columns, elapsed time, ETA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), *extra_columns,
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                    transient=transient)
