"""The ablation table on a tiny model and fixture data, with a budget of a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bertmtl.sweep.ablate import PAPER, ROWS, run_dir_of
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


def _rows(report: dict) -> dict:
    """The report's configurations by row name."""
    return {c["params"]["row"]: c for c in report["configurations"]}


@pytest.mark.slow
def test_the_table_is_the_sweep_report(ablation):
    """The rows ran as one Optuna study (its spec: rows over one base, and a report section), and
    the sweep's report is the table: titles, the paper's cells, budget, command, pretraining."""
    import optuna

    from bertmtl.sweep.spec import read_spec

    out, output = ablation
    spec = read_spec(out / "ablation-spec.json")
    assert list(spec.rows) == ["baseline", "pretrain", "final"] and spec.rows["final"]["combine"] == "pcgrad"
    assert spec.rows["baseline"]["tasks"] == ["sst"] and spec.rows["baseline"]["combine"] == "sum"
    assert spec.rows["final"]["smart"] is True and spec.rows["pretrain"]["encoder"] == str(out / "pretrained-mlm")
    assert spec.base["steps_per_epoch"] == 2 and spec.first_seed == 0 and spec.base["precision"] == "fp32"
    study = optuna.load_study(study_name="ablate-paper", storage=f"sqlite:///{out / 'study.db'}")
    assert sorted(t.params["row"] for t in study.trials if t.state.name == "COMPLETE") == ["baseline", "final", "pretrain"]

    report = json.loads((out / "report.json").read_text())
    rows = _rows(report)
    assert set(rows) == {"baseline", "pretrain", "final"}
    assert report["baseline"] is None  # the paper table's baseline row is multitask, not one of these
    for name, r in rows.items():
        s = {k: r["summary"][k]["mean"] for k in ("sst_acc", "para_acc", "sts_corr", "overall")}
        assert all(isinstance(v, float) for v in s.values()), r  # all three heads, even for the baseline
        assert s["overall"] == pytest.approx((s["sst_acc"] + s["para_acc"] + s["sts_corr"]) / 3)
        assert r["title"] == ROWS[name].title and r["training_s"] > 0
        run = Path(r["runs"][0])
        assert json.loads((run / "summary.json").read_text())["step"] == 2
        assert not (run / "last").exists() and not (run / "best").exists()  # weights removed unless --keep-checkpoints
    assert rows["final"]["reference"] == PAPER["final"] and rows["baseline"]["reference"] is None
    assert report["reference_label"] == "Paper" and report["title"].startswith("Ablation")
    notes = " ".join(report["notes"])
    assert "Budget: 2 steps per row" in notes and "dev: a fixed subset of 16 per task" in notes
    assert "Command: `bertmtl ablate" in notes and "--budget-steps 2" in notes
    assert "Further pretraining:" in notes and "(3 steps, the first 1 head-only;" in notes  # 2 after 1 head-only
    assert {"platform", "cpu_count", "torch"} <= set(report["machine"])

    md = (out / "report.md").read_text()
    table = [line for line in md.split("## Against")[0].splitlines() if line.startswith("| ")]
    assert len(table) == 4  # header + three rows
    assert " | Paper SST acc | " in table[0] and table[0].endswith(" | Training time |")
    assert "0.514" in md and "0.677" in md and "—" in md and "not invented" in md
    assert ROWS["final"].title in md and "Budget: 2 steps per row" in md
    assert "0.514" in output and "Budget: 2 steps per row" in output  # the Rich table, ours (paper)


@pytest.mark.slow
def test_rerun_continues_and_other_options_need_overwrite(ablation, tiny_bert_dir, small_data_dir):
    out, _ = ablation
    r = CliRunner().invoke(main, ["ablate", "--data-dir", str(small_data_dir), "--out", str(out), "--rows", "baseline",
                                  "--pretrained", str(tiny_bert_dir)])
    assert r.exit_code == 2 and "--overwrite" in r.output and "other rows or options" in r.output
    # The same command again: the study is done, nothing trains again, the table is the same.
    before = json.loads((out / "report.json").read_text())
    logs = {run: (Path(run) / "metrics.jsonl").read_text() for c in before["configurations"] for run in c["runs"]}
    r = CliRunner().invoke(main, ABLATION_ARGS(out, tiny_bert_dir, small_data_dir))
    assert r.exit_code == 0, r.output + repr(r.exception)
    after = json.loads((out / "report.json").read_text())
    assert [c["summary"] for c in after["configurations"]] == [c["summary"] for c in before["configurations"]]
    assert {run: (Path(run) / "metrics.jsonl").read_text() for run in logs} == logs  # no run trained again
    # The finished pretraining was kept: the same run, its time read from its own log again.
    assert [n for n in after["notes"] if n.startswith("Further")] == [n for n in before["notes"] if n.startswith("Further")]


def test_rows_option():
    assert parse_rows("final, baseline") == ["baseline", "final"]
    r = CliRunner().invoke(main, ["ablate", "--rows", "baseline,smart"])
    assert r.exit_code == 2 and "unknown row(s) smart" in r.output


