"""`bertmtl sweep`: the spec's checks, the statistics against known answers, and real sweeps on an
Optuna SQLite study with a tiny model: two worker processes, a worker killed with kill -9, a
search, and the report rebuilt from the runs."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from bertmtl.sweep.stats import mean_ci, paired_bootstrap, score
from bertmtl.sweep.spec import config_key, read_spec
from bertmtl.tasks import BUILTIN

from .conftest import cli, spawn

optuna = pytest.importorskip("optuna")
SPECS = {s.name: s for s in BUILTIN}


def _write(tmp_path: Path, spec: dict, name: str = "spec.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(spec))
    return p


# -- the spec --------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,message", [
    ({"base": {}, "grid": {"lrr": [1e-4]}}, "lrr is not an option of bertmtl train"),
    ({"base": {}, "grid": {"lr": [1e-4]}, "search": {"lr": {"uniform": [0, 1]}}}, "not grid and search"),
    ({"base": {}}, "give grid (every combination), rows (named configurations) or search"),
    ({"base": {}, "rows": {"a": {"combine": "sum"}, "b": ["pcgrad"]}}, "rows: b needs a mapping of train options"),
    ({"base": {}, "rows": {"a": {"combin": "sum"}}}, "rows: a: combin is not an option of bertmtl train"),
    ({"base": {}, "rows": {"a": {"lr": -1.0}}}, "the configuration {'row': 'a'}: --lr must be > 0"),
    ({"base": {}, "rows": {"a": {}}, "baseline": {"row": "b"}}, "not one of the rows (a)"),
    ({"base": {}, "rows": {"a": {}}, "trials": 3}, "trials is for a search"),
    ({"base": {}, "grid": {"lr": [1e-4, -1.0]}}, "lr must be > 0"),
    ({"base": {}, "grid": {"combine": ["sum", "pcgrad"]}, "baseline": {"combine": "mgda"}}, "not a point of the grid"),
    ({"base": {}, "grid": {"combine": ["sum"]}, "baseline": {"lr": 1e-4}}, "lr not swept"),
    ({"base": {"out": "x"}, "grid": {"combine": ["sum"]}}, "set by the sweep itself"),
    ({"base": {}, "search": {"lr": {"log_uniform": [0, 1e-3]}}, "trials": 2}, "low > 0"),
    ({"base": {}, "search": {"lr": {"normal": [0, 1]}}, "trials": 2}, "needs one of log_uniform"),
    ({"base": {}, "search": {"lr": {"uniform": [1e-5, 1e-3]}}}, "a search needs trials"),
    ({"base": {}, "grid": {"combine": ["sum"]}, "pruning": True}, "unknown key(s) pruning"),
    ({"base": {}, "grid": {"combine": ["sum"]}, "prune": {"patience": 3}}, "prune: unknown key(s) patience"),
    ({"base": {}, "grid": {"combine": ["sum"]}, "report": {"colour": "red"}}, "report: unknown key(s) colour"),
    ({"base": {}, "grid": {"combine": ["sum"]}, "report": {"columns": ["loss"]}}, "columns is a list of conflicting"),
    ({"base": {}, "grid": {"combine": ["sum"]}, "report": {"reference": {"values": {"a": {"overall": "high"}}}}},
     "reference is {label: TEXT"),
    ({"base": {}, "grid": {"combine": ["sum"]}, "report": {"notes": "one"}}, "notes is a list of text"),
])
def test_spec_errors_name_the_problem(tmp_path, spec, message):
    from bertmtl.errors import UserError

    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_spec(_write(tmp_path, spec))


def test_the_report_section_changes_the_report_not_the_sweep(tmp_path):
    """A spec's report section is read and checked, and is not part of what the sweep trains (a
    rerun with other notes or titles continues the same sweep)."""
    base = {"name": "s", "base": {}, "rows": {"a": {"combine": "sum"}, "b": {"combine": "pcgrad"}}}
    plain = read_spec(_write(tmp_path, base, "plain.json"))
    shown = read_spec(_write(tmp_path, {**base, "report": {
        "title": "T", "titles": {"a": "Plain sum"}, "columns": ["update_cos"], "loss_weights": True, "picture": True,
        "notes": ["n"], "reference": {"label": "Paper", "values": {"a": {"overall": 0.677}}}}}, "shown.json"))
    assert plain.report is None and shown.report["titles"] == {"a": "Plain sum"}
    assert shown.report["reference"] == {"label": "Paper", "values": {"a": {"overall": 0.677}}}
    assert shown.training_dict() == plain.training_dict() and shown.to_dict() != plain.to_dict()


def test_spec_reads_yaml_and_enumerates_the_grid(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("base: {max-steps: 3, seed: 7}\ngrid: {combine: [sum, pcgrad], lr: ['1e-4', 2e-4]}\nseeds: 2\n"
                 "baseline: {combine: sum, lr: 1e-4}\n")
    spec = read_spec(p)
    assert spec.name == "s" and spec.base == {"max_steps": 3} and spec.seed_list() == [7, 8]
    assert spec.grid_points() == [{"combine": "sum", "lr": 1e-4}, {"combine": "sum", "lr": 2e-4},
                                  {"combine": "pcgrad", "lr": 1e-4}, {"combine": "pcgrad", "lr": 2e-4}]
    assert config_key({"combine": "sum", "lr": 1e-4}) != config_key({"combine": "sum", "lr": 2e-4})
    assert config_key({"combine": "sum", "lr": 1e-4}).startswith("combine=sum_lr=0.0001-")


# -- the statistics ----------------------------------------------------------------------------

def test_mean_ci_known_answer():
    s = mean_ci([1.0, 2.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == 1.0
    assert s["lo"] == pytest.approx(2 - 4.303 / math.sqrt(3)) and s["hi"] == pytest.approx(2 + 4.303 / math.sqrt(3))
    assert mean_ci([0.5]) == {"n": 1, "mean": 0.5, "sd": None, "lo": None, "hi": None}
    from bertmtl.sweep.stats import t975

    assert t975(31) == pytest.approx(2.0395, abs=0.005) and t975(200) == pytest.approx(1.9719, abs=0.002)
    assert t975(30) > t975(31) > t975(200)  # no step up past the table


def test_a_failed_grid_point_is_queued_again_a_finished_one_never():
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from bertmtl.sweep.study import enqueue_once

    study = optuna.create_study()
    dist = {"combine": CategoricalDistribution(["sum", "mean"])}
    study.add_trial(create_trial(state=TrialState.FAIL, params={"combine": "sum"}, distributions=dist))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5, params={"combine": "mean"}, distributions=dist))
    enqueue_once(study, {"combine": "sum"}, {})
    enqueue_once(study, {"combine": "mean"}, {})
    enqueue_once(study, {"combine": "sum"}, {})  # already waiting: once
    waiting = [t.system_attrs["fixed_params"] for t in study.get_trials(states=(TrialState.WAITING,))]
    assert waiting == [{"combine": "sum"}]


@pytest.mark.slow
def test_a_large_grid_is_queued_a_few_points_at_a_time_and_every_point_once(tmp_path):
    """An 8,000-point grid once took minutes to queue before its first run (a database write per
    point, each scanning every trial): now QUEUED_AHEAD up front and the next as the queue runs dry."""
    from optuna.trial import TrialState

    from bertmtl.sweep import study as study_module

    spec = read_spec(_write(tmp_path, {"name": "big", "base": {"max_steps": 1},
                                       "grid": {"lr": [i / 1000 for i in range(1, 21)], "combine": ["sum", "mean"]}}))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = study_module.open_study(spec, storage, 60)
    points = spec.grid_points()
    waiting = lambda: study.get_trials(deepcopy=False, states=(TrialState.WAITING,))  # noqa: E731
    assert len(points) == 40 and len(waiting()) == study_module.QUEUED_AHEAD == 16
    study_module.open_study(spec, storage, 60)  # a second worker opening it queues nothing more
    assert len(study.get_trials()) == 16
    while True:  # as a worker's loop does: refilled at half, then a trial taken
        trials = study.get_trials(deepcopy=False)
        if len(waiting()) <= 8 and study_module.queue_more(study, points, trials):
            assert len(waiting()) == 16 or len(study.get_trials()) == 40
            continue
        if not waiting():
            break
        study.tell(study.ask(), 0.5)
    done = [study_module.params_of(t) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert sorted(map(str, done)) == sorted(map(str, points))  # every point once, none sampled
    assert len(study.get_trials()) == 40


def test_a_failed_grid_point_is_retried_by_the_next_command_not_by_the_same_one(tmp_path):
    """A configuration whose every seed diverged fails its trial: the worker going on does not queue
    it again (it would train forever), the same command run again does, once."""
    from optuna.trial import TrialState

    from bertmtl.sweep import study as study_module

    spec = read_spec(_write(tmp_path, {"name": "f", "base": {"max_steps": 1}, "grid": {"combine": ["sum", "mean"]}}))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = study_module.open_study(spec, storage, 60)
    first = study.ask()
    study.tell(first, state=TrialState.FAIL)
    study.tell(study.ask(), 0.5)
    assert not study_module.queue_more(study, spec.grid_points(), study.get_trials(deepcopy=False))
    study_module.open_study(spec, storage, 60)  # a worker of the same command joining: no retry
    assert not study.get_trials(states=(TrialState.WAITING,))
    study = study_module.open_study(spec, storage, 60, retry_failed=True)  # the command again
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [study_module.params_of(t) for t in waiting] == [study_module.params_of(study.trials[first.number])]


def _outputs(seed: int, n: int = 200, flip: float = 0.0):
    """Kept dev outputs of SST (5 classes) and STS, with a share `flip` of SST answers made right."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (n,), generator=g)
    logits = torch.randn(n, 5, generator=g)
    right = torch.rand(n, generator=g) < flip
    logits[right, labels[right]] += 10.0
    sts_labels = torch.rand(n, generator=g) * 5
    sts = sts_labels + torch.randn(n, generator=g) * 2
    ids = [f"e{i}" for i in range(n)]
    return {"sst": (ids, logits, labels), "sts": (ids, sts, sts_labels)}


