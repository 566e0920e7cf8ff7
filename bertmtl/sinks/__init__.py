"""Where a run's records go: each destination is one class with `write(record)` and `close()`.

The training loop emits every record once (`Run.emit`) to its sinks, in order: the metrics log
(RUN/metrics.jsonl, always: the source of truth that `bertmtl runs` and the TUI read), the
console (the progress bar or log lines), then the `--report-to` destinations. Each picks the
record types it shows (`train`, `eval`) and ignores the rest; a new destination is one class
here and its name in REPORT_TO (train_config.py).
"""

from __future__ import annotations

from pathlib import Path


class ConsoleSink:
    """The reporter's lines for train and eval records (progress.py draws them)."""

    def __init__(self, reporter):
        self.reporter = reporter

    def write(self, record: dict) -> None:
        if record.get("type") == "train":
            self.reporter.step(record)
        elif record.get("type") == "eval":
            self.reporter.evaluation(record)

    def close(self) -> None:
        pass


def _kinds() -> dict:
    from .csv import CsvSink
    from .mlflow import MlflowSink, require_mlflow
    from .tensorboard import TensorBoardSink, require_tensorboard
    from .wandb import WandbSink, require_wandb

    # name -> (the sink, what checks its packages are there; None: nothing to install)
    return {"tensorboard": (TensorBoardSink, require_tensorboard), "csv": (CsvSink, None),
            "mlflow": (MlflowSink, require_mlflow), "wandb": (WandbSink, require_wandb)}


def require_sinks(names: list[str]) -> None:
    """A UserError saying what to install, before any work, when a destination's packages are missing."""
    for n in names:
        check = _kinds()[n][1]
        if check is not None:
            check()


def report_sinks(names: list[str], run_dir: Path, resume_step: int | None = None) -> list:
    """The `--report-to` destinations, opened for `run_dir` (resume_step: where a resumed run goes on)."""
    kinds = _kinds()
    return [kinds[n][0](run_dir, resume_step) for n in names]
