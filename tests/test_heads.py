"""Pair heads: symmetric features, and checkpoints written before they existed."""

from __future__ import annotations

import json

import pytest
import torch

from bertmtl.model.heads import HeadConfig, PairHead, pearson


def _head(features: str) -> PairHead:
    torch.manual_seed(0)
    head = PairHead(16, HeadConfig(pair_features=features, mlp_hidden=8, dropout=0.0), scale=5.0, bias=0.0)
    with torch.no_grad():  # the output layer starts at zero; give the MLP a say
        head.mlp[-1].weight.normal_()
    return head.eval()


def test_symmetric_features_score_both_orders_the_same():
    u, v = torch.randn(4, 16), torch.randn(4, 16)
    head = _head("symmetric")
    assert head.mlp[0].in_features == 48
    assert torch.allclose(head(u, v), head(v, u), atol=1e-6)


def test_concat_features_depend_on_the_order():
    u, v = torch.randn(4, 16), torch.randn(4, 16)
    head = _head("concat")
    assert head.mlp[0].in_features == 64
    assert (head(u, v) - head(v, u)).abs().max() > 1e-3


def test_new_mlp_starts_at_the_scaled_cosine():
    u, v = torch.randn(3, 16), torch.randn(3, 16)
    head = PairHead(16, HeadConfig(), scale=10.0, bias=-7.0).eval()
    expected = 10.0 * torch.nn.functional.cosine_similarity(u, v) - 7.0
    assert torch.allclose(head(u, v), expected, atol=1e-6)


def test_pearson():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1).item() == pytest.approx(1.0)
    assert pearson(x, -x).item() == pytest.approx(-1.0)
    assert pearson(x, torch.ones(4)).item() == 0.0  # constant: 0, not NaN


def test_checkpoint_without_pair_features_loads_as_concat(tiny_bert_dir, tmp_path):
    """heads.json of checkpoints written before the option existed has no pair_features."""
    from bertmtl.runs.checkpoint import load_checkpoint, save_checkpoint
    from bertmtl.model.heads import MultitaskBert
    from bertmtl.encoders.tokenizer import EncoderTokenizer
    from bertmtl.encoders.weights import load_encoder

    encoder = load_encoder(tiny_bert_dir)
    model = MultitaskBert(encoder, HeadConfig(pair_features="concat"))
    save_checkpoint(tmp_path / "old", model, EncoderTokenizer.from_dir(tiny_bert_dir), step=1, epoch=0.1,
                    train_args={}, metrics=None, tasks=["sst", "para", "sts"])
    heads = json.loads((tmp_path / "old" / "heads.json").read_text())
    del heads["pair_features"]
    (tmp_path / "old" / "heads.json").write_text(json.dumps(heads))
    loaded = load_checkpoint(tmp_path / "old").model
    assert loaded.cfg.pair_features == "concat"
    for name, t in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], t), name
