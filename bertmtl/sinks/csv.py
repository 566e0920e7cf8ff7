"""`--report-to csv`: RUN/train.csv and RUN/eval.csv, one row per record."""

from __future__ import annotations

import csv
from pathlib import Path

from ..training.callbacks import Callback
from .records import flatten


class CsvSink(Callback):
    """RUN/train.csv and RUN/eval.csv: one row per record, one column per number (loss_sst, sst_acc, ...)."""

    FILES = {"train": "train.csv", "eval": "eval.csv"}

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.dir = Path(run_dir)
        self._files: dict[str, tuple] = {}
        if resume_step is not None:  # rows past the checkpoint are repeated by the resumed run
            for name in self.FILES.values():
                _truncate_after(self.dir / name, resume_step)

    def on_record(self, record: dict) -> None:
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
