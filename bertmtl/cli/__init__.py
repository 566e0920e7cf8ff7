"""The `bertmtl` command line: a Click group that imports a command's module only when it runs.

No module of this package imports torch at the top (heavy imports happen inside the command
functions), so `bertmtl --help`, `--version`, a command's --help and shell completion start at
once; running a command imports only that command's module and what it needs.
"""

from __future__ import annotations

import importlib

import click

from .. import __version__
from ..errors import UserError

# command name -> module under bertmtl.cli holding a Click command of the same name
COMMANDS = {
    "download": "download",
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "tui": "tui",
    "augment": "augment",
    "pretrain": "pretrain",
    "ablate": "ablate",
    "sweep": "sweep",
    "runs": "runs",
    "export": "export",
    "ensemble": "ensemble",
    "soup": "soup",
    "serve": "serve",
    "examples": "examples",
}


def _silence_stdout() -> None:
    """Point a failed stdout at /dev/null: its unwritten buffer would fail again, with a traceback, at exit."""
    import os
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (Click's lazy-loading pattern)."""

    def __init__(self, *args, lazy_commands: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def main(self, *args, **kwargs):
        """As click's, but a failed write of --help or --version (stdout on a full disk) is one line too."""
        try:
            return super().main(*args, **kwargs)
        except OSError as e:
            import sys

            _silence_stdout()
            click.echo(f"Error: could not write: standard output: {e.strerror or e}", err=True)
            sys.exit(UserError.exit_code)

    def invoke(self, ctx: click.Context):
        """Run the command; an OSError it did not handle (stdout on a full disk or /dev/full, a
        file system gone read-only) is one `Error:` line and exit code 2, not a traceback.
        (Click itself turns a closed pipe, EPIPE, into a quiet exit.)"""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:  # one line, the shell's exit code: what was kept, where it is known
            from ..training.stopping import Interrupted, Stopped

            raise Interrupted(str(e) if isinstance(e, Stopped) else "stopped (Ctrl-C)") from None
        except OSError as e:
            import errno
            import sys

            if e.errno == errno.EPIPE:
                raise
            try:
                sys.stdout.flush()
            except OSError:  # stdout is what failed
                _silence_stdout()
                e.filename = e.filename or "standard output"
            where = f"{e.filename}: " if e.filename else ""
            raise UserError(f"could not write: {where}{e.strerror or e}") from None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands:
            module = importlib.import_module(f"{__name__}.{self.lazy_commands[name]}")
            return getattr(module, name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bertmtl")
def main() -> None:
    """Train one BERT on sentiment (SST-5), paraphrase (Quora) and similarity (STS-B) at once.

    \b
    Typical use:
      bertmtl download [mpnet]              fetch the default weights (all-MiniLM-L6-v2) or MPNet
      bertmtl train --data-dir data         train, best/last checkpoints under checkpoints/
      bertmtl predict "a sentence" "another" try the trained model
    """
    from ..training.allocator import configure_allocator
    from ..threads import configure_threads

    check_system()
    configure_allocator()  # before anything allocates tensors: see training/allocator.py
    configure_threads()  # before torch loads OpenMP: see threads.py


def check_system(platform: str | None = None) -> None:
    """bertmtl runs on POSIX systems (Linux, macOS): a run's owner lock is an fcntl lock, stopping a
    training run (the TUI's `s`, Ctrl-C) is a SIGINT, and `predict -` polls stdin with select().
    Elsewhere, one clear message at the start instead of a failure halfway through a command."""
    import sys

    platform = platform or sys.platform
    if platform.startswith("win"):
        raise UserError("bertmtl runs on Linux and macOS (it relies on POSIX file locks and signals); on Windows, "
                        "run it inside WSL 2 (Windows Subsystem for Linux)")