@pytest.mark.slow
def test_identical_predictions_give_p_one_and_a_zero_interval():
    a = [_outputs(0), _outputs(1)]
    r = paired_bootstrap(a, [dict(x) for x in a], SPECS, "overall", n=200)
    assert r["diff"] == 0 and r["lo"] == 0 and r["hi"] == 0 and r["p"] == 1.0 and r["within_noise"]


@pytest.mark.slow
def test_a_constructed_difference_is_detected_and_the_bootstrap_repeats():
    a = [_outputs(0)]
    b = [_outputs(0, flip=0.3)]  # the same examples, 30% of SST made right
    r = paired_bootstrap(a, b, SPECS, "sst_acc", n=300, seed=3)
    assert r["diff"] == pytest.approx(score(b[0], SPECS, "sst_acc") - score(a[0], SPECS, "sst_acc"))
    assert r["diff"] > 0.15 and r["lo"] > 0 and r["p"] < 0.01 and not r["within_noise"]
    assert paired_bootstrap(a, b, SPECS, "sst_acc", n=300, seed=3) == r  # seeded: the same numbers
    from bertmtl.sweep.stats import describe_difference

    assert r["p"] == 0 and describe_difference(r).endswith("p < 0.00333, better")  # below what 300 resolve
    # A small difference on few examples is within the noise.
    small = paired_bootstrap([_outputs(0, n=30)], [_outputs(0, n=30, flip=0.05)], SPECS, "sst_acc", n=300)
    assert small["within_noise"] and small["p"] > 0.05


