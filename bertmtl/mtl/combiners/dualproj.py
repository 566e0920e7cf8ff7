"""dualproj: the mean gradient projected onto the dual cone of the task gradients (Quinton & Rey
2024; the projection of UPGrad, applied once to the average): the closest direction to the mean
that conflicts with no task."""

from __future__ import annotations

from .base import Combiner, mean_weights
from .upgrad import dual_cone_weights


class DualProj(Combiner):
    title = "DualProj: the mean projected onto the dual cone"
    paper = "https://arxiv.org/abs/2406.16232"

    def weights(self, gram, tasks):
        return dual_cone_weights(gram, mean_weights(len(tasks)))
