"""Configuration dataclasses: the encoder's (read from a Hugging Face config.json).

One encoder implementation serves the post-LN transformer families: BERT, RoBERTa (and
XLM-RoBERTa, the same body), ELECTRA discriminators, DistilBERT and MPNet. What differs between
them is data, in `FAMILIES`: which embeddings exist, how absolute positions are numbered,
whether attention gets a relative-position bias, whether there is a pooler, the special
tokens, how Hugging Face names the parameters, the config fields and the masked-LM head. Code
asks the family; it does not branch on its name.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..fsutil import read_json
from ..numbers import number_problem


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
    # (config.json's name, ours) for fields this family's config.json names its own way (DistilBERT's dim, ...)
    config_names: tuple[tuple[str, str], ...] = ()
    pooler: bool = True  # a tanh pooler over [CLS] (pretrained with next-sentence prediction)
    tokenizer_class: str = "BertTokenizer"  # what tokenizer_config.json names for HF's AutoTokenizer
    # The masked-LM head: HF's class, and our head key -> HF's key(s) (the first one written, the
    # others also read: HF also names the output bias `decoder.bias`); None: the family has none.
    mlm_class: str | None = None
    mlm_names: dict = field(default_factory=dict)
    # DeBERTa's disentangled attention: content-to-position and position-to-content scores from
    # shared relative-position embeddings, in every layer (its settings: BertConfig.disentangled).
    disentangled: bool = False


@dataclass(frozen=True)
class Disentangled:
    """DeBERTa-v2/v3's relative-position settings, as its config.json gives them."""

    position_buckets: int  # log-bucketed offsets (256 in v3); <= 0: raw offsets up to max_relative_positions
    max_relative_positions: int
    pos_att_type: tuple[str, ...]  # "c2p" (content to position), "p2c" (position to content)
    share_att_key: bool  # positions projected by the layer's own query / key weights (v3) or their own
    norm_rel_ebd: bool  # a LayerNorm over the relative-position embeddings (v3)

    @property
    def span(self) -> int:
        """Offsets -span..span-1 have embeddings (2 * span rows)."""
        return self.position_buckets if self.position_buckets > 0 else self.max_relative_positions


def _lm_head(prefix: str, dense: str = "dense", norm: str = "layer_norm", bias: str = "bias",
             decoder: str = "decoder") -> dict:
    """The masked-LM head names of a family: our head key -> HF's key(s)."""
    return {"transform.dense.weight": (f"{prefix}{dense}.weight",), "transform.dense.bias": (f"{prefix}{dense}.bias",),
            "transform.LayerNorm.weight": (f"{prefix}{norm}.weight",),
            "transform.LayerNorm.bias": (f"{prefix}{norm}.bias",),
            "bias": tuple(dict.fromkeys((f"{prefix}{bias}", f"{prefix}{decoder}.bias")))}


