"""Loss weightings (--loss-weighting) against TorchJD's scalarizers (uncertainty weighting, DWA;
test-only references) and GradNorm against its paper's loss differentiated by autograd; then each
one trains through the CLI, logs its weights, checkpoints its state and resumes exactly."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from bertmtl.mtl.weightings import REGISTRY
from bertmtl.configuration.train_config import LOSS_WEIGHTINGS

from .conftest import cli

S = pytest.importorskip("torchjd.scalarization")

TASKS = ["sst", "para", "sts"]
CFG = SimpleNamespace(weighting_lr=1e-2, dwa_temperature=2.0, dwa_window=3, gradnorm_alpha=1.5)


def _weighting(name, tasks=TASKS, steps_per_epoch=None, **kw):
    return REGISTRY[name].from_config(SimpleNamespace(**{**vars(CFG), **kw}), list(tasks), steps_per_epoch)


def test_the_registry_is_the_option():
    from bertmtl.configuration.train_config import TrainConfig

    assert tuple(REGISTRY) == LOSS_WEIGHTINGS
    for cls in REGISTRY.values():
        assert all(o in TrainConfig.fields() for o in cls.options), cls.name
        # the options the train check refuses under another --loss-weighting are exactly the method's own
        own = {n for n, f in TrainConfig.fields().items() if f.metadata["only_for"] and f.metadata["only_for"][0] ==
               "loss_weighting" and cls.name in f.metadata["only_for"][1]}
        assert own == set(cls.options), cls.name
    assert _weighting("none").weights() == {"sst": 1.0, "para": 1.0, "sts": 1.0}


def test_uncertainty_equals_torchjds_uw():
    """The same weights on the model's gradient and the same gradient of the log-variances as
    TorchJD's UW, 1/2 exp(-s) L + s/2, at log-variances away from their start."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(16, 4), torch.randn(16, 3)
    s = torch.tensor([0.3, -0.7, 1.2])

    def losses():
        return ((model(x) - y) ** 2).mean(dim=0) * torch.tensor([1.0, 2.0, 3.0])

    ref = S.UW(3)
    with torch.no_grad():
        ref.log_var.copy_(s)
    model.zero_grad()
    ref(losses()).backward()
    ref_model_grad = model.weight.grad.clone()

    ours = _weighting("uncertainty")
    with torch.no_grad():
        ours.log_var.copy_(s)
    w = ours.weights()
    model.zero_grad()
    values = losses()
    sum(w[t] * values[i] for i, t in enumerate(TASKS)).backward()
    torch.testing.assert_close(model.weight.grad, ref_model_grad, rtol=1e-6, atol=0)
    ours.update(values.detach().double(), TASKS, None)
    torch.testing.assert_close(ours.log_var.grad, ref.log_var.grad, rtol=1e-6, atol=0)
    # a task left out of a step (proportional sampling) gets no gradient
    ours.update(values.detach().double()[:2], ["sst", "para"], None)
    assert ours.log_var.grad[2] == 0 and ours.log_var.grad[0] == pytest.approx(float(ref.log_var.grad[0]))


def test_uncertainty_learns_the_papers_optimum():
    """With constant losses L_k, plain gradient descent on s drives the weights to 1 / (2 L_k)."""
    ours = _weighting("uncertainty", tasks=["a", "b"])
    losses = torch.tensor([0.5, 4.0], dtype=torch.float64)
    opt = torch.optim.SGD(ours.parameters(), lr=0.5)
    for _ in range(400):
        ours.update(losses, ["a", "b"], None)
        opt.step()
    w = ours.weights()
    assert w["a"] == pytest.approx(1 / (2 * 0.5), rel=1e-4) and w["b"] == pytest.approx(1 / (2 * 4.0), rel=1e-4)


def test_dwa_equals_torchjds_dwa():
    """Period by period (here three steps), the weights TorchJD's DWA applies to each step."""
    g = torch.Generator().manual_seed(1)
    ref, ours = S.DWA(temperature=2.0), _weighting("dwa")
    for period in range(5):
        for _ in range(3):
            values = torch.rand(3, generator=g, dtype=torch.float64) * (5 - period) + 0.1
            expected = ref._compute_weights(values)
            got = ours.weights()
            torch.testing.assert_close(torch.tensor([got[t] for t in TASKS], dtype=torch.float64), expected,
                                       rtol=1e-12, atol=0)
            ref(values)
            ours.update(values, TASKS, None)
        ref.step()
    assert got != {"sst": 1.0, "para": 1.0, "sts": 1.0}  # the weights did move
    assert sum(got.values()) == pytest.approx(3.0)


def test_dwa_hand_worked():
    """Two tasks, periods of one step: the first's loss halves, the second's holds; T = 2."""
    ours = _weighting("dwa", tasks=["a", "b"], dwa_window=1)
    for la, lb in ((1.0, 1.0), (0.5, 1.0)):
        assert ours.weights() == {"a": 1.0, "b": 1.0}  # uniform until two periods are complete
        ours.update(torch.tensor([la, lb], dtype=torch.float64), ["a", "b"], None)
    ea, eb = torch.exp(torch.tensor(0.5 / 2)), torch.exp(torch.tensor(1.0 / 2))
    w = ours.weights()
    assert w["a"] == pytest.approx(float(2 * ea / (ea + eb))) and w["b"] == pytest.approx(float(2 * eb / (ea + eb)))
    # the period defaults to an epoch
    assert _weighting("dwa", dwa_window=0, steps_per_epoch=7).window == 7


