"""The weight average (`--ema`): its arithmetic, swapping it in and out, and what training saves."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertmtl.cli import main
from bertmtl.training.ema import RAW_PREFIX, WeightAverage
from bertmtl.model import BertModel

from .conftest import cli, tiny_config


def test_update_follows_the_warmed_up_decay():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
    avg = WeightAverage(lin, decay=0.5)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, -2.0]]))
    avg.update()  # decay min(0.5, 2/11): 2/11 * [1, 2] + 9/11 * [3, -2]
    expect = torch.tensor([[2.0 / 11 + 27.0 / 11, 4.0 / 11 - 18.0 / 11]])
    assert torch.allclose(avg.shadow[0], expect, atol=1e-6)
    for _ in range(20):  # by now min(0.5, 22/31) = 0.5: halfway from the average to the weights
        avg.update()
    before = avg.shadow[0].clone()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0]]))
    avg.update()
    assert torch.allclose(avg.shadow[0], 0.5 * before, atol=1e-6)


def test_applied_swaps_the_average_in_and_restores_exactly():
    torch.manual_seed(0)
    model = BertModel(tiny_config(60)).eval()
    avg = WeightAverage(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    raw_before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(5, 60, (3, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out_raw = model(ids, mask).last_hidden_state  # also fills the no-grad fused QKV cache
        with avg.applied() as raw:
            out_avg = model(ids, mask).last_hidden_state
            assert all(torch.equal(r, raw_before[n]) for n, r in zip(avg.names, raw, strict=True))
        again = model(ids, mask).last_hidden_state
    # The average here is the starting weights: a fresh model with them gives the same output.
    fresh = BertModel(tiny_config(60)).eval()
    with torch.no_grad():
        for p, s in zip(fresh.parameters(), avg.shadow, strict=True):
            p.copy_(s)
        ref = fresh(ids, mask).last_hidden_state
    assert torch.allclose(out_avg, ref, atol=1e-6)  # no stale cached QKV weight
    assert not torch.allclose(out_avg, out_raw, atol=1e-3)
    assert torch.equal(again, out_raw)
    assert all(torch.equal(v, raw_before[k]) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_training_saves_the_average_and_resumes_exactly(tiny_bert_dir, data_dir, tmp_path):
    common = ["--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir), "--epochs", "2", "--lr", "1e-3",
              "--batch-size", "16", "--seed", "0", "--ema", "0.8"]
    cli("train", *common, "--out", str(tmp_path / "a"))
    cli("train", *common, "--out", str(tmp_path / "b"), "--stop-at-step", "4", "--save-every", "2")
    cli("train", "--resume", str(tmp_path / "b"), "--stop-at-step", "12")
    for f in ("multitask.safetensors", "optimizer.safetensors"):
        a = load_file(str(tmp_path / "a" / "last" / f))
        b = load_file(str(tmp_path / "b" / "last" / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f
    weights = load_file(str(tmp_path / "a" / "last" / "multitask.safetensors"))
    state = load_file(str(tmp_path / "a" / "last" / "optimizer.safetensors"))
    raw = {k[len(RAW_PREFIX):]: v for k, v in state.items() if k.startswith(RAW_PREFIX)}
    assert raw and raw.keys() <= weights.keys()
    assert any(not torch.equal(raw[k], weights[k]) for k in raw)  # saved: the average, not the last step

    # The saved weights are the ones the metrics were measured with.
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "a"), "--data-dir", str(data_dir),
                                  "--json"])
    got = json.loads(r.output.strip().splitlines()[-1])
    saved = json.loads((tmp_path / "a" / "best" / "metrics.json").read_text())
    assert got["overall"] == pytest.approx(saved["overall"], abs=1e-6)

    # The average never touches training: a run without it ends on the same training weights,
    # and a run saved with it and resumed with `--ema 0` goes on from those weights too.
    plain = [c for c in common if c not in ("--ema", "0.8")]
    cli("train", *plain, "--out", str(tmp_path / "c"))
    c = load_file(str(tmp_path / "c" / "last" / "multitask.safetensors"))
    assert all(torch.equal(c[k], raw[k]) for k in raw)
    cli("train", *common, "--out", str(tmp_path / "d"), "--stop-at-step", "4", "--save-every", "2")
    cli("train", "--resume", str(tmp_path / "d"), "--ema", "0", "--stop-at-step", "12")
    d = load_file(str(tmp_path / "d" / "last" / "multitask.safetensors"))
    assert all(torch.equal(c[k], d[k]) for k in c)
