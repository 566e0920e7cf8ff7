"""`bertmtl sweep` stopped by real signals, as schedulers and people stop it: one SIGTERM stops the
whole sweep (the running seed saves last/ and is queued again, never recorded as done), the same
command then completes it with the report an undisturbed sweep writes; a second signal stops at
once without a traceback; kill -9 of the parent leaves no worker training. And the checks a sweep
makes before it trains (its size, its metric, its storage, --dry-run)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from .conftest import cli, spawn

optuna = pytest.importorskip("optuna")


def _spec(tmp_path: Path, tiny_bert_dir, data_dir, name="stop", steps=40, **extra) -> Path:
    base = {"encoder": str(tiny_bert_dir), "data_dir": str(data_dir), "max_steps": steps, "eval_every": 20,
            "dev_limit": 16, "batch_size": 8, "precision": "fp32", "smart": False, "device": "cpu", "log_every": 1}
    spec = {"name": name, "base": base, "seeds": 2, "grid": {"combine": ["sum", "pcgrad"]},
            "baseline": {"combine": "sum"}, **extra}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _trained_steps(out: Path) -> dict[str, int]:
    """Each run's last logged step, for runs that logged one."""
    steps = {}
    for run in (out / "runs").glob("*/"):
        try:
            train = [r["step"] for r in _records(run) if r["type"] == "train"]
        except (OSError, ValueError):
            continue
        if train:
            steps[run.name] = train[-1]
    return steps


