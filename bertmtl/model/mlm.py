"""Our encoder (BERT or MPNet) with a masked-LM head, for further pretraining on task text.

Module and parameter names follow HF's BertForMaskedLM (`bert.…`, `cls.predictions.transform.dense`,
`cls.predictions.transform.LayerNorm`, `cls.predictions.decoder`, `cls.predictions.bias`).
HF's MPNetForMaskedLM has the same head (dense, GELU, LayerNorm, tied decoder, bias) under
other names (`mpnet.…`, `lm_head.dense`, `lm_head.layer_norm`, `lm_head.bias`): `HF_HEAD_NAMES`
maps between them, so our output loads in the matching `transformers` class and a checkpoint's
head (bert-base-uncased's, our `pretrain` output) loads here. The decoder's weight *is* the
word-embedding matrix (tied), as in BERT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import BertConfig
from ..errors import UserError
from .bert import BertModel, _activation

# The head's own tensors, as named inside `cls.predictions`. The decoder weight is absent: it
# is the word-embedding matrix, and safetensors cannot store one tensor under two names.
HEAD_KEYS = ("transform.dense.weight", "transform.dense.bias", "transform.LayerNorm.weight",
             "transform.LayerNorm.bias", "bias")

# Per family: the HF masked-LM class, and our head key -> HF's key(s), the first one written,
# the others also read (HF also names the output bias `decoder.bias`; some checkpoints carry only that).
HF_MLM_CLASS = {"bert": "BertForMaskedLM", "mpnet": "MPNetForMaskedLM"}
HF_HEAD_NAMES = {
    "bert": {k: (f"cls.predictions.{k}",) for k in HEAD_KEYS} | {"bias": ("cls.predictions.bias", "cls.predictions.decoder.bias")},
    "mpnet": {"transform.dense.weight": ("lm_head.dense.weight",), "transform.dense.bias": ("lm_head.dense.bias",),
              "transform.LayerNorm.weight": ("lm_head.layer_norm.weight",),
              "transform.LayerNorm.bias": ("lm_head.layer_norm.bias",),
              "bias": ("lm_head.bias", "lm_head.decoder.bias")},
}


class BertPredictionHeadTransform(nn.Module):
    """dense -> activation -> LayerNorm, before the vocabulary projection."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """Transform, then a vocabulary projection tied to the word embeddings, plus a bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight  # tied: one Parameter, two names
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden)) + self.bias


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, word_embeddings)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden)


class BertForMaskedLM(nn.Module):
    """`model(input_ids, attention_mask)` -> vocabulary logits at every position.

    `masked_logits` scores only chosen positions: the vocabulary projection is most of the
    head's cost, and pretraining needs it at the ~15% masked tokens only.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        # The pooler is kept (not used here) so that the output serves `bertmtl train --pooling pooler`.
        self.bert = BertModel(config)
        self.cls = BertOnlyMLMHead(config, self.bert.embeddings.word_embeddings)
        self.reset_head()

    def reset_head(self) -> None:
        """BERT's initialisation for the head: N(0, 0.02) dense, identity LayerNorm, zero bias."""
        p = self.cls.predictions
        nn.init.normal_(p.transform.dense.weight, std=self.config.initializer_range)
        nn.init.zeros_(p.transform.dense.bias)
        nn.init.ones_(p.transform.LayerNorm.weight)
        nn.init.zeros_(p.transform.LayerNorm.bias)
        nn.init.zeros_(p.bias)

    def tie_weights(self) -> None:
        """Point the decoder at the word embeddings again (after replacing either)."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        unpad = attention_mask is not None and input_ids.device.type == "cpu"
        return self.bert(input_ids, attention_mask, token_type_ids, unpad=unpad).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.cls(self.hidden(input_ids, attention_mask, token_type_ids))

    def masked_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      positions: torch.Tensor) -> torch.Tensor:
        """Logits (n, vocab) at the positions where the boolean (batch, seq) `positions` is set."""
        return self.cls(self.hidden(input_ids, attention_mask)[positions])

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors under HF's masked-LM names for the family, the tied decoder weight stored once (as HF does)."""
        from .loading import to_hf_key

        family = self.config.family
        out = {family.hf_prefix + to_hf_key(k, family): v for k, v in self.bert.state_dict().items()}
        names = HF_HEAD_NAMES[family.model_type]
        for k, v in self.cls.predictions.state_dict().items():
            if k != "decoder.weight":
                out[names[k][0]] = v
        return {k: v.detach().contiguous() for k, v in out.items()}


