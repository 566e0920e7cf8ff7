"""The encoder: numerical parity with transformers.BertModel, loading formats, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bertmtl.errors import UserError
from bertmtl.model import BertModel
from bertmtl.encoders.tokenizer import EncoderTokenizer

from .conftest import REAL_PAIRS, REAL_SENTENCES

transformers = pytest.importorskip("transformers")


def _batches(tok: EncoderTokenizer):
    yield tok(REAL_SENTENCES)
    a, b = zip(*REAL_PAIRS)
    yield tok(list(a), list(b))


def _max_errors(directory, impl="auto"):
    ours = BertModel.from_pretrained(directory).eval()
    ours.set_attention(impl)
    hf = transformers.BertModel.from_pretrained(str(directory), attn_implementation="eager").eval()
    tok = EncoderTokenizer.from_dir(directory)
    errs = []
    with torch.no_grad():
        for b in _batches(tok):
            assert b.attention_mask.float().mean() < 1.0  # really a padded batch
            o = ours(b.input_ids, b.attention_mask, b.token_type_ids)
            r = hf(input_ids=b.input_ids, attention_mask=b.attention_mask, token_type_ids=b.token_type_ids)
            errs.append(((o.last_hidden_state - r.last_hidden_state).abs().max().item(),
                         (o.pooler_output - r.pooler_output).abs().max().item()))
    return errs


@pytest.mark.slow
@pytest.mark.weights
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_parity_real_weights(real_bert_dir, impl):
    """18 real sentences and 6 real pairs, padded: within 1e-4 of transformers in fp32."""
    errs = _max_errors(real_bert_dir, impl)
    print(f"parity {impl}: max abs error last_hidden_state {max(e[0] for e in errs):.1e}, "
          f"pooler_output {max(e[1] for e in errs):.1e}")
    for hidden_err, pooled_err in errs:
        assert hidden_err < 1e-4, hidden_err
        assert pooled_err < 1e-4, pooled_err


def test_unpad_matches_padded_at_real_positions(tiny_bert_dir):
    model = BertModel.from_pretrained(tiny_bert_dir).eval()
    b = EncoderTokenizer.from_dir(tiny_bert_dir)(REAL_SENTENCES)
    with torch.no_grad():
        dense = model(b.input_ids, b.attention_mask)
        packed = model(b.input_ids, b.attention_mask, unpad=True)
    real = b.attention_mask.bool()
    assert torch.allclose(dense.last_hidden_state[real], packed.last_hidden_state[real], atol=1e-5)
    assert torch.all(packed.last_hidden_state[~real] == 0)
    assert torch.allclose(dense.pooler_output, packed.pooler_output, atol=1e-5)


def test_unpad_gradients_match(tiny_bert_dir):
    b = EncoderTokenizer.from_dir(tiny_bert_dir)(REAL_SENTENCES[:6])
    grads = []
    for unpad in (False, True):
        model = BertModel.from_pretrained(tiny_bert_dir).eval()
        out = model(b.input_ids, b.attention_mask, unpad=unpad)
        m = b.attention_mask.unsqueeze(-1).float()
        (out.last_hidden_state * m).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.encoder.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-4)


def test_token_type_default_is_zeros(tiny_bert_dir):
    model = BertModel.from_pretrained(tiny_bert_dir).eval()
    b = EncoderTokenizer.from_dir(tiny_bert_dir)(REAL_SENTENCES[:3])
    with torch.no_grad():
        a = model(b.input_ids, b.attention_mask).last_hidden_state
        z = model(b.input_ids, b.attention_mask, torch.zeros_like(b.input_ids)).last_hidden_state
    assert torch.equal(a, z)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_upcast(tiny_bert_dir, tmp_path, stored):
    from safetensors.torch import load_file, save_file

    d = _copy(tiny_bert_dir, tmp_path / "half")
    sd = load_file(str(d / "model.safetensors"))
    save_file({k: v.to(stored) if v.is_floating_point() else v for k, v in sd.items()}, str(d / "model.safetensors"))
    model = BertModel.from_pretrained(d)
    ref = BertModel.from_pretrained(tiny_bert_dir)
    w, r = model.embeddings.word_embeddings.weight, ref.embeddings.word_embeddings.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, r.to(stored).float())
    assert BertModel.from_pretrained(d, dtype=torch.bfloat16).embeddings.word_embeddings.weight.dtype == torch.bfloat16


def test_pytorch_bin_with_bert_prefix_and_gamma_beta(tiny_bert_dir, tmp_path):
    from safetensors.torch import load_file

    d = _copy(tiny_bert_dir, tmp_path / "bin")
    sd = load_file(str(d / "model.safetensors"))
    renamed = {}
    for k, v in sd.items():
        k = "bert." + k
        if "LayerNorm.weight" in k:
            k = k.replace("LayerNorm.weight", "LayerNorm.gamma")
        renamed[k] = v
    renamed["cls.predictions.bias"] = torch.zeros(3)  # pretraining heads are not the encoder's
    renamed["bert.embeddings.position_ids"] = torch.arange(64)[None]
    torch.save(renamed, d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    a = BertModel.from_pretrained(d).state_dict()
    b = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_missing_and_unexpected_keys_are_listed(tiny_bert_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy(tiny_bert_dir, tmp_path / "bad")
    sd = load_file(str(d / "model.safetensors"))
    del sd["encoder.layer.1.output.dense.weight"]
    sd["encoder.layer.7.surprise"] = torch.zeros(2)
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(UserError) as e:
        BertModel.from_pretrained(d)
    msg = e.value.message
    assert "missing keys (1): encoder.layer.1.output.dense.weight" in msg
    assert "unexpected keys (1): encoder.layer.7.surprise" in msg


def test_wrong_shapes_and_bad_config(tiny_bert_dir, tmp_path):
    d = _copy(tiny_bert_dir, tmp_path / "shape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="wrong shapes"):
        BertModel.from_pretrained(d)
    (d / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        BertModel.from_pretrained(d)
    with pytest.raises(UserError, match="not a directory"):
        BertModel.from_pretrained(tmp_path / "nowhere")


def test_any_shape_from_config(tmp_path):
    from .conftest import write_tiny_bert

    d = write_tiny_bert(tmp_path / "odd", num_hidden_layers=3, hidden_size=48, num_attention_heads=3, intermediate_size=40)
    model = BertModel.from_pretrained(d)
    assert len(model.encoder.layer) == 3
    out = model(torch.tensor([[2, 40, 41, 3]]), torch.ones(1, 4, dtype=torch.long))
    assert out.last_hidden_state.shape == (1, 4, 48) and out.pooler_output.shape == (1, 48)


def test_dropout_rate_and_gradient():
    from bertmtl.model.bert import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.1).train()
    x = torch.ones(400_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.003
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert torch.equal(drop.eval()(x), x)
