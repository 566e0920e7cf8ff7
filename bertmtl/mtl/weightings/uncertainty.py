"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018): learned homoscedastic task noise.

The objective sum_k (1/2) exp(-s_k) L_k + (1/2) s_k, with s_k = log sigma_k^2 learned with the
model. The encoder sees each loss weighted by (1/2) exp(-s_k), and the gradient with respect to
s_k is (1 - exp(-s_k) L_k) / 2: a task with a large loss is trusted less. The paper derives this
form for a Gaussian likelihood (eq. 7) and exp(-s) L + s / 2 for a softmax one (eq. 10); both have
their optimum at the same weight, 1 / (2 L_k), and this single form is the one TorchJD's
scalarization.UW and LibMTL use (the tests compare with TorchJD's). s starts at 0.
"""

from __future__ import annotations

import torch

from .base import LossWeighting


class Uncertainty(LossWeighting):
    title = "Uncertainty weighting"
    paper = "Kendall et al. 2018"
    options = ("weighting_lr",)

    def __init__(self, tasks, steps_per_epoch=None, device=None, **hyper):
        super().__init__(tasks, steps_per_epoch, device, **hyper)
        self.log_var = torch.zeros(len(tasks), dtype=torch.float32, device=device, requires_grad=True)

    def weights(self) -> dict[str, float]:
        w = (0.5 * torch.exp(-self.log_var.detach())).tolist()
        return dict(zip(self.tasks, w))

    def parameters(self) -> list[torch.Tensor]:
        return [self.log_var]

    def update(self, losses, stepped, gram, scale=1.0) -> None:
        grad = torch.zeros(len(self.tasks), dtype=torch.float64)  # a task left out of the step: no gradient
        idx = torch.tensor([self.index[t] for t in stepped])
        s = self.log_var.detach().double().cpu()[idx]
        grad[idx] = 0.5 - 0.5 * torch.exp(-s) * losses
        self.log_var.grad = grad.to(self.log_var)

    def state_dict(self):
        return {"log_var": self.log_var.detach().clone()}, {}

    def load_state_dict(self, tensors, meta) -> None:
        if "log_var" in tensors:
            with torch.no_grad():
                self.log_var.copy_(tensors["log_var"])
