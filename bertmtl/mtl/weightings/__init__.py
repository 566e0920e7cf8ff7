"""Loss weightings: how much each task's loss counts in a step (`--loss-weighting NAME`).

An axis of its own beside the gradient combiner (combiners/): a weighting scales each task's
loss before its backward, so its gradient buffer holds the gradient of the weighted loss, and
the combiner then combines those as always (the plain sum gives the papers' setting). One small
module and one class (base.LossWeighting) per method; REGISTRY maps the names to them.
"""

from __future__ import annotations

from .base import LossWeighting
from .dwa import DWA
from .gradnorm import GradNorm
from .none import Constant
from .uncertainty import Uncertainty

REGISTRY: dict[str, type[LossWeighting]] = {w.name: w for w in (Constant, Uncertainty, DWA, GradNorm)}


def make_weighting(cfg, tasks: list[str], steps_per_epoch: int | None = None, device=None) -> LossWeighting:
    return REGISTRY[cfg.loss_weighting](cfg, list(tasks), steps_per_epoch, device)


__all__ = ["LossWeighting", "REGISTRY", "make_weighting"]
