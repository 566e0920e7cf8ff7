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

from ..data import TaskBatch
from ..tasks import BUILTIN, SENTIMENT_LABELS, TaskSpec
from ..tokenizer import Batch
from ..numbers import number_problem
from ..train_config import MLP_HIDDEN_MAX
from .bert import BertModel, Dropout

__all__ = ["SENTIMENT_LABELS", "HeadConfig", "PairHead", "MultitaskBert", "pearson", "task_loss"]
POOLINGS = ("mean", "cls", "pooler")
PAIR_MODES = ("bi", "cross")
PAIR_FEATURES = ("concat", "symmetric")


@dataclass
class HeadConfig:
    """How sentences become embeddings and embeddings become predictions."""

    pooling: str = "mean"  # mean of token states | [CLS] state | tanh pooler over [CLS]
    pair_mode: str = "bi"  # bi-encoder (cosine + MLP) | cross-encoder
    # The bi-encoder MLP's input: the classic [u, v, |u-v|, u*v], or [u+v, |u-v|, u*v], which gives
    # (a, b) and (b, a) the same score. Measured equal within noise (README, Results), so the
    # default stays the one the paper's heads use.
    pair_features: str = "concat"
    mlp_hidden: int = 256
    dropout: float = 0.1
    sts_loss: str = "pearson"  # regression tasks' loss: pearson | mse

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        if self.pair_mode not in PAIR_MODES:
            raise ValueError(f"pair_mode must be one of {PAIR_MODES}")
        if self.pair_features not in PAIR_FEATURES:
            raise ValueError(f"pair_features must be one of {PAIR_FEATURES}")
        if self.sts_loss not in ("pearson", "mse"):
            raise ValueError("sts_loss must be pearson or mse")
        # A zero or fractional width fails deep in nn.Linear, a NaN dropout silently at the first step.
        if isinstance(self.mlp_hidden, bool) or not isinstance(self.mlp_hidden, int) \
                or not 1 <= self.mlp_hidden <= MLP_HIDDEN_MAX:
            raise ValueError(f"mlp_hidden must be a whole number in [1, {MLP_HIDDEN_MAX}], not {self.mlp_hidden!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
                or number_problem(self.dropout, min=0, max=1, max_open=True):
            raise ValueError(f"dropout must be a finite number in [0, 1), not {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class PairHead(nn.Module):
    """scale * cos(u, v) + bias + MLP(pair features) for the bi-encoder; linear for cross."""

    def __init__(self, hidden: int, cfg: HeadConfig, scale: float, bias: float, outputs: int = 1):
        super().__init__()
        self.cross = cfg.pair_mode == "cross"
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
        self.encoder = encoder
        self.specs: dict[str, TaskSpec] = {}
        h = encoder.config.hidden_size
        # Built in spec order: the order parameters are created in (and draw their initial
        # values from the random generator) is part of reproducing a run.
        for spec in specs or BUILTIN:
            names = [spec.name, f"{spec.name}_dropout", f"{spec.name}_calibration"]
            if spec.name in self.specs or any(hasattr(self, n) for n in names):
                raise ValueError(f"task name {spec.name!r} is taken (a duplicate, or a name the model uses)")
            self.specs[spec.name] = spec
            if spec.pair:
                setattr(self, spec.name, PairHead(h, self.cfg, *spec.head_init, outputs=spec.num_outputs))
            else:
                setattr(self, f"{spec.name}_dropout", Dropout(self.cfg.dropout))
                setattr(self, spec.name, nn.Linear(h, spec.num_outputs))
            if spec.regression:
                # Affine map from the raw score to the target's scale. The Pearson loss ignores
                # scale and offset, so these two numbers are fitted by a separate squared-error
                # term on the detached score (see task_loss) and touch nothing else.
                setattr(self, f"{spec.name}_calibration", nn.Parameter(torch.tensor([1.0, 0.0])))

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
        """Task output from embedding outputs: logits (B, classes), one logit or score (B,)."""
        pooled = self.pool(embeds, batch.inputs)
        if batch.bi_pair:
            return self.head_output(batch.task, *pooled.chunk(2))
        return self.head_output(batch.task, pooled)

    def head_output(self, task: str, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """A task's raw output from pooled embeddings: one sentence (or a cross-encoded pair)
        in `u`, or the two sentences of bi-encoded pairs in `u` and `v`."""
        spec = self.specs[task]
        if spec.pair:
            return getattr(self, task)(u) if v is None else getattr(self, task)(u, v)
        out = getattr(self, task)(getattr(self, f"{task}_dropout")(u))
        return out.squeeze(-1) if spec.num_outputs == 1 else out

    def forward(self, batch: TaskBatch) -> torch.Tensor:
        return self.head(batch, self.embed(batch))

    # -- outputs for people --------------------------------------------------------------

    def postprocess(self, task: str, raw: torch.Tensor) -> torch.Tensor:
        """Raw output -> what people read: class probabilities (softmax), the probability of
        the second label (sigmoid), or the calibrated score within the task's value range."""
        spec = self.specs[task]
        raw = raw.float()
        if spec.activation == "softmax":
            return raw.softmax(-1)
        if spec.activation == "sigmoid":
            return raw.sigmoid()
        a, b = getattr(self, f"{task}_calibration")
        low, high = spec.value_range
        return (a * raw + b).clamp(low, high)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors (0 when either is constant)."""
    xc, yc = x - x.mean(), y - y.mean()
    denom = xc.norm() * yc.norm()
    # torch.where on a safe denominator: no host sync, and no NaN gradient when it is 0.
    ok = denom > 0
    return torch.where(ok, (xc * yc).sum() / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(denom))


def task_loss(model: MultitaskBert, task: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The task's loss: cross-entropy, BCE with logits, or 1 - Pearson plus the calibration fit
    (squared error instead of Pearson with HeadConfig.sts_loss="mse")."""
    spec = model.specs[task]
    if spec.loss == "cross-entropy":
        return F.cross_entropy(output.float(), labels)
    if spec.loss == "bce":
        return F.binary_cross_entropy_with_logits(output.float(), labels)
    a, b = getattr(model, f"{task}_calibration")
    if model.cfg.sts_loss == "mse":
        return F.mse_loss(a * output.float() + b, labels)
    calibration = F.mse_loss(a * output.detach().float() + b, labels)
    if len(labels) < 2:
        return calibration
    return 1.0 - pearson(output.float(), labels) + calibration
