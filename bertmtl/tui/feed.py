"""Following RUN/metrics.jsonl while training appends to it (the state it describes is
runs/state.py RunState, the one fold of the log, which `bertmtl runs` reads too).

Nothing here imports Textual: the tail and the state are plain objects, driven by the app.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..sinks.metrics_log import read_records


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


class LineTail:
    """The lines appended to a text file (a run's messages.log) since the last poll: complete lines
    only; a replaced or truncated file is read again from its start (reset)."""

    MAX_READ = 1 << 20  # a first look at a long log reads its last megabyte

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.offset = 0
        self._identity: tuple[int, int] | None = None

    def poll(self) -> tuple[list[str], bool]:
        """(new lines, whether to forget the earlier ones)."""
        try:
            st = self.path.stat()
        except OSError:
            return [], False
        identity = (st.st_dev, st.st_ino)
        reset = self._identity is not None and (identity != self._identity or st.st_size < self.offset)
        if reset or self._identity is None:
            self.offset = max(0, st.st_size - self.MAX_READ)
        self._identity = identity
        if st.st_size == self.offset:
            return [], reset
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(st.st_size - self.offset)
        except OSError:
            return [], reset
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self.offset += end
        return data[:end].decode("utf-8", "replace").splitlines(), reset


def read_progress(path: str | Path) -> dict | None:
    """A run's progress.json (replaced whole, so never half-written); None when missing or unreadable."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
