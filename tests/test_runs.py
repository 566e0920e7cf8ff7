"""`bertmtl runs`: status, progress and best scores of fabricated runs; --compare; one runs root
(--runs-dir / $BERTMTL_RUNS) for train, evaluate and predict."""

from __future__ import annotations

import json
import os
import time

import pytest
from click.testing import CliRunner

from bertmtl.cli import main
from bertmtl.runs.rundir import RECENT_S, WriterLock
from bertmtl.runs.catalog import human_bytes, list_runs, runs_root

from .conftest import cli
from .fixtures import write_task_data

CONFIG = {"lr": 1e-4, "batch_size": 64, "pretrained": None, "tasks": ["sst", "para", "sts"]}


def _eval(step, overall, **kw):
    return {"type": "eval", "split": "dev", "step": step, "epoch": step / 10, "sst_acc": overall - 0.1,
            "para_acc": overall, "sts_corr": overall + 0.1, "overall": overall, "best": False, **kw}


def fake_run(root, name, *, status=None, config=None, evals=(), steps=20, started=1_700_000_000.0, summary=True):
    """A run directory as training leaves it: metrics.jsonl (and summary.json once it has ended)."""
    d = root / name
    d.mkdir(parents=True)
    recs = [{"type": "start", "step": 0, "time": started, "config": {**CONFIG, **(config or {})}, "total_steps": 40}]
    recs += [{"type": "train", "step": s, "time": started + s, "loss": {"sst": 1.0}} for s in range(10, steps + 1, 10)]
    recs += list(evals)
    if status is not None:
        recs.append({"type": "end", "status": status, "step": steps, "best_overall": None})
        if summary:
            (d / "summary.json").write_text(json.dumps({"status": status, "step": steps}))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return d


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "a-finished", status="finished", steps=40, started=1_700_000_000.0,
             evals=[_eval(20, 0.70), _eval(40, 0.72)])
    fake_run(root, "b-stopped", status="stopped", steps=30, started=1_700_000_100.0, config={"lr": 2e-4},
             evals=[_eval(20, 0.71)])
    crashed = fake_run(root, "c-crashed", steps=20, started=1_700_000_200.0,
                       config={"pretrained": "/models/bert-base-uncased"})
    old = time.time() - RECENT_S - 60  # silent for longer than a live run ever is
    os.utime(crashed / "metrics.jsonl", (old, old))
    fake_run(root, "d-early", status="early-stopped", steps=30, started=1_700_000_300.0,
             evals=[_eval(10, 0.73), _eval(20, 0.69), _eval(30, 0.70)])
    (root / "not-a-run").mkdir()
    return root


def test_runs_lists_status_progress_and_best_scores(runs_dir):
    r = CliRunner().invoke(main, ["runs", "--runs-dir", str(runs_dir), "--json"])
    assert r.exit_code == 0, r.output
    infos = {i["name"]: i for i in json.loads(r.output)}
    assert list(infos) == ["a-finished", "b-stopped", "c-crashed", "d-early"]  # by start time
    assert {n: i["status"] for n, i in infos.items()} == {
        "a-finished": "finished", "b-stopped": "stopped", "c-crashed": "crashed", "d-early": "early-stopped"}
    assert (infos["a-finished"]["step"], infos["a-finished"]["total_steps"]) == (40, 40)
    assert infos["b-stopped"]["step"] == 30
    # the best evaluation's scores, those of RUN/best
    assert infos["d-early"]["best_step"] == 10
    assert infos["d-early"]["best"]["overall"] == pytest.approx(0.73)
    assert infos["d-early"]["best"]["sts_corr"] == pytest.approx(0.83)
    assert infos["c-crashed"]["best"] == {} and infos["c-crashed"]["encoder"] == "/models/bert-base-uncased"
    assert infos["a-finished"]["encoder"] == "minilm"
    table = CliRunner().invoke(main, ["runs", "--runs-dir", str(runs_dir)]).output
    for text in ("a-finished", "crashed", "early-stopped", "0.720", "0.730", "40/40", "bert-base-uncased"):
        assert text in table, text


