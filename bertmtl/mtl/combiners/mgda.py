"""mgda: the multiple-gradient descent algorithm (Desideri 2012; Sener & Koltun 2018, "Multi-Task
Learning as Multi-Objective Optimization"): the minimum-norm point of the convex hull of the task
gradients, min_{w in simplex} w'Gw, a direction that decreases every task's loss (or 0 at a
Pareto-stationary point). Solved exactly (solvers.box_qp on the simplex) where Sener & Koltun
(and TorchJD) stop Frank-Wolfe after 100 steps or a step under 1e-3."""

from __future__ import annotations

import torch

from .base import Combiner, mean_weights, normalised
from .solvers import box_qp


def min_norm_weights(gram: torch.Tensor) -> torch.Tensor:
    g = normalised(gram)
    if g is None:
        return mean_weights(gram.shape[0])
    return box_qp(g, torch.zeros(g.shape[0], dtype=g.dtype), simplex=True)


class MGDA(Combiner):
    title = "MGDA: the min-norm point of the gradients' convex hull"
    paper = "https://arxiv.org/abs/1810.04650"
    vanishing = "gives the smallest gradient all the weight (the update is 0 once that gradient is)"
    stalls_on_zero = True

    def weights(self, gram, tasks):
        return min_norm_weights(gram)
