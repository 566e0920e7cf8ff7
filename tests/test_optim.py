"""Our AdamW / AdamaxW against torch's optimizers and the update rule written out."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bertmtl.training.optim import AdamaxW, AdamW, parameter_groups


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 3))


def _run(model, opt, steps=100):
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(32, 8, generator=g)
        y = torch.randint(0, 3, (32,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_adamw_matches_torch():
    m1, m2 = _model(), _model()
    kw = dict(lr=3e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    ours = _run(m1, AdamW(parameter_groups(m1, 0.1), **kw))
    ref = _run(m2, torch.optim.AdamW(parameter_groups(m2, 0.1), **kw))
    assert (ours - ref).abs().max().item() < 1e-6
    assert (ours - torch.cat([p.flatten() for p in _model().parameters()])).abs().max() > 1e-2  # it trained


def _adamaxw_reference(model, lr, betas, eps, wd, steps=100):
    """The update rule, one tensor at a time, as written in Kingma & Ba (Alg. 2) + decoupled decay."""
    params = list(model.parameters())
    m = [torch.zeros_like(p) for p in params]
    u = [torch.zeros_like(p) for p in params]
    g = torch.Generator().manual_seed(1)
    for t in range(1, steps + 1):
        x = torch.randn(32, 8, generator=g)
        y = torch.randint(0, 3, (32,), generator=g)
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for i, p in enumerate(params):
                p.mul_(1 - lr * wd)
                m[i] = betas[0] * m[i] + (1 - betas[0]) * p.grad
                u[i] = torch.maximum(betas[1] * u[i], p.grad.abs() + eps)
                p.sub_(lr / (1 - betas[0] ** t) * m[i] / u[i])
    return torch.cat([p.detach().flatten() for p in params])


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_adamaxw_matches_update_rule(wd):
    m1, m2 = _model(), _model()
    ours = _run(m1, AdamaxW(m1.parameters(), lr=2e-3, weight_decay=wd))
    ref = _adamaxw_reference(m2, 2e-3, (0.9, 0.999), 1e-8, wd)
    assert (ours - ref).abs().max().item() < 1e-6


def test_adamaxw_without_decay_matches_torch_adamax():
    m1, m2 = _model(), _model()
    ours = _run(m1, AdamaxW(m1.parameters(), lr=2e-3, weight_decay=0.0))
    ref = _run(m2, torch.optim.Adamax(m2.parameters(), lr=2e-3))
    assert (ours - ref).abs().max().item() < 1e-6


def test_state_dict_round_trip_continues_identically():
    m1 = _model()
    opt = AdamW(m1.parameters(), lr=1e-2)
    _run(m1, opt, steps=10)
    m2 = copy.deepcopy(m1)
    opt2 = AdamW(m2.parameters(), lr=1e-2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # a saved copy, not shared tensors
    assert torch.equal(_run(m1, opt, 5), _run(m2, opt2, 5))


def test_no_decay_groups():
    groups = parameter_groups(_model(), 0.01)
    assert [p.ndim for p in groups[0]["params"]] == [2, 2]
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 4


def test_bad_hyperparameters():
    with pytest.raises(ValueError):
        AdamW(_model().parameters(), lr=-1)
    with pytest.raises(ValueError):
        AdamaxW(_model().parameters(), betas=(1.0, 0.9))


def test_scheduled_lr_warms_up_then_decays_or_holds():
    from bertmtl.training.optim import scheduled_lr

    # 10 steps, 20% warm-up: steps 0-1 ramp to the peak, steps 2-9 decay linearly towards 0.
    lrs = [scheduled_lr(s, 10, 1.0, 0.2) for s in range(10)]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    assert [scheduled_lr(s, 10, 2.0, 0.2, "constant") for s in (0, 5, 9)] == [1.0, 2.0, 2.0]
    assert scheduled_lr(0, 4, 3.0, 0.0) == 3.0  # no warm-up


def test_layer_decay_scales_lower_layers_down(tiny_bert_dir):
    from bertmtl.model.heads import MultitaskBert
    from bertmtl.encoders.weights import load_encoder

    model = MultitaskBert(load_encoder(tiny_bert_dir))  # 2 transformer layers
    groups = parameter_groups(model, 0.01, layer_decay=0.5)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    expected = {
        "sst.weight": 1.0, "para.mlp.0.weight": 1.0, "encoder.pooler.dense.weight": 1.0,
        "encoder.encoder.layer.1.attention.self.query.weight": 0.5,
        "encoder.encoder.layer.0.output.dense.bias": 0.25,
        "encoder.embeddings.word_embeddings.weight": 0.125,
        "encoder.embeddings.LayerNorm.weight": 0.125,
    }
    for name, scale in expected.items():
        assert scale_of[id(named[name])] == scale, name
    assert decay_of[id(named["encoder.embeddings.LayerNorm.weight"])] == 0.0
    assert decay_of[id(named["encoder.encoder.layer.0.output.dense.weight"])] == 0.01
    assert sum(len(g["params"]) for g in groups) == len(named)
    # Off (the default): the two classic groups at full rate.
    assert [g["lr_scale"] for g in parameter_groups(model, 0.01)] == [1.0, 1.0]
