"""A run's status: what each one means, asked by every surface instead of comparing strings. No torch.

A run's end record (metrics.jsonl) and summary.json carry the value; a run without an end record
is running (a process holds its writer lock) or crashed. Members are strings too, so records
written before this type existed read the same.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    WAITING = "waiting"  # no record yet
    RUNNING = "running"  # no end record since the last start, and a process holds the run
    FINISHED = "finished"  # trained to the end of its schedule
    EARLY_STOPPED = "early-stopped"  # --patience: no better dev score for a while
    PRUNED = "pruned"  # a sweep's pruner ended it
    NONFINITE = "nonfinite"  # the losses or weights became NaN/inf
    PAUSED = "paused"  # at --stop-at-step, before the end of its schedule
    STOPPED = "stopped"  # a signal: last/ saved at the end of the step
    INTERRUPTED = "interrupted"  # a second signal: stopped at once, last/ is the previous save
    CRASHED = "crashed"  # no end record and nobody writing: killed, or an error

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, value) -> "Status":
        """The status a record or summary names; an unknown or missing value (another version's) is CRASHED."""
        try:
            return cls(value)
        except ValueError:
            return cls.CRASHED

    @property
    def final(self) -> bool:
        """Over for good: resuming would not train it further (its result stands)."""
        return self in (Status.FINISHED, Status.EARLY_STOPPED, Status.PRUNED, Status.NONFINITE)

    @property
    def resumable(self) -> bool:
        """Ended before its schedule did, in a way `--resume` continues (from last/, when it has one)."""
        return self in (Status.PAUSED, Status.STOPPED, Status.INTERRUPTED, Status.CRASHED)

    @property
    def succeeded(self) -> bool:
        """Trained as far as it was meant to, with scores that stand (a sweep's finished seed)."""
        return self in (Status.FINISHED, Status.EARLY_STOPPED)

    @property
    def needs_last(self) -> bool:
        """Its last/ is still of use: what resumes it, what a live run writes, or the last good weights
        of one that diverged. A run that trained as far as it was meant to (or was pruned) has best/."""
        return self not in (Status.FINISHED, Status.EARLY_STOPPED, Status.PRUNED)

    @property
    def live(self) -> bool:
        """Still going (or about to)."""
        return self in (Status.WAITING, Status.RUNNING)

    @property
    def tracker_state(self) -> str:
        """The state an experiment tracker's run ends in (MLflow's names: FINISHED, KILLED, FAILED)."""
        if self.succeeded:
            return "FINISHED"
        if self in (Status.PRUNED, Status.PAUSED, Status.STOPPED, Status.INTERRUPTED):
            return "KILLED"  # ended by someone's decision, not by an error
        return "FAILED"

    @property
    def style(self) -> str:
        """Its colour in tables and the TUI."""
        if self.succeeded:
            return "green"
        if self.live:
            return "cyan"
        if self in (Status.NONFINITE, Status.CRASHED):
            return "red"
        return "yellow"