def test_running_means_a_live_writer(runs_dir):
    run = runs_dir / "c-crashed"
    lock = WriterLock(run)  # what training holds while it runs
    try:
        assert {i["name"]: i["status"] for i in list_runs(runs_dir)}["c-crashed"] == "running"
    finally:
        lock.release()
    assert {i["name"]: i["status"] for i in list_runs(runs_dir)}["c-crashed"] == "crashed"
    # no lock file: its writer released it (an error ended the run) however fresh the log is
    fresh = fake_run(runs_dir, "e-fresh", steps=10)
    assert not (fresh / ".writer.lock").exists()
    assert {i["name"]: i["status"] for i in list_runs(runs_dir)}["e-fresh"] == "crashed"
    # another machine's lock (a shared disk) cannot be tested here: a log written just now counts
    (fresh / ".writer.lock").write_text('{"host": "elsewhere", "pid": 1}')
    assert {i["name"]: i["status"] for i in list_runs(runs_dir)}["e-fresh"] == "running"


def test_compare_shows_only_what_differs(runs_dir):
    r = CliRunner().invoke(main, ["runs", "--runs-dir", str(runs_dir), "--compare", "a-finished",
                                  str(runs_dir / "b-stopped"), "--json"])
    assert r.exit_code == 0, r.output
    diff = {d["key"]: (d["a"], d["b"]) for d in json.loads(r.output)["differences"]}
    assert diff["status"] == ("finished", "stopped")
    assert diff["config.lr"] == (1e-4, 2e-4)
    assert diff["best.overall"] == (pytest.approx(0.72), pytest.approx(0.71))
    assert "config.batch_size" not in diff and "config.tasks" not in diff
    table = CliRunner().invoke(main, ["runs", "--runs-dir", str(runs_dir), "--compare", "a-finished", "b-stopped"])
    assert "config.lr" in table.output and "config.batch_size" not in table.output
    missing = CliRunner().invoke(main, ["runs", "--runs-dir", str(runs_dir), "--compare", "a-finished", "zzz"])
    assert missing.exit_code == 2 and "zzz: no run there" in missing.output


def test_runs_root_from_option_env_or_default(tmp_path, monkeypatch):
    monkeypatch.delenv("BERTMTL_RUNS", raising=False)
    assert str(runs_root()) == "checkpoints"
    monkeypatch.setenv("BERTMTL_RUNS", str(tmp_path / "env"))
    assert runs_root() == tmp_path / "env"
    assert runs_root(str(tmp_path / "opt")) == tmp_path / "opt"
    r = CliRunner().invoke(main, ["runs"])
    assert r.exit_code == 0 and "no runs under" in r.output


def test_train_evaluate_and_predict_share_the_runs_root(tiny_bert_dir, tmp_path, monkeypatch):
    data = write_task_data(tmp_path / "data")
    monkeypatch.chdir(tmp_path)  # nothing may land in (or be read from) ./checkpoints
    monkeypatch.setenv("BERTMTL_RUNS", str(tmp_path / "from-env"))
    r = CliRunner().invoke(main, ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data),
                                  "--max-steps", "2", "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    (run,) = (tmp_path / "from-env").iterdir()
    assert not (run / ".writer.lock").exists()  # released and removed at the end
    monkeypatch.delenv("BERTMTL_RUNS")
    other = tmp_path / "elsewhere"
    other.mkdir()
    run.rename(other / run.name)
    assert not (tmp_path / "checkpoints").exists()
    ev = CliRunner().invoke(main, ["evaluate", "--runs-dir", str(other), "--data-dir", str(data), "--json"])
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.output.strip().splitlines()[-1])["checkpoint"] == str(other / run.name / "best")
    pr = CliRunner().invoke(main, ["predict", "--runs-dir", str(other), "--json", "good film"])
    assert pr.exit_code == 0, pr.output
    none = CliRunner().invoke(main, ["predict", "good film"])
    assert none.exit_code == 2 and "no trained model found under checkpoints/" in none.output
    listed = CliRunner().invoke(main, ["runs", "--runs-dir", str(other), "--json"])
    assert json.loads(listed.output)[0]["status"] == "finished"


