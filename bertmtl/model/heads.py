"""The three task heads on one shared encoder, and their losses.

Sentiment: a linear layer over the sentence embedding -> 5 logits.
Paraphrase / similarity, bi-encoder (default): the cosine similarity of the two sentence
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
from ..tokenizer import Batch
from .bert import BertModel, Dropout

SENTIMENT_LABELS = ("negative", "somewhat negative", "neutral", "somewhat positive", "positive")
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
    sts_loss: str = "pearson"  # pearson | mse

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        if self.pair_mode not in PAIR_MODES:
            raise ValueError(f"pair_mode must be one of {PAIR_MODES}")
        if self.pair_features not in PAIR_FEATURES:
            raise ValueError(f"pair_features must be one of {PAIR_FEATURES}")
        if self.sts_loss not in ("pearson", "mse"):
            raise ValueError("sts_loss must be pearson or mse")

    def to_dict(self) -> dict:
        return asdict(self)


class PairHead(nn.Module):
    """scale * cos(u, v) + bias + MLP(pair features) for the bi-encoder; linear for cross."""

    def __init__(self, hidden: int, cfg: HeadConfig, scale: float, bias: float):
        super().__init__()
        self.cross = cfg.pair_mode == "cross"
        self.dropout = Dropout(cfg.dropout)
        if self.cross:
            self.out = nn.Linear(hidden, 1)
            return
        self.symmetric = cfg.pair_features == "symmetric"
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        n_feats = 3 if self.symmetric else 4
        self.mlp = nn.Sequential(nn.Linear(n_feats * hidden, cfg.mlp_hidden), nn.GELU(), Dropout(cfg.dropout),
                                 nn.Linear(cfg.mlp_hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        if self.cross:
            return self.out(self.dropout(u)).squeeze(-1)
        cos = F.cosine_similarity(u, v, dim=-1)
        pair = [u + v] if self.symmetric else [u, v]
        feats = self.dropout(torch.cat([*pair, (u - v).abs(), u * v], dim=-1))
        return self.scale * cos + self.bias + self.mlp(feats).squeeze(-1)


class MultitaskBert(nn.Module):
    """One shared BERT encoder, three heads: `model(task, batch)` -> logits / scores."""

    def __init__(self, encoder: BertModel, cfg: HeadConfig | None = None):
        super().__init__()
        self.cfg = cfg or HeadConfig()
        self.encoder = encoder
        h = encoder.config.hidden_size
        self.sst_dropout = Dropout(self.cfg.dropout)
        self.sst = nn.Linear(h, len(SENTIMENT_LABELS))
        # Paraphrase logit starts as 10 * cos - 7 (a duplicate around cos > 0.7); similarity as
        # 5 * cos, already on the 0-5 scale for the cosines of related sentences.
        self.para = PairHead(h, self.cfg, scale=10.0, bias=-7.0)
        self.sts = PairHead(h, self.cfg, scale=5.0, bias=0.0)
        # Affine map from the raw similarity score to the 0-5 scale. The Pearson loss ignores
        # scale and offset, so these two numbers are fitted by a separate squared-error term on
        # the detached score (see task_loss) and touch nothing else.
        self.sts_calibration = nn.Parameter(torch.tensor([1.0, 0.0]))

    # -- encoding ------------------------------------------------------------------------

    def embed(self, batch: TaskBatch) -> torch.Tensor:
        """Embedding-layer outputs of the batch's sequences (what SMART perturbs)."""
        return self.encoder.embeddings(batch.inputs.input_ids, batch.inputs.token_type_ids)

    def pool(self, embeds: torch.Tensor, inputs: Batch) -> torch.Tensor:
        """Encode embedding outputs and pool them into one vector per sequence."""
        # Skipping padding pays on the CPU; on a GPU padded tokens cost little, and finding the
        # real ones (nonzero) would stall the host on every forward.
        out = self.encoder.encode(embeds, inputs.attention_mask, unpad=embeds.device.type == "cpu")
        if self.cfg.pooling == "pooler":
            return out.pooler_output
        h = out.last_hidden_state
        if self.cfg.pooling == "cls":
            return h[:, 0]
        m = inputs.attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def head(self, batch: TaskBatch, embeds: torch.Tensor) -> torch.Tensor:
        """Task output from embedding outputs: SST logits (B, 5), paraphrase logit (B,), STS score (B,)."""
        pooled = self.pool(embeds, batch.inputs)
        if batch.task == "sst":
            return self.sst(self.sst_dropout(pooled))
        if batch.bi_pair:
            return getattr(self, batch.task)(*pooled.chunk(2))
        return getattr(self, batch.task)(pooled)

    def forward(self, batch: TaskBatch) -> torch.Tensor:
        return self.head(batch, self.embed(batch))

    # -- outputs for people --------------------------------------------------------------

    def similarity(self, score: torch.Tensor) -> torch.Tensor:
        """Raw STS score -> 0-5 similarity."""
        a, b = self.sts_calibration
        return (a * score + b).clamp(0.0, 5.0)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two 1-D tensors (0 when either is constant)."""
    xc, yc = x - x.mean(), y - y.mean()
    denom = xc.norm() * yc.norm()
    # torch.where on a safe denominator: no host sync, and no NaN gradient when it is 0.
    ok = denom > 0
    return torch.where(ok, (xc * yc).sum() / torch.where(ok, denom, torch.ones_like(denom)), torch.zeros_like(denom))


def task_loss(model: MultitaskBert, task: str, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (SST), BCE with logits (paraphrase), 1 - Pearson (STS; MSE as an option)."""
    if task == "sst":
        return F.cross_entropy(output.float(), labels)
    if task == "para":
        return F.binary_cross_entropy_with_logits(output.float(), labels)
    a, b = model.sts_calibration
    if model.cfg.sts_loss == "mse":
        return F.mse_loss(a * output.float() + b, labels)
    calibration = F.mse_loss(a * output.detach().float() + b, labels)
    if len(labels) < 2:
        return calibration
    return 1.0 - pearson(output.float(), labels) + calibration