def test_only_the_examples_both_scored_are_compared():
    a = _outputs(0)
    ids, logits, labels = a["sst"]
    b = {"sst": (ids[:100], logits[:100], labels[:100]), "sts": a["sts"]}
    r = paired_bootstrap([a], [b], SPECS, "sst_acc", n=100)
    assert r["n_examples"] == {"sst": 100, "sts": 200} and r["diff"] == 0


# -- real sweeps -------------------------------------------------------------------------------

def _base(tiny_bert_dir, data_dir, **extra):
    return {"encoder": str(tiny_bert_dir), "data_dir": str(data_dir), "max_steps": 3, "eval_every": 3,
            "dev_limit": 16, "batch_size": 8, "precision": "fp32", "smart": False, "device": "cpu",
            "log_every": 1, **extra}


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _study(out: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{(out / 'study.db').resolve()}")


def _configured(study) -> list:
    """The trials that trained a configuration: with two workers, one that saw a point waiting and
    asked a moment after the other took it gets a trial of no configuration, pruned at once ("the
    grid has no point left")."""
    spare = [t for t in study.trials if "config" not in t.user_attrs]
    assert all(t.state.name == "PRUNED" and not t.params for t in spare), spare
    return [t for t in study.trials if "config" in t.user_attrs]


@pytest.mark.slow
def test_grid_with_two_workers_trains_each_configuration_and_seed_once(tiny_bert_dir, small_data_dir, tmp_path):
    spec = _write(tmp_path, {"name": "g", "base": _base(tiny_bert_dir, small_data_dir), "seeds": 2,
                             "grid": {"combine": ["sum", "pcgrad"]}, "baseline": {"combine": "sum"}})
    out = tmp_path / "out"
    r = cli("sweep", spec, "--out", out, "--workers", 2, "--bootstrap", 200)
    assert "wrote" in r.output and "2 configurations" in r.output
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 4  # two configurations x two seeds, each its own run
    for run in (out / "runs").iterdir():
        types = [x["type"] for x in _records(run)]
        assert types.count("start") == 1 and "resume" not in types and types[-1] == "end", run
    study = _study(out, "g")
    assert sorted(t.state.name for t in _configured(study)) == ["COMPLETE", "COMPLETE"]
    report = json.loads((out / "report.json").read_text())
    rows = {r["params"]["combine"]: r for r in report["configurations"]}
    assert rows["sum"]["baseline"] and rows["sum"]["seeds"] == [42, 43]
    for row in rows.values():  # the report's numbers are the runs' own
        for seed, run in zip(row["seeds"], row["runs"]):
            last_eval = [x for x in _records(Path(run)) if x["type"] == "eval"][-1]
            assert row["values"]["overall"][row["seeds"].index(seed)] == pytest.approx(last_eval["overall"])
        vals = row["values"]["overall"]
        assert row["summary"]["overall"]["mean"] == pytest.approx(sum(vals) / 2)
    trial = {t.params["combine"]: t for t in _configured(study)}
    assert trial["pcgrad"].value == pytest.approx(rows["pcgrad"]["summary"]["overall"]["mean"])
    vs = rows["pcgrad"]["vs_baseline"]["overall"]
    assert vs["replicates"] == 200 and vs["lo"] <= vs["diff"] <= vs["hi"] and 0 <= vs["p"] <= 1
    md = (out / "report.md").read_text()
    assert "combine=pcgrad" in md and "(baseline)" in md and "p " in md
    assert (out / "report.svg").read_text().startswith("<svg")
    # The runs are ordinary runs: listed with their sweep, and the same command again trains nothing.
    listed = json.loads(cli("runs", "--runs-dir", out / "runs", "--json").stdout)
    assert {x["config"]["sweep"].split("/")[0] for x in listed} == {"g"}
    table = cli("runs", "--runs-dir", out / "runs", env={"COLUMNS": "200"}).stdout
    assert "sweep" in table and "g/combine=pcgrad" in table
    before = {p.name: (p / "metrics.jsonl").stat().st_mtime_ns for p in (out / "runs").iterdir()}
    cli("sweep", spec, "--out", out)
    assert {p.name: (p / "metrics.jsonl").stat().st_mtime_ns for p in (out / "runs").iterdir()} == before
    assert len(_configured(_study(out, "g"))) == 2
    # The report rebuilt from the runs alone is the same report.
    (out / "report.json").unlink()
    cli("sweep", "--report", out, "--bootstrap", 200)
    again = json.loads((out / "report.json").read_text())
    assert again["configurations"] == report["configurations"]


@pytest.mark.slow
def test_a_grid_longer_than_its_queue_trains_every_point(tiny_bert_dir, small_data_dir, tmp_path, monkeypatch):
    """The real command with the queue one point long: the worker queues the next point each time
    the queue runs dry, and the sweep ends with every configuration trained once."""
    from bertmtl.sweep import study as study_module

    monkeypatch.setattr(study_module, "QUEUED_AHEAD", 1)
    spec = _write(tmp_path, {"name": "q", "base": _base(tiny_bert_dir, small_data_dir, max_steps=1, eval_every=1),
                             "seeds": 1, "grid": {"combine": ["sum", "mean", "pcgrad"]}})
    out = tmp_path / "out"
    cli("sweep", spec, "--out", out, "--bootstrap", 100)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert [r.split("-")[0] for r in runs] == ["combine=mean", "combine=pcgrad", "combine=sum"]
    study = _study(out, "q")
    assert sorted(t.params["combine"] for t in study.trials) == ["mean", "pcgrad", "sum"]
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    assert len(json.loads((out / "report.json").read_text())["configurations"]) == 3


@pytest.mark.slow
def test_a_configuration_that_diverges_in_every_seed_fails_and_the_sweep_ends(tiny_bert_dir, small_data_dir,
                                                                                 tmp_path):
    """Weights that overflow at once: the configuration's trial fails with a warning, the others are
    reported, and the sweep ends (the same command going on never queues it again)."""
    spec = _write(tmp_path, {"name": "d", "base": _base(tiny_bert_dir, small_data_dir, max_steps=2, eval_every=2),
                             "seeds": 1, "grid": {"loss_weights": ["sst=1", "sst=3e38"]}})
    out = tmp_path / "out"
    r = cli("sweep", spec, "--out", out, "--bootstrap", 100)
    assert "no overall on dev in any seed" in r.output and "1 trial(s) failed" in r.output, r.output
    study = _study(out, "d")
    assert sorted(t.state.name for t in _configured(study)) == ["COMPLETE", "FAIL"]
    assert len(json.loads((out / "report.json").read_text())["configurations"]) == 1


@pytest.mark.slow
def test_a_worker_killed_mid_trial_loses_and_duplicates_nothing(tiny_bert_dir, small_data_dir, tmp_path):
    base = _base(tiny_bert_dir, small_data_dir, max_steps=4, eval_every=4, save_every=1)
    spec = _write(tmp_path, {"name": "k", "base": base, "seeds": 2, "grid": {"combine": ["sum", "mean"]}})
    out = tmp_path / "out"
    # The worker kills itself (SIGKILL) inside the third step of its second run: its trial is RUNNING
    # with a stale heartbeat, its run has a last/ at step 2.
    proc = spawn("sweep", spec, "--out", out, "--heartbeat", 1, BERTMTL_CRASH_AT="step:7")
    proc.wait(300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    states = [t.state.name for t in _study(out, "k").trials]
    assert "RUNNING" in states
    cli("sweep", spec, "--out", out, "--heartbeat", 1, "--bootstrap", 100)  # the next worker
    study = _study(out, "k")
    by_state = sorted(t.state.name for t in study.trials)
    assert by_state == ["COMPLETE", "COMPLETE", "FAIL"]  # the killed trial, retried once
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == failed.number)
    assert retry.state.name == "COMPLETE" and retry.params == failed.params
    runs = list((out / "runs").iterdir())
    assert len(runs) == 4
    resumed = 0
    for run in runs:
        types = [x["type"] for x in _records(run)]
        assert types.count("start") == 1 and types[-1] == "end", run
        assert json.loads((run / "summary.json").read_text())["step"] == 4
        resumed += types.count("resume")
    assert resumed == 1  # only the killed run was resumed, from its last/; nothing trained twice
    report = json.loads((out / "report.json").read_text())
    assert sorted(len(r["seeds"]) for r in report["configurations"]) == [2, 2]


@pytest.mark.slow
def test_a_search_runs_its_trials(tiny_bert_dir, small_data_dir, tmp_path):
    spec = _write(tmp_path, {"name": "s", "base": _base(tiny_bert_dir, small_data_dir), "trials": 3,
                             "sampler": "random", "search": {"lr": {"log_uniform": [1e-4, 1e-2]},
                                                             "combine": {"choice": ["sum", "upgrad"]}},
                             "baseline": {"lr": 1e-3, "combine": "sum"}})
    out = tmp_path / "out"
    cli("sweep", spec, "--out", out, "--bootstrap", 100)
    study = _study(out, "s")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    assert study.trials[0].params == {"lr": 1e-3, "combine": "sum"}  # the baseline first
    assert all(1e-4 <= t.params["lr"] <= 1e-2 for t in study.trials)
    report = json.loads((out / "report.json").read_text())
    assert len(report["configurations"]) == 3 and report["configurations"][0]["baseline"]
    assert all(r["vs_baseline"] for r in report["configurations"][1:])


@pytest.mark.slow
def test_another_sweeps_directory_is_refused(tiny_bert_dir, small_data_dir, tmp_path):
    a = _write(tmp_path, {"base": _base(tiny_bert_dir, small_data_dir), "grid": {"combine": ["sum"]}}, "a.json")
    b = _write(tmp_path, {"base": _base(tiny_bert_dir, small_data_dir), "grid": {"combine": ["mean"]}}, "b.json")
    cli("sweep", a, "--out", tmp_path / "out")
    r = cli("sweep", b, "--out", tmp_path / "out", code=2)
    assert "holds another sweep" in r.output
    r = cli("sweep", "--report", tmp_path, code=2)
    assert "not a sweep directory" in r.output


# -- two "machines" on one PostgreSQL study ------------------------------------------------------

@pytest.fixture
def postgres_url(tmp_path_factory):
    """A PostgreSQL server of its own (initdb in a temporary directory, a free port on loopback),
    stopped after the test; skipped with the reason where one cannot be started (.ci/run installs
    Debian's postgresql package)."""
    import shutil
    import socket
    import tempfile

    pytest.importorskip("psycopg", reason="the PostgreSQL driver (psycopg[binary], in the test extra) is missing")
    bindir = next((Path(p) for p in [*sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
                   if (p / "initdb").exists()), None)
    if bindir is None and shutil.which("initdb"):
        bindir = Path(shutil.which("initdb")).parent
    if bindir is None:
        pytest.skip("no PostgreSQL server here (initdb not found; Debian: apt-get install postgresql)")
    prefix = []
    if os.geteuid() == 0:  # the server refuses to run as root: as the postgres user, in a directory it owns
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="bertmtl-pg-"))
    os.chmod(root, 0o755)
    if prefix:
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *a: subprocess.run([*prefix, *map(str, a)], capture_output=True, text=True, timeout=120)  # noqa: E731
    r = run(bindir / "initdb", "-D", data, "-U", "bertmtl", "--auth", "trust")
    if r.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    r = run(bindir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
    if r.returncode:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server did not start: {r.stderr.strip()[-300:]}")
    try:
        r = run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "bertmtl", "study")
        assert r.returncode == 0, r.stderr
        yield f"postgresql://bertmtl@127.0.0.1:{port}/study"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tiny_bert_dir, small_data_dir, tmp_path, postgres_url):
    """Two workers as two machines would run them: the same command, one PostgreSQL study, each
    with its own sweep directory (runs) on a shared disk here."""
    spec = _write(tmp_path, {"name": "pg", "base": _base(tiny_bert_dir, small_data_dir), "seeds": 1,
                             "grid": {"combine": ["sum", "mean", "pcgrad", "upgrad"]}, "baseline": {"combine": "sum"}})
    out = tmp_path / "out"
    procs = [spawn("sweep", spec, "--out", out, "--storage", postgres_url, "--bootstrap", 100) for _ in range(2)]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read().decode()[-2000:]
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    # (Two workers queueing the grid at the same instant may both queue a point; its second trial
    # then waits for the first one's runs instead of training them again.)
    assert {t.state.name for t in _configured(study)} == {"COMPLETE"}
    assert {t.params["combine"] for t in _configured(study)} == {"mean", "pcgrad", "sum", "upgrad"}
    runs = list((out / "runs").iterdir())
    assert len(runs) == 4
    for run in runs:
        assert [x["type"] for x in _records(run)].count("start") == 1, run
    report = json.loads((out / "report.json").read_text())
    assert len(report["configurations"]) == 4