def test_listing_runs_imports_no_torch(runs_dir):
    import subprocess
    import sys

    probe = ("import sys; from bertmtl.cli import main\n"
             f"try: main(['runs', '--runs-dir', {str(runs_dir)!r}, '--json'], prog_name='bertmtl')\n"
             "except SystemExit as e: assert e.code == 0, e.code\n"
             "print('TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "TORCH False", out


# -- clean-up stays inside the runs root ---------------------------------------------------------

def _finished_with_last(root, name):
    """A finished run with a best/ checkpoint and a last/ that --drop-last may take."""
    d = fake_run(root, name, status="finished", steps=40, evals=[_eval(40, 0.72)])
    for sub in ("best", "last"):
        (d / sub).mkdir()
        (d / sub / "bertmtl.json").write_text("{}")
    (d / "last" / "optimizer.safetensors").write_bytes(b"\0" * 1000)
    return d


def _size(path) -> str:
    return human_bytes(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))


@pytest.fixture
def victim(tmp_path):
    """A finished run outside the runs root (tmp_path/runs), which clean-up must never touch."""
    return _finished_with_last(tmp_path / "victim", "run")


@pytest.mark.parametrize("flag", ["--delete", "--drop-last"])
@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("how", ["dot-dot", "absolute"])
def test_clean_up_refuses_a_run_outside_the_root(tmp_path, monkeypatch, victim, flag, dry_run, how):
    root = tmp_path / "runs"
    inside = _finished_with_last(root, "inside")
    monkeypatch.chdir(root)  # ../victim/run is relative to both the working directory and the root
    name = "../victim/run" if how == "dot-dot" else str(victim)
    # the run inside comes first: a refusal of any run named removes nothing at all
    r = cli("runs", "--runs-dir", root, flag, "inside", name, *(["--dry-run"] if dry_run else []), code=2)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    assert r.output.splitlines() == [
        f"Error: {victim} is outside the runs root {root}/; --delete and --drop-last act only on runs inside it "
        f"(--runs-dir, else $BERTMTL_RUNS, else ./checkpoints); nothing was removed"]
    assert (victim / "last" / "optimizer.safetensors").is_file() and (inside / "last").is_dir()


def test_clean_up_names_resolved_paths(tmp_path):
    root = tmp_path / "runs"
    run = _finished_with_last(root, "a")
    (tmp_path / "root-link").symlink_to(root)
    size = _size(run)
    for given in (tmp_path / "runs" / ".." / "runs", tmp_path / "root-link"):
        r = cli("runs", "--runs-dir", given, "--delete", "a", "--dry-run")
        assert r.stdout.splitlines() == [f"would delete {run}  ({size})", f"would free {size} (1 run(s))"]
        r = cli("runs", "--runs-dir", given, "--drop-last", "--dry-run", "--json")
        assert [x["path"] for x in json.loads(r.stdout)["removed"]] == [str(run / "last")]
    r = cli("runs", "--runs-dir", tmp_path / "root-link", "--drop-last")
    assert r.stdout.splitlines() == [f"deleted {run / 'last'}  (1.0 kB)", "freed 1.0 kB (1 last/ director(y/ies))"]
    assert not (run / "last").exists() and (run / "best").is_dir()


