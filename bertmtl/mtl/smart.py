"""SMART's smoothness-inducing adversarial regulariser (Jiang et al. 2020).

Perturb the embedding-layer outputs with small Gaussian noise, take K ascent steps on the
divergence between the clean and perturbed outputs (each step along the gradient normalised
by its per-token max norm), then return the symmetric divergence at the final perturbation.
The task loss adds weight x this term, which penalises outputs that change sharply within a
small neighbourhood of the input.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..tasks import BUILTIN, TASKS, TaskSpec, spec_of

# Each task's default weight is in its spec (the paper's, for the built-in tasks).
DEFAULT_WEIGHTS = {s.name: s.smart_weight for s in BUILTIN}


@dataclass
class SmartConfig:
    """SMART hyper-parameters (defaults from the paper)."""

    weights: dict = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    noise: float = 1e-5  # std of the initial Gaussian perturbation
    step: float = 1e-3  # ascent step size
    epsilon: float = 1e-6  # keeps the gradient normalisation finite
    steps: int = 1  # K, ascent steps

    def to_dict(self) -> dict:
        return asdict(self)


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor, reduction: str) -> torch.Tensor:
    """KL(p || q) for categorical logits, summed over classes; batch mean or sum."""
    return F.kl_div(F.log_softmax(q_logits, -1), F.log_softmax(p_logits, -1), log_target=True,
                    reduction="batchmean" if reduction == "mean" else "sum")


def _as_categorical(spec: TaskSpec, out: torch.Tensor) -> torch.Tensor:
    # A sigmoid logit is a Bernoulli distribution: logits [0, z] over (no, yes).
    return torch.stack([torch.zeros_like(out), out], -1) if spec.activation == "sigmoid" else out


def divergence(task: str | TaskSpec, adv: torch.Tensor, clean: torch.Tensor, symmetric: bool,
               reduction: str = "mean") -> torch.Tensor:
    """Symmetric KL for classification, squared error for regression; mean or sum over the batch.

    `task`: a spec, or the name of a built-in task."""
    spec = spec_of(task)
    adv, clean = adv.float(), clean.float()
    if spec.regression:
        d = F.mse_loss(adv, clean.detach(), reduction=reduction)
        return d + F.mse_loss(clean, adv.detach(), reduction=reduction) if symmetric else d
    a, c = _as_categorical(spec, adv), _as_categorical(spec, clean)
    if not symmetric:
        return _kl(c.detach(), a, reduction)
    # Each direction pulls one side only, the other held fixed (as in the reference MT-DNN code).
    return _kl(c.detach(), a, reduction) + _kl(a.detach(), c, reduction)


def example_noise(batch, shape: torch.Size, std: float, key: int, device, spec: TaskSpec | None = None) -> torch.Tensor:
    """Initial perturbation, drawn per example from (key, task, example, side).

    `spec` is the batch's task (default: the built-in task of that name).

    Keyed by example rather than drawn for the batch as a whole, so each example gets the same
    noise whichever rank or batch it lands in: N data-parallel ranks compute exactly what one
    process computes for the global batch.
    """
    rows, length, hidden = shape
    spec = spec or TASKS.get(batch.task)
    task_id = spec.seed_index + 1 if spec is not None else 0
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
    # The model's own spec of the task; a model without specs runs a built-in task.
    task = spec_of(batch.task, getattr(model, "specs", None))
    noise = example_noise(batch, embeds.shape, cfg.noise, key, embeds.device, task).to(embeds.dtype)
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
