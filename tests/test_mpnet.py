"""What only MPNet has (parity, gradients, tokenizer and the whole tool run for every family in
test_families.py): its config, relative-position buckets, special tokens, MLM head, real weights."""

from __future__ import annotations

import pytest
import torch

from bertmtl.encoders.config import FAMILIES, BertConfig
from bertmtl.model import BertModel
from bertmtl.model.bert import relative_position_bucket
from bertmtl.model.loading import from_hf_key
from bertmtl.encoders.tokenizer import EncoderTokenizer

from .conftest import REAL_PAIRS, REAL_SENTENCES, assert_ids_match_hf

transformers = pytest.importorskip("transformers")
MPNET = FAMILIES["mpnet"]


def _batches(tok: EncoderTokenizer):
    yield tok(REAL_SENTENCES)
    a, b = zip(*REAL_PAIRS)
    yield tok(list(a), list(b))


def _hf(directory):
    return transformers.MPNetModel.from_pretrained(str(directory)).eval()


def test_config_reads_the_family(tiny_mpnet_dir):
    model = BertModel.from_pretrained(tiny_mpnet_dir)
    c = model.config
    assert c.model_type == "mpnet" and c.pad_token_id == 1 and c.layer_norm_eps == 1e-5
    assert model.embeddings.token_type_embeddings is None
    assert model.encoder.relative_attention_bias.weight.shape == (32, 4)
    d = c.to_dict()
    assert d["model_type"] == "mpnet" and "type_vocab_size" not in d and d["architectures"] == ["MPNetModel"]
    assert BertConfig.from_dict(d) == c
    assert "relative_attention_num_buckets" not in BertConfig().to_dict()  # BERT's config.json unchanged


def test_bucketing_matches_hf():
    rel = torch.arange(-300, 300)[None, :]
    ours = relative_position_bucket(rel, 32)
    ref = transformers.models.mpnet.modeling_mpnet.MPNetEncoder.relative_position_bucket(rel, num_buckets=32)
    assert torch.equal(ours, ref)


def test_key_names_of_mpnet():
    """(Every family's key maps round-trip: test_families.py.) MPNet's own attention names."""
    assert from_hf_key("mpnet.encoder.layer.3.attention.attn.o.weight", MPNET) == "encoder.layer.3.attention.output.dense.weight"


def test_train_mode_step(tiny_mpnet_dir):
    """Train mode (dropout on), unpadded: a finite loss and gradients reach every encoder parameter."""
    model = BertModel.from_pretrained(tiny_mpnet_dir).train()
    b = EncoderTokenizer.from_dir(tiny_mpnet_dir)(REAL_SENTENCES[:6])
    out = model(b.input_ids, b.attention_mask, unpad=True)
    loss = out.last_hidden_state.pow(2).mean() + out.pooler_output.sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_smart_split_matches_forward(tiny_mpnet_dir):
    """embed -> encode (SMART's split) gives the forward pass."""
    model = BertModel.from_pretrained(tiny_mpnet_dir).eval()
    b = EncoderTokenizer.from_dir(tiny_mpnet_dir)(REAL_SENTENCES[:5])
    with torch.no_grad():
        a = model(b.input_ids, b.attention_mask).last_hidden_state
        c = model.encode(model.embeddings(b.input_ids, b.token_type_ids), b.attention_mask).last_hidden_state
    assert torch.equal(a, c)


def _compare_tokenizer(directory, max_length):
    *_, b, _ = assert_ids_match_hf(directory, transformers.MPNetTokenizerFast, max_length)
    assert not b.token_type_ids.any()  # MPNet has no token types


@pytest.mark.parametrize("max_length", [128, 12])
def test_tokenizer_matches_hf(tiny_mpnet_dir, max_length):
    tok = EncoderTokenizer.from_dir(tiny_mpnet_dir)
    assert (tok.cls_id, tok.pad_id, tok.sep_id) == (0, 1, 2) and tok.mask_id == tok.vocab_size - 1
    e = tok.encode(["the movie"], ["a film"])[0]
    assert e.ids[0] == 0 and e.ids.count(2) == 3 and e.ids[-1] == 2  # <s> a </s></s> b </s>
    _compare_tokenizer(tiny_mpnet_dir, max_length)


def test_mlm_head_round_trips_through_hf(tiny_mpnet_dir, tmp_path):
    """Our MPNet MLM exports under HF's MPNetForMaskedLM names: transformers gives our logits, we read the head back."""
    from bertmtl.inference.export import write_hf
    from bertmtl.model.mlm import source_head
    from bertmtl.encoders.weights import load_mlm

    tok = EncoderTokenizer.from_dir(tiny_mpnet_dir)
    loaded = load_mlm(tiny_mpnet_dir)
    assert not loaded.head_from_checkpoint and source_head(tiny_mpnet_dir) is None
    model = loaded.model.eval()
    with torch.no_grad():  # a non-trivial head
        for p in model.mlm.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    (tmp_path / "mlm").mkdir()
    write_hf(model, tok, tmp_path / "mlm")
    assert source_head(tmp_path / "mlm") is not None
    hf = transformers.MPNetForMaskedLM.from_pretrained(str(tmp_path / "mlm")).eval()
    b = tok(REAL_SENTENCES[:5])
    real = b.attention_mask.bool()
    with torch.no_grad():
        ours = model.masked_logits("mlm", b.input_ids, b.attention_mask, real)
        theirs = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        assert (ours - theirs[real]).abs().max() < 1e-4
        again = load_mlm(tmp_path / "mlm")
        assert again.head_from_checkpoint
        assert torch.equal(again.model.eval().masked_logits("mlm", b.input_ids, b.attention_mask, real), ours)
    # The MLM directory is also an encoder directory (`mpnet.` prefix, lm_head ignored).
    enc = BertModel.from_pretrained(tmp_path / "mlm")
    assert torch.equal(enc.encoder.relative_attention_bias.weight, model.encoder.encoder.relative_attention_bias.weight)


@pytest.mark.slow
@pytest.mark.weights
def test_real_weights_parity_and_tokenizer(real_mpnet_dir):
    """all-mpnet-base-v2, loaded once: padded real sentences and pairs within 1e-4 of transformers
    (fp32, both attention kernels, unpadded too); token ids equal MPNetTokenizerFast's."""
    for max_length in (128, 12):  # 12: truncation of singles and pairs (longest first)
        _compare_tokenizer(real_mpnet_dir, max_length)
    ours = BertModel.from_pretrained(real_mpnet_dir).eval()
    hf = _hf(real_mpnet_dir)
    tok = EncoderTokenizer.from_dir(real_mpnet_dir)
    errors = {}
    with torch.no_grad():
        for b in _batches(tok):
            assert b.attention_mask.float().mean() < 1.0
            ref = hf(input_ids=b.input_ids, attention_mask=b.attention_mask).last_hidden_state
            real = b.attention_mask.bool()
            for impl in ("eager", "sdpa"):
                ours.set_attention(impl)
                for unpad in (False, True):
                    o = ours(b.input_ids, b.attention_mask, unpad=unpad).last_hidden_state
                    err = (o - ref)[real].abs().max().item()
                    errors[impl, unpad] = max(err, errors.get((impl, unpad), 0.0))
    print("mpnet parity, max abs error at real tokens:", errors)
    assert max(errors.values()) < 1e-4, errors