@pytest.mark.slow
def test_a_judge_prunes_a_run_at_an_evaluation(tiny_bert_dir, small_data_dir, tmp_path):
    """loop.train's judge: asked after each dev evaluation; its yes ends the run 'pruned', last/ saved."""
    from bertmtl import TrainConfig, train

    seen = []
    summary = train(TrainConfig(encoder=str(tiny_bert_dir), data_dir=str(small_data_dir), max_steps=6, eval_every=2,
                                batch_size=8, precision="fp32", smart=False, out=str(tmp_path / "r")),
                    judge=lambda step, m: seen.append((step, m["overall"])) or step >= 4)
    assert summary["status"] == "pruned" and summary["step"] == 4 and [s for s, _ in seen] == [2, 4]
    assert json.loads((tmp_path / "r" / "last" / "bertmtl.json").read_text())["step"] == 4
    info = json.loads(cli("runs", "--runs-dir", tmp_path, "--json").stdout)[0]
    assert info["status"] == "pruned"


@pytest.mark.slow
def test_the_median_pruner_sees_every_evaluation(tiny_bert_dir, small_data_dir, tmp_path):
    """With `prune`, each evaluation of a trial's run is reported to Optuna at its step, and the
    second trial is pruned exactly when the median rule says so (here: its overall below the first
    trial's at some step)."""
    base = _base(tiny_bert_dir, small_data_dir, max_steps=4, eval_every=1)
    spec = _write(tmp_path, {"name": "p", "base": base, "grid": {"lr": [1e-12, 1e-3]},
                             "prune": {"startup_trials": 1, "warmup_steps": 0}})
    out = tmp_path / "out"
    cli("sweep", spec, "--out", out, "--bootstrap", 100)
    first, second = _study(out, "p").trials
    assert first.state.name == "COMPLETE"
    for t in (first, second):
        run = out / "runs" / f"{config_key(t.params)}-s42"
        evals = {x["step"]: x["overall"] for x in _records(run) if x["type"] == "eval"}
        assert {s: v for s, v in t.intermediate_values.items()} == pytest.approx(
            {s: v for s, v in evals.items() if s in t.intermediate_values})
    behind = [s for s, v in second.intermediate_values.items() if v < first.intermediate_values[s]]
    assert second.state.name == ("PRUNED" if behind else "COMPLETE")
    if behind:
        assert max(second.intermediate_values) == behind[0]  # stopped at the first evaluation behind
        report = json.loads((out / "report.json").read_text())
        assert [p["params"] for p in report["pruned"]] == [{"lr": 1e-3}]
        info = json.loads(cli("runs", "--runs-dir", out / "runs", "--json").stdout)
        assert sorted(i["status"] for i in info) == ["finished", "pruned"]
