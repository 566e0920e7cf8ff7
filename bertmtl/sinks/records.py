"""What the sinks share about records: their numbers, flattened."""

from __future__ import annotations

from ..training.callbacks import Callback


def flatten(record: dict, sep: str = "_") -> dict:
    """{"loss": {"sst": 1.2}, "lr": 1e-4} -> {"loss_sst": 1.2, "lr": 1e-4}: numbers only, one level."""
    out = {}
    for k, v in record.items():
        if isinstance(v, dict):
            out.update({f"{k}{sep}{t}": x for t, x in v.items() if is_number(x)})
        elif is_number(v):
            out[k] = v
    return out


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Per-record keys that are not curves: the step is the x axis; epoch, wall time and the best
# score so far are bookkeeping (the best score is the running maximum of `overall`).
NOT_SCALARS = {"step", "time", "best_overall", "epoch"}


class GuardedSink(Callback):
    """A destination that may fail while a run trains (a tracking server gone, a locked store):
    its first error warns once and turns the sink off; the training and metrics.jsonl go on.
    Subclasses set `label` (the --report-to name) and implement `_write`."""

    label = ""
    broken = False

    def on_record(self, record: dict) -> None:
        if self.broken:
            return
        try:
            self._write(record)
        except Exception as e:  # noqa: BLE001 - whatever the destination's client raises
            self.broken = True
            warn_off(self.label, e)

    def _write(self, record: dict) -> None:
        raise NotImplementedError


def warn_off(label: str, e: Exception) -> None:
    """The one warning of a destination that failed (to open, or to write): the run goes on without it."""
    import sys

    sys.stderr.write(f"warning: --report-to {label}: {type(e).__name__}: {e}; nothing more of this run "
                     f"goes there (metrics.jsonl has it all)\n")
