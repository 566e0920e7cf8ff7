"""What the sinks share about records: their numbers, flattened."""

from __future__ import annotations


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
