"""Loss weightings: how much each task's loss counts in a step (`--loss-weighting NAME`).

An axis of its own beside the gradient combiner (combiners/): a weighting scales each task's
loss before its backward, so its gradient buffer holds the gradient of the weighted loss, and
the combiner then combines those as always (the plain sum gives the papers' setting). One small
module and one class (base.LossWeighting) per method; REGISTRY maps the names to them.
"""

from __future__ import annotations

import importlib

from ..registry import Registry

REGISTRY = Registry(__name__, {"none": "none:Constant", "uncertainty": "uncertainty:Uncertainty", "dwa": "dwa:DWA",
                               "gradnorm": "gradnorm:GradNorm"})


def make_weighting(cfg, tasks: list[str], steps_per_epoch: int | None = None, device=None):
    """The --loss-weighting method of a TrainConfig, with its hyperparameters."""
    return REGISTRY[cfg.loss_weighting].from_config(cfg, tasks, steps_per_epoch, device)


def __getattr__(name: str):
    if name == "LossWeighting":  # imported on first use: the registry's names need no torch
        return importlib.import_module(".base", __name__).LossWeighting
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LossWeighting", "REGISTRY", "make_weighting"]
