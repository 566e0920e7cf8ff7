"""DeBERTa-v2/v3's disentangled attention, as additive scores our attention takes.

Beside content-to-content scores q_i . k_j, DeBERTa adds content-to-position q_i . Kr[d(i, j)]
(c2p) and position-to-content k_j . Qr[d(i, j)] (p2c), where d(i, j) is the (log-bucketed)
offset i - j and Kr, Qr are the relative-position embeddings projected by the layer's key and
query weights (v3: the same Linear modules as the content's, `share_att_key`). All three are
divided by sqrt(head_dim * 3).

The offsets of one batch span at most 2 * seq - 1 values, so only those rows of the
embeddings are projected (a few dozen instead of DeBERTa-v3's 512): the scores are the same.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..encoders.config import Disentangled


def log_bucket(relative: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa's bucketing of offsets: exact within +-buckets/2, then logarithmic up to max_position."""
    sign = torch.sign(relative)
    mid = buckets // 2
    inside = (relative < mid) & (relative > -mid)
    abs_pos = torch.where(inside, torch.tensor(mid - 1).type_as(relative), relative.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, relative.type_as(log_pos), log_pos * sign).long()


class RelativePositions:
    """What every layer's disentangled scores need for one padded length: for each (query, key)
    the row of the embeddings its offset selects (`index`, seq x seq), and those rows (`rows`)."""

    def __init__(self, settings: Disentangled, embeddings: torch.Tensor, seq_len: int, norm=None):
        pos = torch.arange(seq_len)
        offset = pos[:, None] - pos[None, :]
        if settings.position_buckets > 0:
            offset = log_bucket(offset, settings.position_buckets, settings.max_relative_positions)
        span = settings.span
        index = (offset + span).clamp(0, 2 * span - 1)
        # Under torch.export (ONNX) the length is symbolic and so are these bounds: the whole table.
        lo, hi = (0, 2 * span - 1) if torch.compiler.is_compiling() else (int(index.min()), int(index.max()))
        self.index = (index - lo).to(embeddings.device)
        rows = embeddings[lo:hi + 1]
        self.rows = norm(rows) if norm is not None else rows  # a row-wise LayerNorm: slicing first is the same
        self.settings = settings


def disentangled_scores(attention, q: torch.Tensor, k: torch.Tensor, rel: RelativePositions,
                        q_scaled: bool, scale: float) -> torch.Tensor:
    """c2p + p2c of one layer, (batch, heads, seq, seq), already divided like the content scores.

    `attention` is the layer's BertSelfAttention (its projections of the positions); `q` and
    `k` are (batch, heads, seq, head_dim), `q` already multiplied by `scale` when `q_scaled`.
    """
    s = rel.settings
    rows = attention.pos_dropout(rel.rows)
    heads, d = attention.num_heads, attention.head_dim

    def project(linear_or_name) -> torch.Tensor:  # (rows, hidden) -> (heads, rows, head_dim)
        return F.linear(rows, linear_or_name.weight, linear_or_name.bias).view(-1, heads, d).transpose(0, 1)

    b, _, t, _ = q.shape
    index = rel.index.expand(b, heads, t, t)
    out = 0
    if "c2p" in s.pos_att_type:
        pos_key = project(attention.key if s.share_att_key else attention.pos_key_proj)
        c2p = torch.gather(q @ pos_key.transpose(-1, -2), -1, index)
        out = c2p if q_scaled else c2p * scale
    if "p2c" in s.pos_att_type:
        pos_query = project(attention.query if s.share_att_key else attention.pos_query_proj) * scale
        # p2c[i, j] = k_j . Qr[d(i, j)]: gathered along the keys' rows, then transposed.
        p2c = torch.gather(k @ pos_query.transpose(-1, -2), -1, rel.index.transpose(0, 1).expand(b, heads, t, t))
        out = out + p2c.transpose(-1, -2)
    return out
