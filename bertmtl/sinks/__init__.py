"""Where a run's records go: each destination is a training callback (training/callbacks.py) whose
`on_record(record)` writes a record and `close()` lets go of its files and connections.

The training loop emits every record once (`Run.emit`) to its callbacks, sinks first, in order:
the metrics log (RUN/metrics.jsonl, always: the source of truth that `bertmtl runs` and the TUI
read), the console (the progress bar or log lines), then the `--report-to` destinations; then
--patience, a sweep's pruner and the caller's callbacks. Each sink picks the record types it shows
(`train`, `eval`) and ignores the rest; a new destination is one class here and its name in
REPORT_TO (configuration/train_config.py).
"""

from __future__ import annotations

from pathlib import Path

from ..training.callbacks import Callback


class ConsoleSink(Callback):
    """The reporter's lines for train and eval records (runs/progress.py draws them)."""

    def __init__(self, reporter):
        self.reporter = reporter

    def on_record(self, record: dict) -> None:
        if record.get("type") == "train":
            self.reporter.step(record)
        elif record.get("type") == "eval":
            self.reporter.evaluation(record)


def _kinds() -> dict:
    from .csv import CsvSink
    from .mlflow import MlflowSink, check_mlflow
    from .tensorboard import TensorBoardSink, require_tensorboard
    from .wandb import WandbSink, check_wandb

    # name -> (the sink, what checks it can be reached from the run's directory-to-be: its packages,
    # its settings, its store; None: nothing to check)
    return {"tensorboard": (TensorBoardSink, lambda run_dir: require_tensorboard()), "csv": (CsvSink, None),
            "mlflow": (MlflowSink, check_mlflow), "wandb": (WandbSink, check_wandb)}


def require_sinks(names: list[str], run_dir: Path) -> None:
    """A UserError, before the run's directory `run_dir` is made (or written, on resume), when a
    destination cannot be used: its packages missing, its settings wrong, its store unreachable."""
    for n in names:
        check = _kinds()[n][1]
        if check is not None:
            check(Path(run_dir))


def report_sinks(names: list[str], run_dir: Path, resume_step: int | None = None) -> list:
    """The `--report-to` destinations, opened for `run_dir` (resume_step: where a resumed run goes on).

    One that fails to open (require_sinks checked it before the run began: a store gone since) is
    left out with one warning, as GuardedSink does with one that fails later: the run goes on."""
    from .records import warn_off

    kinds, sinks = _kinds(), []
    for n in names:
        try:
            sinks.append(kinds[n][0](run_dir, resume_step))
        except Exception as e:  # noqa: BLE001 - whatever the destination's client raises
            warn_off(n, e)
    return sinks
