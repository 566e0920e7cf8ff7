"""upgrad: Unconflicting Projection of Gradients (Quinton & Rey 2024, "Jacobian Descent for
Multi-Objective Optimization"): each task's gradient, scaled by 1/T, projected onto the dual cone
of all of them (the directions that conflict with none), then summed.

Projecting J'u onto the dual cone is J'v with v = argmin v'Gv subject to v >= u (the paper's
Proposition 1); the weights are the sum of the T solutions. As in the paper's implementation,
G is normalised by its trace and 1e-4 I is added, which makes the problem strictly convex.
"""

from __future__ import annotations

import torch

from .base import Combiner, mean_weights, normalised
from .solvers import box_qp

REG = 1e-4


def dual_cone_weights(gram: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """v = argmin v'Gv s.t. v >= u, for the trace-normalised, regularised G: with v = u + x,
    x >= 0 minimises 1/2 x'Gx + (Gu)'x."""
    g = normalised(gram)
    if g is None:
        return u.clone()
    g = g + REG * torch.eye(g.shape[0], dtype=g.dtype)
    return u + box_qp(g, g @ u)


class UPGrad(Combiner):
    title = "UPGrad: each gradient projected onto the dual cone, averaged"
    paper = "https://arxiv.org/abs/2406.16232"

    def weights(self, gram, tasks):
        n = len(tasks)
        u = mean_weights(n)
        return sum(dual_cone_weights(gram, u[i] * torch.eye(n, dtype=torch.float64)[i]) for i in range(n))
