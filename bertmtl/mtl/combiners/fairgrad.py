"""fairgrad: alpha-fair multi-task learning (Ban & Ji 2024, "Fair Resource Allocation in
Multi-Task Learning"): weights w > 0 with (G w)_i = w_i^(-1/alpha), alpha = --fairgrad-alpha
(alpha = 1 is proportional fairness, Nash-MTL's equation; larger alpha favours the worst task;
alpha -> 0 is the plain sum, returned as the mean for alpha = 0). The paper solves the
equation by least squares (scipy); it is the stationarity condition of a strictly convex
function, solved here by Newton's method (solvers.barrier_newton)."""

from __future__ import annotations

import math

from .base import Combiner, mean_weights
from .solvers import barrier_newton


class FairGrad(Combiner):
    title = "FairGrad: alpha-fair allocation between the tasks"
    paper = "https://arxiv.org/abs/2402.15638"
    options = ("fairgrad_alpha",)
    vanishing = "weights each task up as its gradient's norm falls (by about 1 / the norm at --fairgrad-alpha 1)"

    def weights(self, gram, tasks):
        a = self.hyper["fairgrad_alpha"]
        if a == 0 or not math.isfinite(float(gram.sum())) or float(gram.diagonal().sum()) <= 0:
            return mean_weights(len(tasks))
        return barrier_newton(gram, 1.0 / a)
