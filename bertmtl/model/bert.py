"""A from-scratch post-LN transformer encoder whose parameter names match Hugging Face BERT checkpoints.

Module and parameter names follow HF's modeling_bert.py (`embeddings.word_embeddings`,
`encoder.layer.N.attention.self.query`, ...) so loading a BERT checkpoint is a plain mapping;
RoBERTa and ELECTRA use the same names, DistilBERT and MPNet checkpoints are renamed to them
by model/loading.py. The families differ only in what `config.family` says: whether there is
a token-type embedding, RoBERTa-style absolute positions (RoBERTa, XLM-R, MPNet), a
relative-position bias added to the attention scores of every layer (MPNet), a pooler (not
ELECTRA, DistilBERT), and embeddings narrower than the hidden states, projected up (ELECTRA).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..encoders.config import BertConfig
from .disentangled import RelativePositions, disentangled_scores

# Which attention kernel is faster, by device type, as measured by benchmarks/encoder.py:
# on the 2-core CPU the explicit softmax(QK^T)V path beats SDPA's CPU kernels at BERT
# sentence lengths; on CUDA SDPA's fused (flash / memory-efficient) kernels win.
FASTEST_ATTENTION = {"cpu": "eager", "cuda": "sdpa"}

# SDPA kernels we let torch choose from: all but cuDNN's. cuDNN's attention builds an execution
# plan per input shape on the host, and length-bucketed batches change shape at nearly every
# call, so its CPU cost swamped the GPU work (benchmarks/gpu.py, docs/gpus.md).
_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


class _KeepMaskDropout(torch.autograd.Function):
    """x * keep / (1 - p), saving the 1-byte keep mask for backward."""

    @staticmethod
    def forward(ctx, x, keep, scale):
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


class Dropout(nn.Module):
    """Dropout with a fast CPU mask.

    On the CPU, torch's bernoulli_ draws one random number per element and took ~8% of a
    training step. Here one 64-bit draw makes four uniform 16-bit lanes, compared against a
    threshold: the drop probability is p rounded to 1/65536. Elsewhere (CUDA) the fused
    F.dropout kernel is already fast and is used as is, and so it is under torch.compile:
    there the compiler draws the mask inside the kernel that uses it, where the 64-bit draw
    (`Tensor.random_`, which dynamo cannot trace) would break the graph at every dropout.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or torch.compiler.is_compiling():
            return F.dropout(x, self.p, True)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        keep = bits.view(torch.int16)[:n].view(x.shape) >= -32768 + round(self.p * 65536)
        return _KeepMaskDropout.apply(x, keep, 1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Packing:
    """Where the real (non-padding) tokens of a padded (batch, seq) input are.

    The dense layers (QKV, output projection, feed-forward: nearly all the FLOPs) then run on
    the packed (tokens, hidden) matrix and skip padding; attention runs padded, per sequence.
    """

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.seq = attention_mask.shape
        self.index = attention_mask.reshape(-1).nonzero().squeeze(1)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(self.batch * self.seq, -1).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.batch * self.seq, x.shape[-1]).index_copy(0, self.index, x)
        return out.view(self.batch, self.seq, -1)


@contextlib.contextmanager
def uninitialised():
    """Build modules without initialising their parameters (they are about to be loaded).

    Random initialisation of a BERT costs a few hundred milliseconds that `bertmtl predict`
    would spend before every answer, only to overwrite the values; this is HF's
    `no_init_weights` idea. Not thread-safe: construction happens on one thread.
    """
    classes = (nn.Linear, nn.Embedding, nn.LayerNorm)
    saved = {cls: cls.reset_parameters for cls in classes}
    try:
        for cls in classes:
            cls.reset_parameters = lambda self: None
        yield
    finally:
        for cls, fn in saved.items():
            cls.reset_parameters = fn


@dataclass
class EncoderOutput:
    """What the encoder returns (HF-compatible attribute names)."""

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor | None


