"""The metrics of dev evaluation, on tensors of predictions and gold labels."""

from __future__ import annotations

import torch


def accuracy(pred: torch.Tensor, gold: torch.Tensor) -> float:
    return (pred == gold).float().mean().item()


def macro_f1(pred: torch.Tensor, gold: torch.Tensor, num_classes: int = 5) -> float:
    """Unweighted mean of per-class F1 (a class absent from both counts as F1 0)."""
    return sum(f1_of_class(pred, gold, c) for c in range(num_classes)) / num_classes


def binary_f1(pred: torch.Tensor, gold: torch.Tensor) -> float:
    """F1 of the second label (index 1, the positive class of a binary task)."""
    return f1_of_class(pred, gold, 1)


def f1_of_class(pred: torch.Tensor, gold: torch.Tensor, c: int) -> float:
    """F1 of one class (0 when it is absent from both predictions and gold)."""
    tp = ((pred == c) & (gold == c)).sum().item()
    fp = ((pred == c) & (gold != c)).sum().item()
    fn = ((pred != c) & (gold == c)).sum().item()
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks from 1, ties given their average rank (as Spearman's rho needs)."""
    x = x.double()
    order = x.argsort()
    r = torch.empty_like(x)
    r[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    values, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, r)
    counts = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(r))
    return (sums / counts)[inverse]


def spearman_rho(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Spearman rank correlation: Pearson's r of the (tie-averaged) ranks."""
    return pearson_r(ranks(x), ranks(y))


def pearson_r(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Pearson's r, or None when it is undefined: fewer than two values, or one side constant
    (no variance to correlate; reporting 0 would rank it with a model that learnt nothing)."""
    x, y = x.double(), y.double()
    xc, yc = x - x.mean(), y - y.mean()
    denom = (xc.norm() * yc.norm()).item()
    return (xc @ yc).item() / denom if denom else None
