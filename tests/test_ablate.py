"""The ablation table on a tiny model and fixture data, with a budget of a few steps."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bertmtl.ablate import PAPER, ROWS, markdown
from bertmtl.configs import parse_rows
from bertmtl.cli import main



@pytest.fixture(scope="module")
def ablation(tiny_bert_dir, small_data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation") / "out"
    args = ["ablate", "--data-dir", str(small_data_dir), "--out", str(out), "--pretrained", str(tiny_bert_dir),
            "--rows", "final,baseline,pretrain", "--budget-steps", "2", "--pretrain-steps", "2", "--budget-dev", "16",
            "--batch-size", "8", "--seed", "0", "--device", "cpu", "--precision", "fp32"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    return out, r.output


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
        assert (out / "runs" / r["name"] / "summary.json").is_file()
        assert not (out / "runs" / r["name"] / "last").exists()  # weights removed unless --keep-checkpoints
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


def test_rerun_needs_overwrite(ablation, tiny_bert_dir, small_data_dir):
    out, _ = ablation
    r = CliRunner().invoke(main, ["ablate", "--data-dir", str(small_data_dir), "--out", str(out), "--rows", "baseline",
                                  "--pretrained", str(tiny_bert_dir)])
    assert r.exit_code == 2 and "--overwrite" in r.output


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
