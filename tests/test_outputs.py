"""One writer per output, and outputs that never overlap inputs: real processes, real directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bertmtl.cli import main
from bertmtl.sinks.metrics_log import read_records

from .conftest import spawn


def _train_args(tiny, data, *extra):
    return ["train", "--encoder", str(tiny), "--data-dir", str(data), "--batch-size", "16", "--lr", "1e-3",
            "--steps-per-epoch", "3", "--epochs", "2", "--eval-every", "3", "--log-every", "1", *extra]


def _assert_one_consistent_run(run: Path, seed: int) -> None:
    """A finished run whose files all come from one process: the same options everywhere, one start record."""
    records = read_records(run / "metrics.jsonl")[0]
    starts = [r for r in records if r["type"] == "start"]
    assert len(starts) == 1 and starts[0]["config"]["seed"] == seed
    assert [r["type"] for r in records].count("end") == 1
    assert [r["step"] for r in records if r["type"] == "train"] == list(range(1, 7))
    for f in (run / "train_args.json", run / "last" / "train_args.json", run / "best" / "train_args.json"):
        assert json.loads(f.read_text()) == starts[0]["config"], f
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == 6


@pytest.mark.slow
def test_runs_started_in_the_same_second_never_share_a_directory(tiny_bert_dir, data_dir, tmp_path):
    shared, root = tmp_path / "shared", tmp_path / "runs"
    # Three on one --out and three with no --out, all started at once (a seed sweep gone wrong).
    on_shared = {seed: spawn(*_train_args(tiny_bert_dir, data_dir, "--out", str(shared), "--seed", str(seed)))
                 for seed in (1, 2, 3)}
    own = {seed: spawn(*_train_args(tiny_bert_dir, data_dir, "--runs-dir", str(root), "--seed", str(seed)))
           for seed in (11, 12, 13)}
    results = {seed: (p.wait(600), p.stderr.read().decode()) for seed, p in {**on_shared, **own}.items()}

    winners = [seed for seed in on_shared if results[seed][0] == 0]
    assert len(winners) == 1, results  # exactly one trains the shared directory
    for seed in on_shared:
        rc, err = results[seed]
        if seed != winners[0]:
            assert rc == 2 and "Traceback" not in err, err
            assert "is being written by process" in err or "already holds a run" in err, err
    _assert_one_consistent_run(shared, winners[0])

    for seed in own:
        assert results[seed][0] == 0, results[seed][1][-2000:]
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(dirs) == 3  # each its own directory, however close the start
    seeds = {json.loads((d / "train_args.json").read_text())["seed"]: d for d in dirs}
    assert set(seeds) == set(own)
    for seed, d in seeds.items():
        _assert_one_consistent_run(d, seed)


@pytest.mark.slow
def test_resume_of_a_run_still_training_is_refused_until_its_writer_dies(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    first = spawn(*_train_args(tiny_bert_dir, data_dir, "--out", str(run), "--epochs", "2000", "--save-every", "1"))
    t0 = time.time()
    while not (run / "last" / "trainer_state.json").exists():
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.time() - t0 < 120
        time.sleep(0.05)
    second = spawn("train", "--resume", str(run), "--stop-at-step", "1000000")
    assert second.wait(120) == 2
    err = second.stderr.read().decode()
    assert f"is being written by process {first.pid} on" in err and "Traceback" not in err, err
    r = CliRunner().invoke(main, ["runs", "--runs-dir", str(tmp_path), "--json"])
    assert json.loads(r.output)[0]["status"] == "running"

    first.send_signal(signal.SIGKILL)  # the kernel drops the lock with the process: no stale lock
    first.wait()
    steps = json.loads((run / "last" / "bertmtl.json").read_text())["step"]
    third = spawn("train", "--resume", str(run), "--stop-at-step", str(steps + 2))
    assert third.wait(300) == 0, third.stderr.read().decode()[-2000:]
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == steps + 2


# -- outputs that overlap inputs ---------------------------------------------------------------

def test_augment_refuses_to_write_over_its_own_data(data_dir, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    r = CliRunner().invoke(main, ["augment", "--data-dir", str(data), "--out", str(data), "--overwrite",
                                  "--methods", "swap"])
    assert r.exit_code == 2, r.output
    assert "contains the sst train file" in r.output and "Traceback" not in r.output
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # nothing deleted


def test_pretrain_refuses_the_current_directory_before_any_work(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    r = CliRunner().invoke(main, ["pretrain", "--data-dir", str(data_dir), "--encoder", str(tiny_bert_dir),
                                  "--out", ".", "--max-steps", "1"])
    assert r.exit_code == 2 and "is the current directory or holds it" in r.output, r.output
    assert (tmp_path / "keep.txt").read_text() == "mine"
    r = CliRunner().invoke(main, ["pretrain", "--data-dir", str(data_dir), "--encoder", str(tiny_bert_dir),
                                  "--out", str(data_dir), "--max-steps", "1"])
    assert r.exit_code == 2 and "contains the sst train file" in r.output, r.output


def test_train_refuses_an_out_that_holds_or_sits_in_its_inputs(tiny_bert_dir, data_dir, tmp_path):
    for option, out, how in (("--out", data_dir, "contains the sst train file"),
                             ("--out", tiny_bert_dir / "run", "is inside --encoder"),
                             ("--runs-dir", tiny_bert_dir, "is inside --encoder")):
        r = CliRunner().invoke(main, _train_args(tiny_bert_dir, data_dir, option, str(out)))
        assert r.exit_code == 2 and how in r.output, (out, r.output)
    assert not (tiny_bert_dir / "run").exists() and not (data_dir / "metrics.jsonl").exists()


def test_export_refuses_to_replace_its_checkpoint(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(tiny_bert_dir, data_dir, "--out", str(run), "--max-steps", "1"))
    assert r.exit_code == 0, r.output
    for out, how in ((run / "best", "is the checkpoint"), (run, "contains the checkpoint")):
        r = CliRunner().invoke(main, ["export", str(run / "best"), "--format", "hf", "--out", str(out), "--overwrite"])
        assert r.exit_code == 2 and how in r.output, r.output
    r = CliRunner().invoke(main, ["predict", "--checkpoint", str(run / "best"), "a good film"])
    assert r.exit_code == 0, r.output  # still there, whole


def test_a_second_writer_of_an_output_is_refused_with_the_holder(tmp_path):
    """Two processes on one pretrain/augment/export --out: the lock names the first."""
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bertmtl.runs.ownership import owned_output\n"
        f"with owned_output({str(out)!r}, False, {{}}):\n"
        "    print('held', flush=True); time.sleep(60)")], stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == b"held"
        from bertmtl.errors import UserError
        from bertmtl.runs.ownership import owned_output

        with pytest.raises(UserError, match=rf"--out {out} is being written by process {holder.pid} on"):
            with owned_output(out, False, {}):
                pass
    finally:
        holder.kill()
        holder.wait()
    with owned_output(out, False, {}):  # the lock went with the process
        pass


def test_nothing_writes_inside_a_run_or_over_one(tiny_bert_dir, data_dir, tmp_path):
    """A run swaps its best/ and last/ whole: an output inside it would vanish at the next save."""
    run = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(tiny_bert_dir, data_dir, "--out", str(run), "--max-steps", "1"))
    assert r.exit_code == 0, r.output
    for args in (_train_args(tiny_bert_dir, data_dir, "--out", str(run / "last")),
                 _train_args(tiny_bert_dir, data_dir, "--out", str(run / "sub")),
                 ["export", str(run), "--format", "hf", "--out", str(run / "last"), "--overwrite"],
                 ["export", str(run), "--format", "hf", "--out", str(run / "hf")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and f"is inside {run.resolve()}, a bertmtl run or checkpoint" in r.output, r.output
    # and no --overwrite replaces a directory holding runs (a runs root)
    import shutil

    shutil.copytree(run, tmp_path / "root" / "other")
    r = CliRunner().invoke(main, ["export", str(run), "--format", "hf", "--out", str(tmp_path / "root"), "--overwrite"])
    assert r.exit_code == 2 and f"holds the bertmtl run or checkpoint {tmp_path / 'root' / 'other'}" in r.output, r.output
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    r = CliRunner().invoke(main, _train_args(tiny_bert_dir, data_dir, "--out", str(tmp_path / "notes")))
    assert r.exit_code == 2 and "already holds files (not a run)" in r.output, r.output
    assert json.loads((run / "last" / "bertmtl.json").read_text())["step"] == 1  # untouched


def test_one_lock_whatever_path_names_the_output(tmp_path, monkeypatch):
    from bertmtl.errors import UserError
    from bertmtl.runs.ownership import owned_output

    real = tmp_path / "out"
    (tmp_path / "link").symlink_to(real)
    monkeypatch.chdir(tmp_path)
    with owned_output("out", False, {}):
        for other in (tmp_path / "link", "./link", tmp_path / "x" / ".." / "out"):
            with pytest.raises(UserError, match="is being written by process"):
                with owned_output(other, False, {}):
                    pass


@pytest.mark.slow
def test_a_full_stdout_or_a_closed_stdin_is_one_error_line(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(tiny_bert_dir, data_dir, "--out", str(run), "--max-steps", "1"))
    assert r.exit_code == 0, r.output
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    bertmtl = [sys.executable, "-m", "bertmtl"]
    with open("/dev/full", "wb") as full:
        for args, stdin in ((["predict", "--checkpoint", str(run), "-"], b"a good film\n"),
                            (["predict", "--checkpoint", str(run), "a good film"], b""),
                            (["runs", "--runs-dir", str(tmp_path)], b"")):
            p = subprocess.run(bertmtl + args, input=stdin, stdout=full, stderr=subprocess.PIPE, env=env, timeout=120)
            err = p.stderr.decode()
            assert p.returncode == 2 and "No space left on device" in err and "Traceback" not in err, (args, err)
    p = subprocess.run(bertmtl + ["predict", "--checkpoint", str(run), "-"], stdin=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env, timeout=120, pass_fds=(), close_fds=True,
                       preexec_fn=lambda: os.close(0))
    err = p.stderr.decode()
    assert p.returncode == 2 and "standard input is closed" in err and "Traceback" not in err, err


def test_evaluate_checks_its_prediction_directory_first(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(tiny_bert_dir, data_dir, "--out", str(run), "--max-steps", "1"))
    assert r.exit_code == 0, r.output
    for where, message in ((data_dir / "ids-sst-dev.csv" / "x", "is inside --data-dir"),
                           (Path("/proc/self/x"), "cannot write there")):
        r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(run), "--data-dir", str(data_dir),
                                      "--write-predictions", str(where)])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tiny_bert_dir, data_dir, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(tiny_bert_dir, data_dir, "--out", str(run), "--stop-at-step", "1"))
    assert r.exit_code == 0, r.output
    victim = tmp_path / "victim"
    victim.write_text("secret")
    (run / ".writer.lock").symlink_to(victim)
    r = CliRunner().invoke(main, ["train", "--resume", str(run), "--stop-at-step", "2"])
    assert r.exit_code == 2 and "cannot open this lock file" in r.output, r.output
    assert victim.read_text() == "secret"


def test_a_run_still_starting_counts_as_a_run(tmp_path):
    """Before metrics.jsonl exists, a run directory holds only its .writer.lock: nothing may replace it."""
    from bertmtl.errors import UserError
    from bertmtl.runs.ownership import check_output, check_output_dir
    from bertmtl.runs.rundir import WriterLock

    run = tmp_path / "starting"
    run.mkdir()
    lock = WriterLock(run)
    try:
        with pytest.raises(UserError, match="holds the bertmtl run or checkpoint"):
            check_output_dir(run, True, {})
        with pytest.raises(UserError, match="is inside .*a bertmtl run or checkpoint"):
            check_output(run / "exp", {})
    finally:
        lock.release()


def test_a_symlink_loop_is_an_error_not_a_traceback(tiny_bert_dir, data_dir, tmp_path):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for args in (_train_args(tiny_bert_dir, data_dir, "--out", str(tmp_path / "loop" / "x")),
                 ["augment", "--data-dir", str(data_dir), "--out", str(tmp_path / "loop" / "x"), "--methods", "swap"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2 and "Symlink loop" in r.output and r.exception.__class__ is SystemExit, r.output


def test_weights_that_overflow_are_never_saved(tiny_bert_dir, data_dir, tmp_path):
    """A finite loss whose update makes the weights NaN: the run stops as nonfinite, no NaN checkpoint."""
    run = tmp_path / "run"
    r = CliRunner().invoke(main, _train_args(tiny_bert_dir, data_dir, "--out", str(run), "--max-steps", "3",
                                             "--loss-weights", "sst=3e38"))
    assert r.exit_code == 2 and "the weights became non-finite" in r.output, r.output
    assert "no checkpoint was saved before" in r.output
    assert not (run / "last").exists() and not (run / "best").exists()
    assert json.loads((run / "summary.json").read_text())["status"] == "nonfinite"
