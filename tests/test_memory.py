"""Memory: the CLI fixes glibc's allocator thresholds, and PCGrad needs one buffer per task only."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from click.testing import CliRunner

import bertmtl.training.allocator as allocator
from bertmtl.cli import main
from bertmtl.data.batching import RoundRobin
from bertmtl.model import BertModel
from bertmtl.model.heads import HeadConfig, MultitaskBert
from bertmtl.mtl import pcgrad
from bertmtl.encoders.tokenizer import EncoderTokenizer
from bertmtl.mtl.step import MultitaskStep
from bertmtl.training.loop import TrainConfig
from bertmtl.training.setup import load_datasets

from .fixtures import write_task_data

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                           reason="glibc's mallopt")


def test_cli_configures_the_allocator_before_any_command(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator, "configure_allocator", lambda: calls.append(1) or True)
    r = CliRunner().invoke(main, ["download", "--help"])
    assert r.exit_code == 0 and calls == [1]


@pytest.mark.parametrize("given, spins", [(None, False), ("active", True)])
def test_the_command_makes_openmp_threads_wait_passively_unless_told(trained_run, given, spins):
    """The real `bertmtl predict` loads torch with OpenMP's passive waiting (bertmtl/threads.py: a
    busy core then costs what losing it costs, not more): waiting threads do not spin (GNU OpenMP's
    spin count 0, where its default is 300000); OMP_WAIT_POLICY set by the user is kept. OpenMP
    itself says what it uses (OMP_DISPLAY_ENV)."""
    import re
    import subprocess

    from .conftest import REPO

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", OMP_DISPLAY_ENV="VERBOSE",
               **({"OMP_WAIT_POLICY": given} if given else {}))
    r = subprocess.run([sys.executable, "-m", "bertmtl", "predict", "a good film", "--checkpoint", str(trained_run),
                        "--json"], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)
    assert r.returncode == 0, r.stderr
    shown = re.findall(r"GOMP_SPINCOUNT\s*=\s*'(\d+)'", r.stderr + r.stdout)
    if not shown:
        pytest.skip("this torch's OpenMP is not GNU OpenMP, which displays its spin count")
    assert (int(shown[0]) > 0) == spins, shown


# Frees 4 MiB tensors that lie between small blocks still in use: with glibc's default dynamic
# threshold they come from the heap after the first free and stay resident; with the fixed
# threshold each is its own mapping, returned to the system when freed.
_FRAGMENT = textwrap.dedent("""
    import os, sys, torch
    import bertmtl.training.allocator as a
    if sys.argv[1] == "on":
        assert a.configure_allocator()
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    torch.ones(2 << 20)  # an 8 MiB mmapped block freed: glibc's default threshold rises to 8 MiB here
    big, small = [], []
    for _ in range(64):
        big.append(torch.ones(1 << 20))
        small.append(torch.ones(16))
    before = rss()
    big.clear()
    print((before - rss()) / 2**20)
""")


@pytest.mark.slow
@glibc
def test_fixed_mmap_threshold_returns_freed_tensors_to_the_system():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", _FRAGMENT, "on"], env=env, capture_output=True, text=True, check=True)
    # Of the 256 MiB freed. (Without the setting, how much stays depends on the heap's state
    # before the loop, which differs between environments, so it is not asserted.)
    assert float(out.stdout) > 200


def test_pcgrad_may_write_over_its_first_gradient():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(1000, generator=g) for _ in range(3)]
    expected = pcgrad(grads, torch.Generator().manual_seed(1))
    inplace = [t.clone() for t in grads]
    out = pcgrad(inplace, torch.Generator().manual_seed(1), out=inplace[0])
    assert out is inplace[0] and torch.equal(out, expected)


@pytest.mark.parametrize("combine, buffers", [("pcgrad", 3), ("sum", 1)])
def test_one_encoder_sized_gradient_buffer_per_task(tiny_bert_dir, tmp_path, combine, buffers):
    data = write_task_data(tmp_path / "data")
    cfg = TrainConfig(data_dir=str(data), encoder=str(tiny_bert_dir), combine=combine, batch_size=8, device="cpu")
    sets, _, _ = load_datasets(cfg, EncoderTokenizer.from_dir(tiny_bert_dir), warn=lambda r: None)
    model = MultitaskBert(BertModel.from_pretrained(tiny_bert_dir), HeadConfig.of(cfg)).train()
    step = MultitaskStep(model, cfg, list(sets), torch.device("cpu"))
    assert len(step.grads.buffers) == buffers
    step.backward(RoundRobin(sets, 8, 0).next())
    step.apply(1e-3)
    # The update reads the combined gradient through the parameters' .grad views.
    combined = step.grads.buffers[step.combined]
    assert step.grads.params[0].grad.data_ptr() == combined.data_ptr()


def test_threads_option_sets_the_count_over_the_environment(tiny_bert_dir, data_dir, tmp_path):
    """`--threads N` is the count a run's steps use, whatever $OMP_NUM_THREADS says (the child has
    OMP_NUM_THREADS=1); without it, the environment's count; the run says which."""
    from .conftest import command

    common = ("--encoder", tiny_bert_dir, "--data-dir", data_dir, "--max-steps", 1, "--batch-size", 4,
              "--dev-limit", 8, "--precision", "fp32")
    r = command("train", *common, "--out", tmp_path / "two", "--threads", 2, text=True, code=0)
    assert "device cpu (2 threads)" in r.stderr
    r = command("train", *common, "--out", tmp_path / "env", text=True, code=0)
    assert "device cpu (1 thread)" in r.stderr
    # evaluate and predict take it too, as the real commands
    command("evaluate", "--checkpoint", tmp_path / "two", "--data-dir", data_dir, "--dev-limit", 8, "--threads", 2,
            code=0)
    r = command("predict", "--checkpoint", tmp_path / "two", "--threads", 2, "--json", "a good film", text=True, code=0)
    assert "sentiment" in r.stdout
    r = command("evaluate", "--checkpoint", tmp_path / "two", "--data-dir", data_dir, "--threads", 0, text=True, code=2)
    assert "Invalid value for '--threads': 0 is not in the range 1<=x<=1024" in r.stderr


def test_the_predictor_runs_on_the_threads_it_is_given(trained_run):
    import torch

    from bertmtl.inference.predict import Predictor

    before = torch.get_num_threads()
    try:
        Predictor(trained_run, threads=before + 1)  # a count the process does not already have
        assert torch.get_num_threads() == before + 1
        Predictor(trained_run)  # None leaves the process's count alone
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)
