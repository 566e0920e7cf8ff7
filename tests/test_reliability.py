"""Crashes lose nothing: kill -9, Ctrl-C / SIGTERM, failed saves, full disks, non-finite losses."""

from __future__ import annotations

import errno
import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertmtl.runs import checkpoint as ckpt
from bertmtl.fsutil import recover_dir
from bertmtl.cli import main
from bertmtl.errors import UserError
from bertmtl.sinks.metrics_log import read_records
from bertmtl.runs.progress import SilentReporter
from bertmtl.training.loop import TrainConfig, train

from .conftest import cli, fill_disk, small_tmpfs, spawn


def _args(tiny, data, out, *extra):
    return ["train", "--pretrained", str(tiny), "--data-dir", str(data), "--out", str(out), "--batch-size", "16",
            "--lr", "1e-3", "--seed", "3", "--log-every", "1", *extra]


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
    recover_dir(run / "last")
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
    ref = spawn(*_args(tiny_bert_dir, data_dir, tmp_path / "ref", *extra))
    assert ref.wait(300) == 0, ref.stderr.read().decode()[-2000:]
    run = tmp_path / "killed"
    rng = random.Random(11)
    kills, saved_steps = 0, []
    while kills < 5:
        resuming = (run / "last").exists()
        proc = spawn(*(["train", "--resume", str(run)] if resuming else _args(tiny_bert_dir, data_dir, run, *extra)))
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
        last = spawn("train", "--resume", str(run))
        assert last.wait(300) == 0, last.stderr.read().decode()[-2000:]
    a = load_file(str(tmp_path / "ref" / "last" / "multitask.safetensors"))
    b = load_file(str(run / "last" / "multitask.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(run.glob(".last.tmp-*")) and not list(run.glob(".best.tmp-*"))


# Kill points (fsutil.crash_point): inside a step, after a log line, while last/ is written, when
# its staging is complete, right after the swap; inside an evaluation, after its record; while
# best/ is written, staged, swapped, and between best/ and last/; after the end record.
RUN_POINTS = ["step:2", "logged", "writing:last", "staged:last", "swapped:last", "eval:scored", "eval:logged", "end"]
BEST_POINTS = ["writing:best", "staged:best", "swapped:best", "eval:saved-best"]


def _assert_consistent_after_kill(run: Path) -> None:
    """After a kill -9: last/ and best/ each whole or absent, and the run no longer counts as running."""
    from bertmtl.runs.catalog import run_info

    _assert_loadable_or_absent(run)
    recover_dir(run / "best")
    if (run / "best").exists():
        ckpt.load_checkpoint(run / "best")
    if (run / "metrics.jsonl").exists():
        assert run_info(run)["status"] != "running"  # the kernel dropped the writer lock


@pytest.mark.slow
def test_kill9_at_twelve_points_then_resume_equals_uninterrupted(tiny_bert_dir, data_dir, tmp_path):
    extra = ("--steps-per-epoch", "4", "--epochs", "3", "--save-every", "1", "--eval-every", "3")
    ref = spawn(*_args(tiny_bert_dir, data_dir, tmp_path / "ref", *extra))
    assert ref.wait(300) == 0, ref.stderr.read().decode()[-2000:]

    def start(run: Path, point: str | None):
        args = ["train", "--resume", str(run)] if (run / "last").exists() else _args(tiny_bert_dir, data_dir, run, *extra)
        return spawn(*args, **({"BERTMTL_CRASH_AT": point} if point else {}))

    def killed_at(proc, point: str, run: Path) -> None:
        proc.wait(300)
        assert proc.returncode == -signal.SIGKILL, (point, proc.returncode, proc.stderr.read().decode()[-2000:])
        _assert_consistent_after_kill(run)

    # One run killed at each point in turn, resumed after each kill.
    run = tmp_path / "killed"
    for point in RUN_POINTS:
        killed_at(start(run, point), point, run)
    # best/ is written at the first evaluation of a fresh run: one run per best/ point, killed there.
    best_runs = {p: tmp_path / f"best-{p.replace(':', '-')}" for p in BEST_POINTS}
    procs = {p: start(r, p) for p, r in best_runs.items()}
    for p, proc in procs.items():
        killed_at(proc, p, best_runs[p])
    runs = [run, *best_runs.values()]
    procs = [start(r, None) for r in runs]  # every run to its end, once more
    for proc in procs:
        assert proc.wait(300) == 0, proc.stderr.read().decode()[-2000:]
    for r in runs:
        assert json.loads((r / "summary.json").read_text())["status"] == "finished"
        for sub in ("last", "best"):
            a = load_file(str(tmp_path / "ref" / sub / "multitask.safetensors"))
            b = load_file(str(r / sub / "multitask.safetensors"))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (r, sub)
        assert not list(r.glob(".*.tmp-*"))  # staging leftovers of the killed writers are gone


class _Crash(BaseException):
    """A crash point reached in-process: unwinds like a kill (no handler catches a BaseException)."""


@pytest.mark.slow
def test_a_crash_then_resume_is_exact_for_every_combiner_and_weighting(tiny_bert_dir, small_data_dir, tmp_path, monkeypatch):
    """Every --combine method and every --loss-weighting, crashed inside a step and resumed from
    last/ through the real `bertmtl train`: the same weights as the uninterrupted run, bit for bit
    (their own state: generators, Nash-MTL's weights, learned log-variances and GradNorm weights,
    DWA's history). In-process: the crash point raises instead of killing the process (the real
    kill -9 at each crash point is test_kill9_at_twelve_points_then_resume_equals_uninterrupted)."""
    from bertmtl import fsutil
    from bertmtl.configuration.train_config import COMBINERS, LOSS_WEIGHTINGS

    configs = {c: ("--combine", c, *(("--nash-update-every", "2") if c == "nash-mtl" else ())) for c in COMBINERS}
    own = {"dwa": ("--dwa-window", "2"), "uncertainty": ("--weighting-lr", "0.1"), "gradnorm": ("--weighting-lr", "0.1")}
    configs.update({w: ("--combine", "pcgrad", "--loss-weighting", w, *own[w]) for w in LOSS_WEIGHTINGS if w != "none"})
    extra = ("--max-steps", "6", "--save-every", "3", "--eval-every", "100", "--precision", "fp32", "--no-smart")
    monkeypatch.setattr(fsutil, "_die", lambda: (_ for _ in ()).throw(_Crash()))
    for name, options in configs.items():
        ref, crashed = tmp_path / "ref" / name, tmp_path / "crashed" / name
        cli(*_args(tiny_bert_dir, small_data_dir, ref, *extra, *options))
        monkeypatch.setattr(fsutil, "_crash_hits", {})
        with monkeypatch.context() as m:
            m.setenv(fsutil.CRASH_ENV, "step:4")
            with pytest.raises(_Crash):
                cli(*_args(tiny_bert_dir, small_data_dir, crashed, *extra, *options))
        assert json.loads((crashed / "last" / "bertmtl.json").read_text())["step"] == 3, name
        cli("train", "--resume", crashed)
        a = load_file(str(ref / "last" / "multitask.safetensors"))
        b = load_file(str(crashed / "last" / "multitask.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert json.loads((crashed / "summary.json").read_text())["step"] == 6, name


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_checkpoint_and_says_how_to_resume(tiny_bert_dir, data_dir, tmp_path, sig):
    run = tmp_path / "run"
    proc = spawn(*_args(tiny_bert_dir, data_dir, run, "--epochs", "2000"))
    assert _wait_for_training(run, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert f"Resume with: bertmtl train --resume {run}".encode() in err
    # Said when the signal came, before the step ended and the checkpoint was written.
    name = b"Ctrl-C" if sig == signal.SIGINT else b"SIGTERM"
    said = err.index(name + b": stopping after this step and saving a checkpoint")
    assert said < err.index(b"stopped at step")
    assert b"Traceback" not in err
    step = _assert_loadable_or_absent(run)
    assert step and step > 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["step"] == step
    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--stop-at-step", str(step + 2)])
    assert r.exit_code == 0, r.output
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == step + 2


def test_unwritable_out_is_refused_before_training(tiny_bert_dir, data_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = CliRunner().invoke(main, _args(tiny_bert_dir, data_dir, blocker / "run"))
    assert r.exit_code == 2 and "cannot write there" in r.output and "Traceback" not in r.output


def test_full_disk_is_refused_before_training(tiny_bert_dir, data_dir, tmp_path):
    from bertmtl.model.bert import BertModel
    from bertmtl.model.heads import HeadConfig, MultitaskBert
    from bertmtl.training.setup import checkpoint_peak_bytes

    cfg = TrainConfig(data_dir=str(data_dir), encoder=str(tiny_bert_dir))
    model = MultitaskBert(BertModel.from_pretrained(tiny_bert_dir), HeadConfig.of(cfg))
    need = checkpoint_peak_bytes(model, cfg)
    with small_tmpfs(tmp_path / "disk", need - 2**20) as disk:  # a real file system a little too small
        cfg.out = str(disk / "run")
        with pytest.raises(UserError, match=r"MiB free, but about \d+ MiB are needed for checkpoints"):
            train(cfg, reporter=SilentReporter())
        assert not (disk / "run").exists()  # the failed start leaves nothing behind


class _FillDiskAt(SilentReporter):
    """A reporter that fills the run's file system when the first evaluation is reported: the
    best/ save that follows meets a real full disk (safetensors' own error, not an OSError)."""

    def __init__(self, disk: Path):
        super().__init__()
        self.disk, self.filler = disk, None

    def evaluation(self, rec):
        if self.filler is None:
            self.filler = fill_disk(self.disk)


@pytest.mark.slow
def test_a_full_disk_mid_run_keeps_the_previous_checkpoint(tiny_bert_dir, data_dir, tmp_path):
    from bertmtl.model.bert import BertModel
    from bertmtl.model.heads import HeadConfig, MultitaskBert
    from bertmtl.training.setup import checkpoint_peak_bytes

    cfg = TrainConfig(data_dir=str(data_dir), encoder=str(tiny_bert_dir), save_every=1, eval_every=2, epochs=2,
                      batch_size=16)
    need = checkpoint_peak_bytes(MultitaskBert(BertModel.from_pretrained(tiny_bert_dir), HeadConfig.of(cfg)), cfg)
    with small_tmpfs(tmp_path / "disk", 2 * need) as disk:
        run = disk / "run"
        cfg.out = str(run)
        reporter = _FillDiskAt(disk)
        with pytest.raises(UserError, match=rf"could not write {run / 'best'} \(No space left on device\); what "
                                            rf"was there before is intact\. Resume with `bertmtl train --resume {run}`"):
            train(cfg, reporter=reporter)
        assert _assert_loadable_or_absent(run) == 1  # last/ from step 1, whole
        assert not (run / "best").exists() and not list(run.glob(".best.tmp-*"))
        reporter.filler.unlink()  # space again: the run goes on from step 1
        s = train(TrainConfig.from_dict(cfg.to_dict()), resume=run, reporter=SilentReporter())
        assert s["status"] == "finished" and (run / "best" / "bertmtl.json").is_file()


def test_library_write_errors_become_os_errors(tmp_path):
    """safetensors and tokenizers report a full disk as their own exception types: fsutil maps them."""
    from bertmtl.fsutil import save_safetensors

    with small_tmpfs(tmp_path / "disk", 64 * 1024) as disk:
        with pytest.raises(OSError) as e:
            save_safetensors(disk / "x.safetensors", {"w": torch.zeros(100_000)})
        assert e.value.errno == errno.ENOSPC and type(e.value.__cause__).__name__ == "SafetensorError"


def _nan_on(steps: set[int], monkeypatch):
    """Make every task loss NaN at the given (1-based) steps."""
    from bertmtl.model.heads import MultitaskBert

    real = MultitaskBert.loss
    state = {"calls": 0}

    def patched(model, task, out, labels):
        state["calls"] += 1
        step = (state["calls"] - 1) // 3 + 1  # three tasks per step
        loss = real(model, task, out, labels)
        return loss * float("nan") if step in steps else loss

    monkeypatch.setattr(MultitaskBert, "loss", patched)


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
    r = CliRunner().invoke(main, _args(tiny_bert_dir, data_dir, run, "--stop-at-step", "2"))
    assert r.exit_code == 0, r.output
    evil = tmp_path / "elsewhere"
    for f in (run / "train_args.json", run / "last" / "train_args.json"):
        args = json.loads(f.read_text())
        args["out"] = str(evil)
        f.write_text(json.dumps(args))
    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--stop-at-step", "4"])
    assert r.exit_code == 0, r.output
    assert not evil.exists()
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == 4


def test_an_error_while_evaluating_closes_the_log_and_the_process_group(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    import bertmtl.training.loop as tr
    from bertmtl.sinks.metrics_log import MetricsLog
    from bertmtl.training.distributed import Dist

    closed = []
    monkeypatch.setattr(tr.Dist, "from_env", classmethod(lambda cls: type("D", (Dist,), {
        "close": lambda self: closed.append("dist")})()))
    real_close = MetricsLog.close
    monkeypatch.setattr(MetricsLog, "close", lambda self: (closed.append("log"), real_close(self)))

    def broken(run, saver):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(tr, "evaluate_dev", broken)
    cfg = TrainConfig(data_dir=str(data_dir), out=str(tmp_path / "run"), encoder=str(tiny_bert_dir),
                      max_steps=2, eval_every=1, batch_size=8)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        train(cfg, reporter=SilentReporter())
    assert closed == ["log", "dist"]


def test_a_torn_last_log_line_does_not_swallow_the_next_record(tmp_path):
    """A crash or a full disk mid-write leaves half a line: the next record (a resume) must not be
    glued onto it and skipped with it."""
    from bertmtl.sinks.metrics_log import MetricsLog

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"type": "start", "step": 0}\n{"type": "train", "st')
    m = MetricsLog(log)
    m.on_record({"type": "resume", "step": 3})
    m.close()
    assert [r["type"] for r in read_records(log)[0]] == ["start", "resume"]
