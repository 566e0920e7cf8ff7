"""mean: the average of the task gradients (every weight 1/T): the sum's direction at 1/T of its
length, the learning rate's scale of the methods that normalise their weights."""

from __future__ import annotations

from .base import Combiner, mean_weights


class Mean(Combiner):
    title = "Mean of the task gradients"
    needs_gram = False

    def weights(self, gram, tasks):
        return mean_weights(len(tasks))
