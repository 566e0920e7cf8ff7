"""What every gradient combiner is: the T x T Gram matrix of the tasks' gradients in, T weights out.

The update is then the weighted sum of the task gradients, sum_k w_k g_k (MultitaskStep.apply):
PCGrad's projections, MGDA's min-norm point, UPGrad's dual-cone projections, CAGrad, Nash-MTL,
... are all linear combinations of the original gradients whose coefficients depend only on
their dot products. So a combiner never touches an encoder-sized vector: the step computes
the T(T+1)/2 dot products once (one host sync) and hands the matrix here, in float64 on the host.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..registry import checked_hyper, hyper_of


class Combiner:
    """A gradient combination method; subclasses set `title`, `paper` and `weights`.

    `options`: the TrainConfig fields that are this method's hyperparameters (shown in help), given
    to the constructor by name (`from_config` reads them from a TrainConfig).
    Methods with state across steps (a generator, previous weights) return it from
    `state_dict` (tensors, JSON-able meta) and take it back in `load_state_dict`, so `--resume`
    continues exactly.
    """

    name: ClassVar[str] = ""  # its --combine name: the registry's (combiners/__init__.py)
    title: ClassVar[str]
    paper: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()
    needs_gram: ClassVar[bool] = True  # False: the weights do not look at the gradients (sum, mean, random)
    # What the method does as one task's gradient vanishes, where that task then takes the update over
    # (empty: it does not). A task whose labels are all one value has such a gradient (its head soon
    # gives that answer), so training refuses one under such a method (training/setup.py check_constant_labels).
    vanishing: ClassVar[str] = ""
    # Whether a gradient that is exactly 0 (a task with loss weight 0) stops every update.
    stalls_on_zero: ClassVar[bool] = False

    def __init__(self, seed: int = 0, **hyper):
        """`hyper`: the method's hyperparameters, by their option names (`options`), all of them."""
        self.hyper = checked_hyper(type(self), hyper)

    @classmethod
    def from_config(cls, options, seed: int) -> "Combiner":
        """The method with its hyperparameters read from a TrainConfig (or anything with those fields)."""
        return cls(seed, **hyper_of(cls, options))

    def __call__(self, gram: torch.Tensor | None, tasks: list[str]) -> torch.Tensor:
        """The weights of a step; a non-finite Gram matrix (an overflowed gradient) gets ones: the
        update is non-finite whatever they are, and the training loop's check catches it."""
        if gram is not None and not bool(torch.isfinite(gram).all()):
            return torch.ones(len(tasks), dtype=torch.float64)
        return self.weights(gram, tasks)

    def weights(self, gram: torch.Tensor | None, tasks: list[str]) -> torch.Tensor:
        """T weights (float64) for the stepped `tasks`, from their Gram matrix (None when not
        `needs_gram` and no telemetry wants it)."""
        raise NotImplementedError

    def generators(self) -> dict[str, torch.Generator]:
        """Random generators whose state resumes with the run (saved under these names)."""
        return {}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        pass


def gram_matrix(grads: list[torch.Tensor]) -> torch.Tensor:
    """The T x T matrix of dot products of flat gradients, float64 on the host (one sync).

    Dot products in the gradients' own dtype on their device, then cast: the order PCGrad has
    always used, so its updates stay bit-identical."""
    n = len(grads)
    dots = torch.stack([torch.dot(grads[i], grads[j]) for i in range(n) for j in range(i, n)]).double().cpu()
    gram = torch.empty(n, n, dtype=torch.float64)
    k = 0
    for i in range(n):
        for j in range(i, n):
            gram[i, j] = gram[j, i] = dots[k]
            k += 1
    return gram


def combine_into(out: torch.Tensor, grads: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """out = sum_k weights[k] grads[k]; `out` may be grads[0] (scaled in place before the others
    are added; the Gram matrix has read every gradient before)."""
    w = weights.to(grads[0].dtype)
    torch.mul(grads[0], float(w[0]), out=out)
    for k in range(1, len(grads)):
        out.add_(grads[k], alpha=float(w[k]))
    return out


def normalised(gram: torch.Tensor) -> torch.Tensor | None:
    """The Gram matrix divided by its trace (the squared Frobenius norm of the gradient matrix),
    None when that is 0. The methods below are invariant to the gradients' scale; normalising
    keeps their solvers' tolerances meaningful whatever it is (TorchJD instead treats a trace
    under 1e-4 as zero, which a fine-tuned encoder's gradients reach late in training)."""
    trace = float(gram.diagonal().sum())
    return gram / trace if trace > 0 and torch.isfinite(gram).all() else None


def mean_weights(n: int) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=torch.float64)
