"""Callbacks: how code outside the loop watches a training run and ends it.

`train(cfg, callbacks=[...])` calls each callback's hooks on the main process, in the order given,
after bertmtl's own: every record the metrics log gets (`on_record`), each dev evaluation during
training (`on_evaluation`, which may end the run), each checkpoint written (`on_checkpoint`), the
end (`on_end`) and, whatever happened, `close`. bertmtl's own are callbacks of the same protocol:
the record sinks (the metrics log, the console, the --report-to destinations: bertmtl/sinks), then
`--patience` and a sweep's pruner (`Patience`, `Pruner`), so a logger or a stopping rule of your
own works the way they do. No torch.
"""

from __future__ import annotations

from pathlib import Path

from ..runs.status import Status

# What on_evaluation may end a run as; True means STOPPED (resumable: `--resume` goes on).
ENDINGS = (Status.STOPPED, Status.EARLY_STOPPED, Status.PRUNED)


class Callback:
    """Hooks into a training run; override the ones you need (each does nothing by default).

    Records are the dicts of RUN/metrics.jsonl (docs: Run directory and checkpoint layout): `start`
    (or `resume`), `train` every --log-every steps, `eval`, `nonfinite`, `end`.
    """

    def on_start(self, record: dict) -> None:
        """The run has started (or resumed): its start record, with the whole configuration."""

    def on_record(self, record: dict) -> bool | None:
        """Every record the metrics log gets, in order. Return True to stop the run at the end of
        this step, saving last/ (status `stopped`, resumable)."""
        return None

    def on_evaluation(self, step: int, metrics: dict, state) -> Status | bool | None:
        """After a dev evaluation during training, once last/ holds it. `metrics`: the dev scores
        (`overall`, `sst_acc`, ...); `state`: the run's counters (`step`, `best`, `since_best`). Return
        True (status `stopped`) or Status.EARLY_STOPPED / Status.PRUNED to end the run here."""
        return None

    def on_checkpoint(self, path: Path, step: int) -> None:
        """A checkpoint was written: RUN/best or RUN/last, complete."""

    def on_end(self, result) -> None:
        """The run has ended: its TrainResult (status, best checkpoint, metrics)."""

    def close(self) -> None:
        """The run is over, however it ended (after on_end; also after an error or a second signal):
        release what the callback holds, files and connections. An error here is a warning."""


class Patience(Callback):
    """--patience N: end the run after N evaluations in a row without a better overall dev score."""

    def __init__(self, evaluations: int):
        self.evaluations = evaluations

    def on_evaluation(self, step, metrics, state):
        return Status.EARLY_STOPPED if state.since_best >= self.evaluations else None


class Pruner(Callback):
    """A sweep's pruner: `judge(step, metrics) -> bool` ends a trial whose dev score lags."""

    def __init__(self, judge):
        self.judge = judge

    def on_evaluation(self, step, metrics, state):
        return Status.PRUNED if self.judge(step, metrics) else None


class Callbacks:
    """The callbacks of one run, asked as one."""

    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)
        self.stop_asked = False  # an on_record said stop
        self.recording = False  # whether the run's records go anywhere (the main process, its log open)

    def open_log(self, sinks) -> None:
        """The record sinks, first: the metrics log gets each record before anything else hears it."""
        self.callbacks[:0] = list(sinks)
        self.recording = True

    def emit(self, record: dict) -> None:
        """A record to every callback once, in order (a start or resume record: on_start first)."""
        if record.get("type") in ("start", "resume"):
            self.start(record)
        self.record(record)

    def _hooks(self, name: str):
        """Each callback's hook `name`: a Callback subclass, or any object with some of the hooks."""
        return [hook for cb in self.callbacks if (hook := getattr(cb, name, None)) is not None]

    def start(self, record: dict) -> None:
        for hook in self._hooks("on_start"):
            hook(record)

    def record(self, record: dict) -> None:
        for hook in self._hooks("on_record"):
            if hook(record):
                self.stop_asked = True

    def evaluation(self, step: int, metrics: dict, state) -> Status | None:
        """Every callback hears the evaluation; the first ending asked for is the run's (None: go on).
        An on_record that asked to stop at this step's eval record counts too."""
        ending = None
        for hook in self._hooks("on_evaluation"):
            said = hook(step, metrics, state)
            if isinstance(said, str):  # a Status (or its name)
                if said not in ENDINGS:
                    raise ValueError(f"{type(getattr(hook, '__self__', hook)).__name__}.on_evaluation returned "
                                     f"{said!r}; return True or one of {', '.join(map(str, ENDINGS))}")
                said = Status.of(said)
            elif said is not None:
                said = Status.STOPPED if bool(said) else None  # True, numpy's or torch's booleans
            ending = ending or said
        return ending or (Status.STOPPED if self.stop_asked else None)

    def checkpoint(self, path: Path, step: int) -> None:
        for hook in self._hooks("on_checkpoint"):
            hook(path, step)

    def end(self, result) -> None:
        for hook in self._hooks("on_end"):
            hook(result)

    def close(self) -> None:
        """Each callback's close, every one of them: one that fails is a warning, not a lost lock."""
        import sys

        for hook in self._hooks("close"):
            try:
                hook()
            except Exception as e:  # noqa: BLE001 - whatever a destination's client raises
                owner = type(getattr(hook, "__self__", hook)).__name__
                print(f"warning: {owner}.close(): {type(e).__name__}: {e}", file=sys.stderr)
