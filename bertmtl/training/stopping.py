"""Stopping long work on a signal: the first SIGINT / SIGTERM asks it to stop at its next safe point
(a training run at the end of its step, after saving last/; a sweep after its running trials have
done so), a second one stops at once. No torch.

Schedulers (SLURM, Kubernetes, `timeout`) send one SIGTERM and expect the job to end; a person at a
terminal presses Ctrl-C, and again when they do not want to wait. One `StopRequest` is installed by
the outermost command (`bertmtl train`, or `bertmtl sweep` around all of its trials) and every run
inside asks it, so a signal between two trials is not lost and never starts the next one.

The same stop often arrives twice at once, from two senders: a terminal's Ctrl-C (SIGINT) reaches
every process of its group while torchrun's agent passes a SIGTERM on to its ranks. The other
signal within `REPEAT_S` of the first is that same stop, not a person asking for it to happen
now; the same signal again is (a person pressing Ctrl-C twice). A sweep's parent speaks to its
workers in signals of their own (WORKER_STOP, WORKER_NOW), which a worker takes for what they say
whatever else it received (a scheduler signals every process of a job).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import click

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# A sweep's parent to its workers: stop after the step, saving; stop at once.
WORKER_STOP, WORKER_NOW = signal.SIGUSR1, signal.SIGUSR2
# The other signal this soon after the first is the first one, from a second sender (see above).
REPEAT_S = 1.0
# The shell's convention for a job ended by Ctrl-C; `bertmtl train` and `sweep` exit with it when
# they stopped on a signal.
STOPPED_EXIT = 130


class Stopped(KeyboardInterrupt):
    """A KeyboardInterrupt that says what was kept and how to go on (a run stopped at once): what
    `bertmtl.train` raises, and what the CLI prints as one line (Interrupted)."""


class Interrupted(click.ClickException):
    """Work given up on a signal (the CLI's form of it): one message, no traceback, exit code 130."""

    exit_code = STOPPED_EXIT

    def show(self, file=None) -> None:
        click.echo(self.message, err=True)


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class StopRequest:
    """Whether a stop was asked for, and why; what the first and the second signal do.

    `request(reason)` is the first signal's effect (also for a watcher thread: a sweep worker
    whose parent died). Inside `immediate()`, where nothing would be saved by waiting (a run
    being set up: reading data, loading weights), even the first signal interrupts at once. To
    interrupt is to raise KeyboardInterrupt, which unwinds through every `finally` (locks
    released, sinks closed) to whoever says what was kept.
    """

    # What the first signal's message says will happen.
    RUN_STOPS = "stopping after this step and saving a checkpoint"

    def __init__(self, say=None, what: str | None = None):
        self.reason: str | None = None
        self.signals = 0
        self._first: tuple[int, float] | None = None  # the first signal and when it came
        self._told = False
        self._say, self._what = say, what
        self._immediate = 0

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def handle(self, signum, frame) -> None:
        name = signal_name(signum)
        now = time.monotonic()
        if signum == WORKER_NOW:
            raise KeyboardInterrupt(f"{self.reason or 'the sweep'}, then again")
        if signum == WORKER_STOP:
            self.request("the sweep stops")
        else:
            if self._first is not None and self._first[0] != signum and now - self._first[1] < REPEAT_S:
                return  # the same stop, from a second sender
            self.signals += 1
            if self._first is None:
                self._first = (signum, now)
            if self.signals > 1:
                raise KeyboardInterrupt(f"{name} again")
            self.request(name)
        if self._immediate:
            raise KeyboardInterrupt(self.reason)
        if not self._told and self._say is not None:
            self._told = True
            again = "Ctrl-C" if signum in (signal.SIGINT, WORKER_STOP) else name
            text = f"{self.reason}: {self._what or self.RUN_STOPS} ({again} again stops at once, without saving)"
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
def stop_on_signals(say=None, what: str | None = None, worker: bool = False):
    """SIGINT and SIGTERM (and, for a sweep's `worker`, WORKER_STOP and WORKER_NOW) set a StopRequest
    for the duration; nested uses in the main thread share the outermost one (a sweep's trials see
    the sweep's), giving it their `say` and `what` where it has none (a command installs it before
    it imports torch, so that a signal never interrupts an import: libraries that catch everything
    around theirs would go on half-imported). Elsewhere (Python installs handlers in the main thread
    only) a request of its own that no signal sets."""
    global _active
    if threading.current_thread() is not threading.main_thread():
        yield StopRequest(say, what)
        return
    if _active is not None:
        outer = _active
        outer._say = outer._say or say
        outer._what = outer._what or what
        yield outer
        return
    stop = StopRequest(say, what)
    signals = (*STOP_SIGNALS, *((WORKER_STOP, WORKER_NOW) if worker else ()))
    old = {s: signal.signal(s, stop.handle) for s in signals}
    _active = stop
    try:
        yield stop
    finally:
        _active = None
        for s, h in old.items():
            signal.signal(s, h)


def watch_parent(parent_pid: int, stop: StopRequest, interval: float = 0.5) -> threading.Thread:
    """Stop as on the parent's WORKER_STOP when `parent_pid` is no longer our parent (it died, even
    by kill -9: we were handed to another process): a sweep worker then saves its run and ends,
    instead of training on as an orphan nobody can stop."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        stop.request(f"the sweep's process {parent_pid} is gone")
        os.kill(os.getpid(), WORKER_STOP)  # the signal's path: also ends a run being set up at once

    t = threading.Thread(target=watch, name="bertmtl-parent-watch", daemon=True)
    t.start()
    return t
