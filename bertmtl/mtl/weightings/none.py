"""No loss weighting: every task's loss counts once (times its --loss-weights entry)."""

from __future__ import annotations

from .base import LossWeighting


class Constant(LossWeighting):
    title = "Constant (every loss weighted 1)"
    uses_losses = False

    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.tasks, 1.0)
