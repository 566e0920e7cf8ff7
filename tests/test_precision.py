"""Mixed precision and torch.compile options: they run, keep gradients in fp32, and fall back cleanly."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertmtl.model.device import compile_encoder
from bertmtl.cli import main
from bertmtl.data.batching import RoundRobin
from bertmtl.sinks.metrics_log import read_records
from bertmtl.model import BertModel
from bertmtl.model.heads import HeadConfig, MultitaskBert
from bertmtl.runs.progress import SilentReporter
from bertmtl.encoders.tokenizer import EncoderTokenizer
from bertmtl.mtl.step import MultitaskStep
from bertmtl.training.loop import TrainConfig, train
from bertmtl.training.setup import load_datasets

from .fixtures import write_task_data


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_training_runs_with_fp32_gradients(tiny_bert_dir, tmp_path, precision):
    data = write_task_data(tmp_path / "data")
    cfg = TrainConfig(data_dir=str(data), encoder=str(tiny_bert_dir), precision=precision, combine="pcgrad",
                      smart=True, batch_size=16, device="cpu")
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    sets, _, _ = load_datasets(cfg, tok, warn=lambda r: None)
    model = MultitaskBert(BertModel.from_pretrained(tiny_bert_dir), HeadConfig.of(cfg)).train()
    step = MultitaskStep(model, cfg, list(sets), torch.device("cpu"))
    rr = RoundRobin(sets, 16, 0)
    before = [p.detach().clone() for p in model.parameters()]
    for i in range(6):  # fp16: the gradient scaler may skip the first steps while it finds its scale
        losses, smart = step.backward(rr.next(), i)
        assert all(torch.isfinite(torch.tensor(v)) for v in (*losses.values(), *smart.values()))
        # PCGrad combines the per-task gradients in fp32, whatever the autocast dtype.
        assert all(b.dtype == torch.float32 for b in step.grads.buffers.values())
        step.apply(1e-3)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_bf16_run_end_to_end(tiny_bert_dir, tmp_path):
    data = write_task_data(tmp_path / "data")
    cfg = TrainConfig(data_dir=str(data), encoder=str(tiny_bert_dir), out=str(tmp_path / "run"),
                      precision="bf16", max_steps=3, batch_size=16)
    s = train(cfg, reporter=SilentReporter())
    assert s["status"] == "finished" and s["last_metrics"]["overall"] is not None
    w = load_file(str(tmp_path / "run" / "last" / "multitask.safetensors"))
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in w.values())
    start = read_records(tmp_path / "run" / "metrics.jsonl")[0][0]
    assert start["precision"] == "bf16"
    # Steps in bf16, evaluation in fp32: the run's dev scores are exactly what `bertmtl evaluate`
    # (fp32) computes for the saved checkpoint.
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "run" / "last"), "--data-dir", str(data),
                                  "--json"])
    got = json.loads(r.output.strip().splitlines()[-1])
    for k in ("sst_acc", "para_acc", "sts_corr", "overall"):
        assert got[k] == pytest.approx(s["last_metrics"][k], abs=1e-7), k


def test_auto_precision_is_bf16_only_on_cpus_that_have_it(monkeypatch):
    import bertmtl.model.device as dv

    def dtype(precision, device):
        return dv.autocast_dtype(precision, device, training=True)

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(dv, "cpu_has_native_bf16", lambda: True)
    assert dtype("auto", cpu) is torch.bfloat16
    assert dtype("auto", cuda) is None  # training steps on a GPU stay fp32 (launch-bound at this size)
    assert dtype("fp32", cpu) is None
    monkeypatch.setattr(dv, "cpu_has_native_bf16", lambda: False)
    assert dtype("auto", cpu) is None
    assert dtype("bf16", cpu) is torch.bfloat16 and dtype("fp16", cuda) is torch.float16


def test_compile_falls_back_cleanly(tiny_bert_dir, monkeypatch):
    model = MultitaskBert(BertModel.from_pretrained(tiny_bert_dir)).eval()
    ids = torch.tensor([[2, 40, 41, 3]])
    ref = model.encoder(ids, torch.ones_like(ids)).last_hidden_state

    def unsupported(self, *a, **k):
        raise RuntimeError("no compiler backend on this platform")

    monkeypatch.setattr(torch.nn.Module, "compile", unsupported)
    messages = []
    assert compile_encoder(model, messages.append) is False
    assert "--compile is not available here (no compiler backend on this platform)" in messages[0]
    assert torch.equal(model.encoder(ids, torch.ones_like(ids)).last_hidden_state, ref)  # eager still works


@pytest.mark.parametrize("packed", [False, True])
def test_the_layer_stack_is_one_graph_under_torch_compile(tiny_bert_dir, packed):
    """Dynamo captures the training-mode layer stack (dropout included) without a graph break, so
    `--compile` compiles each step as one piece and CUDA graphs can capture it. Dynamo's own
    count (torch._dynamo.explain: tracing only, nothing is compiled)."""
    import torch._dynamo

    from bertmtl.model.bert import Packing

    model = MultitaskBert(BertModel.from_pretrained(tiny_bert_dir)).train()
    ids = torch.tensor([[2, 40, 41, 42, 3], [2, 43, 3, 0, 0]])
    mask = (ids != 0).long()
    x = model.encoder.embeddings(ids)
    stack = model.encoder.encoder
    try:
        if packed:
            packing = Packing(mask)
            explained = torch._dynamo.explain(stack)(packing.pack(x), None, packing, packing.seq)
        else:
            explained = torch._dynamo.explain(stack)(x, None)
    finally:
        torch._dynamo.reset()
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_bf16_weights_are_cast_once_per_step_and_the_gradients_are_the_same(tiny_bert_dir, tmp_path, monkeypatch):
    """One autocast region per step: each weight's bf16 copy is made in the first task's forward
    and reused by the other tasks'. The step's gradients equal those of a region per task's forward
    (each task casting every weight anew, the backward outside autocast: the code before), bit for
    bit, SMART included; the casts counted by the profiler drop by at least one per weight and
    extra task."""
    import contextlib

    data = write_task_data(tmp_path / "data")
    cfg = TrainConfig(data_dir=str(data), encoder=str(tiny_bert_dir), precision="bf16", combine="pcgrad",
                      smart=True, batch_size=8, device="cpu")
    tok = EncoderTokenizer.from_dir(tiny_bert_dir)
    sets, _, _ = load_datasets(cfg, tok, warn=lambda r: None)
    batches = RoundRobin(sets, 8, 0).next()
    one_task, step_region = MultitaskStep._backward_one, MultitaskStep._autocast

    def region_per_task(self, *args, **kw):  # the backward inside turns autocast off itself
        with step_region(self):
            return one_task(self, *args, **kw)

    def step(per_task: bool):
        monkeypatch.setattr(MultitaskStep, "_backward_one", region_per_task if per_task else one_task)
        monkeypatch.setattr(MultitaskStep, "_autocast", (lambda self: contextlib.nullcontext()) if per_task
                            else step_region)
        torch.manual_seed(0)
        model = MultitaskBert(BertModel.from_pretrained(tiny_bert_dir), HeadConfig.of(cfg)).train()
        stepper = MultitaskStep(model, cfg, list(sets), torch.device("cpu"))
        torch.manual_seed(1)
        with torch.profiler.profile() as prof:
            stepper.backward(batches)
        casts = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
        linears = [m for n, m in model.encoder.named_modules() if isinstance(m, torch.nn.Linear)
                   and not n.endswith(("query", "key", "value"))]  # Q, K, V are cast as one concatenation
        return casts, {t: b.clone() for t, b in stepper.grads.buffers.items()}, len(linears)

    once, grads, linears = step(per_task=False)
    per_task, reference, _ = step(per_task=True)
    assert grads.keys() == reference.keys() and len(batches) == 3
    assert all(torch.equal(grads[t], reference[t]) for t in grads)
    assert per_task - once >= (len(batches) - 1) * linears, (per_task, once, linears)
