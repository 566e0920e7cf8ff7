"""Data-parallel training through torchrun (gloo on the CPU) equals one process with the global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from .fixtures import write_task_data


def _run(args, tmp_path, name):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, f"{name}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.slow
@pytest.mark.parametrize("combine,weighting", [("pcgrad", "none"), ("upgrad", "none"), ("nash-mtl", "none"),
                                               ("random", "none"), ("pcgrad", "uncertainty"), ("sum", "gradnorm")])
def test_two_gloo_ranks_equal_one_process(combine, weighting, tiny_bert_dir, tmp_path):
    """Every combiner weighs the all-reduced per-task gradients, and a loss weighting learns from
    the losses averaged over ranks: rank 0's weights equal one process's after four steps, which
    they could not if the ranks' updates had differed (each rank's half batch runs on its own
    copy of the weights)."""
    data = write_task_data(tmp_path / "data")
    # Dropout off (its masks are drawn per rank); STS with squared error, since a Pearson
    # correlation over a half batch is not half of one over the whole batch; fp32, since bf16
    # sums of half batches round differently from sums of the whole one.
    common = ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data), "--combine", combine,
              "--loss-weighting", weighting, "--smart", "--dropout", "0", "--sts-loss", "mse", "--max-steps", "4", "--seed", "5", "--lr", "1e-3",
              "--device", "cpu", "--precision", "fp32", "--log-every", "1"]
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "bertmtl", *common,
          "--batch-size", "8", "--out", str(tmp_path / "ddp")], tmp_path, "torchrun")
    _run(["-m", "bertmtl", *common, "--batch-size", "16", "--out", str(tmp_path / "single")], tmp_path, "single")
    a = load_file(str(tmp_path / "ddp" / "last" / "multitask.safetensors"))
    b = load_file(str(tmp_path / "single" / "last" / "multitask.safetensors"))
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-5, worst
    start = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2
    # The parameters really moved: the comparison is not between two untouched copies.
    init = load_file(str(tiny_bert_dir / "model.safetensors"))
    moved = (a["encoder.encoder.layer.0.output.dense.weight"] - init["encoder.layer.0.output.dense.weight"]).abs().max()
    assert moved > 1e-3
    # Only rank 0 wrote: one start record, one end record.
    types = [json.loads(x)["type"] for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert types.count("start") == 1 and types.count("end") == 1
