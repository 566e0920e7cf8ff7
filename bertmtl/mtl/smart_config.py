"""SMART's hyper-parameters and their defaults (the paper's), read by the train options
(configuration/train_config.py: smart_weights, smart_noise, smart_step, smart_epsilon, smart_steps). No torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..tasks import TASKS


def paper_weights() -> dict[str, float]:
    """The paper's per-task weights: on for sentiment and similarity, off for paraphrase (each
    built-in task's smart_weight)."""
    return {t.name: t.smart_weight for t in TASKS.values()}


@dataclass
class SmartConfig:
    weights: dict = field(default_factory=paper_weights)  # task -> weight of its SMART term
    noise: float = 1e-5  # std of the initial Gaussian perturbation
    step: float = 1e-3  # ascent step size
    epsilon: float = 1e-6  # keeps the gradient normalisation finite
    steps: int = 1  # K, ascent steps

    @classmethod
    def of(cls, options) -> "SmartConfig":
        """The SMART options of a TrainConfig."""
        return cls(weights=dict(options.smart_weights), noise=options.smart_noise, step=options.smart_step,
                   epsilon=options.smart_epsilon, steps=options.smart_steps)

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_SMART = SmartConfig()
