"""imtl-g: the gradient half of Impartial MTL (Liu et al. 2021, "Towards Impartial Multi-task
Learning"): the update whose projections on every task's unit gradient are equal. With G the
Gram matrix and d its diagonal's square roots (the gradient norms), w = G^+ d, normalised to sum 1."""

from __future__ import annotations

import torch

from .base import Combiner


class IMTLG(Combiner):
    title = "IMTL-G: equal projections on every task's unit gradient"
    paper = "https://openreview.net/forum?id=IMPnRXEWpvr"
    vanishing = "gives every task the same projection on the update, so the smallest gradient sets the update's size"

    def weights(self, gram, tasks):
        v = torch.linalg.pinv(gram) @ gram.diagonal().clamp_min(0).sqrt()
        total = float(v.sum())
        return v / total if abs(total) >= 1e-12 else torch.zeros_like(v)  # no gradient at all
