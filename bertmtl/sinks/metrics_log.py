"""RUN/metrics.jsonl: one JSON object per line, appended as training goes: the sink that is always
on, and the one reader of the file (runs/state.py RunState folds what it reads)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError
from ..training.callbacks import Callback


class MetricsLog(Callback):
    """Append-only JSON-lines writer; each record is flushed so readers see whole lines quickly."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._fh.tell() and not _ends_with_newline(self.path):
            # A torn last line (a crash or a full disk mid-write): end it, so the next record starts
            # a line of its own instead of being glued onto the garbage and skipped with it.
            self._fh.write("\n")
            self._fh.flush()

    def on_record(self, record: dict) -> None:
        # One write() per line, so a concurrent reader sees at most one partial line at the end.
        # (A non-finite loss is written as NaN, which Python's json reads back.)
        try:
            self._fh.write(json.dumps(record, default=str) + "\n")
            self._fh.flush()
            if record.get("type") in ("eval", "end", "start", "resume"):
                os.fsync(self._fh.fileno())
        except OSError as e:  # a full disk mid-run: a clear stop; the checkpoints are as last saved
            raise UserError(f"could not append to {self.path} ({e.strerror or e}); checkpoints saved beside it "
                            f"before (last/, best/), if any, are intact") from None

    def close(self) -> None:
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError:
                pass  # a write that failed already said so; closing only retried its buffer


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def read_records(path: str | Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete, valid records from byte `offset` on, and the offset to continue from.

    A last line without its newline is left for the next call (it is still being written);
    a garbage line is skipped.
    """
    records = []
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n")
    if end < 0:
        return records, offset
    for line in data[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records, offset + end + 1
