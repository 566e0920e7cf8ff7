"""aligned-mtl: Aligned-MTL (Senushkin et al. 2023, "Independent Component Alignment for
Multi-Task Learning"): align the principal components of the gradient matrix, making it
well-conditioned, before averaging. From the Gram matrix G = V L V' (eigenvalues above the rank
tolerance), the balance transform B = sqrt(scale) V L^-1/2 V' and the weights B (1/T), the
scale being the smallest kept eigenvalue (the paper's), their median, or their mean
(--aligned-scale)."""

from __future__ import annotations

import torch

from .base import Combiner, mean_weights


class AlignedMTL(Combiner):
    title = "Aligned-MTL: condition the gradient matrix, then average"
    paper = "https://arxiv.org/abs/2305.19000"
    options = ("aligned_scale",)
    vanishing = "scales the gradients' principal directions to one size, a vanishing gradient's too"

    def weights(self, gram, tasks):
        n = len(tasks)
        lam, vec = torch.linalg.eigh(gram)
        tol = float(lam.max()) * n * torch.finfo(gram.dtype).eps
        keep = lam > tol
        if not bool(keep.any()):
            return mean_weights(n)
        lam, vec = lam[keep], vec[:, keep]
        scale = {"min": lam.min, "median": lam.median, "mean": lam.mean}[self.hyper["aligned_scale"]]()
        balance = scale.sqrt() * (vec * lam.rsqrt()) @ vec.T
        return balance @ mean_weights(n)
