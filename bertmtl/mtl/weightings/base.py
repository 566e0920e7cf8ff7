"""What every loss weighting is: per-task weights on the losses, updated from each step.

A step reads `weights()` (one float per task, fixed for the step) before its backward passes,
and after the task gradients are reduced calls `update()` with each stepped task's loss
(averaged over ranks, so that every rank keeps the same weights) and, for a method that
`needs_gram`, the Gram matrix of the weighted task gradients. A method with learned weights
(uncertainty weighting's log-variances, GradNorm's weights) returns them from `parameters()`
(on the model's device, so that their optimizer state resumes beside the rest):
the step gives them their own optimizer group (`--weighting-lr`, no weight decay), `update()`
sets their .grad, and `after_step()` runs after the optimizer moved them.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..registry import checked_hyper, hyper_of


class LossWeighting:
    name: ClassVar[str] = ""  # its --loss-weighting name: the registry's (weightings/__init__.py)
    title: ClassVar[str]
    paper: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()  # the TrainConfig fields that are its hyperparameters
    needs_gram: ClassVar[bool] = False  # update() needs the Gram matrix of the task gradients
    uses_losses: ClassVar[bool] = True  # update() reads the losses (averaged across ranks first)

    def __init__(self, tasks: list[str], steps_per_epoch: int | None = None, device: torch.device | None = None,
                 **hyper):
        """`hyper`: the method's hyperparameters, by their option names (`options`), all of them."""
        self.tasks, self.hyper = tasks, checked_hyper(type(self), hyper)
        self.index = {t: i for i, t in enumerate(tasks)}

    @classmethod
    def from_config(cls, options, tasks: list[str], steps_per_epoch: int | None = None,
                    device: torch.device | None = None) -> "LossWeighting":
        """The method with its hyperparameters read from a TrainConfig (or anything with those fields)."""
        return cls(list(tasks), steps_per_epoch, device, **hyper_of(cls, options))

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def parameters(self) -> list[torch.Tensor]:
        return []

    def update(self, losses: torch.Tensor, stepped: list[str], gram: torch.Tensor | None, scale: float = 1.0) -> None:
        """After a step's backward: `losses` (float64, one per stepped task, unweighted), `gram`
        of the weighted gradients (None unless `needs_gram`), `scale` the loss scale of fp16."""

    def after_step(self) -> None:
        """After the optimizer step."""

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """What resuming needs beyond the optimizer's state: (tensors, JSON-able meta)."""
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        pass
