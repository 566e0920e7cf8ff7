"""cagrad: Conflict-Averse Gradient descent (Liu et al. 2021, "Conflict-Averse Gradient Descent
for Multi-task Learning"): the update d maximising the worst task's improvement within a ball
around the mean gradient g0 of radius c |g0| (--cagrad-c). Its dual: w minimising
g_w . g0 + c |g0| |g_w| over the simplex (g_w = sum w_i g_i), then d = g0 + c |g0| / |g_w| g_w.

On the trace-normalised Gram matrix G that is min_w b'w + s sqrt(w'Gw), b = G 1/T,
s = c sqrt(1'G1)/T. Written as the minimum over r > 0 of b'w + s/2 (w'Gw / r + r), for fixed r it
is a simplex quadratic program (solvers.box_qp, exact) and the optimal r is the fixed point
|g_w(r)| = r, found by bracketed root finding in log r: the whole problem to machine precision,
where the paper's code calls scipy's SLSQP and TorchJD cvxpy.
"""

from __future__ import annotations

import math

import torch

from .base import Combiner, mean_weights, normalised
from .mgda import min_norm_weights
from .solvers import box_qp

NORM_EPS = 1e-4  # |g_w| below this (normalised): on the Pareto front, no update (as TorchJD)


def cagrad_weights(gram: torch.Tensor, c: float) -> torch.Tensor:
    n = gram.shape[0]
    g = normalised(gram)
    if g is None:
        return mean_weights(n)
    ones = mean_weights(n)
    b = g @ ones
    s = c * math.sqrt(max(float(ones @ g @ ones), 0.0))
    if s == 0.0:
        return ones

    def norm(w: torch.Tensor) -> float:
        return math.sqrt(max(float(w @ g @ w), 0.0))

    def solve(r: float) -> torch.Tensor:
        return box_qp(g * (s / r), b, simplex=True)

    def objective(w: torch.Tensor) -> float:
        return float(b @ w) + s * norm(w)

    # |g_w(r)| / r - 1 falls as r grows: >= 0 at the min-norm point's norm, <= 0 at the largest gradient's.
    w_mn = min_norm_weights(gram)
    lo, hi = max(norm(w_mn), 1e-12), math.sqrt(float(g.diagonal().max()))
    best = w_mn
    if hi > lo:
        w = solve(hi)
        # An exactly zero gradient puts the min-norm point at 0 (norm 0): the log stays finite.
        f_lo, f_hi = math.log(max(norm(solve(lo)), 1e-300) / lo), math.log(max(norm(w), 1e-300) / hi)
        a, z, side = math.log(lo), math.log(hi), 0
        for _ in range(200):
            if f_lo <= 0:
                w = solve(math.exp(a))
                break
            if f_hi >= 0 or z - a < 1e-13:
                break
            m = (a * f_hi - z * f_lo) / (f_hi - f_lo)  # regula falsi (Illinois) on the log ratio
            if not a < m < z:
                m = 0.5 * (a + z)
            w = solve(math.exp(m))
            f_m = math.log(max(norm(w), 1e-300)) - m
            if abs(f_m) < 1e-15:
                break
            if f_m > 0:
                a, f_lo = m, f_m
                if side == 1:
                    f_hi *= 0.5
                side = 1
            else:
                z, f_hi = m, f_m
                if side == -1:
                    f_lo *= 0.5
                side = -1
        if objective(w) < objective(best):
            best = w
    gw = norm(best)
    if gw < NORM_EPS:
        return torch.zeros(n, dtype=torch.float64)
    return ones + (s / gw) * best


class CAGrad(Combiner):
    title = "CAGrad: the best worst-task improvement near the mean gradient"
    paper = "https://arxiv.org/abs/2110.14048"
    options = ("cagrad_c",)
    vanishing = "stops updating once the gradients' min-norm point is near 0 (as it is once one gradient is)"
    stalls_on_zero = True

    def weights(self, gram, tasks):
        return cagrad_weights(gram, self.hyper["cagrad_c"])
