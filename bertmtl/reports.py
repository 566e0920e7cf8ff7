"""`--report-to`: where a run's records go besides metrics.jsonl (which stays the source of truth).

Each destination is a small class with `write(record)` and `close()`, fed by `MetricsLog.write`,
the one place the training loop logs a record; it picks the record types it shows (`train`,
`eval`) and ignores the rest.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .errors import UserError, extra_hint


def flatten(record: dict, sep: str = "_") -> dict:
    """{"loss": {"sst": 1.2}, "lr": 1e-4} -> {"loss_sst": 1.2, "lr": 1e-4}: numbers only, one level."""
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update({f"{k}{sep}{t}": x for t, x in v.items() if _number(x)})
        elif _number(v):
            out[k] = v
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Per-record keys that are not curves: the step is the x axis; epoch, wall time and the best
# score so far are bookkeeping (the best score is the running maximum of `overall`).
_NOT_SCALARS = {"step", "time", "best_overall", "epoch"}


def require_tensorboard():
    """torch's SummaryWriter, or a UserError saying how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(f"--report-to tensorboard needs the tensorboard package: "
                        f"{extra_hint('tensorboard', 'tensorboard')}") from None
    return SummaryWriter


class TensorBoardReport:
    """Scalars in RUN/tensorboard: loss/TASK, smart/TASK, train/lr, train/examples_per_s, dev/METRIC."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        SummaryWriter = require_tensorboard()
        # On resume, events logged after the checkpoint (by the crashed or stopped process) are
        # dropped, as the run repeats those steps.
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step)

    def write(self, record: dict) -> None:
        kind = record.get("type")
        if kind == "train":
            tags = {**{f"loss/{t}": v for t, v in record.get("loss", {}).items()},
                    **{f"smart/{t}": v for t, v in record.get("smart", {}).items()},
                    "train/lr": record.get("lr"), "train/examples_per_s": record.get("examples_per_s")}
        elif kind == "eval":
            tags = {f"dev/{k}": v for k, v in flatten(record).items() if k not in _NOT_SCALARS}
        else:
            return
        for tag, value in tags.items():
            if _number(value):
                self.writer.add_scalar(tag, value, record["step"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class CsvReport:
    """RUN/train.csv and RUN/eval.csv: one row per record, one column per number (loss_sst, sst_acc, ...)."""

    FILES = {"train": "train.csv", "eval": "eval.csv"}

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.dir = Path(run_dir)
        self._files: dict[str, tuple] = {}
        if resume_step is not None:  # rows past the checkpoint are repeated by the resumed run
            for name in self.FILES.values():
                _truncate_after(self.dir / name, resume_step)

    def write(self, record: dict) -> None:
        kind = record.get("type")
        if kind not in self.FILES:
            return
        row = flatten(record)
        if kind in self._files and not set(row) <= set(self._files[kind][1].fieldnames):
            # A column appears late (a task first sampled now, with --sampling proportional):
            # reopen, and the header check below rewrites the file wider, earlier rows blank there.
            self._files.pop(kind)[0].close()
        if kind not in self._files:
            path = self.dir / self.FILES[kind]
            header = _header(path)
            if header and not set(row) <= set(header):
                header = _widen(path, list(row))
            fh = open(path, "a", newline="", encoding="utf-8")
            writer = csv.DictWriter(fh, fieldnames=header or list(row), restval="")
            if not header:
                writer.writeheader()
            self._files[kind] = (fh, writer)
        fh, writer = self._files[kind]
        writer.writerow(row)
        fh.flush()

    def close(self) -> None:
        for fh, _ in self._files.values():
            fh.close()
        self._files.clear()


def _header(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh), None)


def _widen(path: Path, keys: list[str]) -> list[str]:
    """Add the columns of `keys` that `path`'s header lacks (rows keep their values); the new header."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows, header = list(reader), list(reader.fieldnames or [])
    header += [k for k in keys if k not in header]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return header


def _truncate_after(path: Path, step: int) -> None:
    """Drop the rows of `path` whose step is past `step`."""
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or "step" not in rows[0]:
        return
    col = rows[0].index("step")
    keep = [rows[0]] + [r for r in rows[1:] if len(r) > col and float(r[col]) <= step]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(keep)


REPORTS = {"tensorboard": TensorBoardReport, "csv": CsvReport}


def open_reports(names: list[str], run_dir: Path, resume_step: int | None = None) -> list:
    """The `--report-to` destinations, opened for `run_dir` (resume_step: where a resumed run goes on)."""
    return [REPORTS[n](run_dir, resume_step) for n in names]
