"""The one rule for the numbers people and files give: options (command line, --config files, Python
callers), sweep specs, task declarations, encoder configs, checkpoint files and heads.json.
Nothing but math: every layer may ask it."""

from __future__ import annotations

import math

# Training computes in float32: a larger finite number becomes inf there.
FLOAT32_MAX = 3.4028234663852886e38


def finite_number(v) -> float | None:
    """`v` as a float when it is a finite number (not a bool); None otherwise: an undefined metric,
    NaN, or something that is not a number at all (a log line's garbage)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def is_finite(v) -> bool:
    """Whether `v` is a finite number (finite_number)."""
    return finite_number(v) is not None


def number_problem(value, min=None, max=None, min_open=False, max_open=False, whole=False) -> str | None:
    """Why `value` is not an allowed number (None when it is).

    A number is an int or a float, never a bool (YAML's true/false), an int where `whole`; finite
    (NaN compares False with every bound, so a range check alone lets it through; inf passes a
    range with no upper bound), within float32, and within [min, max], either end open.
    """
    if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
        return "must be a whole number" if whole else "must be a number"
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, float) and abs(value) > FLOAT32_MAX:
        return f"must be at most {FLOAT32_MAX:.4g} in size (training computes in float32)"
    if min is not None and (value < min or (min_open and value == min)):
        return f"must be {'>' if min_open else '>='} {min}"
    if max is not None and (value > max or (max_open and value == max)):
        return f"must be {'<' if max_open else '<='} {max}"
    return None