def _wait(condition, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {proc.stderr.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting to be reaped has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as fh:
        return [int(p) for p in fh.read().split()]


def _comparable(report: dict) -> dict:
    """A report without what differs between two sweep directories: its date, the runs' paths and
    their training time."""
    rows = [{k: v for k, v in r.items() if k not in ("runs", "training_s")} for r in report["configurations"]]
    return {**{k: v for k, v in report.items() if k not in ("date", "configurations")}, "configurations": rows}


@pytest.mark.slow
def test_one_sigterm_stops_the_sweep_and_the_same_command_completes_it(tiny_bert_dir, small_data_dir, tmp_path):
    spec = _spec(tmp_path, tiny_bert_dir, small_data_dir)
    out = tmp_path / "stopped"
    proc = spawn("sweep", spec, "--out", out, "--bootstrap", 100)

    def second_run_going() -> bool:  # the first seed finished, the second at its fifth step
        ended = {r.name for r in (out / "runs").glob("*/") if (r / "summary.json").is_file()}
        return len(ended) == 1 and any(s >= 5 for n, s in _trained_steps(out).items() if n not in ended)

    _wait(second_run_going, 120, "the second run's fifth step", proc)
    at_signal = _trained_steps(out)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 130, stderr[-3000:]
    # It stopped at the end of the step it was in (the time that takes: benchmarks/sweep_stop.py);
    # a step is logged when it ends, so the signal came during at most the next one.
    after = _trained_steps(out)
    assert at_signal and all(after[name] <= step + 1 for name, step in at_signal.items()), (at_signal, after)
    assert "Traceback" not in stderr
    assert "sweep stopped (SIGTERM): 1 run saved at the end of its step (last/). Run the same command again" in stderr
    assert f"bertmtl sweep {spec} --out {out}" in stderr
    assert "bertmtl train --resume" not in stderr  # the run's own advice is wrong in a sweep
    # Nothing more started after the signal, and the stopped seed is not recorded as done.
    study = optuna.load_study(study_name="stop", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials if t.state.name != "WAITING"] == ["FAIL"]
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    stopped = [r for r in runs if _records(r)[-1].get("status") == "stopped"]
    assert len(stopped) == 1 and (stopped[0] / "last" / "bertmtl.json").is_file()
    # A report of what finished names the configurations with seeds missing, and why.
    r = cli("sweep", "--report", out, "--bootstrap", 100)
    assert "incomplete: combine=sum: 1 of 2 seeds finished (seed 43: stopped at step" in r.output
    assert "incomplete: combine=pcgrad: 0 of 2 seeds finished (seed 42: not trained; seed 43: not trained)" in r.output
    md = (out / "report.md").read_text()
    assert "| combine=sum (baseline) | 1 of 2 |" in md and "Incomplete" in md

    again = spawn("sweep", spec, "--out", out, "--bootstrap", 100)
    assert again.wait(300) == 0, again.stderr.read().decode()[-3000:]
    assert "1 to resume" in again.stdout.read().decode()
    for run in (out / "runs").iterdir():  # every configuration x seed trained exactly once
        types = [x["type"] for x in _records(run)]
        assert types.count("start") == 1 and types[-1] == "end", run
        assert types.count("resume") == (1 if run == stopped[0] else 0), run
        assert json.loads((run / "summary.json").read_text())["step"] == 40
    assert len(list((out / "runs").iterdir())) == 4
    assert sorted(t.state.name for t in optuna.load_study(
        study_name="stop", storage=f"sqlite:///{out / 'study.db'}").trials) == ["COMPLETE", "COMPLETE", "FAIL"]
    # The report equals an undisturbed sweep's (exact resume: the same numbers to the last bit).
    undisturbed = spawn("sweep", spec, "--out", tmp_path / "undisturbed", "--bootstrap", 100)  # one thread, as ours
    assert undisturbed.wait(300) == 0, undisturbed.stderr.read().decode()[-3000:]
    ours = json.loads((out / "report.json").read_text())
    assert not ours["incomplete"]
    assert _comparable(ours) == _comparable(json.loads((tmp_path / "undisturbed" / "report.json").read_text()))


@pytest.mark.slow
def test_a_second_signal_stops_at_once_without_a_traceback(small_data_dir, tmp_path):
    from .conftest import write_tiny_bert

    # Steps of a few tenths of a second: the second signal comes while the first one's step runs.
    encoder = write_tiny_bert(tmp_path / "bert", hidden_size=256, intermediate_size=1024, num_hidden_layers=4)
    spec = _spec(tmp_path, encoder, small_data_dir, name="twice", steps=2000)
    out = tmp_path / "out"
    proc = spawn("sweep", spec, "--out", out)
    _wait(lambda: any(s >= 2 for s in _trained_steps(out).values()), 120, "training", proc)
    proc.send_signal(signal.SIGINT)
    lines = []
    while not (line := proc.stderr.readline().decode()).startswith("Ctrl-C: stopping the sweep"):
        assert line, "".join(lines)[-3000:]
        lines.append(line)
    # Frozen meanwhile, the second comes while the first one's step still runs.
    proc.send_signal(signal.SIGSTOP)
    time.sleep(1.2)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    proc.wait(60)
    stderr = "".join(lines) + proc.stderr.read().decode()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "sweep stopped (Ctrl-C): 1 stopped at once, to go on from its last checkpoint" in stderr, stderr[-3000:]
    (run,) = (out / "runs").iterdir()
    assert _records(run)[-1]["status"] == "interrupted"
    info = json.loads(cli("runs", "--runs-dir", out / "runs", "--json").stdout)
    assert [i["status"] for i in info] == ["interrupted"]
    study = optuna.load_study(study_name="twice", storage=f"sqlite:///{out / 'study.db'}")
    states = [(t.state.name, t.params or t.system_attrs.get("fixed_params")) for t in study.trials]
    assert ("FAIL", {"combine": "sum"}) in states and ("WAITING", {"combine": "sum"}) in states


@pytest.mark.slow
def test_kill_9_of_the_parent_stops_its_workers(tiny_bert_dir, small_data_dir, tmp_path):
    spec = _spec(tmp_path, tiny_bert_dir, small_data_dir, name="orphans", steps=120)
    out = tmp_path / "out"
    proc = spawn("sweep", spec, "--out", out, "--workers", 2, "--bootstrap", 100)
    _wait(lambda: len([s for s in _trained_steps(out).values() if s >= 2]) == 2, 180, "both workers training", proc)
    workers = _children(proc.pid)
    assert len(workers) == 2
    proc.kill()
    proc.wait(10)
    _wait(lambda: not any(_alive(w) for w in workers), 60, "the workers to stop")
    runs = [r for r in (out / "runs").iterdir() if (r / "metrics.jsonl").is_file()]
    stopped = [r for r in runs if _records(r)[-1].get("status") == "stopped"]
    assert stopped and all((r / "last" / "bertmtl.json").is_file() for r in stopped)
    assert all(_records(r)[-1]["type"] == "end" for r in runs)  # none left mid-run
    again = spawn("sweep", spec, "--out", out, "--workers", 2, "--bootstrap", 100)
    assert again.wait(300) == 0, again.stderr.read().decode()[-3000:]
    runs = list((out / "runs").iterdir())
    assert len(runs) == 4
    for run in runs:
        types = [x["type"] for x in _records(run)]
        assert types.count("start") == 1 and types.count("resume") <= 1 and types[-1] == "end", run
        assert json.loads((run / "summary.json").read_text())["step"] == 120
    assert len(json.loads((out / "report.json").read_text())["configurations"]) == 2


@pytest.mark.slow
def test_a_signal_to_every_process_of_the_job_saves_every_run(tiny_bert_dir, small_data_dir, tmp_path):
    """A scheduler (SLURM's scancel, a time limit, systemd) signals every process of the job at once:
    each worker gets SIGTERM from it and the stop from the parent, and still ends its step and saves."""
    spec = _spec(tmp_path, tiny_bert_dir, small_data_dir, name="job", steps=2000)
    out = tmp_path / "out"
    proc = spawn("sweep", spec, "--out", out, "--workers", 2)
    _wait(lambda: len([s for s in _trained_steps(out).values() if s >= 2]) == 2, 180, "both workers training", proc)
    workers = _children(proc.pid)
    for pid in (proc.pid, *workers):
        os.kill(pid, signal.SIGTERM)
    proc.wait(60)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 130, stderr[-3000:]
    assert "sweep stopped (SIGTERM): 2 runs saved at the end of their step (last/)" in stderr, stderr[-3000:]
    _wait(lambda: not any(_alive(w) for w in workers), 60, "the workers to end")
    runs = list((out / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        assert _records(run)[-1]["status"] == "stopped" and (run / "last" / "bertmtl.json").is_file(), run


# -- before training ------------------------------------------------------------------------------

def _write(tmp_path: Path, spec: dict) -> Path:
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(spec))
    return p


@pytest.mark.parametrize("change,message", [
    ({"seeds": 100_000_000_000}, "seeds: 100,000,000,000; at most 1,000 per configuration"),
    ({"grid": {"lr": [1e-5 * (i + 1) for i in range(100)], "dropout": [i / 1000 for i in range(100)],
               "warmup": [i / 1000 for i in range(100)]}},
     "the grid has 1,000,000 configurations (100 lr x 100 dropout x 100 warmup); a sweep trains at most 10,000"),
    ({"metric": "nonsense"}, "metric 'nonsense' is not a dev metric of these runs; choose from sst_acc"),
    ({"base": {"max_steps": 3, "stop_at_step": 2}}, "stop_at_step is set by the sweep itself"),
])
def test_a_spec_too_large_or_wrong_is_refused_before_anything_trains(tmp_path, change, message):
    spec = _write(tmp_path, {"base": {"max_steps": 3}, "grid": {"combine": ["sum", "pcgrad"]}, **change})
    r = cli("sweep", spec, "--out", tmp_path / "out", code=2)
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_a_metric_of_declared_tasks_is_accepted_and_checked(tmp_path, small_data_dir):
    spec = _write(tmp_path, {"base": {"max_steps": 3, "data_dir": str(small_data_dir)}, "metric": "sts_spearman",
                             "grid": {"combine": ["sum"]}})
    r = cli("sweep", spec, "--out", tmp_path / "out", "--dry-run")
    assert "1 configuration x 1 seed = 1 run, 3 steps each" in r.output
    spec = _write(tmp_path, {"base": {"max_steps": 3, "tasks": "sst", "data_dir": str(small_data_dir)},
                             "metric": "sst_f1", "grid": {"combine": ["sum"]}})
    cli("sweep", spec, "--out", tmp_path / "out", "--dry-run")


def test_missing_data_and_odd_specs_are_found_before_anything_trains(tmp_path, small_data_dir):
    spec = _write(tmp_path, {"base": {"max_steps": 3}, "grid": {"data_dir": [str(small_data_dir), str(tmp_path / "no")]}})
    r = cli("sweep", spec, "--out", tmp_path / "out", code=2)
    assert f"the configuration {{'data_dir': '{tmp_path / 'no'}'}}: data directory" in r.output
    assert not (tmp_path / "out").exists()
    base = {"max_steps": 3, "data_dir": str(small_data_dir)}
    for change, message in [
        ({"grid": {"combine": ["sum", "sum"]}}, "grid: combine lists 'sum' twice"),
        ({"grid": {"combine": ["sum", "mean"]}, "base": {**base, "cagrad_c": 0.5}},
         "base: cagrad_c applies to combine cagrad only, which no configuration of this sweep chooses"),
        ({"grid": {"combine": ["sum"]}, "base": {**base, "seed": 2**63 - 1}, "seeds": 2}, "pass the largest seed"),
        ({"grid": {"combine": ["sum"]}, "name": "a\nb"}, "name must be printable text"),
    ]:
        r = cli("sweep", _write(tmp_path, {"base": base, **change}), "--out", tmp_path / "out", "--dry-run", code=2)
        assert message in r.output, r.output
    # A base option of a method some configurations choose is theirs; the others reset it.
    spec = _write(tmp_path, {"base": {**base, "cagrad_c": 0.5}, "grid": {"combine": ["sum", "cagrad"]}})
    cli("sweep", spec, "--out", tmp_path / "out", "--dry-run")
    # A search's sampler takes a 32-bit seed; runs take 63-bit ones.
    spec = _write(tmp_path, {"base": {**base, "seed": 2**40}, "search": {"lr": {"log_uniform": [1e-5, 1e-3]}},
                             "trials": 1})
    from bertmtl.sweep.spec import read_spec
    from bertmtl.sweep.study import open_study

    assert open_study(read_spec(spec), f"sqlite:///{tmp_path / 's.db'}", 10).sampler is not None


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"])
def test_an_in_memory_storage_is_refused(tmp_path, url):
    spec = _write(tmp_path, {"base": {"max_steps": 3}, "grid": {"combine": ["sum"]}})
    r = cli("sweep", spec, "--out", tmp_path / "out", "--storage", url, code=2)
    assert "in memory is gone when the command ends" in r.output
    assert not (tmp_path / "out").exists()


def test_dry_run_lists_the_runs_and_trains_nothing(tmp_path, small_data_dir):
    spec = _write(tmp_path, {"name": "d", "base": {"data_dir": str(small_data_dir), "epochs": 2, "batch_size": 8},
                             "seeds": 2, "grid": {"combine": ["sum", "pcgrad"], "lr": [1e-4, 2e-4]}})
    r = cli("sweep", spec, "--out", tmp_path / "out", "--dry-run")
    lines = r.stdout.splitlines()
    # Quora's file has 33 rows (one of them broken, which training skips: rows are counted, not read),
    # in batches of 8: 5 steps an epoch, 2 epochs.
    assert lines[0] == "sweep d: 4 configurations x 2 seeds = 8 runs, about 10 steps each"
    assert len(lines) == 9 and all("(not started)" in line for line in lines[1:])
    assert "combine=pcgrad, lr=0.0002  seed 43" in lines[-1]
    assert not (tmp_path / "out").exists()


def test_the_plan_counts_rows_and_reads_max_steps(tmp_path, small_data_dir):
    from bertmtl.sweep.plan import count_rows, steps_per_run
    from bertmtl.configuration.train_config import TrainConfig

    assert count_rows(small_data_dir / "ids-sst-train.csv") == 32
    assert steps_per_run(TrainConfig(max_steps=300)) == (300, True)
    cfg = TrainConfig(data_dir=str(small_data_dir), batch_size=5, epochs=1.5)
    cfg.validate()
    assert steps_per_run(cfg) == (round(1.5 * 7), False)  # ceil(32 / 5) = 7 steps an epoch
    assert steps_per_run(TrainConfig(data_dir=str(tmp_path / "nowhere"))) == (None, False)


def test_intervals_stay_within_what_a_metric_can_take():
    from bertmtl.sweep.stats import mean_ci
    from bertmtl.tasks import BUILTIN, metric_range

    assert metric_range(BUILTIN, "sst_acc") == (0.0, 1.0) and metric_range(BUILTIN, "sts_corr") == (-1.0, 1.0)
    assert metric_range(BUILTIN, "overall") == (pytest.approx(-1 / 3), 1.0)  # the mean of acc, acc and r
    # Two seeds' accuracies far apart: the t interval (12.7 standard errors) would be [-2.8, 3.9].
    s = mean_ci([0.2, 0.95], metric_range(BUILTIN, "sst_acc"))
    assert (s["lo"], s["hi"]) == (0.0, 1.0) and s["mean"] == pytest.approx(0.575)
    s = mean_ci([0.5, 0.52], (0.0, 1.0))  # close seeds: nothing to cut
    assert 0 < s["lo"] < 0.5 and 0.52 < s["hi"] < 1


def test_what_each_signal_does_to_a_stop_request():
    """A person's second Ctrl-C stops at once; the other signal from a second sender right after
    (torchrun's agent passing its SIGTERM on) is the same stop; a sweep worker takes its parent's
    signals for what they say, whatever a scheduler also sent it."""
    from bertmtl.training.stopping import WORKER_NOW, WORKER_STOP, StopRequest

    said = []
    stop = StopRequest(said.append)
    stop.handle(signal.SIGINT, None)
    assert stop.requested and stop.reason == "Ctrl-C" and len(said) == 1
    assert said[0] == ("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again stops at once, "
                       "without saving)")
    stop.handle(signal.SIGTERM, None)  # the agent's, within a second: ignored
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGINT, None)  # pressed again: now

    worker = StopRequest(said.append)
    worker.handle(signal.SIGTERM, None)  # the scheduler's
    worker.handle(WORKER_STOP, None)  # the parent's: still the same stop
    assert worker.reason == "SIGTERM" and len(said) == 2
    with pytest.raises(KeyboardInterrupt):
        worker.handle(WORKER_NOW, None)

    setup = StopRequest()
    with pytest.raises(KeyboardInterrupt):
        with setup.immediate():  # while a run is set up, nothing to save: at once
            setup.handle(signal.SIGTERM, None)