def _activation(name: str):
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: F.gelu(x, approximate="tanh")
    return F.relu


class BertEmbeddings(nn.Module):
    """Word + position (+ token-type, where the family has them) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        family = config.family
        # RoBERTa-style positions (MPNet) number real tokens from pad_token_id + 1 and give
        # padding the pad id itself; BERT's positions are simply 0, 1, 2, ...
        self.position_pad_id = config.pad_token_id if family.padding_positions else None
        width = config.embedding_width
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        # DeBERTa-v3 embeds no absolute positions: its attention sees relative ones only.
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, width, padding_idx=self.position_pad_id)
                                    if config.position_embeddings else None)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, width)
                                      if family.token_types else None)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Position embeddings, (seq, hidden) shared by the batch or (batch, seq, hidden); 0 without them."""
        if self.position_embeddings is None:
            return 0
        if self.position_pad_id is None:
            return self.position_embeddings.weight[:input_ids.shape[1]]
        real = input_ids.ne(self.position_pad_id)
        return self.position_embeddings(real.cumsum(1) * real + self.position_pad_id)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.positions(input_ids)
        if self.token_type_embeddings is not None:
            types = self.token_type_embeddings
            x = x + (types.weight[0] if token_type_ids is None else types(token_type_ids))
        return self.dropout(self.LayerNorm(x))


