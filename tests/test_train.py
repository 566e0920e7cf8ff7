"""End to end on fixture data with a tiny BERT: train, evaluate, checkpoints, metrics, resume."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from bertmtl.cli import main
from bertmtl.sinks.metrics_log import read_records
from .conftest import cli


FAST = ["--batch-size", "16", "--log-every", "2", "--seed", "0"]


@pytest.fixture(scope="module")
def trained_run(tiny_bert_dir, data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "run"
    cli("train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir), "--out", str(run),
        "--epochs", "2", "--lr", "1e-3", "--smart", *FAST)
    return run


def test_run_layout_and_metrics_log(trained_run):
    for sub in ("best", "last"):
        for f in ("bertmtl.json", "multitask.safetensors", "config.json", "heads.json", "train_args.json",
                  "metrics.json", "vocab.txt"):
            assert (trained_run / sub / f).is_file(), (sub, f)
    assert (trained_run / "last" / "optimizer.safetensors").is_file()
    assert not (trained_run / "best" / "optimizer.safetensors").exists()
    recs, _ = read_records(trained_run / "metrics.jsonl")
    types = [r["type"] for r in recs]
    assert types[0] == "start" and types[-1] == "end"
    start = recs[0]
    assert start["steps_per_epoch"] == 6 and start["total_steps"] == 12  # 96 examples / 16, 2 epochs
    assert start["skipped"] and list(start["skipped"].values()) == [1]  # the stray-quote row, counted
    train = [r for r in recs if r["type"] == "train"]
    assert [r["step"] for r in train] == [2, 4, 6, 8, 10, 12]
    assert set(train[0]["loss"]) == {"sst", "para", "sts"} and set(train[0]["smart"]) == {"sst", "para", "sts"}
    assert train[0]["smart"]["para"] == 0.0 and train[0]["smart"]["sst"] > 0  # paper weights: para off
    evals = [r for r in recs if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [6, 12]
    best = max(evals, key=lambda r: r["overall"])
    saved = json.loads((trained_run / "best" / "metrics.json").read_text())
    assert saved["overall"] == pytest.approx(best["overall"])
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["skipped_rows"] == 1


def test_evaluate_json_reproduces_saved_metrics(trained_run, data_dir):
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(trained_run), "--data-dir", str(data_dir), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output.strip().splitlines()[-1])
    saved = json.loads((trained_run / "best" / "metrics.json").read_text())
    for k in ("sst_acc", "sst_f1", "para_acc", "sts_corr", "overall"):
        assert got[k] == pytest.approx(saved[k], abs=1e-6), k
    assert got["sst_n"] == 32 and got["para_n"] == 32 and got["sts_n"] == 32
    assert got["overall"] == pytest.approx((got["sst_acc"] + got["para_acc"] + got["sts_corr"]) / 3)


def test_evaluate_table_and_test_predictions(trained_run, data_dir, tmp_path):
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(trained_run / "best"), "--data-dir", str(data_dir)])
    assert r.exit_code == 0 and "SST accuracy" in r.output and "overall" in r.output
    partial = tmp_path / "data"  # the shared data with one test file missing
    shutil.copytree(data_dir, partial)
    (partial / "quora-test-student.csv").unlink()
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(trained_run), "--data-dir", str(partial),
                                  "--split", "test", "--write-predictions", str(tmp_path / "pred")])
    assert r.exit_code == 0, r.output
    assert "quora-test-student.csv not found: no Quora predictions" in r.output
    sst = (tmp_path / "pred" / "sst-test-output.csv").read_text().splitlines()
    assert sst[0] == "id,Predicted_Sentiment" and len(sst) == 33
    assert all(line.split(",")[1] in "01234" for line in sst[1:])
    sts = (tmp_path / "pred" / "sts-test-output.csv").read_text().splitlines()
    assert all(0.0 <= float(line.split(",")[1]) <= 5.0 for line in sts[1:])
    assert not (tmp_path / "pred" / "para-test-output.csv").exists()


@pytest.mark.slow
def test_learns_the_fixture_tasks(tiny_bert_dir, data_dir, tmp_path):
    """The synthetic tasks are learnable: a few epochs lift every metric well above chance."""
    run = tmp_path / "learn"
    cli("train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir), "--out", str(run),
        "--epochs", "8", "--lr", "3e-3", "--no-smart", "--dropout", "0", *FAST)
    m = json.loads((run / "best" / "metrics.json").read_text())
    assert m["para_acc"] > 0.75 and m["sts_corr"] > 0.7 and m["sst_acc"] > 0.35, m


@pytest.mark.slow
def test_resume_equals_uninterrupted(tiny_bert_dir, data_dir, tmp_path):
    common = ["--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir), "--epochs", "2", "--lr", "1e-3",
              "--combine", "pcgrad", "--smart", "--layer-decay", "0.8", *FAST]
    cli("train", *common, "--out", str(tmp_path / "a"))
    cli("train", *common, "--out", str(tmp_path / "b"), "--stop-at-step", "4", "--save-every", "2")
    assert json.loads((tmp_path / "b" / "last" / "bertmtl.json").read_text())["step"] == 4
    # Another --layer-decay would regroup the parameters: refused with a reason, nothing written.
    r = CliRunner().invoke(main, ["train", "--resume", str(tmp_path / "b"), "--layer-decay", "1"])
    assert r.exit_code == 2 and "--layer-decay cannot change" in r.output and "0.8" in r.output, r.output
    cli("train", "--resume", str(tmp_path / "b"), "--stop-at-step", "12")
    a = load_file(str(tmp_path / "a" / "last" / "multitask.safetensors"))
    b = load_file(str(tmp_path / "b" / "last" / "multitask.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    types = [r["type"] for r in read_records(tmp_path / "b" / "metrics.jsonl")[0]]
    assert types.count("resume") == 1 and types.count("end") == 2


def test_existing_run_dir_is_not_overwritten(trained_run, tiny_bert_dir, data_dir):
    r = CliRunner().invoke(main, ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data_dir),
                                  "--out", str(trained_run)])
    assert r.exit_code == 2 and "already holds a run" in r.output and "--resume" in r.output


@pytest.mark.parametrize("args, msg", [
    (["--tasks", "nli"], "unknown task"),
    (["--lr", "-1"], "Invalid value for '--lr'"),
    (["--combine", "gradnorm"], "Invalid value for '--combine'"),
    (["--smart-weights", "sst:1"], "expected task=weight"),
])
def test_bad_options_are_usage_errors(args, msg):
    r = CliRunner().invoke(main, ["train", *args])
    assert r.exit_code == 2 and msg in r.output and "Traceback" not in r.output