def test_the_report_marks_missing_paper_cells():
    from bertmtl.sweep.report import markdown

    summary = {k: {"n": 1, "mean": v, "sd": None, "lo": None, "hi": None}
               for k, v in {"sst_acc": 0.5, "para_acc": 0.7, "sts_corr": 0.6, "overall": 0.6}.items()}
    row = {"config": "row=multitask", "params": {"row": "multitask"}, "seeds": [0], "summary": summary,
           "baseline": False, "title": ROWS["multitask"].title, "training_s": 3.0, "reference": None}
    report = {"sweep": "ablate-paper", "metrics": [("sst_acc", "SST acc"), ("para_acc", "Quora acc"),
                                                   ("sts_corr", "STS r"), ("overall", "Overall")],
              "configurations": [row], "baseline": None, "expected_seeds": [0], "reference_label": "Paper",
              "title": "Ablation", "notes": ["Budget: 10 steps per row."], "machine": {"cpu_count": 2}}
    md = markdown(report)
    line = [x for x in md.splitlines() if x.startswith("| Simple")][0]
    assert line.count("—") == 4 and "0.500" in line and "3 s" in line
    assert "Notes: Budget: 10 steps per row." in md and "Machine: cpu_count 2." in md


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
    report = json.loads((out / "report.json").read_text())
    rows = _rows(report)
    assert [c["params"]["row"] for c in report["configurations"]] == ["sum", "upgrad"]  # the baseline first
    assert report["expected_seeds"] == [5, 6] and "2 seeds (5-6; mean ± sd)" in " ".join(report["notes"])
    for name, r in rows.items():
        assert r["seeds"] == [5, 6]
        values = {k: [] for k in ("sst_acc", "para_acc", "sts_corr", "overall")}
        for seed, run in zip(r["seeds"], r["runs"]):  # each seed an ordinary run of its own, its metrics its log's
            assert run == str(run_dir_of(out, name, seed))
            records = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
            assert [e["type"] for e in records].count("start") == 1 and "resume" not in [e["type"] for e in records]
            start = records[0]["config"]
            assert start["combine"] == name and start["smart"] is False and start["seed"] == seed
            last_eval = [e for e in records if e.get("type") == "eval"][-1]
            for k in values:
                values[k].append(last_eval[k])
        for k, vals in values.items():
            assert r["summary"][k]["mean"] == pytest.approx(sum(vals) / 2)
            assert r["summary"][k]["sd"] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
        assert values["overall"][0] != values["overall"][1] or values["sst_acc"][0] != values["sst_acc"][1]  # seeds differ
    # The plain sum leaves the update where it is; UPGrad moves it (its telemetry says how far).
    assert rows["sum"]["telemetry"]["update_cos"]["mean"] == pytest.approx(1.0)
    assert rows["sum"]["telemetry"]["update_norm_ratio"]["mean"] == pytest.approx(1.0)
    assert 0 <= rows["upgrad"]["telemetry"]["conflicting"]["mean"] <= 1
    assert rows["upgrad"]["telemetry"]["update_cos"]["mean"] < 1.0
    # The same seeds give the same data order for every row: the first step's losses agree.
    first = {name: [rec for rec in map(json.loads, (run_dir_of(out, name, 5) / "metrics.jsonl").read_text()
                                       .splitlines()) if rec["type"] == "train"][0] for name in rows}
    assert first["sum"]["loss"] == first["upgrad"]["loss"]
    # every metric's t interval over the seeds, and the paired comparison with the sum row
    ci = rows["upgrad"]["summary"]["overall"]
    assert ci["n"] == 2 and ci["lo"] <= ci["mean"] <= ci["hi"]
    assert rows["sum"]["baseline"] and rows["sum"]["vs_baseline"] is None
    vs = rows["upgrad"]["vs_baseline"]["overall"]
    assert vs["replicates"] == 200 and vs["n_examples"] == {"sst": 16, "para": 16, "sts": 16}
    assert vs["diff"] == pytest.approx(ci["mean"] - rows["sum"]["summary"]["overall"]["mean"])
    md = (out / "report.md").read_text()
    table = [line for line in md.split("## Against")[0].splitlines() if line.startswith("| ")]
    assert len(table) == 3 and " ± " in md and "Conflicting pairs" in md and "Paper" not in md  # header, two rows
    assert "## Against the baseline" in md and "p " in md and "--combine sum (baseline)" in md
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
    rows = _rows(json.loads((out / "report.json").read_text()))
    start = json.loads((Path(rows["uncertainty"]["runs"][0]) / "metrics.jsonl").read_text().splitlines()[0])
    assert start["config"]["combine"] == "sum" and rows["none"]["loss_weight"] is None
    weights = rows["uncertainty"]["loss_weight"]
    assert set(weights) == {"sst", "para", "sts"} and all(w > 0 for w in weights.values())
    md = (out / "report.md").read_text()
    assert "Final loss weights" in md and f"sst {weights['sst']:.2f}" in md