@dataclass
class LoadedMlm:
    """A masked-LM model and where its head came from."""

    model: BertForMaskedLM
    head_from_checkpoint: bool
    source: Path


def has_mlm_head(directory: str | Path) -> bool:
    """Whether an HF directory's weights include a masked-LM head (reads the weights)."""
    from .loading import read_config, read_state_dict

    config = read_config(directory)  # read once: the state's key map depends on its family
    state = read_state_dict(directory, family=config.family)
    return all(_head_key(state, k, config.model_type) is not None for k in HEAD_KEYS)


def _head_key(state: dict, k: str, model_type: str) -> str | None:
    """The key under which `state` holds our head tensor `k`, if any."""
    return next((name for name in HF_HEAD_NAMES[model_type][k] if name in state), None)


def load_mlm(path: str | Path | None = None, require_head: bool = False,
             device: str | torch.device | None = None) -> LoadedMlm:
    """An HF-format BERT or MPNet directory (or built-in name, None = default) as a BertForMaskedLM.

    The head is reused when the checkpoint has one (bert-base-uncased, our `pretrain` output);
    otherwise it is freshly initialised, or, with `require_head`, that is an error.
    """
    from ..weights import resolve
    from .loading import checkpoint_state, is_checkpoint, load_into, read_state_dict

    directory = resolve(path)
    config = BertConfig.from_json(directory / "config.json")
    # A bertmtl checkpoint (another run's best/) has its encoder under our names, and no MLM head.
    state = checkpoint_state(directory, "encoder") if is_checkpoint(directory) else \
        read_state_dict(directory, family=config.family)
    model = BertForMaskedLM(config)
    load_into(model.bert, state, source=directory)
    keys = {k: _head_key(state, k, config.model_type) for k in HEAD_KEYS}
    present = [k for k, v in keys.items() if v is not None]
    if present and len(present) < len(HEAD_KEYS):
        missing = [HF_HEAD_NAMES[config.model_type][k][0] for k in HEAD_KEYS if keys[k] is None]
        raise UserError(f"{directory}: incomplete masked-LM head (missing {', '.join(missing)})")
    if not present and require_head:
        raise UserError(
            f"{directory}: these weights have no masked-LM head ({HF_HEAD_NAMES[config.model_type]['bias'][0]} ...). Run "
            f"`bertmtl pretrain --out DIR` first and pass DIR, or pass a BERT directory that has a "
            f"masked-LM head (bert-base-uncased has one; all-MiniLM-L6-v2 has none).")
    if present:
        head = {k: state[v] for k, v in keys.items()}
        want = dict(model.cls.predictions.state_dict())
        bad = [f"{k}: {tuple(head[k].shape)} vs {tuple(want[k].shape)}" for k in head if head[k].shape != want[k].shape]
        if bad:
            raise UserError(f"{directory}: masked-LM head does not fit its config.json: " + "; ".join(bad))
        with torch.no_grad():
            for k, v in head.items():
                want[k].copy_(v)
    if device is not None:
        model.to(device)
        model.tie_weights()
    return LoadedMlm(model, bool(present), directory)


def save_mlm(model: BertForMaskedLM, tokenizer, directory: str | Path) -> None:
    """Write an HF-format directory: config.json, model.safetensors, vocab.txt, tokenizer_config.json.

    It loads in `bertmtl train --pretrained DIR`, `BertModel.from_pretrained` and
    `transformers.BertForMaskedLM.from_pretrained`.
    """
    from ..fsutil import save_safetensors

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config["architectures"] = [HF_MLM_CLASS[model.config.model_type]]
    config["tie_word_embeddings"] = True
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = {k: v.cpu() for k, v in model.hf_state_dict().items()}
    save_safetensors(directory / "model.safetensors", state)
    tokenizer.save(directory)
