"""The one rule for numbers a user gives: options, config files, task declarations, checkpoints.

No imports beyond the standard library, so the option definitions (train_config.py), the task
specs (tasks.py) and the CLI types share it without pulling in torch.
"""

from __future__ import annotations

import math

# Training computes in float32: a larger float overflows to inf when it meets a tensor.
FLOAT32_MAX = 3.4028234663852886e38


def number_problem(value: int | float, min=None, max=None, min_open=False, max_open=False) -> str | None:
    """Why a number is not allowed (None when it is): the one rule for every numeric option.

    A number must be finite (NaN compares False with every bound, so a range check alone lets
    it through; inf passes a range with no upper bound) and within [min, max], either end open.
    Used by TrainConfig.validate (command line, --config files, Python callers), the Click
    types of every command's numeric options (cli/options.py) and the other commands' configs.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, float) and abs(value) > FLOAT32_MAX:
        return f"must be at most {FLOAT32_MAX:.4g} in size (training computes in float32)"
    if min is not None and (value < min or (min_open and value == min)):
        return f"must be {'>' if min_open else '>='} {min}"
    if max is not None and (value > max or (max_open and value == max)):
        return f"must be {'<' if max_open else '<='} {max}"
    return None
