"""The ablation table on a tiny model and fixture data, with a budget of a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bertmtl.sweep.ablate import PAPER, ROWS, markdown, run_dir_of
from bertmtl.configuration.configs import parse_rows
from bertmtl.cli import main



def ABLATION_ARGS(out, tiny_bert_dir, small_data_dir):
    return ["ablate", "--data-dir", str(small_data_dir), "--out", str(out), "--pretrained", str(tiny_bert_dir),
            "--rows", "final,baseline,pretrain", "--budget-steps", "2", "--pretrain-steps", "2", "--budget-dev", "16",
            "--batch-size", "8", "--seed", "0", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def ablation(tiny_bert_dir, small_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation") / "out"
    r = CliRunner().invoke(main, ABLATION_ARGS(out, tiny_bert_dir, small_data_dir))
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out, r.output


@pytest.mark.slow
def test_writes_markdown_and_json(ablation):
    out, output = ablation
    res = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in res["rows"]] == ["baseline", "pretrain", "final"]  # table order
    for r in res["rows"]:
        assert set(r["metrics"]) == {"sst_acc", "para_acc", "sts_corr", "overall"}
        assert all(isinstance(v, float) for v in r["metrics"].values()), r  # all three heads, even for the baseline
        assert r["metrics"]["overall"] == pytest.approx(
            (r["metrics"]["sst_acc"] + r["metrics"]["para_acc"] + r["metrics"]["sts_corr"]) / 3)
        assert r["dev_n"] == {"sst_n": 16, "para_n": 16, "sts_n": 16}
        assert r["steps"] == 2 and r["status"] == "finished" and r["wall_s"] > 0
        assert all((Path(s["run"]) / "summary.json").is_file() for s in r["seeds"])
        assert not any((Path(s["run"]) / "last").exists() for s in r["seeds"])  # weights removed unless --keep-checkpoints
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["baseline"]["train"]["tasks"] == ["sst"] and rows["baseline"]["train"]["combine"] == "sum"
    assert rows["final"]["train"]["combine"] == "pcgrad" and rows["final"]["train"]["smart"] is True
    assert all(r["train"]["precision"] == "fp32" for r in res["rows"])
    assert rows["pretrain"]["train"]["encoder"] == str(out / "pretrained-mlm")
    assert rows["final"]["paper"] == PAPER["final"] and rows["baseline"]["paper"] is None
    assert res["budget"]["steps_per_row"] == 2 and "2 steps per row" in res["budget"]["text"]
    assert res["budget"]["dev_limit"] == 16 and res["budget"]["pretrain_steps"] == 2
    assert res["command"].startswith("bertmtl ablate") and "--budget-steps 2" in res["command"]
    assert {"platform", "cpu_count", "torch"} <= set(res["machine"]) and res["wall_s"] > 0
    p = res["pretrain"]
    assert p["steps"] == 3 and p["before_perplexity"] > 1 and p["after_perplexity"] > 1  # 2, after 1 head-only

    md = (out / "ablation.md").read_text()
    assert md.count("\n| ") == 4  # header + three rows
    assert "0.514" in md and "0.677" in md and "—" in md and "not invented" in md
    assert "**Budget:** 2 steps per row" in md and res["command"] in md
    assert "0.514" in output and "budget: 2 steps per row" in output  # the Rich table, ours (paper)


@pytest.mark.slow
def test_rerun_continues_and_other_options_need_overwrite(ablation, tiny_bert_dir, small_data_dir):
    out, _ = ablation
    r = CliRunner().invoke(main, ["ablate", "--data-dir", str(small_data_dir), "--out", str(out), "--rows", "baseline",
                                  "--pretrained", str(tiny_bert_dir)])
    assert r.exit_code == 2 and "--overwrite" in r.output and "other rows or options" in r.output
    # The same command again: the study is done, nothing trains again, the table is the same.
    before = json.loads((out / "ablation.json").read_text())
    logs = {s["run"]: (Path(s["run"]) / "metrics.jsonl").read_text() for r in before["rows"] for s in r["seeds"]}
    r = CliRunner().invoke(main, ABLATION_ARGS(out, tiny_bert_dir, small_data_dir))
    assert r.exit_code == 0, r.output + repr(r.exception)
    after = json.loads((out / "ablation.json").read_text())
    assert [x["metrics"] for x in after["rows"]] == [x["metrics"] for x in before["rows"]]
    assert {run: (Path(run) / "metrics.jsonl").read_text() for run in logs} == logs  # no run trained again
    # The finished pretraining was kept: the same run, its time read from its own log again.
    assert after["pretrain"]["wall_s"] == before["pretrain"]["wall_s"] > 0


@pytest.mark.slow
def test_the_table_is_a_sweep_with_rows(ablation):
    """The rows ran as one Optuna study: its spec (rows over one base), its trials, and the sweep's
    own report of the same runs (the same metrics as the table)."""
    import optuna

    from bertmtl.sweep.spec import read_spec

    out, _ = ablation
    spec = read_spec(out / "ablation-spec.json")
    assert list(spec.rows) == ["baseline", "pretrain", "final"] and spec.rows["final"]["combine"] == "pcgrad"
    assert spec.base["steps_per_epoch"] == 2 and spec.first_seed == 0
    study = optuna.load_study(study_name="ablate-paper", storage=f"sqlite:///{out / 'study.db'}")
    assert sorted(t.params["row"] for t in study.trials if t.state.name == "COMPLETE") == ["baseline", "final", "pretrain"]
    res = json.loads((out / "ablation.json").read_text())
    report = json.loads((out / "report.json").read_text())
    by_row = {c["params"]["row"]: c for c in report["configurations"]}
    for r in res["rows"]:
        assert by_row[r["name"]]["summary"]["overall"]["mean"] == pytest.approx(r["metrics"]["overall"])
        assert by_row[r["name"]]["runs"] == [s["run"] for s in r["seeds"]]


def test_rows_option():
    assert parse_rows("final, baseline") == ["baseline", "final"]
    r = CliRunner().invoke(main, ["ablate", "--rows", "baseline,smart"])
    assert r.exit_code == 2 and "unknown row(s) smart" in r.output


def test_markdown_marks_missing_paper_cells():
    res = {"rows": [{"title": ROWS["multitask"].title, "metrics": {"sst_acc": 0.5, "para_acc": 0.7, "sts_corr": 0.6,
                                                                    "overall": 0.6}, "paper": None, "wall_s": 3.0}],
           "budget": {"text": "10 steps per row"}, "command": "bertmtl ablate", "machine": {"cpu_count": 2},
           "device": "cpu", "wall_s": 3.0}
    md = markdown(res)
    row = [line for line in md.splitlines() if line.startswith("| Simple")][0]
    assert row.count("—") == 4 and "0.500" in row and "3 s" in row


@pytest.fixture(scope="module")
def combiner_table(tiny_bert_dir, small_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("combiners") / "out"
    args = ["ablate", "--table", "combiners", "--rows", "upgrad,sum", "--seeds", "2", "--data-dir", str(small_data_dir),
            "--out", str(out), "--pretrained", str(tiny_bert_dir), "--budget-steps", "3", "--budget-dev", "16",
            "--batch-size", "8", "--seed", "5", "--device", "cpu", "--precision", "fp32", "--bootstrap", "200",
            "--workers", "2"]  # two worker processes share the study
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out, r.output


@pytest.mark.slow
def test_combiner_table_over_seeds(combiner_table):
    out, output = combiner_table
    res = json.loads((out / "ablation.json").read_text())
    assert res["table"] == "combiners" and [r["name"] for r in res["rows"]] == ["sum", "upgrad"]  # table order
    assert res["budget"]["seeds"] == [5, 6] and "2 seeds (5-6; mean ± sd)" in res["budget"]["text"]
    for r in res["rows"]:
        assert r["train"]["combine"] == r["name"] and r["train"]["smart"] is False
        assert [s["seed"] for s in r["seeds"]] == [5, 6]
        for s in r["seeds"]:  # each seed an ordinary run of its own, its metrics those of its log
            run = run_dir_of(out, r["name"], s["seed"])
            assert s["run"] == str(run) and s["status"] == "finished" and s["steps"] == 3
            evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            assert [e["type"] for e in evals].count("start") == 1 and "resume" not in [e["type"] for e in evals]
            last_eval = [e for e in evals if e.get("type") == "eval"][-1]
            assert s["metrics"]["overall"] == pytest.approx(last_eval["overall"])
        for k in ("sst_acc", "para_acc", "sts_corr", "overall"):
            vals = [s["metrics"][k] for s in r["seeds"]]
            assert r["metrics"][k] == pytest.approx(sum(vals) / 2)
            assert r["std"][k] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
        assert r["seeds"][0]["metrics"] != r["seeds"][1]["metrics"]  # the seeds differ
    rows = {r["name"]: r for r in res["rows"]}
    # The plain sum leaves the update where it is; UPGrad moves it (its telemetry says how far).
    assert rows["sum"]["telemetry"]["update_cos"] == pytest.approx(1.0)
    assert rows["sum"]["telemetry"]["update_norm_ratio"] == pytest.approx(1.0)
    assert 0 <= rows["upgrad"]["telemetry"]["conflicting"] <= 1
    assert rows["upgrad"]["telemetry"]["update_cos"] < 1.0
    # The same seeds give the same data order for every row: the first step's losses agree.
    first = {name: [rec for rec in map(json.loads, (run_dir_of(out, name, 5) / "metrics.jsonl").read_text()
                                       .splitlines()) if rec["type"] == "train"][0] for name in rows}
    assert first["sum"]["loss"] == first["upgrad"]["loss"]
    # every metric's t interval over the seeds, and the paired comparison with the sum row
    ci = rows["upgrad"]["ci"]["overall"]
    assert ci["n"] == 2 and ci["lo"] <= rows["upgrad"]["metrics"]["overall"] <= ci["hi"]
    assert res["baseline"] == "sum" and "vs_baseline" not in rows["sum"]
    vs = rows["upgrad"]["vs_baseline"]["overall"]
    assert vs["replicates"] == 200 and vs["n_examples"] == {"sst": 16, "para": 16, "sts": 16}
    assert vs["diff"] == pytest.approx(rows["upgrad"]["metrics"]["overall"] - rows["sum"]["metrics"]["overall"])
    md = (out / "ablation.md").read_text()
    assert md.count("\n| ") == 5 and " ± " in md and "Conflicting pairs" in md and "Paper" not in md
    assert "**Against --combine sum**" in md and "p " in md
    assert "![task-conflict telemetry of one run](conflicts.svg)" in md
    svg = (out / "conflicts.svg").read_text()
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>") and "sst-para" in svg and "<polyline" in svg
    assert "conflicts.svg" in output and "cos(update, sum)" in output


def test_rows_of_another_table_are_refused(small_data_dir, tmp_path):
    r = CliRunner().invoke(main, ["ablate", "--data-dir", str(small_data_dir), "--out", str(tmp_path / "o"),
                                  "--table", "combiners", "--rows", "baseline"])
    assert r.exit_code == 2 and "baseline not in --table combiners" in r.output


@pytest.mark.slow
def test_weightings_table(tiny_bert_dir, small_data_dir, tmp_path):
    out = tmp_path / "out"
    cli = CliRunner().invoke(main, [
        "ablate", "--table", "weightings", "--rows", "none,uncertainty", "--data-dir", str(small_data_dir),
        "--out", str(out), "--pretrained", str(tiny_bert_dir), "--budget-steps", "2", "--budget-dev", "16",
        "--batch-size", "8", "--device", "cpu", "--precision", "fp32"])
    assert cli.exit_code == 0, cli.output + repr(cli.exception)
    res = json.loads((out / "ablation.json").read_text())
    rows = {r["name"]: r for r in res["rows"]}
    assert rows["uncertainty"]["train"]["combine"] == "sum" and rows["none"]["seeds"][0]["loss_weight"] is None
    weights = rows["uncertainty"]["seeds"][0]["loss_weight"]
    assert set(weights) == {"sst", "para", "sts"} and all(w > 0 for w in weights.values())
    md = (out / "ablation.md").read_text()
    assert "Final loss weights" in md and f"sst {weights['sst']:.2f}" in md


@pytest.mark.slow
def test_a_signal_during_the_pretraining_stops_the_ablation(tiny_bert_dir, small_data_dir, tmp_path):
    """SIGINT while the 'pretrain' row's further pretraining runs: it saves last/, the ablation ends
    there (no row trains on half a pretraining) with how to go on, and the same command goes on
    from that last/ and finishes."""
    import signal
    import time

    from .conftest import spawn

    out = tmp_path / "ab"
    args = ["ablate", "--data-dir", small_data_dir, "--out", out, "--encoder", tiny_bert_dir, "--rows",
            "baseline,pretrain", "--budget-steps", 2, "--pretrain-steps", 120, "--budget-dev", 16, "--precision", "fp32"]
    proc = spawn(*args)
    log = out / "pretrained-mlm" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and '"type": "train"' in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 130, stderr[-3000:]
    assert "ablation stopped in its further pretraining, at step" in stderr and "Traceback" not in stderr
    assert not (out / "runs").exists()  # no row trained
    assert json.loads((out / "pretrained-mlm" / "summary.json").read_text())["status"] == "stopped"
    again = spawn(*args)
    assert again.wait(300) == 0, again.stderr.read().decode()[-3000:]
    types = [json.loads(line)["type"] for line in log.read_text().splitlines()]
    assert types.count("start") == 1 and types.count("resume") == 1  # went on from its last/
    assert json.loads((out / "pretrained-mlm" / "summary.json").read_text())["step"] == 120
    res = json.loads((out / "ablation.json").read_text())
    assert [r["name"] for r in res["rows"]] == ["baseline", "pretrain"]
