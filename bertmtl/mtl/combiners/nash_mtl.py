"""nash-mtl: multi-task learning as a bargaining game (Navon et al. 2022, "Multi-Task Learning as
a Bargaining Game"): the Nash bargaining solution, weights alpha > 0 with G alpha = 1/alpha
(elementwise) on the Gram matrix normalised by its Frobenius norm, recomputed every
--nash-update-every steps (the paper's speed-up; the previous weights are kept between), and
the update's norm capped at --nash-max-norm.

The paper solves the equation by a sequence of convex approximations (cvxpy, 20 at most, until
|G alpha - 1/alpha| < 1e-3); it is the stationarity condition of the strictly convex
1/2 alpha'G alpha - sum log alpha_i, solved here by Newton's method to machine precision.
"""

from __future__ import annotations

import math

import torch

from .base import Combiner, mean_weights
from .solvers import barrier_newton


class NashMTL(Combiner):
    title = "Nash-MTL: the Nash bargaining solution between the tasks"
    paper = "https://arxiv.org/abs/2202.01017"
    options = ("nash_update_every", "nash_max_norm")
    vanishing = "weights each task by about 1 / its gradient's norm"

    def __init__(self, seed: int = 0, **hyper):
        super().__init__(seed, **hyper)
        self.calls = 0
        self.alpha: dict[str, float] = {}  # the last solution, per task (kept between updates)

    def weights(self, gram, tasks):
        update = self.calls % self.hyper["nash_update_every"] == 0 or any(t not in self.alpha for t in tasks)
        self.calls += 1
        frob = float(torch.linalg.matrix_norm(gram))
        if update:
            if frob > 0 and math.isfinite(frob):
                # Solved on G / |G|_F (the solver's tolerances at unit scale), whose solution is
                # sqrt|G|_F times that of G itself.
                root = math.sqrt(frob)
                start = torch.tensor([self.alpha.get(t, 1.0) for t in tasks], dtype=torch.float64) * root
                alpha = barrier_newton(gram / frob, 1.0, start=start) / root
            else:
                alpha = mean_weights(len(tasks))
            self.alpha.update({t: float(a) for t, a in zip(tasks, alpha)})
        alpha = torch.tensor([self.alpha[t] for t in tasks], dtype=torch.float64)
        cap = self.hyper["nash_max_norm"]
        norm = math.sqrt(max(float(alpha @ gram @ alpha), 0.0))  # |sum alpha_i g_i|
        if cap > 0 and norm > cap:
            alpha = alpha * (cap / norm)
        return alpha

    def state_dict(self):
        return {}, {"calls": self.calls, "alpha": dict(self.alpha)}

    def load_state_dict(self, tensors, meta):
        self.calls, self.alpha = int(meta.get("calls", 0)), {k: float(v) for k, v in meta.get("alpha", {}).items()}
