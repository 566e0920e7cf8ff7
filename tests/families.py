"""Tiny random encoders of every family, built and saved by transformers (`save_pretrained`: the
real file layout, safetensors or pytorch_model.bin), each with the tokenizer files its family
ships: WordPiece vocab.txt (ELECTRA, DistilBERT), byte-level BPE tokenizer.json (RoBERTa),
SentencePiece-style Unigram tokenizer.json (XLM-RoBERTa); BERT and MPNet with WordPiece vocab.txt."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .conftest import REAL_PAIRS, REAL_SENTENCES, WORDS, tiny_vocab, write_tiny_mpnet

ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0-4, as in roberta-base


def _training_text() -> list[str]:
    a, b = zip(*REAL_PAIRS)
    return [" ".join(WORDS)] * 4 + list(REAL_SENTENCES) + list(a) + list(b)


def _bpe_tokenizer(vocab_size: int = 400):
    """RoBERTa's kind of tokenizer: byte-level BPE, trained on the tests' own text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_training_text(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def _unigram_tokenizer(vocab_size: int = 300, specials=tuple(ROBERTA_SPECIALS), unk: str = "<unk>"):
    """XLM-R's (and DeBERTa-v3's) kind: a SentencePiece Unigram model with Metaspace splitting."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(_training_text(), trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), unk_token=unk))
    return tok


ROBERTA_TOKENS = dict(bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", pad_token="<pad>",
                      unk_token="<unk>", mask_token="<mask>")
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)

# family -> (model class, config class, config kwargs, tokenizer source)
FAMILY_NAMES = ("bert", "mpnet", "roberta", "xlm-roberta", "electra", "distilbert", "deberta-v3", "deberta-v2")
# DeBERTa-v3's settings (log-bucketed offsets, shared projections, normalised positions, no absolute
# ones), with 8 buckets so that the test sentences reach the logarithmic ones; and the other
# branches of DeBERTa-v2's attention (raw offsets, own position projections, absolute positions).
DEBERTA = {"deberta-v3": dict(position_buckets=8, share_att_key=True, norm_rel_ebd="layer_norm",
                              position_biased_input=False),
           "deberta-v2": dict(position_buckets=-1, max_relative_positions=24, share_att_key=False,
                              norm_rel_ebd="none", position_biased_input=True)}


def write_tiny_family(directory: Path, family: str, seed: int = 0, weights: str = "safetensors") -> Path:
    """A randomly initialised encoder of `family`, saved by transformers with its tokenizer."""
    import transformers

    if family == "mpnet":  # its vocabulary's specials and relative-position bias (conftest.py)
        return write_tiny_mpnet(directory, seed)
    directory.mkdir(parents=True, exist_ok=True)
    if family in DEBERTA:  # DeBERTa-v3's SentencePiece vocabulary, BERT's special tokens
        raw = _unigram_tokenizer(specials=("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"), unk="[UNK]")
        transformers.DebertaV2TokenizerFast(tokenizer_object=raw, bos_token="[CLS]", eos_token="[SEP]",
                                            cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                                            mask_token="[MASK]").save_pretrained(str(directory))
        config = transformers.DebertaV2Config(vocab_size=raw.get_vocab_size(), max_position_embeddings=64,
                                              relative_attention=True, pos_att_type="p2c|c2p", type_vocab_size=0,
                                              layer_norm_eps=1e-7, pad_token_id=0, **SIZES, **DEBERTA[family])
        model_cls = transformers.DebertaV2Model
    elif family in ("roberta", "xlm-roberta"):
        raw = _bpe_tokenizer() if family == "roberta" else _unigram_tokenizer()
        cls = transformers.RobertaTokenizerFast if family == "roberta" else transformers.XLMRobertaTokenizerFast
        cls(tokenizer_object=raw, **ROBERTA_TOKENS).save_pretrained(str(directory))
        config_cls = transformers.RobertaConfig if family == "roberta" else transformers.XLMRobertaConfig
        model_cls = transformers.RobertaModel if family == "roberta" else transformers.XLMRobertaModel
        config = config_cls(vocab_size=raw.get_vocab_size(), max_position_embeddings=66, type_vocab_size=1,
                            pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **SIZES)
    else:
        vocab = tiny_vocab()
        (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tok_class = {"bert": "BertTokenizer", "electra": "ElectraTokenizer"}.get(family, "DistilBertTokenizer")
        (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": tok_class,
                                                                    "do_lower_case": True}), encoding="utf-8")
        if family == "bert":
            config = transformers.BertConfig(vocab_size=len(vocab), max_position_embeddings=64, **SIZES)
            model_cls = transformers.BertModel
        elif family == "electra":  # embeddings narrower than the hidden states: embeddings_project
            config = transformers.ElectraConfig(vocab_size=len(vocab), embedding_size=16, max_position_embeddings=64,
                                                **SIZES)
            model_cls = transformers.ElectraModel
        else:
            config = transformers.DistilBertConfig(vocab_size=len(vocab), dim=32, n_layers=2, n_heads=4,
                                                   hidden_dim=64, max_position_embeddings=64)
            model_cls = transformers.DistilBertModel
    torch.manual_seed(seed)
    model = model_cls(config)
    # Non-trivial LayerNorm and bias values, so parity exercises every parameter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 or "rel_embeddings" in name:
                p.add_(torch.randn_like(p) * 0.1)
    if weights == "safetensors":
        model.save_pretrained(str(directory))
    else:  # the older layout: a pickled state dict
        model.config.save_pretrained(str(directory))
        torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory
