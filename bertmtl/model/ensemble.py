"""An ensemble of trained multi-task models that answers as one: the mean of its members' answers.

Every surface that answers (Predictor, evaluation, the ONNX graph, the server) asks a model for
`pooled` embeddings and then for each task's `answer` from them; `Ensemble` offers the same calls.
Its embedding is its members' embeddings side by side, so the callers that index, batch and
split them by sentence need nothing of their own; `answer` cuts them apart again, asks each member
and averages what people read (class probabilities, a pair's probability, a score), never logits:
the mean of probabilities is a probability, and a regression head's calibration stays each
member's own.
"""

from __future__ import annotations

import torch
from torch import nn

from ..encoders.tokenizer import Batch
from ..errors import UserError
from .heads import MultitaskBert


class Ensemble(nn.Module):
    """Members (MultitaskBert) that share their tasks, labels, tokenizer and pair mode; answers are
    the mean of theirs. `forward(batch)` stacks the members' raw outputs and `postprocess` averages
    their post-processed ones, so `evaluate` scores an ensemble as it scores one model."""

    def __init__(self, members: list[MultitaskBert]):
        super().__init__()
        if len(members) < 2:
            raise UserError(f"an ensemble needs at least 2 members, not {len(members)}")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.cfg = first.cfg  # what callers read of it: the pair mode (cross-encoded pairs or not)
        self.specs = first.specs
        self.widths = [m.embedding_size for m in members]

    @property
    def embedding_size(self) -> int:
        return sum(self.widths)

    @property
    def encoders(self) -> list:
        return [e for m in self.members for e in m.encoders]

    def pooled(self, inputs: Batch, unpad: bool | None = None) -> torch.Tensor:
        """Each member's embeddings of the batch, side by side (batch x the members' widths summed)."""
        return torch.cat([m.pooled(inputs, unpad).float() for m in self.members], dim=-1)

    def _parts(self, x: torch.Tensor | None) -> list:
        return [None] * len(self.members) if x is None else list(x.split(self.widths, dim=-1))

    def answer(self, task: str, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of the members' answers from their parts of `u` (and `v`)."""
        return _mean(m.answer(task, a, b) for m, a, b in zip(self.members, self._parts(u), self._parts(v)))

    def pair_answer(self, task: str, u: torch.Tensor, v: torch.Tensor, joint: torch.Tensor | None) -> torch.Tensor:
        return _mean(m.pair_answer(task, a, b, j) for m, a, b, j in
                     zip(self.members, self._parts(u), self._parts(v), self._parts(joint)))

    def forward(self, batch) -> torch.Tensor:
        return torch.stack([m(batch).float() for m in self.members])

    def postprocess(self, task: str, raw: torch.Tensor) -> torch.Tensor:
        return _mean(m.postprocess(task, r) for m, r in zip(self.members, raw))

    def hf_weights(self):
        raise UserError(f"an ensemble of {len(self.members)} models has no one encoder to export as hf or "
                        f"sentence-transformers: export it as onnx (one graph), or export one of its members, or "
                        f"the soup of them (`bertmtl soup`)")


def _mean(answers) -> torch.Tensor:
    # float32 whatever the autocast: the mean of two answers is then exactly (a + b) / 2 in float32
    return torch.stack([a.float() for a in answers]).mean(0)
