"""Tokenisation for every encoder family (the `tokenizers` library does the work).

BERT, ELECTRA, DistilBERT and MPNet read a WordPiece vocab.txt; RoBERTa and XLM-R a Hugging Face
tokenizer.json (byte-level BPE, SentencePiece Unigram). Special tokens and the pair layout come
from the encoder family (encoders/config.py): `[CLS] a [SEP] b [SEP]` with token types, or
`<s> a </s></s> b </s>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from .config import FAMILIES, family_of
from ..errors import UserError
from ..fsutil import os_errors
from ..tasks.text import text_problem

DEFAULT_MAX_LENGTH = 128


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


class EncoderTokenizer:
    """An encoder's tokenizer: its vocabulary, the family's special tokens and pair layout,
    truncation, padding (the `tokenizers` library does the work).

    Two sources (`from_dir` picks): a WordPiece vocab.txt (BERT, ELECTRA, DistilBERT, MPNet; the
    basic splitting and lowercasing built here, as HF's BertTokenizer does), or a Hugging Face
    tokenizer.json (RoBERTa's byte-level BPE, XLM-R's SentencePiece Unigram, ...: its normaliser,
    pre-tokeniser, model and decoder kept as the file has them; RoBERTa's vocab.json + merges.txt
    when there is no tokenizer.json). In both, the special tokens around a text and a pair are
    the encoder family's, so the layout always fits the encoder.
    """

    def __init__(self, tok: Tokenizer, vocab: dict[str, int], source: Path, *, model_type: str = "bert",
                 max_length: int = DEFAULT_MAX_LENGTH, model_max_length: int = 512, lowercase: bool | None = None,
                 wordpiece: bool = True):
        family = family_of(model_type)
        self.model_type = family.model_type
        sp = family.special
        for special in (sp.cls, sp.sep, sp.pad, sp.unk):
            if special not in vocab:
                raise UserError(f"{source}: vocabulary lacks {special} (a {self.model_type} vocabulary needs it)")
        self.source = source
        self.vocab = vocab
        self.wordpiece = wordpiece  # saved as vocab.txt (else as tokenizer.json)
        self.lowercase = lowercase
        # The input cannot be longer than the encoder's position table.
        self.max_length = max(8, min(max_length, model_max_length))
        self.pad_id, self.cls_id, self.sep_id = vocab[sp.pad], vocab[sp.cls], vocab[sp.sep]
        self.mask_id = vocab.get(sp.mask)
        self.mask_token = sp.mask
        tok.no_padding()  # we pad (dynamically, per batch)
        tok.post_processor = processors.TemplateProcessing(
            single=sp.single, pair=sp.pair, special_tokens=[(sp.cls, self.cls_id), (sp.sep, self.sep_id)],
        )
        tok.enable_truncation(self.max_length)  # "longest_first" for pairs, as HF does
        self._tok = tok

    def fingerprint(self) -> str:
        """A digest of everything that decides the token ids of a text: two tokenizers with the
        same one give the same ids (the models of an ensemble must read text alike)."""
        import hashlib

        return hashlib.sha256(f"{self.model_type}|{self.max_length}|{self._tok.to_str()}".encode()).hexdigest()

    @classmethod
    def from_vocab(cls, vocab_file: str | Path, lowercase: bool | None = None, max_length: int = DEFAULT_MAX_LENGTH,
                   model_max_length: int = 512, model_type: str = "bert") -> "EncoderTokenizer":
        """BERT's tokenizer from a WordPiece vocab.txt: basic splitting, lowercasing (where the
        vocabulary is uncased, unless `lowercase` says), WordPiece."""
        vocab_file = Path(vocab_file)
        try:
            vocab = models.WordPiece.read_file(str(vocab_file))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception on a bad file
            raise UserError(f"{vocab_file}: cannot read vocabulary ({e})") from None
        lowercase = _vocab_is_uncased(vocab) if lowercase is None else lowercase
        unk = family_of(model_type).special.unk
        tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        return cls(tok, vocab, vocab_file, model_type=model_type, max_length=max_length,
                   model_max_length=model_max_length, lowercase=lowercase)

    @classmethod
    def from_tokenizer_file(cls, path: str | Path, max_length: int = DEFAULT_MAX_LENGTH, model_max_length: int = 512,
                            model_type: str = "roberta") -> "EncoderTokenizer":
        """A Hugging Face tokenizer.json (any model the `tokenizers` library reads: BPE, Unigram, WordPiece)."""
        path = Path(path)
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception on a bad file
            raise UserError(f"{path}: cannot read the tokenizer ({str(e).splitlines()[0] if str(e) else e})") from None
        return cls(tok, tok.get_vocab(with_added_tokens=True), path, model_type=model_type, max_length=max_length,
                   model_max_length=model_max_length, wordpiece=False)

    @classmethod
    def from_bpe_files(cls, vocab: Path, merges: Path, max_length: int = DEFAULT_MAX_LENGTH,
                       model_max_length: int = 512, model_type: str = "roberta") -> "EncoderTokenizer":
        """RoBERTa's byte-level BPE from vocab.json and merges.txt (older repositories' layout)."""
        from tokenizers import decoders

        try:
            tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception on a bad file
            raise UserError(f"{vocab.parent}: cannot read vocab.json / merges.txt ({e})") from None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        sp = family_of(model_type).special
        tok.add_special_tokens([t for t in (sp.cls, sp.pad, sp.sep, sp.unk, sp.mask) if tok.token_to_id(t) is not None])
        return cls(tok, tok.get_vocab(with_added_tokens=True), vocab, model_type=model_type, max_length=max_length,
                   model_max_length=model_max_length, wordpiece=False)

    @classmethod
    def from_sentencepiece(cls, path: Path, options: dict, max_length: int = DEFAULT_MAX_LENGTH,
                           model_max_length: int = 512, model_type: str = "deberta-v2") -> "EncoderTokenizer":
        """DeBERTa-v3's tokenizer from its spm.model (its repositories have no tokenizer.json): the
        SentencePiece Unigram vocabulary with the normalisation and splitting transformers'
        DebertaV2Tokenizer builds around it (`options`: tokenizer_config.json's do_lower_case,
        split_by_punct, add_prefix_space)."""
        from tokenizers import Regex, decoders

        from .spm import read_pieces

        pieces = read_pieces(path)
        sp = family_of(model_type).special
        unk = next((i for i, (p, _) in enumerate(pieces) if p == sp.unk), 1)
        tok = Tokenizer(models.Unigram(pieces, unk_id=unk, byte_fallback=False))
        steps = [normalizers.Lowercase()] if options.get("do_lower_case") else []
        steps += [normalizers.Replace(Regex(r"\s{2,}|[\n\r\t]"), " "), normalizers.NFC(),
                  normalizers.Strip(left=False, right=True)]
        tok.normalizer = normalizers.Sequence(steps)
        scheme = "always" if options.get("add_prefix_space", True) else "first"
        split = [pre_tokenizers.Punctuation(behavior="isolated")] if options.get("split_by_punct") else []
        tok.pre_tokenizer = pre_tokenizers.Sequence([*split, pre_tokenizers.Metaspace(replacement="▁",
                                                                                      prepend_scheme=scheme)])
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)
        # The special tokens are whole tokens; [MASK] is not among DeBERTa-v3's pieces and comes next.
        tok.add_special_tokens([sp.cls, sp.sep, sp.pad, sp.unk, sp.mask])
        return cls(tok, tok.get_vocab(with_added_tokens=True), path, model_type=model_type, max_length=max_length,
                   model_max_length=model_max_length, wordpiece=False)

    @classmethod
    def from_dir(cls, directory: str | Path, max_length: int = DEFAULT_MAX_LENGTH) -> "EncoderTokenizer":
        """The tokenizer of an HF-format directory: vocab.txt (WordPiece), else tokenizer.json, else
        vocab.json + merges.txt; tokenizer_config.json and config.json where present."""
        directory = Path(directory)
        lowercase = None
        model_max = 512
        options: dict = {}
        cfg = directory / "tokenizer_config.json"
        if cfg.is_file():
            try:
                d = json.loads(cfg.read_text(encoding="utf-8"))
                options = d if isinstance(d, dict) else {}
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
                # RoBERTa-style positions start at pad_token_id + 1, so fewer tokens fit.
                offset = d.get("pad_token_id", 1) + 1 if family_of(model_type).padding_positions else 0
                model_max = min(model_max, int(d.get("max_position_embeddings", 512)) - offset)
            except (ValueError, TypeError, OSError, AttributeError):
                pass
        sizes = {"max_length": max_length, "model_max_length": model_max, "model_type": model_type}
        if (directory / "vocab.txt").is_file():
            return cls.from_vocab(directory / "vocab.txt", lowercase=lowercase, **sizes)
        if (directory / "tokenizer.json").is_file():
            return cls.from_tokenizer_file(directory / "tokenizer.json", **sizes)
        if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
            return cls.from_bpe_files(directory / "vocab.json", directory / "merges.txt", **sizes)
        if (directory / "spm.model").is_file() and family_of(model_type).disentangled:
            return cls.from_sentencepiece(directory / "spm.model", options, **sizes)
        raise UserError(f"{directory}: no tokenizer bertmtl reads (vocab.txt, tokenizer.json, vocab.json and "
                        f"merges.txt, or DeBERTa's spm.model)")

    def _tokenizer_json(self) -> Tokenizer:
        tok = Tokenizer.from_str(self._tok.to_str())
        tok.no_truncation()  # HF's tokenizer truncates when asked, up to model_max_length
        return tok

    def save(self, directory: str | Path, extra_config: dict | None = None) -> None:
        """Write the vocabulary (vocab.txt for WordPiece, else tokenizer.json) and tokenizer_config.json
        (with `extra_config`'s keys) into `directory` (HF layout)."""
        directory = Path(directory)
        if self.wordpiece:
            inv = sorted(self.vocab.items(), key=lambda kv: kv[1])
            (directory / "vocab.txt").write_text("".join(t + "\n" for t, _ in inv), encoding="utf-8")
        else:
            with os_errors(directory / "tokenizer.json"):  # a full disk: OSError, not the library's Exception
                self._tokenizer_json().save(str(directory / "tokenizer.json"))
        config = {"model_max_length": self.max_length, "tokenizer_class": family_of(self.model_type).tokenizer_class}
        if self.lowercase is not None:
            config["do_lower_case"] = self.lowercase
        (directory / "tokenizer_config.json").write_text(json.dumps({**config, **(extra_config or {})},
                                                                    indent=2 if extra_config else None), encoding="utf-8")

    def save_for_hf(self, directory: str | Path) -> None:
        """Write what HF's AutoTokenizer (and sentence-transformers) load: tokenizer.json (this very
        tokenizer, so their ids are ours), vocab.txt for WordPiece, tokenizer_config.json,
        special_tokens_map.json."""
        directory = Path(directory)
        with os_errors(directory / "tokenizer.json"):
            self._tokenizer_json().save(str(directory / "tokenizer.json"))
        family = family_of(self.model_type)
        sp = family.special
        special = {"cls_token": sp.cls, "sep_token": sp.sep, "pad_token": sp.pad, "unk_token": sp.unk,
                   "mask_token": sp.mask}
        if family.padding_positions:  # RoBERTa-style: <s> and </s> also begin and end a text
            special |= {"bos_token": sp.cls, "eos_token": sp.sep}
        (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
        extra = {"strip_accents": None, "tokenize_chinese_chars": True} if self.wordpiece else {}
        self.save(directory, {**extra, **special})

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
