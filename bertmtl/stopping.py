"""Stopping long work on a signal: the first SIGINT / SIGTERM asks it to stop at its next safe
point (a training run at the end of its step, after saving last/; a sweep after its running
trials have done so), a second one stops at once. No torch.

Schedulers (SLURM, Kubernetes, `timeout`) send one SIGTERM and expect the job to end; a person
at a terminal presses Ctrl-C, and again when they do not want to wait. One `StopRequest` is
installed by the outermost command (`bertmtl train`, or `bertmtl sweep` around all of its
trials) and every run inside asks it, so a signal between two trials is not lost and never
starts the next one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import click

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The shell's convention for a job ended by Ctrl-C; `bertmtl train` and `sweep` exit with it when
# they stopped on a signal (checkpoint saved, resumable).
STOPPED_EXIT = 130


class Interrupted(click.ClickException):
    """Work given up without reaching a safe point (a second signal, or a signal while a run was
    still being set up): one message, no traceback, exit code 130."""

    exit_code = STOPPED_EXIT

    def show(self, file=None) -> None:
        click.echo(self.message, err=True)


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopRequest:
    """Whether a stop was asked for, and why; what the first and the second signal do.

    `request(reason)` is the first signal's effect (also for a watcher thread: a sweep worker
    whose parent died). Inside `immediate()`, where nothing would be saved by waiting (a run
    being set up: reading data, loading weights), even the first signal interrupts at once.
    """

    # What the first signal's message says will happen.
    RUN_STOPS = "stopping after this step and saving a checkpoint"

    def __init__(self, say=None, what: str = RUN_STOPS):
        self.reason: str | None = None
        self.signals = 0
        self._say, self._what = say, what
        self._immediate = 0

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def handle(self, signum, frame) -> None:
        self.signals += 1
        name = signal_name(signum)
        if self.signals > 1 or self._immediate:
            raise KeyboardInterrupt(name)  # unwinds through every finally: locks released, sinks closed
        self.request(name)
        if self._say is not None:
            text = f"{self.reason}: {self._what} ({name} again stops at once, without saving)"
            try:
                self._say(text)
            except RuntimeError:  # the signal came while that stream was mid-write: write around it
                os.write(2, (text + "\n").encode())

    @contextlib.contextmanager
    def immediate(self):
        """A stretch where a signal interrupts at once (a stop asked for before it interrupts on entry)."""
        if self.requested:
            raise KeyboardInterrupt(self.reason)
        self._immediate += 1
        try:
            yield
        finally:
            self._immediate -= 1


_active: StopRequest | None = None


@contextlib.contextmanager
def stop_on_signals(say=None, what: str = StopRequest.RUN_STOPS):
    """SIGINT and SIGTERM set the active StopRequest for the duration; nested uses share the
    outermost one (a sweep's trials see the sweep's). Outside the main thread (where Python
    cannot install handlers) a request that no signal sets."""
    global _active
    if _active is not None:
        yield _active
        return
    stop = StopRequest(say, what)
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, stop.handle) for s in STOP_SIGNALS}
    _active = stop
    try:
        yield stop
    finally:
        _active = None
        for s, h in old.items():
            signal.signal(s, h)


def watch_parent(parent_pid: int, stop: StopRequest, interval: float = 0.5) -> threading.Thread:
    """Stop as on a scheduler's SIGTERM when `parent_pid` is no longer our parent (it died, even by
    kill -9: we were handed to another process): a sweep worker then saves its run and ends,
    instead of training on as an orphan nobody can stop."""
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        stop.request(f"the sweep's process {parent_pid} is gone")
        os.kill(os.getpid(), signal.SIGTERM)  # the signal's path: also ends a run being set up at once

    t = threading.Thread(target=watch, name="bertmtl-parent-watch", daemon=True)
    t.start()
    return t
