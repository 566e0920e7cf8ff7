"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019, "End-to-end multi-task learning with
attention"): weight each task by how slowly its loss has been falling.

lambda_k = K exp(w_k / T) / sum_i exp(w_i / T), with w_k = L_k(t-1) / L_k(t-2) the ratio of the
task's mean training loss over the two previous periods, T the temperature (--dwa-temperature,
2 in the paper), K the number of tasks; uniform (1) until two periods are complete. The paper's
period is an epoch; --dwa-window N uses N steps instead (a fine-tune of a few epochs has few).
"""

from __future__ import annotations

import math

import torch

from .base import LossWeighting


class DWA(LossWeighting):
    title = "Dynamic Weight Average"
    paper = "Liu et al. 2019"
    options = ("dwa_temperature", "dwa_window")

    def __init__(self, tasks, steps_per_epoch=None, device=None, **hyper):
        super().__init__(tasks, steps_per_epoch, device, **hyper)
        self.window = hyper["dwa_window"] or steps_per_epoch or 1
        self.temperature = hyper["dwa_temperature"]
        self._reset_period()
        self.previous: list[list[float]] = []  # the last two periods' mean losses, oldest first
        self.steps = 0
        self._weights = dict.fromkeys(tasks, 1.0)

    def _reset_period(self) -> None:
        self.sums = [0.0] * len(self.tasks)
        self.counts = [0] * len(self.tasks)

    def weights(self) -> dict[str, float]:
        return dict(self._weights)

    def update(self, losses, stepped, gram, scale=1.0) -> None:
        for t, v in zip(stepped, losses.tolist()):
            self.sums[self.index[t]] += v
            self.counts[self.index[t]] += 1
        self.steps += 1
        if self.steps % self.window:
            return
        # The end of a period: its means roll the history; a task it never stepped keeps its last.
        last = self.previous[-1] if self.previous else [math.nan] * len(self.tasks)
        means = [s / c if c else last[i] for i, (s, c) in enumerate(zip(self.sums, self.counts))]
        self.previous = [*self.previous, means][-2:]
        self._reset_period()
        if len(self.previous) == 2:
            rates = torch.tensor([new / old for old, new in zip(*self.previous)], dtype=torch.float64)
            if bool(torch.isfinite(rates).all()):
                w = len(self.tasks) * torch.softmax(rates / self.temperature, dim=0)
                self._weights = dict(zip(self.tasks, w.tolist()))

    def state_dict(self):
        return {}, {"sums": self.sums, "counts": self.counts, "previous": self.previous, "steps": self.steps,
                    "weights": self._weights}

    def load_state_dict(self, tensors, meta) -> None:
        if meta:
            self.sums, self.counts = list(meta["sums"]), list(meta["counts"])
            self.previous, self.steps = [list(p) for p in meta["previous"]], meta["steps"]
            self._weights = dict(meta["weights"])
