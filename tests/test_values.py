"""Non-finite and out-of-range values are refused before any work, and undefined dev metrics are
reported as undefined (None, with a warning) and kept out of comparisons (issue #16)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner

from bertmtl.cli import main
from bertmtl.errors import UserError
from bertmtl.inference.evaluate import evaluate, overall, task_metrics
from bertmtl.sinks.metrics_log import read_records
from bertmtl.tasks import BUILTIN, TASKS
from bertmtl.configuration.options import SEED_MAX, number_problem
from bertmtl.configuration.train_config import TrainConfig

from .conftest import cli
from .fixtures import write_task_data

STS, SST = TASKS["sts"], TASKS["sst"]


def _refused(r, *words):
    """Exit 2 with `Error: ...` naming what is wrong; no traceback."""
    assert r.exit_code == 2, r.output + repr(r.exception)
    assert isinstance(r.exception, SystemExit) and "Traceback" not in r.output
    assert "Error:" in r.output and all(w in r.output for w in words), r.output


# -- numeric options ---------------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (["train", "--clip", "nan"], "--clip"),
    (["train", "--epochs", "inf"], "--epochs"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--smart-noise", "-inf"], "--smart-noise"),
    (["train", "--seed", str(2**63 + 5)], "--seed"),
    (["train", "--seed", "-1"], "--seed"),
    (["pretrain", "--epochs", "inf"], "--epochs"),
    (["pretrain", "--mask-prob", "nan"], "--mask-prob"),
    (["pretrain", "--seed", str(2**64)], "--seed"),
    (["augment", "--aug-p", "nan"], "--aug-p"),
    (["ablate", "--lr", "inf"], "--lr"),
    (["ablate", "--epochs", "nan"], "--epochs"),
    (["train", "--lr", "1e39"], "--lr"),  # finite in Python, inf in float32
    (["train", "--weight-decay", "-1e39"], "--weight-decay"),
    (["train", "--smart-steps", str(2**64)], "--smart-steps"),  # would never end a step
    (["train", "--mlp-hidden", str(10**11)], "--mlp-hidden"),  # terabytes
])
def test_non_finite_and_out_of_range_options_are_usage_errors(tmp_path, args, option):
    # --data-dir does not exist: a refusal must come from the option, before any file is read
    _refused(cli(*args, "--data-dir", str(tmp_path / "none"), code=None), option)


def test_config_file_and_weight_values_are_checked(tmp_path):
    for text, words in (("clip: .nan\n", ["clip must be a finite number"]),
                        ("epochs: .inf\n", ["epochs must be a finite number"]),
                        (f"seed: {2**63 + 5}\n", ["seed must be <= 9223372036854775807"]),
                        ("loss_weights: {sts: .nan}\n", ["--loss-weights sts: must be a finite number"]),
                        ("loss_weights: {sts: 1.0e+39}\n", ["--loss-weights sts: must be at most"]),
                        ("tasks: [1, 2]\n", ["tasks: every item must be text, not 1"]),
                        ("task: [{a: 1}]\n", ["task: every item must be text"]),
                        ("report_to: [[csv]]\n", ["--report-to: every item must be text"])):
        (tmp_path / "c.yaml").write_text(text)
        _refused(cli("train", "--config", str(tmp_path / "c.yaml"), "--data-dir", str(tmp_path / "none"), code=None), *words)
    _refused(cli("train", "--smart-weights", "sst=-1", "--print-config", code=None), "--smart-weights sst: must be >= 0")


def test_the_one_number_rule_serves_python_callers():
    from bertmtl.sweep.ablate import ablate
    from bertmtl.configuration.configs import AblateConfig, AugmentConfig
    from bertmtl.training.pretrain import pretrain_config

    assert number_problem(float("nan"), min=0) == "must be a finite number"
    assert number_problem(float("inf"), min=0, min_open=True) == "must be a finite number"
    assert number_problem(0, min=0, min_open=True) == "must be > 0" and number_problem(1.0, max=1) is None
    for bad, msg in (({"clip": float("nan")}, "clip must be a finite number"),
                     ({"seed": SEED_MAX + 1}, "seed must be <="), ({"seed": -3}, "seed must be >= 0")):
        with pytest.raises(UserError, match=msg):
            TrainConfig(**bad).validate()
    TrainConfig(seed=SEED_MAX).validate()
    for bad, msg in (({"clip": float("nan")}, "clip must be a finite number"),
                     ({"epochs": float("inf")}, "epochs must be a finite number"), ({"lr": 0.0}, "lr must be > 0"),
                     ({"mask_prob": 1.0}, "mask_prob must be < 1")):
        with pytest.raises(UserError, match=msg):
            pretrain_config(**bad).validate()
    with pytest.raises(UserError, match="aug_p must be <= 1"):
        AugmentConfig(aug_p=1.5).validate()
    with pytest.raises(UserError, match="lr must be a finite number"):
        ablate(AblateConfig(lr=float("nan")))
    with pytest.raises(UserError, match="rows has unknown value.s. smart; choose from baseline"):
        ablate(AblateConfig(rows=["baseline", "smart"]))  # a Python caller's row list is checked too
    with pytest.raises(UserError, match="pcgrad not in --table paper; its rows: baseline"):
        ablate(AblateConfig(rows=["baseline", "pcgrad"]))  # a row of the other table


def test_the_largest_seed_draws_batches():
    """Seeds are mixed with task and pass numbers before seeding a generator (reduced modulo 2**63)."""
    from bertmtl.data.batching import RoundRobin

    class Fake:  # what RoundRobin reads of a dataset
        def __init__(self, spec):
            self.task, self.lengths = spec, [3, 5, 4, 2, 6, 7]

    rr = RoundRobin({"sst": Fake(SST), "sts": Fake(STS)}, 2, SEED_MAX, bucket=True)
    assert rr.steps_per_epoch() == 3 and rr.tasks_at(0)
    assert RoundRobin({"sst": Fake(SST)}, 2, 7)._batches("sst", 0) == \
        RoundRobin({"sst": Fake(SST)}, 2, 7)._batches("sst", 0)


# -- sizes in config.json and heads.json ---------------------------------------------------------

BAD_SIZES = [("num_attention_heads", 0), ("hidden_size", -32), ("intermediate_size", 0), ("vocab_size", -1),
             ("num_hidden_layers", 1.5), ("max_position_embeddings", -4), ("layer_norm_eps", 0),
             ("hidden_size", 30)]  # 30 is no multiple of 4 heads


def _set_json(path, **values):
    d = json.loads(path.read_text())
    d.update(values)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("field, value", BAD_SIZES)
def test_encoder_dir_with_bad_sizes_is_refused(tiny_bert_dir, tmp_path, field, value):
    enc = tmp_path / "enc"
    shutil.copytree(tiny_bert_dir, enc)
    _set_json(enc / "config.json", **{field: value})
    data = write_task_data(tmp_path / "data", n_train=16, n_dev=4)
    r = cli("train", "--encoder", str(enc), "--data-dir", str(data), "--out", str(tmp_path / "run"),
            "--max-steps", "1", "--device", "cpu", code=None)
    _refused(r, str(enc / "config.json"), field)


@pytest.fixture
def checkpoint(trained_run):
    return trained_run / "best"


@pytest.mark.parametrize("field, value", BAD_SIZES[:4])
def test_checkpoint_with_bad_sizes_is_refused(checkpoint, tmp_path, field, value):
    ck = tmp_path / "ck"
    shutil.copytree(checkpoint, ck)
    _set_json(ck / "config.json", **{field: value})
    _refused(cli("predict", "--checkpoint", str(ck), "a fine movie", code=None), str(ck / "config.json"), field)


@pytest.mark.parametrize("field, value", [("mlp_hidden", 0), ("mlp_hidden", 2.5), ("dropout", float("nan")),
                                          ("dropout", 1.5), ("mlp_hidden", 10**19)])
def test_checkpoint_with_bad_heads_json_is_refused(checkpoint, tmp_path, field, value):
    ck = tmp_path / "ck"
    shutil.copytree(checkpoint, ck)
    _set_json(ck / "heads.json", **{field: value})
    _refused(cli("predict", "--checkpoint", str(ck), "a fine movie", code=None), str(ck / "heads.json"), field)


@pytest.mark.parametrize("field, value, words", [
    ("step", -3, "step must be a whole number >= 0"), ("step", "x", "step must be a whole number >= 0"),
    ("best", float("nan"), "best must be a finite number or null"),  # would keep best/ stale for ever
    ("since_best", -1, "since_best must be a whole number >= 0"), ("data", None, "data is missing")])
def test_resume_refuses_damaged_trainer_state(checkpoint, tmp_path, field, value, words):
    run = tmp_path / "run"
    shutil.copytree(checkpoint.parent, run)
    (run / ".writer.lock").unlink(missing_ok=True)
    _set_json(run / "last" / "trainer_state.json", **{field: value})
    _refused(cli("train", "--resume", str(run), "--max-steps", "9", code=None), str(run / "last" / "trainer_state.json"), words)


def test_export_model_card_survives_hand_edited_metadata(checkpoint, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(checkpoint, ck)
    _set_json(ck / "bertmtl.json", epoch="x")
    _set_json(ck / "metrics.json", sst_acc="abc")
    r = cli("export", str(ck), "--format", "hf", "--out", str(tmp_path / "e"), code=None)
    assert r.exit_code == 0, r.output
    card = (tmp_path / "e" / "README.md").read_text()
    assert "epoch 'x'" in card and "'abc'" in card


def test_declared_task_values_follow_the_same_rule(tmp_path):
    """Task declarations: weights and ranges finite in float32, labels valid text; a target
    beyond float32 is a skipped row, not a range that overflows the head."""
    from bertmtl.tasks.files import read_task_file
    from bertmtl.tasks.declared import build_spec

    rows = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "score": i % 5} for i in range(12)]
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {"sentence1": "a", "sentence2": "b", "score": 1e39}]))
    spec = build_spec({"name": "x", "kind": "pair-regression", "train": str(big)})
    assert spec.value_range == (0.0, 4.0)
    f = read_task_file(big, spec)
    assert len(f.examples) == 12 and "is not finite (in float32)" in f.skipped[0].reason
    for extra, words in (({"range": [0, 1e39]}, "value_range must be at most"),
                         ({"smart_weight": math.inf}, "smart_weight must be a finite number"),
                         ({"loss_weight": 1e39}, "loss_weight must be at most")):
        with pytest.raises(UserError, match=words):
            build_spec({"name": "x", "kind": "pair-regression", "train": str(big), **extra})
    sur = tmp_path / "sur.jsonl"
    sur.write_text("".join(json.dumps({"text": f"movie {i}", "label": "\udfff" if i % 2 else "a"}) + "\n"
                           for i in range(10)))
    with pytest.raises(UserError, match=r"label '\\udfff' is not valid Unicode text"):
        build_spec({"name": "y", "kind": "classification", "train": str(sur)})


# -- undefined metrics ----------------------------------------------------------------------------

def test_metric_undefined_by_the_data_is_left_out_of_overall():
    for gold in (torch.tensor([2.0]), torch.tensor([3.0, 3.0, 3.0])):  # one pair; all labels equal
        undefined = {}
        m = task_metrics(STS, torch.tensor([1.0, 2.0, 4.0])[:len(gold)], gold, undefined)
        assert m["sts_corr"] is None and m["sts_spearman"] is None and m["sts_n"] == len(gold)
        assert undefined["sts_corr"]["cause"] == "data"
        m.update({"sst_acc": 0.5, "para_acc": 0.7})
        assert overall(m, BUILTIN, undefined) == pytest.approx(0.6)  # the mean of the defined tasks
    assert overall({"sts_corr": None}, BUILTIN, {"sts_corr": {"cause": "data", "reason": ""}}) is None


def test_metric_undefined_by_the_model_leaves_no_overall():
    undefined = {}
    m = task_metrics(STS, torch.tensor([2.5, 2.5, 2.5]), torch.tensor([1.0, 2.0, 4.0]), undefined)  # constant
    assert m["sts_corr"] is None and undefined["sts_corr"]["cause"] == "model"
    probs = torch.tensor([[0.2, 0.2, 0.2, 0.2, 0.2], [float("nan")] * 5])  # NaN logits: no argmax to trust
    m.update(task_metrics(SST, probs, torch.tensor([0, 1]), undefined))
    assert m["sst_acc"] is None and m["sst_f1"] is None and undefined["sst_acc"]["cause"] == "model"
    m["para_acc"] = 0.9
    assert overall(m, BUILTIN, undefined) is None


def _write_dev(path, rows):
    path.write_text("\tid\tsentence1\tsentence2\tsimilarity\n" +
                    "".join(f"{i}\ts{i}\t{a}\t{b}\t{y}\n" for i, (a, b, y) in enumerate(rows)))


def test_training_with_one_sts_dev_pair_warns_and_scores_the_other_tasks(tiny_bert_dir, small_data_dir, tmp_path):
    dev = tmp_path / "sts-one.csv"
    _write_dev(dev, [("a man plays guitar", "a man is playing", "4.0")])
    run = tmp_path / "run"
    r = cli("train", "--encoder", str(tiny_bert_dir), "--data-dir", str(small_data_dir), "--out", str(run),
            "--sts-dev", str(dev), "--max-steps", "2", "--eval-every", "1", "--batch-size", "16",
            "--device", "cpu", "--precision", "fp32", code=None)
    assert r.exit_code == 0, r.output + repr(r.exception)
    # one warning naming the task, the metric and why, though evaluated twice
    assert r.output.count("warning: STS Pearson r is undefined: 1 dev example(s)") == 1, r.output
    assert "left out of overall" in r.output and "STS r undefined" in r.output
    evals = [x for x in read_records(run / "metrics.jsonl")[0] if x["type"] == "eval"]
    assert len(evals) == 2
    for e in evals:
        assert e["sts_corr"] is None and e["undefined"]["sts_corr"]["cause"] == "data"
        assert e["overall"] == pytest.approx((e["sst_acc"] + e["para_acc"]) / 2)
    assert json.loads((run / "best" / "metrics.json").read_text())["sts_corr"] is None


def test_evaluate_reports_all_equal_labels_as_undefined(checkpoint, small_data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_data_dir, data)
    _write_dev(data / "sts-dev.csv", [("a man plays guitar", "a man is playing", "2.0"),
                                      ("the dog runs", "a cat eats", "2.0"), ("good movie", "bad film", "2.0")])
    r = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(checkpoint), "--data-dir", str(data), "--json"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "warning: STS Pearson r is undefined: all 3 gold labels are equal (2)" in r.output
    result = json.loads(r.output.splitlines()[-1])
    assert result["sts_corr"] is None and result["sts_spearman"] is None and result["sts_n"] == 3
    assert result["overall"] == pytest.approx((result["sst_acc"] + result["para_acc"]) / 2)
    table = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(checkpoint), "--data-dir", str(data)])
    assert table.exit_code == 0 and "undefined" in table.output


def test_non_finite_model_output_leaves_no_overall(checkpoint, small_data_dir):
    from bertmtl.runs.checkpoint import load_checkpoint
    from bertmtl.data.batching import TaskDataset
    from bertmtl.tasks.files import read_task_file, task_path

    ck = load_checkpoint(checkpoint)
    datasets = {s.name: TaskDataset(s, read_task_file(task_path(small_data_dir, s, "dev"), s, labelled=True).examples,
                                    ck.tokenizer, ck.model.cfg.pair_mode) for s in BUILTIN}
    assert math.isfinite(evaluate(ck.model, datasets)["overall"])
    with torch.no_grad():
        for p in getattr(ck.model, "sst").parameters():
            p.fill_(float("nan"))
    m = evaluate(ck.model, datasets)
    assert m["overall"] is None and m["sst_acc"] is None and m["sst_f1"] is None
    assert m["para_acc"] is not None and m["undefined"]["sst_acc"]["cause"] == "model"


def test_consumers_cope_with_undefined_metrics(tmp_path):
    from bertmtl.runs.progress import PlainReporter, format_metrics
    from bertmtl.sinks.csv import CsvSink
    from bertmtl.runs.catalog import run_info

    rec = {"type": "eval", "step": 2, "sst_acc": 0.5, "para_acc": 0.7, "sts_corr": None, "overall": 0.6,
           "undefined": {"sts_corr": {"cause": "data", "reason": "1 dev example(s); a correlation needs at least 2"}}}
    assert "STS r undefined" in format_metrics(rec) and "overall 0.600" in format_metrics(rec)
    import io

    out = io.StringIO()
    rep = PlainReporter(out)
    rep.evaluation(rec)
    rep.evaluation(rec)
    assert out.getvalue().count("warning: STS Pearson r is undefined") == 1
    csv_report = CsvSink(tmp_path)
    csv_report.on_record(rec)
    csv_report.close()
    assert "sts_corr" not in (tmp_path / "eval.csv").read_text().splitlines()[0]  # no number, no column
    # `bertmtl runs`: an evaluation without overall (or an older run's NaN) is never the best
    log = [{"type": "start", "config": {}, "time": 1.0},
           {"type": "eval", "step": 1, "overall": 0.4, "sts_corr": 0.1},
           {"type": "eval", "step": 2, "overall": None, "sts_corr": None},
           {"type": "eval", "step": 3, "overall": float("nan")}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log))
    assert run_info(tmp_path)["best_step"] == 1
