"""PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning").

Works on flat per-task gradient vectors of the shared parameters. For each task i, the other
tasks are visited in random order; whenever i's (already projected) gradient conflicts with
task j's original gradient (negative dot product), it is projected onto the normal plane of
j's gradient. The projected gradients are summed.
"""

from __future__ import annotations

import torch


def pcgrad(grads: list[torch.Tensor], generator: torch.Generator | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """Combine per-task flat gradients with gradient surgery; returns their projected sum.

    `out` (optional) receives the result, so a training loop can reuse one buffer; it may be
    grads[0] itself (every gradient is read into the dot products before out is written, and
    grads[0] is scaled in place before the others are added).
    """
    if out is None:
        out = torch.empty_like(grads[0])
    if len(grads) == 1:
        return out.copy_(grads[0])
    n = len(grads)
    # Every projection is a linear combination of the original gradients, so the whole
    # algorithm needs only their T x T dot products: T(T+1)/2 passes over the flat vectors,
    # then scalar algebra (in float64, on the host: one device sync per step).
    gram = torch.empty(n, n, dtype=torch.float64)
    dots = torch.stack([torch.dot(grads[i], grads[j]) for i in range(n) for j in range(i, n)]).double().cpu()
    k = 0
    for i in range(n):
        for j in range(i, n):
            gram[i, j] = gram[j, i] = dots[k]
            k += 1
    # Track each projected gradient as coefficients over the original gradients:
    # g_i^pc = sum_k coef[i, k] g_k, so g_i^pc . g_j = coef[i] @ gram[:, j].
    coef = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        others = [j for j in torch.randperm(n, generator=generator).tolist() if j != i]
        for j in others:
            dot = coef[i] @ gram[:, j]
            if dot < 0 and gram[j, j] > 0:
                coef[i, j] -= dot / gram[j, j]
    weights = coef.sum(0).to(grads[0].dtype)  # sum_i g_i^pc = sum_k (sum_i coef[i, k]) g_k
    torch.mul(grads[0], float(weights[0]), out=out)
    for k in range(1, n):
        out.add_(grads[k], alpha=float(weights[k]))
    return out
