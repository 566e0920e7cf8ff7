"""Task-conflict telemetry: what the Gram matrix of the tasks' gradients says about each step.

Everything comes from the T x T matrix a combiner already has (no pass over the gradients):
each pair's gradient cosine G_ij / sqrt(G_ii G_jj), each task's gradient norm, whether a pair
conflicts (cosine < 0), and how far the combiner moved the update d = sum w_k g_k from the plain
sum s = sum g_k: cos(d, s) = w'G1 / (|d| |s|) and |d| / |s|, with |d|^2 = w'Gw, |s|^2 = 1'G1.

`ConflictWindow` averages them over the steps between two log records, which get
    "cos": {"sst-para": mean cosine, ...}, "conflict": {"sst-para": fraction of steps < 0, ...},
    "grad_norm": {task: mean}, "weight": {task: the combiner's mean weight},
    "conflicting": mean fraction of conflicting pairs, "update_cos", "update_norm_ratio",
    and with a loss weighting "loss_weight": {task: its mean weight}.
Pairs are named "a-b" in the order of the tasks (task names have no "-"). runs/state.py RunState folds
them back (curves for the TUI, `conflict_summary` for `bertmtl runs --json`).
"""

from __future__ import annotations

import math

import torch


def pair_name(a: str, b: str) -> str:
    return f"{a}-{b}"


def step_stats(gram: torch.Tensor, weights: torch.Tensor, tasks: list[str]) -> dict:
    """One step's statistics (plain floats) from its Gram matrix and the combiner's weights."""
    g = gram.double()
    norms = g.diagonal().clamp_min(0).sqrt()
    n = len(tasks)
    cos = {}
    for i in range(n):
        for j in range(i + 1, n):
            denom = float(norms[i] * norms[j])
            cos[pair_name(tasks[i], tasks[j])] = float(g[i, j]) / denom if denom > 0 else 0.0
    w = weights.double()
    ones = torch.ones(n, dtype=torch.float64)
    d2, s2, ds = float(w @ g @ w), float(ones @ g @ ones), float(w @ g @ ones)
    d, s = math.sqrt(max(d2, 0.0)), math.sqrt(max(s2, 0.0))
    return {"cos": cos, "grad_norm": {t: float(v) for t, v in zip(tasks, norms)},
            "weight": {t: float(v) for t, v in zip(tasks, w)},
            "update_cos": ds / (d * s) if d > 0 and s > 0 else None,
            "update_norm_ratio": d / s if s > 0 else None}


class ConflictWindow:
    """Means of the step statistics between two log records (steps with a task left out by
    --sampling proportional count for the pairs and tasks they have)."""

    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self.sums: dict[str, dict[str, float]] = {k: {} for k in ("cos", "conflict", "grad_norm", "weight",
                                                                  "loss_weight")}
        self.counts: dict[str, dict[str, int]] = {k: {} for k in self.sums}
        self.scalars: dict[str, list[float]] = {"conflicting": [], "update_cos": [], "update_norm_ratio": []}

    def _put(self, kind: str, key: str, v: float) -> None:
        self.sums[kind][key] = self.sums[kind].get(key, 0.0) + v
        self.counts[kind][key] = self.counts[kind].get(key, 0) + 1

    def add(self, stats: dict) -> None:
        put = self._put
        for pair, c in stats["cos"].items():
            put("cos", pair, c)
            put("conflict", pair, 1.0 if c < 0 else 0.0)
        for kind in ("grad_norm", "weight"):
            for t, v in stats[kind].items():
                put(kind, t, v)
        if stats["cos"]:
            self.scalars["conflicting"].append(sum(c < 0 for c in stats["cos"].values()) / len(stats["cos"]))
        for k in ("update_cos", "update_norm_ratio"):
            if stats[k] is not None:
                self.scalars[k].append(stats[k])

    def add_loss_weights(self, weights: dict[str, float]) -> None:
        """The loss weighting's weights of one step (mtl/weightings/)."""
        for t, v in weights.items():
            self._put("loss_weight", t, v)

    def record(self) -> dict:
        """The window's means (nothing when no step had statistics), then start a new window."""
        out: dict = {}
        for kind, sums in self.sums.items():
            if sums:
                out[kind] = {k: v / self.counts[kind][k] for k, v in sums.items()}
        for k, vs in self.scalars.items():
            if vs:
                out[k] = sum(vs) / len(vs)
        self._reset()
        return out