def relative_position_bucket(relative: torch.Tensor, num_buckets: int, max_distance: int = 128) -> torch.Tensor:
    """T5's bidirectional bucketing of (key - query) offsets, as MPNet uses it.

    Half the buckets are for keys before the query, half for keys after; in each half, the
    first half of the buckets are exact offsets and the rest grow logarithmically up to
    `max_distance`, beyond which everything shares the last bucket.
    """
    half = num_buckets // 2
    distance = -relative
    bucket = (distance < 0).long() * half
    distance = distance.abs()
    exact = half // 2
    # clamp(min=1): log(0) would be -inf; those offsets take the exact branch anyway.
    log_ratio = torch.log(distance.clamp(min=1).float() / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, large)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention; Q, K and V are computed by one fused matmul."""

    def __init__(self, config: BertConfig):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(h, h)
        self.key = nn.Linear(h, h)
        self.value = nn.Linear(h, h)
        self.dropout = Dropout(config.attention_probs_dropout_prob)
        self.impl = "auto"  # "auto" | "eager" | "sdpa"
        self.scale = config.attention_scale  # 1/sqrt(head_dim); DeBERTa divides by the number of score terms too
        self.default_scale = self.scale == 1.0 / math.sqrt(self.head_dim)
        rel = config.disentangled
        if rel is not None:  # DeBERTa: the positions' own dropout, and projections unless shared
            self.pos_dropout = Dropout(config.hidden_dropout_prob)
            if not rel.share_att_key:
                if "c2p" in rel.pos_att_type:
                    self.pos_key_proj = nn.Linear(h, h)
                if "p2c" in rel.pos_att_type:
                    self.pos_query_proj = nn.Linear(h, h)

    def _fused_qkv(self, fold_scale: bool, scale: float, device_type: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The (3h x h) weight and (3h) bias of Q, K and V side by side.

        Built on every call while gradients flow (they must reach the three Linear modules);
        without gradients (prediction), built once and cached, in the autocast dtype if one is
        active, until a parameter changes (its version counter moves) or is replaced.
        """
        parts = (self.query.weight, self.key.weight, self.value.weight, self.query.bias, self.key.bias, self.value.bias)
        cacheable = not torch.is_grad_enabled()
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        if cacheable:
            key = (fold_scale, dtype, tuple((t.data_ptr(), t._version) for t in parts))
            cached = getattr(self, "_qkv_cache", None)
            if cached is not None and cached[0] == key:
                return cached[1]
        q_w, q_b = (parts[0] * scale, parts[3] * scale) if fold_scale else (parts[0], parts[3])
        w = torch.cat([q_w, parts[1], parts[2]])
        bias = torch.cat([q_b, parts[4], parts[5]])
        if cacheable:
            if dtype is not None:
                w, bias = w.to(dtype), bias.to(dtype)
            self._qkv_cache = (key, (w, bias))
        return w, bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None,
                rel: RelativePositions | None = None) -> torch.Tensor:
        impl = self.impl if self.impl != "auto" else FASTEST_ATTENTION.get(x.device.type, "sdpa")
        scale = self.scale
        # One (h -> 3h) matmul is faster than three (h -> h) ones, and keeping three Linear
        # modules keeps the HF parameter names. The eager path folds the 1/sqrt(d) scale into
        # the query weights, which costs h*h multiplies instead of b*heads*t*t.
        w, bias = self._fused_qkv(impl == "eager", scale, x.device.type)
        qkv = F.linear(x, w, bias)
        if packing is not None:
            qkv = packing.unpack(qkv)
        b, t, h3 = qkv.shape
        qkv = qkv.view(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        p = self.dropout.p if self.training else 0.0
        if mask is not None and mask.dtype != q.dtype:  # under autocast q is bf16 / fp16
            mask = mask.to(q.dtype)
        if rel is not None:  # DeBERTa: content-position scores, added like a mask
            bias = disentangled_scores(self, q, k, rel, q_scaled=impl == "eager", scale=scale).to(q.dtype)
            mask = bias if mask is None else mask + bias
        if impl == "sdpa":
            with sdpa_kernel(_SDPA_BACKENDS):
                ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                     scale=None if self.default_scale else scale)
        else:
            scores = q @ k.transpose(-1, -2)
            if mask is not None:
                scores = scores + mask
            probs = scores.softmax(dim=-1)
            if p:
                probs = self.dropout(probs)
            ctx = probs @ v
        ctx = ctx.transpose(1, 2).reshape(b, t, h3 // 3)
        return packing.pack(ctx) if packing is not None else ctx


class BertSelfOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, ctx: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(ctx)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None,
                rel: RelativePositions | None = None) -> torch.Tensor:
        return self.output(self.self(x, mask, packing, rel), x)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class BertOutput(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertLayer(nn.Module):
    """Post-LN transformer layer: attention, add & norm, GELU feed-forward, add & norm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None,
                rel: RelativePositions | None = None) -> torch.Tensor:
        a = self.attention(x, mask, packing, rel)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.relative_attention_bias = (
            nn.Embedding(config.relative_attention_num_buckets, config.num_attention_heads)
            if config.family.relative_attention else None)
        self.disentangled = config.disentangled
        if self.disentangled is not None:  # DeBERTa: relative-position embeddings shared by every layer
            self.rel_embeddings = nn.Embedding(2 * self.disentangled.span, config.hidden_size)
            self.LayerNorm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                              if self.disentangled.norm_rel_ebd else None)

    def relative_positions(self, seq_len: int) -> RelativePositions | None:
        """DeBERTa's per-length position context for every layer, or None."""
        if self.disentangled is None:
            return None
        return RelativePositions(self.disentangled, self.rel_embeddings.weight, seq_len, self.LayerNorm)

    def position_bias(self, seq_len: int, device: torch.device) -> torch.Tensor | None:
        """The (1, heads, seq, seq) relative-position bias shared by every layer, or None.

        Offsets are between padded positions; with right padding those equal the offsets
        between real tokens, and padded keys are masked anyway.
        """
        if self.relative_attention_bias is None:
            return None
        pos = torch.arange(seq_len, device=device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.relative_attention_bias.num_embeddings)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None,
                seq_len: int | None = None) -> torch.Tensor:
        rel = self.relative_positions(seq_len if seq_len is not None else x.shape[1])
        for layer in self.layer:
            x = layer(x, mask, packing, rel)
        return x


