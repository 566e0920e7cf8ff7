"""A `bertmtl train` child process started by `bertmtl tui --train`, and stopping it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..runs.rundir import MESSAGES, PROGRESS, TRAIN_LOG, WRITER_LOCK

# What a training that failed before it became a run leaves in its directory: its console log, what
# it said while it set up, where its bar was (and its lock, if it was killed).
FAILED_START = {TRAIN_LOG, MESSAGES, PROGRESS, WRITER_LOCK}


def plan_training(args: list[str]):
    """The TrainConfig of `bertmtl train ARGS`, checked as train checks it before anything slow
    (options, ranges, the method's options, an empty or malformed encoder name, the data files), or
    a UserError saying why it would be refused; --out and --resume are the TUI's to give."""
    import click

    from ..cli.options import resolved_options
    from ..cli.train import train
    from ..errors import UserError
    from ..encoders.hub import hub_name
    from ..configuration.train_config import check_data_files
    from ..configuration.train_config import TrainConfig

    if any(a in ("--out", "--resume") or a.startswith(("--out=", "--resume=")) for a in args):
        raise UserError("leave out --out and --resume: each new run gets a directory of its own under the runs root")
    if any(a == "--print-config" or a.startswith("--print-config=") for a in args):
        raise UserError("--print-config prints a configuration instead of training: leave it out here")
    try:
        ctx = train.make_context("train", list(args))
        with ctx:
            opts = dict(ctx.params)
            opts.pop("resume", None)
            cfg = resolved_options(TrainConfig, ctx, opts)
    except click.exceptions.Exit:
        raise UserError("--help does not start a run") from None
    except click.ClickException as e:
        raise UserError(e.format_message()) from None
    hub_name(cfg.encoder)  # ORG/NAME@ with no revision
    check_data_files(cfg)
    return cfg


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

    def discard_if_not_a_run(self) -> bool:
        """Remove the run directory when the training ended before it became a run (it holds nothing
        but what FAILED_START names): an empty-looking directory that `bertmtl runs` neither lists nor
        deletes, and that would refuse the same --out next time. True when removed."""
        import shutil

        if self.running or not self.run_dir.is_dir():
            return False
        if any(p.name not in FAILED_START for p in self.run_dir.iterdir()):
            return False
        shutil.rmtree(self.run_dir, ignore_errors=True)
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