def test_a_link_to_a_run_inside_the_root_deletes_both(tmp_path):
    root = tmp_path / "runs"
    run = _finished_with_last(root, "a")
    other = _finished_with_last(root, "b")
    (root / "latest").symlink_to(run)
    r = cli("runs", "--runs-dir", root, "--drop-last")  # the run and its link are one run: its last/ goes once
    assert r.stdout.splitlines() == [f"deleted {run / 'last'}  (1.0 kB)", f"deleted {other / 'last'}  (1.0 kB)",
                                     "freed 2.0 kB (2 last/ director(y/ies))"]
    size = _size(run)
    r = cli("runs", "--runs-dir", root, "--delete", "latest", "--dry-run")
    assert r.stdout.splitlines() == [f"would delete {run} and the link {root / 'latest'}  ({size})",
                                     f"would free {size} (1 run(s))"]
    r = cli("runs", "--runs-dir", root, "--delete", "latest", "a")  # named twice, deleted once
    assert r.stdout.splitlines() == [f"deleted {run} and the link {root / 'latest'}  ({size})",
                                     f"freed {size} (1 run(s))"]
    assert not os.path.lexists(root / "latest") and not run.exists() and other.is_dir()


def test_a_link_to_a_run_outside_the_root_is_refused(tmp_path, victim):
    root = tmp_path / "runs"
    inside = _finished_with_last(root, "inside")
    (root / "escape").symlink_to(victim)
    for flag in ("--delete", "--drop-last"):
        r = cli("runs", "--runs-dir", root, flag, "escape", code=2)
        assert r.output.splitlines() == [
            f"Error: {root / 'escape'} is a link to {victim}, which is outside the runs root {root}/; --delete and "
            f"--drop-last act only on runs inside it (--runs-dir, else $BERTMTL_RUNS, else ./checkpoints); nothing "
            f"was removed"]
    # every finished run's last/: the link's run is not one of them, and says why
    r = cli("runs", "--runs-dir", root, "--drop-last")
    assert r.stdout.splitlines() == [f"deleted {inside / 'last'}  (1.0 kB)",
                                     f"kept: {root / 'escape'} is a link to {victim}, outside the runs root",
                                     "freed 1.0 kB (1 last/ director(y/ies))"]
    assert (victim / "last" / "optimizer.safetensors").is_file() and os.path.islink(root / "escape")


# -- the table in a pipe ----------------------------------------------------------------------------

def test_runs_table_in_a_pipe_keeps_each_run_on_one_line(tmp_path):
    """CliRunner's stdout is no terminal, as in `bertmtl runs | grep NAME`: no cell wraps."""
    root = tmp_path / "runs"
    names = [f"{i}-a-long-run-name-from-a-sweep-with-many-options-lr-0.0001-combine-pcgrad-seed-{i}" for i in range(3)]
    encoder = "/models/" + "a-locally-fine-tuned-bert-base-uncased-with-a-long-directory-name" * 2
    for i, name in enumerate(names):
        fake_run(root, name, status="finished", steps=40, started=1_700_000_000.0 + i, config={"pretrained": encoder},
                 evals=[_eval(40, 0.72)])
    r = cli("runs", "--runs-dir", root)
    lines = r.stdout.splitlines()
    started = [time.strftime("%m-%d %H:%M", time.localtime(1_700_000_000.0 + i)) for i in range(3)]
    for name, when in zip(names, started):
        (line,) = [x for x in lines if name in x]
        assert line.split() == [name, *when.split(), "40/40", "finished", encoder.rsplit("/", 1)[1], "0.620",
                                "0.720", "0.820", "0.720"]
    assert all(x == x.rstrip() for x in lines)
    assert not any("…" in x for x in lines)


# -- links, odd names and mixed modes --------------------------------------------------------------

