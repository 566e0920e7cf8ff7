"""A new user's first hour: which checkpoint answers, what --max-steps means, progress, clean-up,
file modes, install hints, supported systems, and --precision auto on CPUs with and without bf16."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bertmtl.cli import check_system, main
from bertmtl.errors import UserError
from bertmtl.sinks.metrics_log import read_records
from bertmtl.training.optim import scheduled_lr
from bertmtl.runs.progress import RichReporter, SilentReporter
from bertmtl.training.loop import TrainConfig, train
from .conftest import cli


FAST = ["--batch-size", "16", "--lr", "1e-3", "--seed", "0", "--log-every", "1", "--precision", "fp32"]


@pytest.fixture(scope="module")
def finished(tiny_bert_dir, data_dir, tmp_path_factory) -> Path:
    """A finished 4-step run (best/ and last/) under a runs root of its own."""
    run = tmp_path_factory.mktemp("root") / "20260101-000000"
    cli("train", "--encoder", tiny_bert_dir, "--data-dir", data_dir, "--out", run, "--max-steps", 4, *FAST)
    return run


def _stopped_copy(run: Path, name: str) -> Path:
    """A newer run that was stopped (Ctrl-C) before any evaluation: last/ only."""
    other = run.parent / name
    shutil.copytree(run, other)
    shutil.rmtree(other / "best")
    lines = (other / "metrics.jsonl").read_text().splitlines()
    lines = [json.dumps({**json.loads(x), "status": "stopped"}) if '"end"' in x else x for x in lines]
    (other / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (other / "summary.json").write_text(json.dumps({"status": "stopped"}))
    later = time.time() + 60
    os.utime(other / "metrics.jsonl", (later, later))
    return other


# -- which checkpoint answers ---------------------------------------------------------------

def test_predict_answers_from_the_latest_run_with_a_best_checkpoint_and_says_so(finished, tmp_path):
    stopped = _stopped_copy(finished, "20260101-000001")
    try:
        r = cli("predict", "a good film", "--runs-dir", finished.parent, "--json")
        # The newer run was never evaluated: the finished run's best/ answers, and is named.
        assert json.loads(r.stdout)["checkpoint"] == str(finished / "best")
        assert f"checkpoint: {finished / 'best'} (step 4, dev overall" in r.stderr
        r = cli("predict", "a good film", "--checkpoint", stopped, "--json")  # a run without best/: its last/
        assert json.loads(r.stdout)["checkpoint"] == str(stopped / "last")
        assert "has no best/ checkpoint" in r.stderr
    finally:
        shutil.rmtree(stopped)


def test_without_any_best_checkpoint_the_latest_last_answers_with_a_note(finished, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(finished, root / "only")
    shutil.rmtree(root / "only" / "best")
    r = cli("predict", "a good film", "--runs-dir", root, "--json")
    assert json.loads(r.stdout)["checkpoint"] == str(root / "only" / "last")
    assert "no run under" in r.stderr and "has a best/ checkpoint" in r.stderr


# -- --max-steps sets the schedule; --stop-at-step stops a longer one -----------------------

def _train_records(run: Path) -> tuple[dict, list[dict]]:
    recs = read_records(run / "metrics.jsonl")[0]
    return [r for r in recs if r["type"] in ("start", "resume")][-1], [r for r in recs if r["type"] == "train"]


def test_max_steps_is_the_schedules_length(finished):
    start, steps = _train_records(finished)
    assert start["total_steps"] == 4  # not the two epochs' 12
    # Linear decay over 4 steps (warm-up 6% of 4 = no step): the 4th step trains at a quarter of the peak.
    assert [r["lr"] for r in steps] == pytest.approx([scheduled_lr(s, 4, 1e-3, 0.06) for s in range(4)])
    assert steps[-1]["lr"] == pytest.approx(0.25e-3)
    assert json.loads((finished / "summary.json").read_text())["total_steps"] == 4


@pytest.mark.slow
def test_stop_at_step_keeps_the_longer_schedule(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    r = cli("train", "--encoder", tiny_bert_dir, "--data-dir", data_dir, "--out", run, "--stop-at-step", 3, *FAST)
    start, steps = _train_records(run)
    assert start["total_steps"] == 12 and [s["step"] for s in steps] == [1, 2, 3]
    assert steps[-1]["lr"] == pytest.approx(scheduled_lr(2, 12, 1e-3, 0.06))
    # Not finished: evaluated and saved like an end, but its last/ is what the rest of the schedule resumes.
    assert "paused at step 3/12" in r.stdout and f"Go on with: bertmtl train --resume {run}" in r.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "paused"
    assert (run / "best" / "bertmtl.json").is_file()
    r = cli("runs", "--runs-dir", tmp_path, "--drop-last", "run")
    assert "is paused: its last/ is what resumes it" in r.stdout and (run / "last").is_dir()
    r = cli("train", "--resume", run)  # its stop is behind it: on to the end of the schedule
    assert "finished at step 12/12" in r.stdout


@pytest.mark.slow
def test_a_run_saved_before_stop_at_step_resumes_with_its_own_schedule(tiny_bert_dir, data_dir, tmp_path):
    """In bertmtl 0.1 --max-steps stopped a run early; such a run resumes with the schedule it had."""
    common = ["--encoder", tiny_bert_dir, "--data-dir", data_dir, "--save-every", 2, "--dropout", 0, *FAST]
    cli("train", *common, "--out", tmp_path / "new", "--stop-at-step", 4)
    cli("train", *common, "--out", tmp_path / "old", "--stop-at-step", 2)
    for f in (tmp_path / "old" / "train_args.json", tmp_path / "old" / "last" / "train_args.json"):
        saved = json.loads(f.read_text())
        saved["max_steps"] = saved.pop("stop_at_step")  # what an older bertmtl wrote
        f.write_text(json.dumps(saved))
    cli("train", "--resume", tmp_path / "old", "--stop-at-step", 4)
    resumed, _ = _train_records(tmp_path / "old")
    assert resumed["type"] == "resume" and resumed["total_steps"] == 12
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "new" / "last" / "multitask.safetensors"))
    b = load_file(str(tmp_path / "old" / "last" / "multitask.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_partial_config_file_means_todays_max_steps(tmp_path):
    from bertmtl.configuration.options import read_options_file

    (tmp_path / "mine.yaml").write_text("max_steps: 30\nlr: 2.0e-4\n")
    assert read_options_file(TrainConfig, tmp_path / "mine.yaml") == {"max_steps": 30, "lr": 2e-4}


# -- progress: every step, and during evaluation ---------------------------------------------

class _Recorder(SilentReporter):
    def __init__(self):
        self.advanced, self.evals = [], []

    def advance(self, step):
        self.advanced.append(step)

    def evaluating(self, examples):
        import contextlib

        done = []
        self.evals.append((examples, done))
        return contextlib.nullcontext(lambda n=1: done.append(n))


@pytest.mark.slow
def test_progress_moves_every_step_and_through_each_evaluation(tiny_bert_dir, data_dir, tmp_path):
    rec = _Recorder()
    cfg = TrainConfig(data_dir=str(data_dir), encoder=str(tiny_bert_dir), out=str(tmp_path / "run"), max_steps=4,
                      eval_every=2, log_every=4, batch_size=16, precision="fp32")
    train(cfg, reporter=rec)
    assert rec.advanced == [1, 2, 3, 4]  # although a log line comes every 4 steps
    assert len(rec.evals) == 2  # at step 2 and the final one
    for examples, done in rec.evals:
        assert examples == 3 * 32 and sum(done) == examples and len(done) == 3  # one batch per task


def test_dev_limit_scores_the_same_subset_in_every_run(tiny_bert_dir, data_dir, tmp_path):
    from bertmtl.tasks.files import dev_subset

    for seed in (0, 1):
        cfg = TrainConfig(data_dir=str(data_dir), encoder=str(tiny_bert_dir), out=str(tmp_path / f"r{seed}"),
                          max_steps=1, dev_limit=10, batch_size=16, seed=seed, precision="fp32")
        metrics = train(cfg, reporter=SilentReporter())["last_metrics"]
        assert metrics["sst_n"] == metrics["para_n"] == metrics["sts_n"] == 10
    # evaluate --dev-limit scores that subset again: the numbers training saw for its best/
    got = json.loads(cli("evaluate", "--checkpoint", tmp_path / "r1", "--data-dir", data_dir, "--dev-limit", "10",
                         "--json").stdout)
    for k in ("sst_n", "para_n", "sts_n", "sst_acc", "para_acc", "sts_corr", "overall"):
        assert got[k] == pytest.approx(metrics[k], abs=1e-6), k
    cli("evaluate", "--checkpoint", tmp_path / "r1", "--data-dir", data_dir, "--dev-limit", "0", code=2)
    items = list(range(32))
    assert dev_subset(items, 10, "sst") == dev_subset(items, 10, "sst") != dev_subset(items, 10, "sts")
    assert set(dev_subset(items, 5, "sst")) <= set(dev_subset(items, 10, "sst"))  # nested
    assert dev_subset(items, 40, "sst") == items


def test_the_rich_bar_moves_every_step_and_shows_the_evaluation(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    import contextlib
    import io

    from rich.console import Console

    rep = RichReporter()
    rep.console = Console(file=io.StringIO(), force_terminal=True, width=120, color_system=None)
    seen = []
    real_advance, real_evaluating = rep.advance, rep.evaluating

    def advance(step):
        real_advance(step)
        seen.append(rep.progress.tasks[0].completed)

    @contextlib.contextmanager
    def evaluating(n):
        with real_evaluating(n) as adv:
            yield adv
            bar = rep.progress.tasks[-1]
            seen.append((bar.description, bar.total, bar.completed))

    monkeypatch.setattr(rep, "advance", advance)
    monkeypatch.setattr(rep, "evaluating", evaluating)
    cfg = TrainConfig(data_dir=str(data_dir), encoder=str(tiny_bert_dir), out=str(tmp_path / "run"), max_steps=3,
                      log_every=3, batch_size=16, precision="fp32")
    train(cfg, reporter=rep)
    assert seen == [1, 2, 3, ("dev eval", 96, 96)]  # the train bar at every step, then the evaluation's own
    assert [t.description for t in rep.progress.tasks] == ["train"]  # which goes when it is done
    assert "eval @ step 3: SST acc" in rep.console.file.getvalue()


# -- clean-up: bertmtl runs --drop-last / --delete -------------------------------------------

def test_runs_clean_up_with_a_dry_run_and_the_space_freed(finished, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    done = root / "done"
    shutil.copytree(finished, done)
    stopped = _stopped_copy(done, "stopped")  # not finished: its last/ is what resumes it
    last_bytes = sum(f.stat().st_size for f in (done / "last").rglob("*") if f.is_file())

    r = cli("runs", "--runs-dir", root, "--drop-last", "--dry-run")
    assert f"would delete {done / 'last'}" in r.stdout and "would free" in r.stdout
    assert (done / "last").is_dir()
    r = cli("runs", "--runs-dir", root, "--drop-last", "--json")
    out = json.loads(r.stdout)
    assert out["bytes"] == last_bytes and [x["path"] for x in out["removed"]] == [str(done / "last")]
    assert not (done / "last").exists() and (done / "best" / "bertmtl.json").is_file()
    assert (stopped / "last").is_dir()
    r = cli("runs", "--runs-dir", root, "--drop-last", "stopped")
    assert "kept" in r.stdout and "what resumes it" in r.stdout and (stopped / "last").is_dir()

    r = cli("runs", "--runs-dir", root, "--delete", "stopped", "--dry-run")
    assert "would delete" in r.stdout and stopped.is_dir()
    cli("runs", "--runs-dir", root, "--delete", "stopped")
    assert not stopped.exists() and done.is_dir()
    cli("runs", "--runs-dir", root, "--delete", code=2)  # which runs? never all of them by default


def test_a_running_run_is_never_deleted(finished, tmp_path):
    from bertmtl.runs.rundir import WriterLock

    run = tmp_path / "live"
    shutil.copytree(finished, run)
    lock = WriterLock(run)
    try:
        r = cli("runs", "--runs-dir", tmp_path, "--delete", "live", code=2)
        assert "is running" in r.output and run.is_dir()
    finally:
        lock.release()


# -- files and messages ----------------------------------------------------------------------

def test_every_exported_and_checkpoint_file_has_the_same_mode(finished, tmp_path):
    cli("export", finished, "--format", "sentence-transformers", "--out", tmp_path / "st")
    umask = os.umask(0o022)
    os.umask(umask)
    for root in (tmp_path / "st", finished / "best", finished / "last"):
        modes = {p.relative_to(root): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}
        assert set(modes.values()) == {0o666 & ~umask}, modes


def test_install_hints_work_from_a_clone_and_in_zsh(monkeypatch):
    import sys

    from bertmtl.inference.export import require_onnx
    from bertmtl.sinks.tensorboard import require_tensorboard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(UserError, match=r'pip install -e "\.\[tensorboard\]"'):
        require_tensorboard()
    with pytest.raises(UserError, match=r'pip install -e "\.\[onnx\]"'):
        require_onnx()


def test_other_systems_are_refused_at_the_start_with_what_to_do(monkeypatch):
    with pytest.raises(UserError, match="Linux and macOS.*WSL"):
        check_system("win32")
    check_system("linux")
    check_system("darwin")
    monkeypatch.setattr("sys.platform", "win32")
    r = CliRunner().invoke(main, ["runs"])
    assert r.exit_code == 2 and "WSL" in r.output


def test_model_card_notes_the_built_in_encoders_quora_training_and_the_leaderboard_score(finished, tmp_path):
    from bertmtl.runs.checkpoint import load_checkpoint
    from bertmtl.inference.evaluate import leaderboard_overall
    from bertmtl.inference.export import model_card

    assert leaderboard_overall({"sst_acc": 0.5, "para_acc": 0.8, "sts_corr": 0.6}) == pytest.approx((0.5 + 0.8 + 0.8) / 3)
    assert leaderboard_overall({"sst_acc": 0.5, "para_acc": 0.8}) is None
    ck = load_checkpoint(finished / "best")
    card = model_card(ck, "hf", "bertmtl export")
    assert "CS224N leaderboard" in card and "100k Quora" not in card  # a directory encoder: nothing known of it
    ck.train_args["encoder"] = "minilm"
    card = model_card(ck, "hf", "bertmtl export")
    assert "100k Quora duplicate-question pairs" in card and "bert-base-uncased" in card


# -- --precision auto: both branches on any CPU ----------------------------------------------

@pytest.fixture(params=[False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
def native_bf16(request, monkeypatch) -> bool:
    """Forces the CPU check of --precision auto, for this process and its children."""
    from bertmtl.model.device import NATIVE_BF16_ENV

    monkeypatch.setenv(NATIVE_BF16_ENV, "1" if request.param else "0")
    return request.param


def test_auto_precision_follows_the_forced_detection(native_bf16):
    from bertmtl.model.device import autocast_dtype, cpu_has_native_bf16

    cpu = torch.device("cpu")
    assert cpu_has_native_bf16() is native_bf16
    expected = torch.bfloat16 if native_bf16 else None
    assert autocast_dtype("auto", cpu, training=True) is expected
    assert autocast_dtype("auto", cpu, training=False) is expected
    assert autocast_dtype("fp32", cpu, training=False) is None  # an explicit choice is never overridden


def test_auto_training_and_prediction_on_each_kind_of_cpu(native_bf16, tiny_bert_dir, data_dir, tmp_path):
    from bertmtl.inference.predict import Predictor

    run = tmp_path / "run"
    cli("train", "--encoder", tiny_bert_dir, "--data-dir", data_dir, "--out", run, "--max-steps", 2,
         "--batch-size", "16", "--seed", "0")
    start, _ = _train_records(run)
    assert start["precision"] == ("bf16" if native_bf16 else "fp32")
    exact = Predictor(run, precision="fp32").pair("a good film", "a great movie")
    auto = json.loads(cli("predict", "a good film", "a great movie", "--checkpoint", run, "--json").stdout)
    if native_bf16:  # bf16 keeps 8 bits of mantissa: probabilities within a few 1e-3
        assert auto["paraphrase_prob"] == pytest.approx(exact["paraphrase_prob"], abs=2e-2)
        assert auto["sentiment1"]["probabilities"] == pytest.approx(exact["sentiment1"]["probabilities"], abs=2e-2)
    else:
        assert {k: v for k, v in auto.items() if k != "checkpoint"} == exact
