"""A `bertmtl train` child process started by `bertmtl tui --train`, and stopping it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..rundir import TRAIN_LOG


class TrainingProcess:
    """Runs the training command in the background, its output in RUN/train.log.

    The child gets its own session: a Ctrl-C meant for the terminal does not reach it (a
    second SIGINT makes training stop without saving), and it can outlive the TUI when asked
    to keep running. Stopping sends one SIGINT: training saves RUN/last and exits, resumable.
    """

    def __init__(self, argv: list[str], run_dir: Path):
        self.argv = list(argv)
        self.run_dir = Path(run_dir)
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.log_path = self.run_dir / TRAIN_LOG

    @classmethod
    def train(cls, args: list[str], run_dir: Path) -> "TrainingProcess":
        """`bertmtl train ARGS --out RUN_DIR`: the command a user would type, in this Python."""
        return cls([sys.executable, "-m", "bertmtl", "train", *args, "--out", str(run_dir)], run_dir)

    def start(self) -> None:
        """Start the child process."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    @property
    def running(self) -> bool:
        """Whether the child has not exited yet."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> bool:
        """Ask training to save a checkpoint and exit; False when it is not running or already asked."""
        if not self.running or self.stopping:
            return False
        self.proc.send_signal(signal.SIGINT)
        self.stopping = True
        return True

    def log_tail(self, lines: int = 3) -> str:
        """The last lines the child printed (its error, when it failed)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])
