"""WordPiece ids equal Hugging Face's BertTokenizerFast for the same vocabulary."""

from __future__ import annotations

import pytest
import torch

from bertmtl.encoders.tokenizer import EncoderTokenizer

from .conftest import assert_ids_match_hf

transformers = pytest.importorskip("transformers")


def _compare(directory, max_length=128):
    ours, hf, b, r = assert_ids_match_hf(directory, transformers.BertTokenizerFast, max_length)
    assert hf.do_lower_case == ours.lowercase
    assert torch.equal(b.token_type_ids, r["token_type_ids"])  # pairs


def test_ids_match_hf_tiny_vocab(tiny_bert_dir):
    _compare(tiny_bert_dir)


@pytest.mark.weights
def test_ids_match_hf_real_vocab(real_bert_dir):
    _compare(real_bert_dir)
    _compare(real_bert_dir, max_length=12)  # truncation of singles and pairs (longest first)


def test_pair_layout_and_truncation(tiny_bert_dir):
    tok = EncoderTokenizer.from_dir(tiny_bert_dir, max_length=10)
    e = tok.encode(["the movie is good"], ["the film"])[0]
    assert e.ids[0] == tok.cls_id and e.ids.count(tok.sep_id) == 2
    assert e.type_ids == [0] * 6 + [1] * 3
    long = tok.encode(["good " * 50])[0]
    assert len(long.ids) == 10 and long.truncated and long.ids[-1] == tok.sep_id
    assert not e.truncated


def test_max_length_capped_by_positions(tiny_bert_dir):
    # The tiny model has 64 positions: asking for 1000 tokens gives 64.
    assert EncoderTokenizer.from_dir(tiny_bert_dir, max_length=1000).max_length == 64


def test_dynamic_padding(tiny_bert_dir):
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    b = tok(["good", "the movie is very good"])
    assert b.input_ids.shape == (2, 7)
    assert b.attention_mask.tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    assert b.input_ids[0, 3:].tolist() == [tok.pad_id] * 4


def test_lowercase_inferred_from_vocab(tmp_path):
    v = tmp_path / "vocab.txt"
    v.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nThe\nthe\n")
    assert not EncoderTokenizer.from_vocab(v).lowercase
    v.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    assert EncoderTokenizer.from_vocab(v).lowercase
