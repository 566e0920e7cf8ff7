"""The SMART regulariser: zero for an input-independent model, positive otherwise, gradients flow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bertmtl.data.batching import TaskBatch
from bertmtl.mtl import SmartConfig, smart_loss
from bertmtl.mtl.smart import divergence
from bertmtl.encoders.tokenizer import Batch


class ToyModel(nn.Module):
    """head(batch, embeds): a linear map of mean embeddings (or a constant, ignoring input)."""

    def __init__(self, out_dim: int, input_independent: bool = False):
        super().__init__()
        self.lin = nn.Linear(8, out_dim)
        self.const = nn.Parameter(torch.randn(out_dim))
        self.input_independent = input_independent

    def head(self, batch, embeds):
        if self.input_independent:
            out = self.const.expand(embeds.shape[0], -1)
        else:
            out = self.lin(torch.tanh(embeds * 50).mean(1))
        return out if out.shape[-1] > 1 else out.squeeze(-1)


def _batch(task, n=4):
    ids = torch.ones(n, 5, dtype=torch.long)
    from bertmtl.tasks import TASKS

    return TaskBatch(TASKS[task], Batch(ids, torch.ones_like(ids), torch.zeros_like(ids)), None, list(range(n)))


@pytest.mark.parametrize("task, dim", [("sst", 5), ("para", 1), ("sts", 1)])
def test_zero_for_input_independent_model(task, dim):
    torch.manual_seed(0)
    model = ToyModel(dim, input_independent=True)
    embeds = torch.randn(4, 5, 8)
    clean = model.head(_batch(task), embeds)
    assert smart_loss(model, _batch(task), embeds, clean, SmartConfig()).item() == 0.0


@pytest.mark.parametrize("task, dim", [("sst", 5), ("para", 1), ("sts", 1)])
def test_positive_and_gradients_flow(task, dim):
    torch.manual_seed(0)
    model = ToyModel(dim)
    emb_param = nn.Parameter(torch.randn(4, 5, 8) * 0.01)
    embeds = emb_param * 1.0
    clean = model.head(_batch(task), embeds)
    loss = smart_loss(model, _batch(task), embeds, clean, SmartConfig(step=1e-2))
    assert loss.item() > 0
    loss.backward()
    assert model.lin.weight.grad is not None and model.lin.weight.grad.abs().sum() > 0
    assert emb_param.grad is not None and emb_param.grad.abs().sum() > 0


def test_ascent_increases_the_divergence():
    torch.manual_seed(0)
    model = ToyModel(5)
    embeds = torch.randn(4, 5, 8) * 0.01
    clean = model.head(_batch("sst"), embeds)
    zero_steps = smart_loss(model, _batch("sst"), embeds, clean, SmartConfig(steps=1, step=0.0)).item()
    one_step = smart_loss(model, _batch("sst"), embeds, clean, SmartConfig(steps=1, step=1e-2)).item()
    assert one_step > 10 * zero_steps


def test_divergences():
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    p, q = a.softmax(-1), b.softmax(-1)
    sym = (p * (p / q).log()).sum() + (q * (q / p).log()).sum()
    assert torch.allclose(divergence("sst", a, b, symmetric=True), sym)
    assert divergence("sts", torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]), symmetric=False).item() == 2.0
    # A paraphrase logit z is the Bernoulli distribution with logits (0, z).
    z1, z2 = torch.tensor([1.0]), torch.tensor([-1.0])
    assert torch.allclose(divergence("para", z1, z2, True),
                          divergence("sst", torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, -1.0]]), True))


def test_noise_is_per_example_whatever_the_batch():
    from bertmtl.mtl.smart import example_noise

    full = _batch("sst", 4)
    half = TaskBatch(full.spec, full.inputs, None, [2, 3])
    a = example_noise(full, torch.Size([4, 5, 8]), 1.0, key=9, device="cpu")
    b = example_noise(half, torch.Size([2, 5, 8]), 1.0, key=9, device="cpu")
    assert torch.equal(a[2:], b)
    assert not torch.equal(a[0], a[1])
    c = example_noise(full, torch.Size([4, 5, 8]), 1.0, key=10, device="cpu")
    assert not torch.equal(a, c)
