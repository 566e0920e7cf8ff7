"""pcgrad: gradient surgery (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning").

For each task i, the other tasks are visited in random order; whenever i's (already projected)
gradient conflicts with task j's original gradient (negative dot product), it is projected
onto the normal plane of j's gradient; the projected gradients are summed. Every projection is
a linear combination of the original gradients, so the method is scalar algebra on their Gram
matrix: coefficients over the originals, coef[i] @ gram[:, j] being g_i^pc . g_j.
"""

from __future__ import annotations

import torch

from .base import Combiner, combine_into, gram_matrix


def pcgrad_weights(gram: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The weights w with sum_i g_i^pc = sum_k w_k g_k."""
    n = gram.shape[0]
    coef = torch.eye(n, dtype=torch.float64)
    for i in range(n):
        others = [j for j in torch.randperm(n, generator=generator).tolist() if j != i]
        for j in others:
            dot = coef[i] @ gram[:, j]
            if dot < 0 and gram[j, j] > 0:
                coef[i, j] -= dot / gram[j, j]
    return coef.sum(0)


def pcgrad(grads: list[torch.Tensor], generator: torch.Generator | None = None,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """The PCGrad combination of flat gradients, into `out` (which may be grads[0])."""
    if len(grads) == 1:
        return grads[0].clone() if out is None else out.copy_(grads[0])
    weights = pcgrad_weights(gram_matrix(grads), generator)
    return combine_into(torch.empty_like(grads[0]) if out is None else out, grads, weights)


class PCGrad(Combiner):
    title = "PCGrad: project away conflicting components"
    paper = "https://arxiv.org/abs/2001.06782"

    def __init__(self, seed: int = 0, **hyper):
        super().__init__(seed, **hyper)
        self.gen = torch.Generator().manual_seed(seed)

    def generators(self):
        return {"pcgrad": self.gen}  # the name runs saved before the combiners were objects use

    def weights(self, gram, tasks):
        if len(tasks) == 1:
            return torch.ones(1, dtype=torch.float64)
        return pcgrad_weights(gram, self.gen)
