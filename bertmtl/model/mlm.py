"""The masked-LM head (BERT's: dense, activation, LayerNorm, then the word embeddings as decoder,
plus a bias), and reading one from Hugging Face directories and bertmtl checkpoints.

In the multitask model the head is the `mlm` task's (tasks/kinds.py: MaskedLM), parameters
`mlm.transform.dense.*`, `mlm.transform.LayerNorm.*`, `mlm.bias`. The decoder weight *is* the
word-embedding matrix: the head multiplies by it rather than holding a tied copy, so checkpoints
store each tensor once. HF's masked-LM classes name the same tensors their own way (BertForMaskedLM
`cls.predictions.…`, RobertaForMaskedLM and MPNetForMaskedLM `lm_head.…`, DistilBertForMaskedLM
`vocab_transform` …: each family's `mlm_names`), so a checkpoint's head (bert-base-uncased's, a
`bertmtl pretrain` run's) loads here and `bertmtl export --format hf` writes what transformers reads.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..encoders.config import BertConfig, Family
from ..errors import UserError
from .bert import _activation

# The head's own tensors. The decoder weight is absent: it is the word-embedding matrix.
HEAD_KEYS = ("transform.dense.weight", "transform.dense.bias", "transform.LayerNorm.weight",
             "transform.LayerNorm.bias", "bias")


class PredictionTransform(nn.Module):
    """dense -> activation -> LayerNorm, before the vocabulary projection."""

    def __init__(self, config: BertConfig):
        super().__init__()
        # Into the embeddings' width, whose matrix is the decoder (ELECTRA's may be narrower).
        self.dense = nn.Linear(config.hidden_size, config.embedding_width)
        self.act = _activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.embedding_width, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class MaskedLMHead(nn.Module):
    """Token states -> vocabulary logits, through the word-embedding matrix `decoder` given to forward."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = PredictionTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.initializer_range = config.initializer_range
        self.reset()

    def reset(self) -> None:
        """BERT's initialisation: N(0, 0.02) dense, identity LayerNorm, zero bias."""
        nn.init.normal_(self.transform.dense.weight, std=self.initializer_range)
        nn.init.zeros_(self.transform.dense.bias)
        nn.init.ones_(self.transform.LayerNorm.weight)
        nn.init.zeros_(self.transform.LayerNorm.bias)
        nn.init.zeros_(self.bias)

    def forward(self, hidden: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), decoder) + self.bias


def head_state(state: dict[str, torch.Tensor], family: Family, prefix: str | None = None) -> dict[str, torch.Tensor] | None:
    """The masked-LM head tensors in `state` under our names (HEAD_KEYS), from HF names of `family`
    or, with `prefix` ("mlm."), from a bertmtl checkpoint's; None when there is none, UserError when
    part of one is missing."""
    def key(k):
        names = (prefix + k,) if prefix is not None else family.mlm_names[k]
        return next((n for n in names if n in state), None)

    keys = {k: key(k) for k in HEAD_KEYS}
    present = [k for k, v in keys.items() if v is not None]
    if not present:
        return None
    if len(present) < len(HEAD_KEYS):
        missing = [(prefix + k) if prefix is not None else family.mlm_names[k][0] for k in HEAD_KEYS
                   if keys[k] is None]
        raise UserError(f"incomplete masked-LM head (missing {', '.join(missing)})")
    return {k: state[v] for k, v in keys.items()}


def source_head(directory: str | Path) -> dict[str, torch.Tensor] | None:
    """The masked-LM head an encoder directory brings (an HF directory's, or a bertmtl checkpoint's),
    under our names; None when it has none."""
    from ..runs.rundir import checkpoint_weights, is_checkpoint
    from .loading import read_config, read_state_dict

    directory = Path(directory)
    if is_checkpoint(directory):
        state, prefix = checkpoint_weights(directory), "mlm."
    else:
        state, prefix = read_state_dict(directory), None
    try:
        return head_state(state, read_config(directory).family, prefix)
    except UserError as e:
        raise UserError(f"{directory}: {e.message}") from None


def load_head(model: nn.Module, head: dict[str, torch.Tensor], source: Path) -> None:
    """Copy head tensors (our names) into the multitask model's `mlm` head."""
    own = model.mlm.state_dict()
    bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in head.items() if v.shape != own[k].shape]
    if bad:
        raise UserError(f"{source}: masked-LM head does not fit its config.json: " + "; ".join(bad))
    model.mlm.load_state_dict({k: v.to(own[k].dtype) for k, v in head.items()})


def mlm_hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Encoder and masked-LM head under the names of the family's HF masked-LM class (the tied
    decoder weight stored once, as HF does)."""
    from .loading import to_hf_key

    family = model.encoder.config.family
    out = {family.hf_prefix + to_hf_key(k, family): v for k, v in model.encoder.state_dict().items()}
    names = family.mlm_names
    out.update({names[k][0]: v for k, v in model.mlm.state_dict().items()})
    return {k: v.detach().float().contiguous().cpu() for k, v in out.items()}
