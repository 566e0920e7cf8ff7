"""--grad-accum K (K micro-batches of B equal one batch of K x B, PCGrad included) and --patience."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from bertmtl.data.batching import RoundRobin, n_examples
from bertmtl.sinks.metrics_log import read_records

from .conftest import cli


def test_micro_batches_are_the_large_batch_split(data_dir, tmp_path):
    from bertmtl.tasks import TASKS
    from bertmtl.data.batching import TaskDataset
    from bertmtl.tasks.files import read_task_file, task_path
    from bertmtl.encoders.tokenizer import EncoderTokenizer

    from .conftest import tiny_vocab

    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n")
    tok = EncoderTokenizer.from_dir(tok_dir)
    sets = {n: TaskDataset(t, read_task_file(task_path(data_dir, t, "train"), t, labelled=True).examples, tok)
            for n, t in TASKS.items()}
    big, small = RoundRobin(sets, 16, seed=3), RoundRobin(sets, 8, seed=3, accum=2)
    assert big.steps_per_epoch() == small.steps_per_epoch()
    for _ in range(small.steps_per_epoch() + 2):  # across a pass boundary
        b, s = big.next(), small.next()
        assert n_examples(b) == n_examples(s)
        for task in b:
            assert [len(m) for m in s[task]] in ([8, 8], [8, 7])  # the stray-quote row makes one pass odd
            assert [i for m in s[task] for i in m.index] == b[task].index


@pytest.mark.slow
@pytest.mark.parametrize("combine", ["pcgrad", "sum"])
def test_accumulating_k_batches_of_b_equals_one_batch_of_k_times_b(tiny_bert_dir, data_dir, tmp_path, combine):
    # Dropout off (its masks differ between the two layouts); STS with squared error, since a
    # Pearson correlation over half a batch is not half of one over the whole batch; fp32.
    common = ["--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir), "--combine", combine, "--dropout", "0",
              "--sts-loss", "mse", "--max-steps", "4", "--seed", "5", "--lr", "1e-3", "--precision", "fp32",
              "--log-every", "1", "--eval-every", "2"]
    cli("train", *common, "--batch-size", "8", "--grad-accum", "2", "--out", str(tmp_path / "accum"))
    cli("train", *common, "--batch-size", "16", "--out", str(tmp_path / "large"))
    a = load_file(str(tmp_path / "accum" / "last" / "multitask.safetensors"))
    b = load_file(str(tmp_path / "large" / "last" / "multitask.safetensors"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    init = load_file(str(tiny_bert_dir / "model.safetensors"))
    moved = (a["encoder.encoder.layer.0.output.dense.weight"] - init["encoder.layer.0.output.dense.weight"]).abs().max()
    assert moved > 1e-3  # the comparison is not between two untouched copies
    la = [r for r in read_records(tmp_path / "accum" / "metrics.jsonl")[0] if r["type"] == "train"]
    lb = [r for r in read_records(tmp_path / "large" / "metrics.jsonl")[0] if r["type"] == "train"]
    for ra, rb in zip(la, lb, strict=True):  # logged losses are means over the whole step's examples
        assert ra["loss"] == {t: pytest.approx(v, abs=1e-5) for t, v in rb["loss"].items()}


def test_patience_stops_after_evaluations_without_improvement(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    # a learning rate too high for this model: dev scores jump, then stall (seed-determined on CPU)
    r = cli("train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir), "--out", str(run), "--lr", "1e-1",
            "--max-steps", "30", "--eval-every", "2", "--batch-size", "16", "--patience", "2", "--seed", "1")
    recs, _ = read_records(run / "metrics.jsonl")
    evals = [e for e in recs if e["type"] == "eval"]
    best, since = None, 0
    for n, e in enumerate(evals):  # the run must end at the first evaluation that is the 2nd without a new best
        # an evaluation without overall (the diverged model predicts one STS score) is no improvement
        since = 0 if e["overall"] is not None and (best is None or e["overall"] > best) else since + 1
        best = e["overall"] if since == 0 else best
        if since == 2:
            break
    assert since == 2 and n == len(evals) - 1 and evals[-1]["step"] < 30
    stop = evals[-1]["step"]
    assert recs[-1]["type"] == "end" and recs[-1]["status"] == "early-stopped" and recs[-1]["step"] == stop
    assert json.loads((run / "summary.json").read_text())["status"] == "early-stopped"
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == stop
    assert json.loads((run / "best" / "bertmtl.json").read_text())["step"] == stop - 4
    assert json.loads((run / "last" / "trainer_state.json").read_text())["since_best"] == 2
    assert f"early-stopped at step {stop}" in r.output