def test_a_run_and_links_to_it_are_listed_once_under_its_own_name(tmp_path):
    root = tmp_path / "runs"
    run = fake_run(root, "a", status="finished", steps=40, evals=[_eval(40, 0.72)])
    outside = fake_run(tmp_path / "elsewhere", "b", status="stopped", steps=30, started=1_700_000_100.0)
    (root / "latest").symlink_to(run)
    (root / "z-another-link").symlink_to(run)
    (root / "outside").symlink_to(outside)
    infos = json.loads(cli("runs", "--runs-dir", root, "--json").stdout)
    assert [(i["name"], i["path"]) for i in infos] == [("a", str(run)), ("b", str(outside))]
    lines = cli("runs", "--runs-dir", root).stdout.splitlines()
    assert [x.split()[0] for x in lines if "finished" in x or "stopped" in x] == ["a", "b"]
    assert not any("latest" in x or "z-another-link" in x for x in lines)


def test_a_run_name_with_a_newline_or_markup_stays_on_its_row(tmp_path):
    """`bertmtl runs | cat`: a name that would split its row (or be read as Rich markup) is shown escaped."""
    root = tmp_path / "runs"
    fake_run(root, "bad\nname", status="finished", steps=40, evals=[_eval(40, 0.72)])
    fake_run(root, "[red]styled", status="finished", steps=40, started=1_700_000_100.0, evals=[_eval(40, 0.72)])
    lines = cli("runs", "--runs-dir", root).stdout.splitlines()
    rows = [x.split() for x in lines if "40/40" in x]
    assert [row[0] for row in rows] == ["'bad\\nname'", "[red]styled"]
    assert all(row[-5:] == ["finished", "minilm", "0.620", "0.720", "0.820", "0.720"][-5:] for row in rows)
    assert not any(x.startswith("name") for x in lines)
    assert [i["name"] for i in json.loads(cli("runs", "--runs-dir", root, "--json").stdout)] == \
        ["bad\nname", "[red]styled"]  # JSON escapes it itself


@pytest.mark.parametrize("args, message", [
    (["--compare", "a-finished", "b-stopped", "--delete", "c-crashed", "--dry-run"],
     "--compare shows two runs side by side and --delete removes runs: give one of them"),
    (["--compare", "a-finished", "b-stopped", "--drop-last"],
     "--compare shows two runs side by side and --drop-last removes runs' last/: give one of them"),
    (["--compare", "a-finished", "b-stopped", "d-early"],
     "--compare takes the two runs it compares (RUN_A RUN_B); RUN names without it list those runs: "
     "give one or the other"),
])
def test_options_of_different_modes_are_a_usage_error(runs_dir, args, message):
    r = cli("runs", "--runs-dir", runs_dir, *args, code=2)
    assert r.output.splitlines()[-1] == f"Error: {message}"
    assert (runs_dir / "c-crashed").is_dir()


def test_each_status_says_what_it_means_once_for_every_surface():
    """The one table every reader asks (runs, --drop-last, sweeps and their report, the TUI, MLflow
    and W&B), which once disagreed: W&B took a stopped run for a success, MLflow for killed."""
    from bertmtl.runs.status import Status

    table = {s: (s.final, s.resumable, s.succeeded, s.needs_last, s.tracker_state) for s in Status}
    assert table == {
        Status.WAITING: (False, False, False, True, "FAILED"),
        Status.RUNNING: (False, False, False, True, "FAILED"),
        Status.FINISHED: (True, False, True, False, "FINISHED"),
        Status.EARLY_STOPPED: (True, False, True, False, "FINISHED"),
        Status.PRUNED: (True, False, False, False, "KILLED"),
        Status.NONFINITE: (True, False, False, True, "FAILED"),  # last/: the last good weights
        Status.PAUSED: (False, True, False, True, "KILLED"),
        Status.STOPPED: (False, True, False, True, "KILLED"),
        Status.INTERRUPTED: (False, True, False, True, "KILLED"),
        Status.CRASHED: (False, True, False, True, "FAILED"),
    }
    assert Status.of("no such status") is Status.CRASHED and f"{Status.EARLY_STOPPED}" == "early-stopped"
