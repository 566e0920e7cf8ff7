"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018): learn loss weights that balance
the tasks' gradient norms by how fast each task trains.

With G_k = |grad of w_k L_k| over the shared encoder (the Gram matrix's diagonal: here the whole
encoder rather than the paper's last shared layer, as LibMTL does, since the per-task buffers
already hold it), G the mean of the G_k, r_k = (L_k / L_k(0)) / mean_i (L_i / L_i(0)) each task's
relative inverse training rate, and alpha the asymmetry (--gradnorm-alpha), the weights follow
the gradient of sum_k |G_k - G r_k^alpha| with the targets G r_k^alpha held constant, as the
paper prescribes: d/dw_k = sign(G_k - target_k) G_k / w_k. After each optimizer step the weights
are renormalised to sum to the number of tasks. L_k(0) is each task's first loss.
"""

from __future__ import annotations

import torch

from .base import LossWeighting


class GradNorm(LossWeighting):
    title = "GradNorm"
    paper = "Chen et al. 2018"
    options = ("gradnorm_alpha", "weighting_lr")
    needs_gram = True

    def __init__(self, tasks, steps_per_epoch=None, device=None, **hyper):
        super().__init__(tasks, steps_per_epoch, device, **hyper)
        self.w = torch.ones(len(tasks), dtype=torch.float32, device=device, requires_grad=True)
        self.alpha = hyper["gradnorm_alpha"]
        self.initial: dict[str, float] = {}  # L_k(0)

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self.w.detach().tolist()))

    def parameters(self) -> list[torch.Tensor]:
        return [self.w]

    def update(self, losses, stepped, gram, scale=1.0) -> None:
        if gram is None or not bool(torch.isfinite(gram).all()):
            self.w.grad = None  # a frozen encoder (--head-steps) or an overflow: the optimizer leaves w
            return
        grad = torch.zeros(len(self.tasks), dtype=torch.float64)
        for t, v in zip(stepped, losses.tolist()):
            self.initial.setdefault(t, v)
        idx = torch.tensor([self.index[t] for t in stepped])
        w = self.w.detach().double().cpu()[idx]
        norms = gram.diagonal().clamp_min(0).sqrt() / scale  # G_k
        start = torch.tensor([self.initial[t] for t in stepped], dtype=torch.float64)
        ratio = losses / start
        rate = ratio / ratio.mean()
        target = norms.mean() * rate.pow(self.alpha)
        step = torch.sign(norms - target) * norms / w
        if not bool(torch.isfinite(step).all()):  # a first loss of 0: no training rate to balance
            self.w.grad = None
            return
        grad[idx] = step
        self.w.grad = grad.to(self.w)

    def after_step(self) -> None:
        with torch.no_grad():
            self.w.clamp_(min=1e-4)
            self.w.mul_(len(self.tasks) / self.w.sum())

    def state_dict(self):
        return {"w": self.w.detach().clone()}, {"initial": self.initial}

    def load_state_dict(self, tensors, meta) -> None:
        if "w" in tensors:
            with torch.no_grad():
                self.w.copy_(tensors["w"])
        self.initial = dict(meta.get("initial", {}))
