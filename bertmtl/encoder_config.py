"""Configuration dataclasses: the encoder's (read from a Hugging Face config.json).

One encoder implementation serves two architecture families, BERT and MPNet. What differs
between them is data, in `FAMILIES`: which embeddings exist, how absolute positions are
numbered, whether attention gets a relative-position bias, the special tokens, and how
Hugging Face names the parameters. Code asks the family; it does not branch on its name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .fsutil import read_json
from .options import number_problem


@dataclass(frozen=True)
class SpecialTokens:
    """The tokenizer's special tokens and how a pair is laid out (`a` and `b` are the texts)."""

    cls: str
    sep: str
    pad: str
    unk: str
    mask: str
    single: str  # `tokenizers` templates: $A, $B the texts, ":1" token type 1
    pair: str


@dataclass(frozen=True)
class Family:
    """What distinguishes one architecture of our encoder from another."""

    model_type: str  # config.json's model_type
    architecture: str  # the Hugging Face class written into config.json's "architectures"
    hf_prefix: str  # prefix of encoder keys inside HF task models ("bert.", "mpnet.")
    token_types: bool  # a token-type (segment) embedding
    padding_positions: bool  # RoBERTa positions: count real tokens from pad_token_id + 1
    relative_attention: bool  # a T5-style relative-position bias added to every layer's scores
    special: SpecialTokens
    # (HF fragment, our fragment) pairs that rename parameter keys in checkpoints of this
    # family to our names; applied in reverse, ours back to HF's (see model/loading.py).
    key_map: tuple[tuple[str, str], ...] = ()
    defaults: dict = field(default_factory=dict)  # config.json fields whose HF default differs
    unused_fields: tuple[str, ...] = ()  # our config fields that this family's config.json lacks


FAMILIES = {
    "bert": Family(
        model_type="bert", architecture="BertModel", hf_prefix="bert.",
        token_types=True, padding_positions=False, relative_attention=False,
        special=SpecialTokens("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]",
                              single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1"),
        unused_fields=("relative_attention_num_buckets",),
    ),
    "mpnet": Family(
        model_type="mpnet", architecture="MPNetModel", hf_prefix="mpnet.",
        token_types=False, padding_positions=True, relative_attention=True,
        special=SpecialTokens("<s>", "</s>", "<pad>", "[UNK]", "<mask>",
                              single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>"),
        key_map=((".attention.attn.q.", ".attention.self.query."),
                 (".attention.attn.k.", ".attention.self.key."),
                 (".attention.attn.v.", ".attention.self.value."),
                 (".attention.attn.o.", ".attention.output.dense."),
                 (".attention.LayerNorm.", ".attention.output.LayerNorm.")),
        defaults={"vocab_size": 30527, "pad_token_id": 1, "max_position_embeddings": 514},
        unused_fields=("type_vocab_size",),
    ),
}


def family_of(model_type: str | None) -> Family:
    """The family of a config.json model_type (None, as in old BERT configs, means BERT)."""
    try:
        return FAMILIES[model_type or "bert"]
    except KeyError:
        raise UserError(f"config.json describes a {model_type!r} model; bertmtl reads "
                        f"{' and '.join(FAMILIES)} encoders") from None


@dataclass
class BertConfig:
    """Shape and regularisation of a BERT encoder; field names follow HF's config.json."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    model_type: str = "bert"  # the architecture family, a key of FAMILIES
    relative_attention_num_buckets: int = 32  # MPNet's relative-position bias
    # Anything else the file carried, written back unchanged so HF tools still read our output.
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Sizes, ids and rates checked here, naming the field, rather than failing deep in the
        # model (a zero head count divides by zero, a negative size is a negative dimension).
        family = family_of(self.model_type)  # an unknown family is an error here, not deep in the model
        sizes = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", *(["type_vocab_size"] if family.token_types else []),
                 *(["relative_attention_num_buckets"] if family.relative_attention else [])]
        for name in sizes:
            self._check(name, int, min=1)
        if self.pad_token_id is not None or family.padding_positions:  # BERT configs may leave it null
            self._check("pad_token_id", int, min=0, max=self.vocab_size - 1)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            self._check(name, float, min=0, max=1, max_open=True)
        self._check("layer_norm_eps", float, min=0, min_open=True)
        self._check("initializer_range", float, min=0)
        if family.padding_positions and self.max_position_embeddings <= self.pad_token_id + 1:
            raise UserError(f"max_position_embeddings {self.max_position_embeddings} leaves no position for a token "
                            f"(positions start at pad_token_id + 1 = {self.pad_token_id + 1})")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
            raise UserError(f"unsupported hidden_act {self.hidden_act!r}")

    def _check(self, name: str, kind: type, **bounds) -> None:
        """UserError naming the field unless it is a `kind` (an int for sizes; a float may be
        written as an int) within `bounds`, finite (options.number_problem's rule)."""
        value = getattr(self, name)
        kinds = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise UserError(f"{name} must be {'a whole number' if kind is int else 'a number'}, not {value!r}")
        if problem := number_problem(value, **bounds):
            raise UserError(f"{name} {value!r} {problem}")

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        family = family_of(d.get("model_type"))
        known = {**family.defaults, **{k: v for k, v in d.items() if k in names}, "model_type": family.model_type}
        extra = {k: v for k, v in d.items() if k not in names and k != "extra"}
        return cls(**known, extra=extra)

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        path = Path(path)
        d = read_json(path, missing="no such file (an HF BERT or MPNet directory needs config.json)")
        try:
            return cls.from_dict(d)
        except TypeError as e:
            raise UserError(f"{path}: bad field type ({e})") from None
        except UserError as e:  # a field out of range: say which file holds it
            raise UserError(f"{path}: {e.message}") from None

    def to_dict(self) -> dict:
        d = dict(self.extra)
        skip = {"extra", *self.family.unused_fields}
        d.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip})
        d.setdefault("architectures", [self.family.architecture])
        return d

    @property
    def family(self) -> Family:
        return family_of(self.model_type)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
