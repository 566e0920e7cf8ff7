"""random: Random Loss Weighting (RLW; Lin et al. 2022, "Reasonable Effectiveness of Random
Weighting"): fresh weights every step, the softmax of T standard normal draws."""

from __future__ import annotations

import torch

from .base import Combiner


class RandomWeights(Combiner):
    title = "Random weights (RLW): softmax of normal draws"
    paper = "https://arxiv.org/abs/2111.10603"
    needs_gram = False

    def __init__(self, seed: int = 0, **hyper):
        super().__init__(seed, **hyper)
        self.gen = torch.Generator().manual_seed(seed)

    def generators(self):
        return {"combine": self.gen}

    def weights(self, gram, tasks):
        return torch.softmax(torch.randn(len(tasks), generator=self.gen, dtype=torch.float64), dim=0)