BERT_SPECIAL = SpecialTokens("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]",
                             single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1")
# RoBERTa's layout (MPNet's too): <s> a </s></s> b </s>, no token types.
ROBERTA_SPECIAL = SpecialTokens("<s>", "</s>", "<pad>", "<unk>", "<mask>",
                                single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>")
ROBERTA = dict(hf_prefix="roberta.", token_types=True, padding_positions=True, relative_attention=False,
               special=ROBERTA_SPECIAL, tokenizer_class="RobertaTokenizer",
               defaults={"vocab_size": 50265, "pad_token_id": 1, "max_position_embeddings": 514, "type_vocab_size": 1},
               unused_fields=("relative_attention_num_buckets", "embedding_size"),
               mlm_names=_lm_head("lm_head."))


FAMILIES = {
    "bert": Family(
        model_type="bert", architecture="BertModel", hf_prefix="bert.",
        token_types=True, padding_positions=False, relative_attention=False, special=BERT_SPECIAL,
        unused_fields=("relative_attention_num_buckets", "embedding_size"),
        mlm_class="BertForMaskedLM",
        mlm_names={k: (f"cls.predictions.{k}",) for k in ("transform.dense.weight", "transform.dense.bias",
                                                          "transform.LayerNorm.weight", "transform.LayerNorm.bias")}
        | {"bias": ("cls.predictions.bias", "cls.predictions.decoder.bias")},
    ),
    "roberta": Family(model_type="roberta", architecture="RobertaModel", mlm_class="RobertaForMaskedLM", **ROBERTA),
    "xlm-roberta": Family(model_type="xlm-roberta", architecture="XLMRobertaModel", mlm_class="XLMRobertaForMaskedLM",
                          **{**ROBERTA, "tokenizer_class": "XLMRobertaTokenizer",
                             "defaults": {**ROBERTA["defaults"], "vocab_size": 250002}}),
    # ELECTRA's discriminator is BERT's body with no pooler; its embeddings may be narrower than
    # the hidden size (embedding_size), projected up by `embeddings_project`. Its masked-LM head is
    # the generator's (ElectraForMaskedLM); a discriminator checkpoint has none, so pretraining starts one.
    "electra": Family(
        model_type="electra", architecture="ElectraModel", hf_prefix="electra.",
        token_types=True, padding_positions=False, relative_attention=False, special=BERT_SPECIAL,
        unused_fields=("relative_attention_num_buckets",), pooler=False, tokenizer_class="ElectraTokenizer",
        defaults={"embedding_size": 128, "hidden_size": 256, "num_attention_heads": 4, "intermediate_size": 1024},
        mlm_class="ElectraForMaskedLM",
        mlm_names=_lm_head("generator_predictions.", norm="LayerNorm") | {"bias": ("generator_lm_head.bias",)},
    ),
    # DistilBERT: BERT's layers under other names, no token types, no pooler; its config.json
    # names the sizes its own way (dim, n_layers, ...).
    "distilbert": Family(
        model_type="distilbert", architecture="DistilBertModel", hf_prefix="distilbert.",
        token_types=False, padding_positions=False, relative_attention=False, special=BERT_SPECIAL,
        key_map=(("transformer.layer.", "encoder.layer."),
                 (".attention.q_lin.", ".attention.self.query."),
                 (".attention.k_lin.", ".attention.self.key."),
                 (".attention.v_lin.", ".attention.self.value."),
                 (".attention.out_lin.", ".attention.output.dense."),
                 (".sa_layer_norm.", ".attention.output.LayerNorm."),
                 (".ffn.lin1.", ".intermediate.dense."),
                 (".ffn.lin2.", ".output.dense."),
                 (".output_layer_norm.", ".output.LayerNorm.")),
        config_names=(("dim", "hidden_size"), ("n_layers", "num_hidden_layers"), ("n_heads", "num_attention_heads"),
                      ("hidden_dim", "intermediate_size"), ("dropout", "hidden_dropout_prob"),
                      ("attention_dropout", "attention_probs_dropout_prob"), ("activation", "hidden_act")),
        defaults={"num_hidden_layers": 6},
        unused_fields=("type_vocab_size", "relative_attention_num_buckets", "embedding_size", "layer_norm_eps"),
        pooler=False, tokenizer_class="DistilBertTokenizer", mlm_class="DistilBertForMaskedLM",
        mlm_names=_lm_head("", dense="vocab_transform", norm="vocab_layer_norm", bias="vocab_projector.bias",
                           decoder="vocab_projector"),
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
        unused_fields=("type_vocab_size", "embedding_size"), tokenizer_class="MPNetTokenizer",
        mlm_class="MPNetForMaskedLM", mlm_names=_lm_head("lm_head."),
    ),
}


DEBERTA_HEAD = {"transform.dense.weight": ("dense.weight",), "transform.dense.bias": ("dense.bias",),
                "transform.LayerNorm.weight": ("LayerNorm.weight",), "transform.LayerNorm.bias": ("LayerNorm.bias",),
                "bias": ("bias",)}
FAMILIES["deberta-v2"] = Family(
    # DeBERTa-v2 and v3 (model_type deberta-v2): BERT's layers with disentangled attention, no
    # token types, no pooler, and in v3 no absolute positions (position_biased_input false).
    # Its masked-LM head is written as HF's DebertaV2ForMaskedLM reads it by default (legacy:
    # BERT's cls.predictions names) and read under the original release's names too.
    model_type="deberta-v2", architecture="DebertaV2Model", hf_prefix="deberta.",
    token_types=False, padding_positions=False, relative_attention=False, disentangled=True, special=BERT_SPECIAL,
    key_map=((".attention.self.query_proj.", ".attention.self.query."),
             (".attention.self.key_proj.", ".attention.self.key."),
             (".attention.self.value_proj.", ".attention.self.value.")),
    defaults={"vocab_size": 128100, "layer_norm_eps": 1e-7, "type_vocab_size": 0},
    unused_fields=("relative_attention_num_buckets", "embedding_size"), pooler=False,
    tokenizer_class="DebertaV2Tokenizer", mlm_class="DebertaV2ForMaskedLM",
    mlm_names={k: (f"cls.predictions.{k}", f"lm_predictions.lm_head.{v[0]}") for k, v in DEBERTA_HEAD.items()}
    | {"bias": ("cls.predictions.bias", "cls.predictions.decoder.bias", "lm_predictions.lm_head.bias")},
)


def family_of(model_type: str | None) -> Family:
    """The family of a config.json model_type (None, as in old BERT configs, means BERT)."""
    try:
        return FAMILIES[model_type or "bert"]
    except KeyError:
        raise UserError(f"config.json describes a {model_type!r} model; bertmtl reads "
                        f"{', '.join(FAMILIES)} encoders") from None


def _position_scores(extra: dict) -> list[str]:
    """DeBERTa's pos_att_type ("p2c|c2p" or a list) as a list of names."""
    kinds = extra.get("pos_att_type") or []
    return [k.strip() for k in kinds.lower().split("|")] if isinstance(kinds, str) else [str(k).lower() for k in kinds]


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
    embedding_size: int | None = None  # ELECTRA: the embeddings' width when narrower than hidden_size
    # Anything else the file carried, written back unchanged so HF tools still read our output.
    extra: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Sizes, ids and rates checked here, naming the field, rather than failing deep in the
        # model (a zero head count divides by zero, a negative size is a negative dimension).
        family = family_of(self.model_type)  # an unknown family is an error here, not deep in the model
        sizes = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", *(["type_vocab_size"] if family.token_types else []),
                 *(["relative_attention_num_buckets"] if family.relative_attention else []),
                 *(["embedding_size"] if self.embedding_size is not None else [])]
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
        if family.disentangled:
            self._check_deberta()

    def _check_deberta(self) -> None:
        """What of DeBERTa-v2's options our encoder does not build is an error, not a silent difference."""
        x = self.extra
        unsupported = {"conv_kernel_size (the convolution of deberta-v2-xlarge and larger)": x.get("conv_kernel_size", 0),
                       "type_vocab_size > 0": self.type_vocab_size,
                       "embedding_size other than hidden_size": (self.embedding_size or self.hidden_size) != self.hidden_size}
        if bad := [name for name, value in unsupported.items() if value]:
            raise UserError(f"this DeBERTa-v2 configuration uses {', '.join(bad)}, which bertmtl's encoder does not "
                            f"build (DeBERTa-v3 xsmall/small/base/large and deberta-v2 base-size models do not use it)")
        kinds = _position_scores(x)
        if stray := [k for k in kinds if k not in ("c2p", "p2c")]:
            raise UserError(f"pos_att_type {', '.join(map(str, stray))}: bertmtl's DeBERTa attention has c2p and p2c")

    @property
    def disentangled(self) -> Disentangled | None:
        """DeBERTa's relative-position settings (from config.json, HF's defaults where absent), or None."""
        if not self.family.disentangled or not self.extra.get("relative_attention", False):
            return None
        x = self.extra
        kinds = _position_scores(x)
        max_rel = x.get("max_relative_positions", -1)
        return Disentangled(position_buckets=int(x.get("position_buckets", -1)),
                            max_relative_positions=int(max_rel) if max_rel and max_rel > 0 else self.max_position_embeddings,
                            pos_att_type=tuple(k for k in ("c2p", "p2c") if k in kinds),
                            share_att_key=bool(x.get("share_att_key", False)),
                            norm_rel_ebd="layer_norm" in str(x.get("norm_rel_ebd", "none")).lower())

    @property
    def attention_scale(self) -> float:
        """1 / sqrt(head_dim * (1 + the kinds of position scores added)): DeBERTa divides by the number
        of terms it sums, whether or not relative attention is on (HF's DisentangledSelfAttention)."""
        terms = 1
        if self.family.disentangled:
            terms += sum(k in _position_scores(self.extra) for k in ("c2p", "p2c"))
        return 1.0 / math.sqrt(self.head_dim * terms)

    @property
    def position_embeddings(self) -> bool:
        """Whether absolute positions are embedded and added to the input (not DeBERTa-v3)."""
        return not self.family.disentangled or bool(self.extra.get("position_biased_input", True))

    def _check(self, name: str, kind: type, **bounds) -> None:
        """UserError naming the field unless it is a `kind` (an int for sizes; a float may be
        written as an int) within `bounds`, finite (numbers.py number_problem's rule)."""
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
        theirs = dict(family.config_names)
        d = {theirs.get(k, k): v for k, v in d.items()}
        known = {**family.defaults, **{k: v for k, v in d.items() if k in names}, "model_type": family.model_type}
        extra = {k: v for k, v in d.items() if k not in names and k != "extra"}
        return cls(**known, extra=extra)

    @classmethod
    def from_json(cls, path: str | Path) -> "BertConfig":
        path = Path(path)
        d = read_json(path, missing="no such file (a Hugging Face encoder directory needs config.json)")
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
        ours = {o: t for t, o in self.family.config_names}
        return {ours.get(k, k): v for k, v in d.items()}

    @property
    def family(self) -> Family:
        return family_of(self.model_type)

    @property
    def embedding_width(self) -> int:
        """The width of the embeddings (ELECTRA's may be narrower than the hidden states)."""
        return self.embedding_size or self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
