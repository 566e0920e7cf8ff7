"""WordPiece tokenisation from a checkpoint's vocab.txt (the `tokenizers` library does the work).

BERT and MPNet share the uncased WordPiece; their special tokens and pair layout come from the
encoder family (encoder_config.py): `[CLS] a [SEP] b [SEP]` with token types, or `<s> a </s></s> b </s>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from .encoder_config import FAMILIES, family_of
from .errors import UserError
from .fsutil import os_errors
from .text import text_problem

DEFAULT_MAX_LENGTH = 128


# What HF's AutoTokenizer should build from our saved directory.
_TOKENIZER_CLASS = {"bert": "BertTokenizer", "mpnet": "MPNetTokenizer"}


@dataclass
class Encoded:
    """One tokenised input: word-piece ids, token types, and whether it was truncated."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool = False


@dataclass
class Batch:
    """Padded tensors for the encoder."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "Batch":
        return Batch(*(t.to(device, non_blocking=non_blocking) for t in (self.input_ids, self.attention_mask, self.token_type_ids)))

    def pin_memory(self) -> "Batch":
        return Batch(*(t.pin_memory() for t in (self.input_ids, self.attention_mask, self.token_type_ids)))


def _vocab_is_uncased(vocab: dict[str, int]) -> bool:
    special = {t for f in FAMILIES.values() for t in vars(f.special).values()}
    return not any(t != t.lower() for t in vocab if not (t.startswith("[") and t.endswith("]")) and t not in special)


class WordPieceTokenizer:
    """BERT's tokenizer: basic splitting + WordPiece, the family's special tokens, truncation, padding.

    `model_type` is the encoder family ("bert" or "mpnet"), which fixes the special tokens.
    """

    def __init__(self, vocab_file: str | Path, lowercase: bool | None = None,
                 max_length: int = DEFAULT_MAX_LENGTH, model_max_length: int = 512, model_type: str = "bert"):
        vocab_file = Path(vocab_file)
        try:
            vocab = models.WordPiece.read_file(str(vocab_file))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception on a bad file
            raise UserError(f"{vocab_file}: cannot read vocabulary ({e})") from None
        self.model_type = family_of(model_type).model_type
        sp = family_of(model_type).special
        for special in (sp.cls, sp.sep, sp.pad, sp.unk):
            if special not in vocab:
                raise UserError(f"{vocab_file}: vocabulary lacks {special} (a {self.model_type} vocabulary needs it)")
        self.vocab_file = vocab_file
        self.vocab = vocab
        self.lowercase = _vocab_is_uncased(vocab) if lowercase is None else lowercase
        # BERT's input cannot be longer than its position table.
        self.max_length = max(8, min(max_length, model_max_length))
        self.pad_id, self.cls_id, self.sep_id = vocab[sp.pad], vocab[sp.cls], vocab[sp.sep]
        self.mask_id = vocab.get(sp.mask)
        self.mask_token = sp.mask
        tok = Tokenizer(models.WordPiece(vocab, unk_token=sp.unk, max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=self.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.post_processor = processors.TemplateProcessing(
            single=sp.single, pair=sp.pair, special_tokens=[(sp.cls, self.cls_id), (sp.sep, self.sep_id)],
        )
        tok.enable_truncation(self.max_length)  # "longest_first" for pairs, as HF does
        self._tok = tok

    @classmethod
    def from_dir(cls, directory: str | Path, max_length: int = DEFAULT_MAX_LENGTH) -> "WordPieceTokenizer":
        """The tokenizer of an HF-format directory (vocab.txt, optional tokenizer_config.json)."""
        directory = Path(directory)
        lowercase = None
        model_max = 512
        cfg = directory / "tokenizer_config.json"
        if cfg.is_file():
            try:
                d = json.loads(cfg.read_text(encoding="utf-8"))
                lowercase = d.get("do_lower_case")
                model_max = min(int(d.get("model_max_length", 512)), 512) or 512
            except (ValueError, TypeError, OSError):
                pass  # fall back to what the vocabulary says
        conf = directory / "config.json"
        model_type = "bert"
        if conf.is_file():
            try:
                d = json.loads(conf.read_text(encoding="utf-8"))
                model_type = d.get("model_type") or "bert"
                # RoBERTa-style positions (MPNet) start at pad_token_id + 1, so fewer tokens fit.
                offset = d.get("pad_token_id", 1) + 1 if family_of(model_type).padding_positions else 0
                model_max = min(model_max, int(d.get("max_position_embeddings", 512)) - offset)
            except (ValueError, TypeError, OSError, AttributeError):
                pass
        return cls(directory / "vocab.txt", lowercase=lowercase, max_length=max_length, model_max_length=model_max,
                   model_type=model_type)

    def save(self, directory: str | Path, extra_config: dict | None = None) -> None:
        """Write vocab.txt and tokenizer_config.json (with `extra_config`'s keys) into `directory` (HF layout)."""
        directory = Path(directory)
        inv = sorted(self.vocab.items(), key=lambda kv: kv[1])
        (directory / "vocab.txt").write_text("".join(t + "\n" for t, _ in inv), encoding="utf-8")
        (directory / "tokenizer_config.json").write_text(json.dumps(
            {"do_lower_case": self.lowercase, "model_max_length": self.max_length,
             "tokenizer_class": _TOKENIZER_CLASS[self.model_type], **(extra_config or {})},
            indent=2 if extra_config else None), encoding="utf-8")

    def save_for_hf(self, directory: str | Path) -> None:
        """Write what HF's AutoTokenizer (and sentence-transformers) load: vocab.txt, tokenizer.json
        (this very tokenizer, so their ids are ours), tokenizer_config.json, special_tokens_map.json."""
        directory = Path(directory)
        tok = Tokenizer.from_str(self._tok.to_str())
        tok.no_truncation()  # HF's tokenizer truncates when asked, up to model_max_length
        with os_errors(directory / "tokenizer.json"):  # a full disk: OSError, not the library's Exception
            tok.save(str(directory / "tokenizer.json"))
        sp = family_of(self.model_type).special
        special = {"cls_token": sp.cls, "sep_token": sp.sep, "pad_token": sp.pad, "unk_token": sp.unk,
                   "mask_token": sp.mask}
        if self.model_type == "mpnet":  # RoBERTa-style: <s> and </s> also begin and end a text
            special |= {"bos_token": sp.cls, "eos_token": sp.sep}
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
        self.save(directory, {"strip_accents": None, "tokenize_chinese_chars": True, **special})

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, texts: list[str], pairs: list[str] | None = None) -> list[Encoded]:
        """Tokenise sentences (or sentence pairs) without padding.

        Raises UserError naming the text if one is not valid Unicode (see text_problem)."""
        inputs = texts if pairs is None else list(zip(texts, pairs))
        try:
            out = self._tok.encode_batch(inputs, add_special_tokens=True)
        except TypeError:
            # tokenizers (Rust) takes only valid UTF-8 and says so with a TypeError about its
            # input types, which names neither the text nor the problem: find and name them.
            for n, item in enumerate(inputs, 1):
                for t in (item if pairs is not None else (item,)):
                    if problem := text_problem(t):
                        raise UserError(f"text {n} is {problem}") from None
            raise
        return [Encoded(e.ids, e.type_ids, bool(e.overflowing)) for e in out]

    def pad(self, items: list[Encoded]) -> Batch:
        """Pad to the longest item (dynamic padding)."""
        n, t = len(items), max(len(e.ids) for e in items)
        ids = torch.full((n, t), self.pad_id, dtype=torch.long)
        types = torch.zeros((n, t), dtype=torch.long)
        mask = torch.zeros((n, t), dtype=torch.long)
        for i, e in enumerate(items):
            k = len(e.ids)
            ids[i, :k] = torch.tensor(e.ids)
            types[i, :k] = torch.tensor(e.type_ids)
            mask[i, :k] = 1
        return Batch(ids, mask, types)

    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> Batch:
        """Tokenise and pad in one go."""
        return self.pad(self.encode(texts, pairs))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)