class BertPooler(nn.Module):
    """tanh(dense(h_[CLS])), as pretrained with next-sentence prediction."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertModel(nn.Module):
    """The encoder of every family: `model(input_ids, attention_mask, token_type_ids=None)`.

    Families without a token-type embedding (MPNet, DistilBERT) ignore `token_type_ids`.
    """

    def __init__(self, config: BertConfig, add_pooling_layer: bool | None = None, init_weights: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        # ELECTRA's small models embed in fewer dimensions than they compute in.
        self.embeddings_project = (nn.Linear(config.embedding_width, config.hidden_size)
                                   if config.embedding_width != config.hidden_size else None)
        self.encoder = BertEncoder(config)
        pooled = config.family.pooler if add_pooling_layer is None else add_pooling_layer
        self.pooler = BertPooler(config) if pooled else None
        if init_weights:
            self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, identity LayerNorms.
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def set_attention(self, impl: str) -> None:
        """Choose the attention kernel: "auto" (fastest measured per device), "eager" or "sdpa"."""
        if impl not in ("auto", "eager", "sdpa"):
            raise ValueError(f"unknown attention implementation {impl!r}")
        for layer in self.encoder.layer:
            layer.attention.self.impl = impl

    @staticmethod
    def extended_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """(batch, seq) 1/0 mask -> additive (batch, 1, 1, seq) mask; None when nothing is padded."""
        if attention_mask is None:
            return None
        m = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - m) * torch.finfo(dtype).min

    def encode(self, embedding_output: torch.Tensor, attention_mask: torch.Tensor | None,
               unpad: bool = False) -> EncoderOutput:
        """Run the transformer layers (and pooler) on embedding outputs.

        Split out of `forward` so that SMART can perturb the embeddings and re-encode.
        With `unpad`, the dense layers skip padding tokens; `last_hidden_state` is then zero
        at padded positions (HF computes values there that nothing should use), and every
        real position is the same as without it.
        """
        if self.embeddings_project is not None:
            embedding_output = self.embeddings_project(embedding_output)
        mask = self.extended_mask(attention_mask, embedding_output.dtype)
        bias = self.encoder.position_bias(embedding_output.shape[1], embedding_output.device)
        if bias is not None:  # one additive float mask carries both (SDPA takes it as attn_mask)
            mask = bias.to(embedding_output.dtype) if mask is None else mask + bias
        device = embedding_output.device.type
        if mask is not None and torch.is_autocast_enabled(device):
            # The scores will be in the autocast dtype: convert the mask once, not in every layer.
            mask = mask.to(torch.get_autocast_dtype(device))
        if unpad and attention_mask is not None and not bool(attention_mask.all()):
            packing = Packing(attention_mask)
            hidden = packing.unpack(self.encoder(packing.pack(embedding_output), mask, packing, packing.seq))
        else:
            hidden = self.encoder(embedding_output, mask)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return EncoderOutput(last_hidden_state=hidden, pooler_output=pooled)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        unpad: bool = False,
    ) -> EncoderOutput:
        return self.encode(self.embeddings(input_ids, token_type_ids), attention_mask, unpad=unpad)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> "BertModel":
        """Load an HF-format encoder directory (the family read from its config.json), or the
        encoder of a bertmtl checkpoint.

        Built-in encoders by name (`minilm`, `mpnet`) are `bertmtl.encoders.weights.resolve`'s job:
        `BertModel.from_pretrained(resolve("mpnet"))`.
        """
        from .loading import check_finite, encoder_directory, encoder_state, load_into, read_config

        path = encoder_directory(path)
        config = read_config(path)
        state = encoder_state(path, dtype, config.family)
        check_finite(state, path)
        has_pooler = any(k.startswith("pooler.") for k in state) or not config.family.pooler
        with uninitialised() if has_pooler else contextlib.nullcontext():  # all of it is loaded next
            model = cls(config, init_weights=not has_pooler)
        load_into(model, state, source=path)
        return model.to(device=device, dtype=dtype) if device is not None else model.to(dtype)
