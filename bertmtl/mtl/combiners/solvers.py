"""The small exact solvers behind the Gram-matrix combiners (T x T problems, float64, on the host).

Every problem here has T unknowns (one weight per task), so a direct method that ends in a
finite number of linear solves is both faster and more accurate than a general solver:
TorchJD calls quadprog, cvxpy/Clarabel, ECOS or scipy for the same problems, at several
milliseconds a step and with a tolerance of their own; these reach machine precision in well
under a millisecond at three tasks (benchmarks/mtl_step.py --combiners prints the cost).

- `box_qp`: min 1/2 x'Qx + c'x  over  x >= 0  (and 1'x = 1 with `simplex=True`): a primal
  active-set method (Lawson-Hanson's for a general convex quadratic), exact after finitely many
  steps. UPGrad and DualProj (projections onto the dual cone), MGDA and CAGrad (the simplex).
- `barrier_newton`: the unique positive w with (Gw)_i = w_i^(-p), as the minimiser of the
  strictly convex 1/2 w'Gw - sum_i psi(w_i) with psi' = w^-p, by damped Newton: Nash-MTL (p = 1)
  and FairGrad (p = 1/alpha).
"""

from __future__ import annotations

import math

import torch

TOL = 1e-12


def _solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a x = b, in the least-squares sense where `a` is singular (rank-deficient Gram matrices:
    two tasks with the same gradient direction leave a face of optimal points; any one will do)."""
    try:
        return torch.linalg.solve(a, b)
    except RuntimeError:
        return torch.linalg.lstsq(a, b.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)


def _equality_qp(q: torch.Tensor, c: torch.Tensor, free: list[int], simplex: bool) -> torch.Tensor:
    """The minimiser over the free coordinates (the others 0), with sum = 1 when `simplex`."""
    n = len(c)
    z = torch.zeros(n, dtype=q.dtype)
    if not free:
        return z
    idx = torch.tensor(free)
    qf, cf = q[idx][:, idx], c[idx]
    if simplex:  # KKT system [[Q, 1], [1', 0]] [z; -lam] = [-c; 1]
        k = len(free)
        kkt = torch.zeros(k + 1, k + 1, dtype=q.dtype)
        kkt[:k, :k], kkt[:k, k], kkt[k, :k] = qf, 1.0, 1.0
        rhs = torch.cat([-cf, torch.ones(1, dtype=q.dtype)])
        z[idx] = _solve(kkt, rhs)[:k]
    else:
        z[idx] = _solve(qf, -cf)
    return z


def box_qp(q: torch.Tensor, c: torch.Tensor, simplex: bool = False, max_iter: int = 500) -> torch.Tensor:
    """argmin 1/2 x'Qx + c'x subject to x >= 0 (and 1'x = 1 with `simplex`), Q symmetric PSD.

    Primal active set: keep a feasible point and a set of free coordinates; move towards the
    minimiser on the free set, stopping at the first coordinate that reaches 0 (it leaves the
    set); at a free-set minimiser, free the bound coordinate whose multiplier is most negative,
    or stop when none is (the KKT conditions hold).
    """
    n = len(c)
    scale = max(float(q.diagonal().abs().max()), float(c.abs().max()), 1e-300)
    if simplex:
        x, free = torch.full((n,), 1.0 / n, dtype=q.dtype), list(range(n))
    else:
        x, free = torch.zeros(n, dtype=q.dtype), []
    for _ in range(max_iter):
        z = _equality_qp(q, c, free, simplex)
        if all(float(z[i]) > TOL for i in free):
            x = z
            grad = q @ x + c
            lam = float(grad[free].mean()) if simplex and free else 0.0
            bound = [i for i in range(n) if i not in free]
            if not bound:
                return x
            mult = grad[bound] - lam  # the multipliers of the bound constraints x_i >= 0
            j = int(torch.argmin(mult))
            if float(mult[j]) >= -1e-13 * scale:
                return x
            free.append(bound[j])
            continue
        # Step from x towards z until a free coordinate reaches 0; it becomes bound.
        step, hit = 1.0, []
        for i in free:
            if float(z[i]) <= TOL:
                t = float(x[i]) / float(x[i] - z[i]) if float(x[i] - z[i]) > 0 else 0.0
                if t < step - 1e-15:
                    step, hit = t, [i]
                elif abs(t - step) <= 1e-15:
                    hit.append(i)
        x = x + step * (z - x)
        for i in hit or [i for i in free if float(z[i]) <= TOL]:
            x[i] = 0.0
            free.remove(i)
    return x.clamp_min(0.0)


def barrier_newton(g: torch.Tensor, p: float, start: torch.Tensor | None = None, max_iter: int = 100,
                   w_max: float = 1e8) -> torch.Tensor:
    """The w > 0 with (G w)_i = w_i^(-p) for every i (p > 0), started from `start` (default ones).

    It minimises F(w) = 1/2 w'Gw - sum psi(w_i), psi(w) = log w (p = 1) or w^(1-p) / (1-p):
    strictly convex (Hessian G + p diag(w^(-p-1))), so Newton's method with a step kept inside
    w > 0 and backtracking on F converges to it quadratically. Where no solution exists (tasks in
    exact conflict: F is unbounded below along a direction G does not see) the weights grow
    until `w_max`; their combination then cancels anyway.
    """
    n = g.shape[0]
    w = torch.ones(n, dtype=g.dtype) if start is None else start.to(g.dtype).clamp_min(1e-8).clone()

    def psi(v: torch.Tensor) -> torch.Tensor:
        return torch.log(v) if p == 1.0 else v.pow(1.0 - p) / (1.0 - p)

    def objective(v: torch.Tensor) -> float:
        return float(0.5 * v @ g @ v - psi(v).sum())

    def residual(v: torch.Tensor) -> float:
        return float((g @ v - v.pow(-p)).abs().max())

    f = objective(w)
    for _ in range(max_iter):
        grad = g @ w - w.pow(-p)
        if float(grad.abs().max()) <= 1e-13 * max(1.0, float(w.pow(-p).abs().max())):
            break
        hess = g + torch.diag(p * w.pow(-p - 1.0))
        d = -_solve(hess, grad)
        neg = d < 0
        t = min(1.0, 0.99 * float((-w[neg] / d[neg]).min())) if bool(neg.any()) else 1.0
        slope = float(grad @ d)
        while t > 1e-12:
            cand = w + t * d
            fc = objective(cand)
            # Near the minimiser F changes by less than its own rounding (how much depends on the
            # CPU's arithmetic), so Armijo's test can fail on a step that is in fact better; there
            # a step that leaves F within rounding and shrinks the gradient is taken.
            flat = fc - f <= 1e-13 * max(1.0, abs(f)) and residual(cand) < float(grad.abs().max())
            if math.isfinite(fc) and (fc <= f + 1e-4 * t * slope or flat):
                break
            t *= 0.5
        else:
            break
        w, f = cand, fc
        if float(w.max()) >= w_max:
            break
    return w
