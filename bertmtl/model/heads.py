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

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import TaskBatch
from ..errors import UserError
from ..tasks import BUILTIN, POOLED, SENTIMENT_LABELS, TOKENS, TaskSpec
from ..tasks.kinds import pearson
from ..encoders.tokenizer import Batch
from .bert import BertModel, Dropout
from .head_config import HEAD_OPTIONS, HeadConfig, cross_encodes
from .loading import hf_state_dict
from .mlm import MaskedLMHead, load_head, mlm_hf_state_dict, source_head

__all__ = ["SENTIMENT_LABELS", "HEAD_OPTIONS", "HeadConfig", "cross_encodes", "PairHead", "MultitaskBert", "pearson"]


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
        # Built in spec order: the order parameters are created in (and draw their initial
        # values from the random generator) is part of reproducing a run.
        for spec in specs or BUILTIN:
            extras = spec.output.head_parameters(spec)  # e.g. a regression's calibration (tasks/kinds.py)
            names = [spec.name, *(f"{spec.name}_{k}" for k in (*HEAD_SUFFIXES, *extras))]
            if spec.name in self.specs or any(hasattr(self, n) for n in names):
                raise ValueError(f"task name {spec.name!r} is taken (a duplicate, or a name the model uses)")
            self.specs[spec.name] = spec
            heads_of(spec).build(self, spec)
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

    def pooled(self, inputs: Batch, unpad: bool | None = None) -> torch.Tensor:
        """One embedding per sequence of a tokenised batch: what the pooled heads read (`pool`
        of the embedding layer's output). Answering (Predictor, the ONNX graph) calls this."""
        return self.pool(self.encoder.embeddings(inputs.input_ids, inputs.token_type_ids), inputs, unpad)

    @property
    def embedding_size(self) -> int:
        """The width of `pooled`'s embeddings."""
        return self.encoder.config.hidden_size

    @property
    def encoders(self) -> list[BertModel]:
        """The encoders that answer (one here; an ensemble's are its members')."""
        return [self.encoder]

    def head(self, batch: TaskBatch, embeds: torch.Tensor) -> torch.Tensor:
        """Task output from embedding outputs: logits (B, classes), one logit or score (B,), or
        masked-LM logits (masked tokens, vocabulary)."""
        return self.head_of(batch, self.features(batch, embeds))

    def features(self, batch: TaskBatch, embeds: torch.Tensor) -> torch.Tensor:
        """What the batch's head reads, from embedding outputs: the pooled embeddings (one per
        sequence), or the token states at the masked positions (a masked-LM batch)."""
        return heads_of(batch.spec).features(self, batch, embeds)

    def head_of(self, batch: TaskBatch, features: torch.Tensor) -> torch.Tensor:
        """The batch's head on its features (see `features`)."""
        return heads_of(batch.spec).output(self, batch, features)

    def hf_weights(self) -> tuple[str, dict[str, torch.Tensor]]:
        """(transformers architecture, state dict under its names) of what Hugging Face can load of
        this model: the encoder, with its masked-LM head when a task has one (`bertmtl pretrain`)."""
        for spec in self.specs.values():
            if (found := heads_of(spec).hf_weights(self, spec)) is not None:
                return found
        return self.encoder.config.family.architecture, hf_state_dict(self.encoder)

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


# -- head families: what a task's head reads, chosen by its output kind's head_family ------------

# Attribute suffixes a task's head may use beside its name (`sst_dropout`): reserved for every task.
HEAD_SUFFIXES = ("dropout",)


class PooledHeads:
    """Heads on one pooled embedding per sentence, or per pair (cross-encoded) or two (bi-encoded):
    classes, a probability, a score."""

    def build(self, model: MultitaskBert, spec: TaskSpec) -> None:
        h = model.encoder.config.hidden_size
        if spec.pair:
            setattr(model, spec.name, PairHead(h, model.cfg, *spec.head_init, outputs=spec.width))
        else:
            setattr(model, f"{spec.name}_dropout", Dropout(model.cfg.dropout))
            setattr(model, spec.name, nn.Linear(h, spec.width))

    fresh = ""  # (never: these start from their spec's initialisation)

    def take_pretrained(self, model: MultitaskBert, spec: TaskSpec, source) -> bool:
        """Whether the head starts trained: these start from their spec's initialisation."""
        return True

    def features(self, model: MultitaskBert, batch: TaskBatch, embeds: torch.Tensor) -> torch.Tensor:
        return model.pool(embeds, batch.inputs)

    def output(self, model: MultitaskBert, batch: TaskBatch, features: torch.Tensor) -> torch.Tensor:
        if batch.bi_pair:
            return model.head_output(batch.task, *features.chunk(2))
        return model.head_output(batch.task, features)

    def hf_weights(self, model: MultitaskBert, spec: TaskSpec):
        return None  # Hugging Face has no class for our heads: exports take the encoder (or ONNX)


class TokenHeads:
    """A masked-LM head: vocabulary logits from the token states at the masked positions, decoded
    through the word embeddings; it starts from the encoder's own head where the encoder has one."""

    def build(self, model: MultitaskBert, spec: TaskSpec) -> None:
        setattr(model, spec.name, MaskedLMHead(model.encoder.config))

    fresh = "has no masked-LM head: initialised a fresh one (BERT's init)"

    def take_pretrained(self, model: MultitaskBert, spec: TaskSpec, source) -> bool:
        """Load the head `source` (an encoder directory or a checkpoint) brings; False when it has none
        (the head keeps BERT's initialisation, and a run trains it alone first)."""
        head = source_head(source)
        if head is not None:
            load_head(model, head, source)
        return head is not None

    def features(self, model: MultitaskBert, batch: TaskBatch, embeds: torch.Tensor) -> torch.Tensor:
        unpad = embeds.device.type == "cpu"
        hidden = model.encoder.encode(embeds, batch.inputs.attention_mask, unpad=unpad).last_hidden_state
        return hidden[batch.labels != -100]

    def output(self, model: MultitaskBert, batch: TaskBatch, features: torch.Tensor) -> torch.Tensor:
        return model.token_logits(batch.task, features)

    def hf_weights(self, model: MultitaskBert, spec: TaskSpec):
        return model.encoder.config.family.mlm_class, mlm_hf_state_dict(model)


HEAD_FAMILIES = {POOLED: PooledHeads(), TOKENS: TokenHeads()}


def heads_of(spec: TaskSpec) -> PooledHeads | TokenHeads:
    """The head family of a task: its output kind's head_family (tasks/kinds.py) names it."""
    return HEAD_FAMILIES[spec.output.head_family]
