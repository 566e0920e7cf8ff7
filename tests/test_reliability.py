"""Crashes lose nothing: kill -9, Ctrl-C / SIGTERM, failed saves, full disks, non-finite losses."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertmtl import checkpoint as ckpt
from bertmtl.cli import main
from bertmtl.errors import UserError
from bertmtl.metrics_log import read_records
from bertmtl.progress import SilentReporter
from bertmtl.train import TrainConfig, train

from .fixtures import write_task_data


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_task_data(tmp_path_factory.mktemp("rdata"))


def _args(tiny, data, out, *extra):
    return ["train", "--pretrained", str(tiny), "--data-dir", str(data), "--out", str(out), "--batch-size", "16",
            "--lr", "1e-3", "--seed", "3", "--log-every", "1", *extra]


def _spawn(args):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "bertmtl", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)


def _train_records(run: Path) -> int:
    if not (run / "metrics.jsonl").exists():
        return 0
    return sum(r["type"] == "train" for r in read_records(run / "metrics.jsonl")[0])


def _wait_for_training(run: Path, proc, steps: int = 1, timeout=120) -> bool:
    """Until the child logs `steps` new training steps (it is past start-up and inside the loop).

    Counting steps rather than seconds keeps the kill points spread the same on a fast or slow machine.
    False when the child finished first.
    """
    before = _train_records(run)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if _train_records(run) >= before + steps:
            return True
        if proc.poll() is not None:
            assert proc.returncode == 0, f"child failed: {proc.stderr.read().decode()[-2000:]}"
            return False
        time.sleep(0.02)
    raise AssertionError("no training step logged in time")


def _assert_loadable_or_absent(run: Path) -> int | None:
    """A run directory after a crash: last/ is complete and loads, or there is none yet."""
    ckpt.recover_dir(run / "last")
    if not (run / "last").exists():
        return None
    c = ckpt.load_checkpoint(run / "last")
    tensors, state = ckpt.load_resume_state(run / "last")
    assert state["step"] == c.info["step"] and tensors
    return state["step"]


@pytest.mark.slow
def test_kill9_at_random_points_then_resume_equals_uninterrupted(tiny_bert_dir, data_dir, tmp_path):
    extra = ("--epochs", "10", "--save-every", "1", "--eval-every", "20")
    # Every run in a child process with the same thread count, so float reductions match.
    ref = _spawn(_args(tiny_bert_dir, data_dir, tmp_path / "ref", *extra))
    assert ref.wait(300) == 0, ref.stderr.read().decode()[-2000:]
    run = tmp_path / "killed"
    rng = random.Random(11)
    kills, saved_steps = 0, []
    while kills < 5:
        resuming = (run / "last").exists()
        proc = _spawn(["train", "--resume", str(run)] if resuming else _args(tiny_bert_dir, data_dir, run, *extra))
        if not _wait_for_training(run, proc, steps=rng.randint(1, 8)):
            break  # it finished before we could kill it: no more kill points left
        time.sleep(rng.uniform(0.0, 0.05))  # and somewhere inside the step or its save
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        step = _assert_loadable_or_absent(run)
        saved_steps.append(step)
        if step is None:  # killed before its first save: start again from scratch
            import shutil

            shutil.rmtree(run)
    print(f"kill -9 points: {kills} kills, last saved step after each: {saved_steps}")
    assert kills >= 3, saved_steps
    assert len(set(saved_steps)) >= 2, saved_steps  # the kills really landed at different points
    if not (run / "summary.json").exists() or json.loads((run / "summary.json").read_text())["status"] != "finished":
        last = _spawn(["train", "--resume", str(run)])
        assert last.wait(300) == 0, last.stderr.read().decode()[-2000:]
    a = load_file(str(tmp_path / "ref" / "last" / "multitask.safetensors"))
    b = load_file(str(run / "last" / "multitask.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(run.glob(".last.tmp-*")) and not list(run.glob(".best.tmp-*"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_checkpoint_and_says_how_to_resume(tiny_bert_dir, data_dir, tmp_path, sig):
    run = tmp_path / "run"
    proc = _spawn(_args(tiny_bert_dir, data_dir, run, "--epochs", "2000"))
    assert _wait_for_training(run, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert f"Resume with: bertmtl train --resume {run}".encode() in err
    assert b"Traceback" not in err
    step = _assert_loadable_or_absent(run)
    assert step and step > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["step"] == step
    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--max-steps", str(step + 2)])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == step + 2


def test_unwritable_out_is_refused_before_training(tiny_bert_dir, data_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = CliRunner().invoke(main, _args(tiny_bert_dir, data_dir, blocker / "run"))
    assert r.exit_code == 2 and "cannot write there" in r.output and "Traceback" not in r.output


def test_full_disk_is_refused_before_training(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    cfg = TrainConfig(data_dir=str(data_dir), out=str(tmp_path / "run"), encoder=str(tiny_bert_dir))
    with pytest.raises(UserError, match=r"MiB free, but checkpoints need about"):
        train(cfg, reporter=SilentReporter())
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_failed_save_keeps_the_previous_checkpoint(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    real = ckpt._save_tensors
    calls = {"n": 0}

    def flaky(path, tensors):
        calls["n"] += 1
        if calls["n"] >= 5:  # the third save of last/ (model + optimizer tensors per save) fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, tensors)

    monkeypatch.setattr(ckpt, "_save_tensors", flaky)
    cfg = TrainConfig(data_dir=str(data_dir), out=str(tmp_path / "run"), encoder=str(tiny_bert_dir),
                      save_every=1, eval_every=100, epochs=2, batch_size=16)
    with pytest.raises(UserError, match=r"could not save .*No space left on device.*previous checkpoint there is intact"):
        train(cfg, reporter=SilentReporter())
    monkeypatch.setattr(ckpt, "_save_tensors", real)
    assert _assert_loadable_or_absent(tmp_path / "run") == 2
    assert not list((tmp_path / "run").glob(".last.tmp-*"))


def _nan_on(steps: set[int], monkeypatch):
    """Make every task loss NaN at the given (1-based) steps."""
    import bertmtl.mtl.step as tr

    real = tr.task_loss
    state = {"calls": 0}

    def patched(model, task, out, labels):
        state["calls"] += 1
        step = (state["calls"] - 1) // 3 + 1  # three tasks per step
        loss = real(model, task, out, labels)
        return loss * float("nan") if step in steps else loss

    monkeypatch.setattr(tr, "task_loss", patched)


def test_isolated_nonfinite_steps_are_skipped(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    _nan_on({2, 5}, monkeypatch)
    cfg = TrainConfig(data_dir=str(data_dir), out=str(tmp_path / "run"), encoder=str(tiny_bert_dir),
                      epochs=1, batch_size=16, smart=False)
    s = train(cfg, reporter=SilentReporter())
    assert s["status"] == "finished" and s["step"] == 6
    recs = read_records(tmp_path / "run" / "metrics.jsonl")[0]
    assert [r["step"] for r in recs if r["type"] == "nonfinite"] == [2, 5]
    w = load_file(str(tmp_path / "run" / "last" / "multitask.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values())


def test_consecutive_nonfinite_steps_stop_with_last_good_checkpoint(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    _nan_on(set(range(4, 100)), monkeypatch)
    cfg = TrainConfig(data_dir=str(data_dir), out=str(tmp_path / "run"), encoder=str(tiny_bert_dir),
                      epochs=5, batch_size=16, smart=False, save_every=1, max_nonfinite=3)
    with pytest.raises(UserError, match=r"3 consecutive non-finite losses.*last good weights are in"):
        train(cfg, reporter=SilentReporter())
    assert _assert_loadable_or_absent(tmp_path / "run") == 3
    recs = read_records(tmp_path / "run" / "metrics.jsonl")[0]
    assert [r["consecutive"] for r in recs if r["type"] == "nonfinite"] == [1, 2, 3]
    assert recs[-1] == {"type": "end", "status": "nonfinite", "step": 6, "best_overall": None}


def test_resume_never_writes_where_metadata_points(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, _args(tiny_bert_dir, data_dir, run, "--max-steps", "2"))
    assert r.exit_code == 0, r.output
    evil = tmp_path / "elsewhere"
    for f in (run / "train_args.json", run / "last" / "train_args.json"):
        args = json.loads(f.read_text())
        args["out"] = str(evil)
        f.write_text(json.dumps(args))
    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--max-steps", "4"])
    assert r.exit_code == 0, r.output
    assert not evil.exists()
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == 4


def test_an_error_while_evaluating_closes_the_log_and_the_process_group(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    import bertmtl.train as tr
    from bertmtl.distributed import Dist

    closed = []
    monkeypatch.setattr(tr.Dist, "from_env", classmethod(lambda cls: type("D", (Dist,), {
        "close": lambda self: closed.append("dist")})()))
    real_close = tr.MetricsLog.close
    monkeypatch.setattr(tr.MetricsLog, "close", lambda self: (closed.append("log"), real_close(self)))

    def broken(run, saver):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(tr, "evaluate_dev", broken)
    cfg = TrainConfig(data_dir=str(data_dir), out=str(tmp_path / "run"), encoder=str(tiny_bert_dir),
                      max_steps=2, eval_every=1, batch_size=8)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train(cfg, reporter=SilentReporter())
    assert closed == ["log", "dist"]
