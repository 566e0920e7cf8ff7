"""AdamW and AdamaxW with decoupled weight decay, vectorised with torch._foreach_* ops.

Both follow Loshchilov & Hutter's decoupled decay: parameters shrink by lr * weight_decay
before the adaptive step, instead of adding weight_decay * p to the gradient.
"""

from __future__ import annotations

import math
import re

import torch
from torch.optim import Optimizer


class _DecoupledAdamBase(Optimizer):
    """Shared plumbing: groups, lazy state, decoupled decay; subclasses supply `_step_group`."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError("lr, eps and weight_decay must be non-negative")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1): {betas}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    _state_keys: tuple[str, ...] = ()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    for k in self._state_keys:
                        st[k] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
                states.append(st)
            if not params:
                continue
            # All parameters of a group are stepped together, so one step count serves them all.
            for st in states:
                st["step"] += 1
            step = int(states[0]["step"].item())
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1.0 - group["lr"] * group["weight_decay"])
            self._step_group(group, params, grads, states, step)
        return loss

    def _step_group(self, group, params, grads, states, step: int) -> None:  # pragma: no cover
        raise NotImplementedError


class AdamW(_DecoupledAdamBase):
    """Adam (Kingma & Ba, with bias correction) plus decoupled weight decay."""

    _state_keys = ("exp_avg", "exp_avg_sq")

    def _step_group(self, group, params, grads, states, step):
        beta1, beta2 = group["betas"]
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        torch._foreach_lerp_(m, grads, 1.0 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, 1.0 - beta2)
        bias1 = 1.0 - beta1 ** step
        bias2_sqrt = math.sqrt(1.0 - beta2 ** step)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, group["eps"])
        torch._foreach_addcdiv_(params, m, denom, -group["lr"] / bias1)


class AdamaxW(_DecoupledAdamBase):
    """Adamax (the infinity-norm Adam variant) plus decoupled weight decay."""

    _state_keys = ("exp_avg", "exp_inf")

    def __init__(self, params, lr: float = 2e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _step_group(self, group, params, grads, states, step):
        beta1, beta2 = group["betas"]
        m = [s["exp_avg"] for s in states]
        u = [s["exp_inf"] for s in states]
        torch._foreach_lerp_(m, grads, 1.0 - beta1)
        torch._foreach_mul_(u, beta2)
        abs_g = torch._foreach_abs(grads)
        torch._foreach_add_(abs_g, group["eps"])
        torch._foreach_maximum_(u, abs_g)
        torch._foreach_addcdiv_(params, m, u, -group["lr"] / (1.0 - beta1 ** step))


OPTIMIZERS = {"adamw": AdamW, "adamaxw": AdamaxW}


_LAYER = re.compile(r"\.layer\.(\d+)\.")


def _depth(name: str, num_layers: int) -> int:
    """0 for embeddings, i + 1 for transformer layer i, num_layers + 1 for the rest (pooler, heads)."""
    m = _LAYER.search(name)
    if m:
        return int(m.group(1)) + 1
    return 0 if ".embeddings." in f".{name}" else num_layers + 1


def parameter_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Decay matrices only: biases and LayerNorm weights are exempt, as in BERT's recipe.

    With layer_decay < 1 (layer-wise learning-rate decay), a group's "lr_scale" is
    layer_decay ** (distance from the top): the heads and the pooler train at the full rate,
    transformer layer i of L at layer_decay ** (L - i), the embeddings at layer_decay ** (L + 1),
    so the lower layers' pretrained features move least. The training loop multiplies the
    scheduled rate by each group's lr_scale.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    layers = {int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))}
    top = len(layers) + 1
    groups: dict[tuple, dict] = {}
    for name, p in named:
        wd = 0.0 if p.ndim < 2 or "LayerNorm" in name else weight_decay
        scale = 1.0 if layer_decay == 1.0 else layer_decay ** (top - _depth(name, len(layers)))
        g = groups.setdefault((wd == 0.0, scale), {"params": [], "weight_decay": wd, "lr_scale": scale})
        g["params"].append(p)
    # Decayed groups first, then by depth (deterministic order: optimizer state is saved by index).
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], -k[1]))]


def scheduled_lr(step: int, total: int, peak: float, warmup: float, schedule: str = "linear") -> float:
    """Learning rate of 0-based `step` of `total`: linear warm-up over the first `warmup`
    fraction, then linear decay to 0 ("linear") or the peak held ("constant").
    Shared by `bertmtl train` and `bertmtl pretrain`."""
    warm = int(warmup * total)
    if step < warm:
        return peak * (step + 1) / warm
    if schedule == "constant":
        return peak
    return peak * max(0.0, (total - step) / max(1, total - warm))
