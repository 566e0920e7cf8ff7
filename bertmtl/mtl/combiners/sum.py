"""sum: the plain sum of the task gradients (every weight 1), what single-objective training of
the summed loss does. It needs no per-task gradients, so it accumulates every task into one
buffer (unless conflict telemetry asks for them)."""

from __future__ import annotations

import torch

from .base import Combiner


class Sum(Combiner):
    title = "Sum of the task gradients"
    needs_gram = False

    def weights(self, gram, tasks):
        return torch.ones(len(tasks), dtype=torch.float64)
