"""SMART's smoothness-inducing adversarial regulariser (Jiang et al. 2020).

Perturb the embedding-layer outputs with small Gaussian noise, take K ascent steps on the
divergence between the clean and perturbed outputs (each step along the gradient normalised
by its per-token max norm), then return the symmetric divergence at the final perturbation.
The task loss adds weight x this term, which penalises outputs that change sharply within a
small neighbourhood of the input.
"""

from __future__ import annotations

import torch

from ..tasks import TaskSpec, spec_of
from .smart_config import SmartConfig


def divergence(task: str | TaskSpec, adv: torch.Tensor, clean: torch.Tensor, symmetric: bool,
               reduction: str = "mean") -> torch.Tensor:
    """The task's output kind's divergence (symmetric KL for classes, squared error for a score);
    mean or sum over the batch. `task`: a spec, or the name of a built-in task."""
    return spec_of(task).output.divergence(adv, clean, symmetric, reduction)


def example_noise(batch, shape: torch.Size, std: float, key: int, device) -> torch.Tensor:
    """Initial perturbation, drawn per example from (key, task, example, side).

    Keyed by example rather than drawn for the batch as a whole, so each example gets the same
    noise whichever rank or batch it lands in: N data-parallel ranks compute exactly what one
    process computes for the global batch.
    """
    rows, length, hidden = shape
    task_id = batch.spec.seed_index + 1
    n = len(batch.index)
    out = torch.empty(rows, length, hidden)
    g = torch.Generator()
    for r in range(rows):
        side, i = divmod(r, n) if batch.bi_pair else (0, r)
        g.manual_seed((key * 1_000_003 + task_id * 10_007 + batch.index[i] * 2 + side) % (2**63))
        out[r] = torch.randn(length, hidden, generator=g)
    return out.mul_(std).to(device)


def smart_loss(model, batch, embeds: torch.Tensor, clean: torch.Tensor, cfg: SmartConfig, key: int = 0) -> torch.Tensor:
    """The adversarial divergence for one task batch (multiply by the task's weight).

    `model.head(batch, embeds)` maps embedding outputs to the task output; `clean` is that
    output for the unperturbed `embeds`; `key` (e.g. seed and step) seeds the initial noise.
    """
    task = batch.spec
    noise = example_noise(batch, embeds.shape, cfg.noise, key, embeds.device).to(embeds.dtype)
    for _ in range(cfg.steps):
        noise.requires_grad_(True)
        adv = model.head(batch, embeds.detach() + noise)
        # Summed, not averaged: each example's ascent direction then does not depend on how
        # many examples share its batch (the epsilon below is not scale-free).
        div = divergence(task, adv, clean.detach(), symmetric=False, reduction="sum")
        (grad,) = torch.autograd.grad(div, noise, allow_unused=True)
        grad = torch.zeros_like(noise) if grad is None else torch.nan_to_num(grad)
        # Ascent along the gradient normalised by its largest entry per token (the inf-norm).
        noise = (noise + cfg.step * grad / (grad.abs().amax(-1, keepdim=True) + cfg.epsilon)).detach()
    adv = model.head(batch, embeds + noise)
    return divergence(task, adv, clean, symmetric=True)