def test_gradnorm_follows_its_papers_loss():
    """The gradient of sum_k |G_k - G r_k^alpha| (targets constant) with respect to the weights,
    by autograd through G_k = |w_k g_k|, equals what GradNorm sets from the Gram matrix."""
    g = torch.Generator().manual_seed(2)
    grads = torch.randn(3, 50, generator=g, dtype=torch.float64)  # unweighted task gradients
    start = torch.tensor([1.2, 0.7, 3.0], dtype=torch.float64)  # L_k(0)
    now = torch.tensor([0.9, 0.65, 1.5], dtype=torch.float64)
    w0 = torch.tensor([0.8, 1.5, 0.7], dtype=torch.float64)
    ours = _weighting("gradnorm")
    weighted = w0[:, None] * grads
    ours.update(start, TASKS, weighted @ weighted.T)  # its first losses are L_k(0)
    with torch.no_grad():
        ours.w.copy_(w0)
    ours.update(now, TASKS, weighted @ weighted.T)

    w = w0.clone().requires_grad_(True)
    norms = (w[:, None] * grads).norm(dim=1)
    ratio = now / start
    target = (norms.mean() * (ratio / ratio.mean()) ** 1.5).detach()
    (norms - target).abs().sum().backward()
    torch.testing.assert_close(ours.w.grad.double(), w.grad, rtol=1e-5, atol=0)
    with torch.no_grad():
        ours.w.sub_(0.1 * ours.w.grad)
    ours.after_step()
    assert float(ours.w.detach().sum()) == pytest.approx(3.0) and all(v > 0 for v in ours.weights().values())


def test_gradnorm_scale_and_frozen_steps():
    """fp16's loss scale divides out of the norms; a frozen encoder (no Gram matrix) moves nothing."""
    grads = torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    losses = torch.tensor([1.0, 1.0], dtype=torch.float64)
    a, b = _weighting("gradnorm", tasks=["a", "b"]), _weighting("gradnorm", tasks=["a", "b"])
    a.update(losses, ["a", "b"], grads @ grads.T)
    b.update(losses, ["a", "b"], (grads @ grads.T) * 1024.0 ** 2, scale=1024.0)
    torch.testing.assert_close(a.w.grad, b.w.grad)
    assert a.w.grad.tolist() == [-1.0, 3.0]  # norms 1 and 3, mean 2, equal rates: the small one up
    a.update(losses, ["a", "b"], None)
    assert a.w.grad is None


# -- through training ------------------------------------------------------------------------

FAST = ["--batch-size", "8", "--lr", "1e-3", "--seed", "0", "--log-every", "1", "--precision", "fp32",
        "--dropout", "0", "--no-smart", "--eval-every", "2"]
# Each weighting's own options (another's would be refused): a faster learned weight, a one-step DWA period.
OWN = {"uncertainty": ["--weighting-lr", "0.1"], "gradnorm": ["--weighting-lr", "0.1"], "dwa": ["--dwa-window", "1"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", [w for w in LOSS_WEIGHTINGS if w != "none"])
def test_each_weighting_trains_logs_its_weights_and_resumes_exactly(name, tiny_bert_dir, data_dir, tmp_path):
    from safetensors.torch import load_file

    from bertmtl.runs.checkpoint import load_resume_state
    from bertmtl.sinks.metrics_log import read_records

    common = ["--encoder", tiny_bert_dir, "--data-dir", data_dir, "--max-steps", 5, "--combine", "pcgrad",
              "--loss-weighting", name, *OWN[name], *FAST]
    cli("train", *common, "--out", tmp_path / "whole")
    cli("train", *common, "--out", tmp_path / "parts", "--stop-at-step", 3)
    cli("train", "--resume", tmp_path / "parts")
    a = load_file(str(tmp_path / "whole" / "last" / "multitask.safetensors"))
    b = load_file(str(tmp_path / "parts" / "last" / "multitask.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), name
    steps = [r for r in read_records(tmp_path / "whole" / "metrics.jsonl")[0] if r["type"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]
    first, last = steps[0]["loss_weight"], steps[-1]["loss_weight"]
    assert set(first) == set(last) == {"sst", "para", "sts"}
    assert first == {"uncertainty": dict.fromkeys(TASKS, 0.5)}.get(name, dict.fromkeys(TASKS, 1.0))
    assert last != first  # the weights moved within five steps
    if name != "uncertainty":
        assert sum(last.values()) == pytest.approx(3.0)
    # the learned weights are in last/'s resume state beside the optimizer's moments; DWA's history too
    tensors, state = load_resume_state(tmp_path / "whole" / "last")
    if name == "uncertainty":
        assert torch.allclose(0.5 * torch.exp(-tensors["weighting.log_var"]).double(),
                              torch.tensor([last[t] for t in TASKS], dtype=torch.float64), rtol=0.2)
    elif name == "gradnorm":
        assert float(tensors["weighting.w"].sum()) == pytest.approx(3.0) and set(state["weighting"]["initial"]) == set(TASKS)
    else:
        assert state["weighting"]["steps"] == 5 and len(state["weighting"]["previous"]) == 2


def test_loss_weighting_is_fixed_once_a_run_exists(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "r"
    cli("train", "--encoder", tiny_bert_dir, "--data-dir", data_dir, "--max-steps", 4, "--stop-at-step", 2,
        "--out", run, *FAST)
    r = cli("train", "--resume", run, "--loss-weighting", "uncertainty", code=2)
    assert "loss-weighting" in r.output
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[1])
    assert "loss_weight" not in rec  # no weighting, no loss weights in the log
