"""What a task answers for one input, as typed values: a class, a yes/no with its probability, or a
score. Each output kind (kinds.py) makes its own from the JSON it writes, so `to_dict()` there and
these agree by construction. No torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassAnswer:
    """A classification task's answer: the class, its index, every class's probability."""

    label: str
    index: int
    probabilities: tuple[float, ...]

    @property
    def probability(self) -> float:
        """The chosen class's probability."""
        return self.probabilities[self.index]


@dataclass(frozen=True)
class YesNoAnswer:
    """A binary task answered as a probability and its decision (Quora's paraphrase)."""

    probability: float
    yes: bool


@dataclass(frozen=True)
class ScoreAnswer:
    """A regression task's answer: a number on the task's range (STS similarity, 0-5)."""

    value: float


Answer = ClassAnswer | YesNoAnswer | ScoreAnswer
