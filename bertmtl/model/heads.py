"""One head per task on one shared encoder, and their losses; each built from its TaskSpec.

Single-sentence tasks: a linear layer over the sentence embedding -> one logit per class (or
one logit / score). Sentence pairs, bi-encoder (default): the cosine similarity of the two sentence
embeddings, scaled (a learned scale and offset), plus a small MLP over [u, v, |u-v|, u*v]
(or, as an option, the order-free [u+v, |u-v|, u*v]).
The MLP's output layer starts at zero, so training starts from the pretrained cosine
similarity that all-MiniLM-L6-v2 was trained for, and learns corrections to it.
Cross-encoder (option): [CLS] a [SEP] b [SEP] through the encoder, a linear layer on top.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import TaskBatch
from ..errors import UserError
from ..tasks import BUILTIN, SENTIMENT_LABELS, TaskSpec
from ..tasks.kinds import pearson
from ..encoders.tokenizer import Batch
from ..configuration.options import check_value
from ..configuration.train_config import FIELDS, cross_encodes
from .bert import BertModel, Dropout
from .mlm import MaskedLMHead

__all__ = ["SENTIMENT_LABELS", "HeadConfig", "PairHead", "MultitaskBert", "pearson"]


# The options a checkpoint's heads are built from (heads.json): their defaults, choices and ranges
# are the train options' of the same names (configuration/train_config.py).
HEAD_OPTIONS = ("pooling", "pair_mode", "pair_features", "mlp_hidden", "dropout", "sts_loss")


@dataclass
class HeadConfig:
    """How sentences become embeddings and embeddings become predictions (see configuration/train_config.py)."""

    pooling: str = FIELDS["pooling"].default  # mean of token states | [CLS] state | tanh pooler over [CLS]
    pair_mode: str = FIELDS["pair_mode"].default  # bi-encoder (cosine + MLP) | cross-encoder
    # The bi-encoder MLP's input: the classic [u, v, |u-v|, u*v], or [u+v, |u-v|, u*v], which gives
    # (a, b) and (b, a) the same score. Measured equal within noise (README, Results), so the
    # default stays the one the paper's heads use.
    pair_features: str = FIELDS["pair_features"].default
    mlp_hidden: int = FIELDS["mlp_hidden"].default
    dropout: float = FIELDS["dropout"].default
    sts_loss: str = FIELDS["sts_loss"].default  # regression tasks' loss: pearson | mse

    def __post_init__(self):
        # The train options' checks (a zero or fractional width fails deep in nn.Linear, a NaN
        # dropout silently at the first step); heads.json of a checkpoint is read through here.
        for name in HEAD_OPTIONS:
            value, f = getattr(self, name), FIELDS[name]
            kind = f.metadata["type"]
            wrong = isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind)
            if wrong or check_value(f, value):
                raise ValueError(f"{name} must be {_allowed(f)}, not {value!r}")

    @property
    def cross(self) -> bool:
        """Pairs cross-encoded (one input) rather than bi-encoded (two embeddings)."""
        return cross_encodes(self.pair_mode)

    @classmethod
    def of(cls, options) -> "HeadConfig":
        """The head options of a TrainConfig."""
        return cls(**{name: getattr(options, name) for name in HEAD_OPTIONS})

    def to_dict(self) -> dict:
        return asdict(self)


def _allowed(f) -> str:
    m = f.metadata
    if m["choices"]:
        return f"one of {', '.join(m['choices'])}"
    low = f"{'(' if m['min_open'] else '['}{m['min']}"
    high = f"{m['max']}{')' if m['max_open'] else ']'}"
    return f"{'a whole number' if m['type'] is int else 'a finite number'} in {low}, {high}"


class PairHead(nn.Module):
    """scale * cos(u, v) + bias + MLP(pair features) for the bi-encoder; linear for cross."""

    def __init__(self, hidden: int, cfg: HeadConfig, scale: float, bias: float, outputs: int = 1):
        super().__init__()
        self.cross = cfg.cross
        self.dropout = Dropout(cfg.dropout)
        self.outputs = outputs  # 1: a logit or score of shape (B,); more: (B, outputs) logits
        if self.cross:
            self.out = nn.Linear(hidden, outputs)
            return
        self.symmetric = cfg.pair_features == "symmetric"
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        n_feats = 3 if self.symmetric else 4
        self.mlp = nn.Sequential(nn.Linear(n_feats * hidden, cfg.mlp_hidden), nn.GELU(), Dropout(cfg.dropout),
                                 nn.Linear(cfg.mlp_hidden, outputs))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        if self.cross:
            return self._shape(self.out(self.dropout(u)))
        cos = F.cosine_similarity(u, v, dim=-1)
        pair = [u + v] if self.symmetric else [u, v]
        feats = self.dropout(torch.cat([*pair, (u - v).abs(), u * v], dim=-1))
        if self.outputs == 1:
            return self.scale * cos + self.bias + self.mlp(feats).squeeze(-1)
        # Several class logits: the cosine term is the same for each, so softmax ignores it and
        # the MLP alone tells the classes apart.
        return (self.scale * cos + self.bias).unsqueeze(-1) + self.mlp(feats)

    def _shape(self, out: torch.Tensor) -> torch.Tensor:
        return out.squeeze(-1) if self.outputs == 1 else out


class MultitaskBert(nn.Module):
    """One shared BERT encoder, one head per task: `model(batch)` -> logits / scores.

    Each task's parameters are named after it (`sst.weight`, `sts_calibration`), so checkpoints
    stay readable by name whatever the list of tasks.
    """

    def __init__(self, encoder: BertModel, cfg: HeadConfig | None = None, specs: tuple[TaskSpec, ...] | None = None):
        super().__init__()
        self.cfg = cfg or HeadConfig()
        if self.cfg.pooling == "pooler" and encoder.pooler is None:
            raise UserError(f"--pooling pooler: this {encoder.config.model_type} encoder has no pooler (it was not "
                            f"pretrained with one); use --pooling mean or --pooling cls")
        self.encoder = encoder
        self.specs: dict[str, TaskSpec] = {}
        h = encoder.config.hidden_size
        # Built in spec order: the order parameters are created in (and draw their initial
        # values from the random generator) is part of reproducing a run.
        for spec in specs or BUILTIN:
            extras = spec.output.head_parameters(spec)  # e.g. a regression's calibration (tasks/kinds.py)
            names = [spec.name, f"{spec.name}_dropout", *(f"{spec.name}_{k}" for k in ("calibration", *extras))]
            if spec.name in self.specs or any(hasattr(self, n) for n in names):
                raise ValueError(f"task name {spec.name!r} is taken (a duplicate, or a name the model uses)")
            self.specs[spec.name] = spec
            # The family of its output kind (tasks/kinds.py) says what the head reads: token states
            # (masked LM), or one pooled embedding per sentence (or pair).
            if spec.output.head_family == "tokens":
                setattr(self, spec.name, MaskedLMHead(encoder.config))
            elif spec.pair:
                setattr(self, spec.name, PairHead(h, self.cfg, *spec.head_init, outputs=spec.width))
            else:
                setattr(self, f"{spec.name}_dropout", Dropout(self.cfg.dropout))
                setattr(self, spec.name, nn.Linear(h, spec.width))
            for suffix, value in extras.items():
                setattr(self, f"{spec.name}_{suffix}", nn.Parameter(value))

    # -- encoding ------------------------------------------------------------------------

    def embed(self, batch: TaskBatch) -> torch.Tensor:
        """Embedding-layer outputs of the batch's sequences (what SMART perturbs)."""
        return self.encoder.embeddings(batch.inputs.input_ids, batch.inputs.token_type_ids)

    def pool(self, embeds: torch.Tensor, inputs: Batch, unpad: bool | None = None) -> torch.Tensor:
        """Encode embedding outputs and pool them into one vector per sequence.

        `unpad` (default: on the CPU) skips padding in the dense layers; an exported graph
        turns it off, since it branches on the data."""
        # Skipping padding pays on the CPU; on a GPU padded tokens cost little, and finding the
        # real ones (nonzero) would stall the host on every forward.
        if unpad is None:
            unpad = embeds.device.type == "cpu"
        out = self.encoder.encode(embeds, inputs.attention_mask, unpad=unpad)
        if self.cfg.pooling == "pooler":
            return out.pooler_output
        h = out.last_hidden_state
        if self.cfg.pooling == "cls":
            return h[:, 0]
        m = inputs.attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def head(self, batch: TaskBatch, embeds: torch.Tensor) -> torch.Tensor:
        """Task output from embedding outputs: logits (B, classes), one logit or score (B,), or
        masked-LM logits (masked tokens, vocabulary)."""
        return self.head_of(batch, self.features(batch, embeds))

    def features(self, batch: TaskBatch, embeds: torch.Tensor) -> torch.Tensor:
        """What the batch's head reads, from embedding outputs: the pooled embeddings (one per
        sequence), or the token states at the masked positions (a masked-LM batch)."""
        if batch.spec.output.head_family == "tokens":
            unpad = embeds.device.type == "cpu"
            hidden = self.encoder.encode(embeds, batch.inputs.attention_mask, unpad=unpad).last_hidden_state
            return hidden[batch.labels != -100]
        return self.pool(embeds, batch.inputs)

    def head_of(self, batch: TaskBatch, features: torch.Tensor) -> torch.Tensor:
        """The batch's head on its features (see `features`)."""
        if batch.spec.output.head_family == "tokens":
            return self.token_logits(batch.task, features)
        if batch.bi_pair:
            return self.head_output(batch.task, *features.chunk(2))
        return self.head_output(batch.task, features)

    def token_logits(self, task: str, hidden: torch.Tensor) -> torch.Tensor:
        """A masked-LM task's vocabulary logits from token states (the decoder: the word embeddings)."""
        return getattr(self, task)(hidden, self.encoder.embeddings.word_embeddings.weight)

    def masked_logits(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      positions: torch.Tensor) -> torch.Tensor:
        """Logits (n, vocab) at the positions where the boolean (batch, seq) `positions` is set."""
        embeds = self.encoder.embeddings(input_ids, torch.zeros_like(input_ids))
        unpad = input_ids.device.type == "cpu"
        hidden = self.encoder.encode(embeds, attention_mask, unpad=unpad).last_hidden_state
        return self.token_logits(task, hidden[positions])

    def head_output(self, task: str, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """A task's raw output from pooled embeddings: one sentence (or a cross-encoded pair)
        in `u`, or the two sentences of bi-encoded pairs in `u` and `v`."""
        spec = self.specs[task]
        if spec.pair:
            return getattr(self, task)(u) if v is None else getattr(self, task)(u, v)
        out = getattr(self, task)(getattr(self, f"{task}_dropout")(u))
        return out.squeeze(-1) if spec.width == 1 else out

    def forward(self, batch: TaskBatch) -> torch.Tensor:
        return self.head(batch, self.embed(batch))

    # -- answering: what predict, the TUI's playground and the ONNX graph report ----------

    def answer(self, task: str, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """A task's answer from pooled embeddings (as head_output takes them), post-processed:
        class probabilities, the probability of the second label, or the calibrated score."""
        return self.postprocess(task, self.head_output(task, u, v))

    def pair_answer(self, task: str, u: torch.Tensor, v: torch.Tensor, joint: torch.Tensor | None) -> torch.Tensor:
        """A pair task's answer: from the pairs' joint embeddings (`joint`, cross-encoded), or from
        their two sentences' embeddings `u` and `v` (bi-encoded), as the heads were trained."""
        return self.answer(task, joint) if self.cfg.cross else self.answer(task, u, v)

    # -- what the output kinds compute with ----------------------------------------------

    def head_parameter(self, task: str, suffix: str) -> nn.Parameter:
        """A task's parameter beside its head layers (its output kind's head_parameters)."""
        return getattr(self, f"{task}_{suffix}")

    def loss(self, task: str, raw: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The task's loss on its raw output (its output kind's: cross-entropy, BCE, 1 - Pearson ...)."""
        spec = self.specs[task]
        return spec.output.loss(self, spec, raw, labels)

    def postprocess(self, task: str, raw: torch.Tensor) -> torch.Tensor:
        """Raw output -> what people read: class probabilities, the probability of the second
        label, or the calibrated score within the task's value range (its output kind's)."""
        spec = self.specs[task]
        return spec.output.postprocess(self, spec, raw)
