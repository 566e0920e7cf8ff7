"""--report-to: TensorBoard events and CSV files carry the numbers of metrics.jsonl; the new dev metrics."""

from __future__ import annotations

import csv
import sys

import pytest
import torch
from click.testing import CliRunner

from bertmtl.cli import main
from bertmtl.inference.evaluate import binary_f1, spearman_rho
from bertmtl.sinks.metrics_log import read_records
from bertmtl.tasks import TASKS, overall_keys

from .fixtures import write_task_data


def test_spearman_rho_with_ties_and_binary_f1():
    # ranks of x with the tie averaged: 1, 2.5, 2.5, 4; of y: 1, 3, 2, 4
    x, y = torch.tensor([0.1, 0.5, 0.5, 0.9]), torch.tensor([1.0, 3.0, 2.0, 4.0])
    rx, ry = torch.tensor([1, 2.5, 2.5, 4]), torch.tensor([1.0, 3, 2, 4])
    rx, ry = rx - rx.mean(), ry - ry.mean()
    assert spearman_rho(x, y) == pytest.approx(((rx @ ry) / (rx.norm() * ry.norm())).item())
    assert spearman_rho(torch.tensor([3.0, 1, 2]), torch.tensor([30.0, 10, 20])) == pytest.approx(1.0)
    # 2 true positives, 1 false positive, 1 false negative: F1 = 4 / (4 + 2)
    pred, gold = torch.tensor([1.0, 1, 1, 0, 0]), torch.tensor([1.0, 1, 0, 1, 0])
    assert binary_f1(pred, gold) == pytest.approx(4 / 6)


def test_new_metrics_are_declared_but_overall_keeps_the_papers_score():
    assert TASKS["para"].metric_keys == ("para_acc", "para_f1")
    assert TASKS["sts"].metric_keys == ("sts_corr", "sts_spearman")
    assert overall_keys(TASKS.values()) == ["sst_acc", "para_acc", "sts_corr"]


@pytest.fixture(scope="module")
def reported_run(tiny_bert_dir, tmp_path_factory):
    pytest.importorskip("tensorboard")
    root = tmp_path_factory.mktemp("reports")
    data = write_task_data(root / "data")
    run = root / "run"
    r = CliRunner().invoke(main, ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data), "--out",
                                  str(run), "--max-steps", "4", "--eval-every", "2", "--log-every", "1",
                                  "--batch-size", "8", "--smart", "--precision", "fp32", "--report-to", "tensorboard",
                                  "--report-to", "csv"])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return run


def test_tensorboard_events_hold_the_logged_numbers(reported_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recs, _ = read_records(reported_run / "metrics.jsonl")
    train = [r for r in recs if r["type"] == "train"]
    evals = [r for r in recs if r["type"] == "eval"]
    ea = EventAccumulator(str(reported_run / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"loss/sst", "loss/para", "loss/sts", "smart/sst", "train/lr", "train/examples_per_s",
            "dev/sst_acc", "dev/para_f1", "dev/sts_spearman", "dev/overall"} <= tags

    def series(tag):
        return [(e.step, e.value) for e in ea.Scalars(tag)]

    assert series("loss/sts") == [(r["step"], pytest.approx(r["loss"]["sts"], rel=1e-6)) for r in train]
    assert series("smart/sst") == [(r["step"], pytest.approx(r["smart"]["sst"], rel=1e-6)) for r in train]
    assert series("train/lr") == [(r["step"], pytest.approx(r["lr"], rel=1e-6)) for r in train]
    assert [s for s, _ in series("dev/overall")] == [2, 4]
    assert series("dev/sts_spearman") == [(e["step"], pytest.approx(e["sts_spearman"], rel=1e-6)) for e in evals]
    assert series("dev/para_f1") == [(e["step"], pytest.approx(e["para_f1"], rel=1e-6)) for e in evals]
    # The default combiner (PCGrad) logs its task-conflict telemetry.
    assert {"cos/sst-para", "conflict/sst-sts", "grad_norm/sts", "weight/para", "conflict/pairs",
            "update/cos_to_sum", "update/norm_ratio"} <= tags
    assert series("cos/para-sts") == [(r["step"], pytest.approx(r["cos"]["para-sts"], rel=1e-6)) for r in train]
    assert series("update/norm_ratio") == [(r["step"], pytest.approx(r["update_norm_ratio"], rel=1e-6))
                                           for r in train]


def test_csv_files_hold_the_logged_numbers(reported_run):
    recs, _ = read_records(reported_run / "metrics.jsonl")
    with open(reported_run / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    train = [r for r in recs if r["type"] == "train"]
    assert [int(r["step"]) for r in rows] == [r["step"] for r in train] == [1, 2, 3, 4]
    assert [float(r["loss_sst"]) for r in rows] == pytest.approx([r["loss"]["sst"] for r in train])
    with open(reported_run / "eval.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    evals = [r for r in recs if r["type"] == "eval"]
    assert [float(r["overall"]) for r in rows] == pytest.approx([e["overall"] for e in evals])
    assert {"sst_acc", "sst_f1", "para_acc", "para_f1", "sts_corr", "sts_spearman"} <= set(rows[0])


def test_missing_tensorboard_is_a_clear_error(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    data = write_task_data(tmp_path / "data")
    r = CliRunner().invoke(main, ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data),
                                  "--out", str(tmp_path / "run"), "--max-steps", "1", "--report-to", "tensorboard"])
    assert r.exit_code == 2
    assert 'pip install -e ".[tensorboard]"' in r.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_unknown_report_destination_is_a_usage_error(tmp_path):
    r = CliRunner().invoke(main, ["train", "--report-to", "neptune", "--print-config"])
    assert r.exit_code == 2 and "neptune" in r.output and "tensorboard" in r.output and "wandb" in r.output


def test_tui_train_passes_repeated_report_to_and_runs_dir_to_the_child(tmp_path, monkeypatch, data_dir):
    import bertmtl.tui.app

    seen = {}
    monkeypatch.setattr(bertmtl.tui.app, "run_tui", lambda run, checkpoint, train_args, start_training, runs_root:
                        seen.update(run=run, argv=train_args, start=start_training))
    r = CliRunner().invoke(main, ["tui", "--train", "--report-to", "csv", "--report-to", "tensorboard",
                                  "--runs-dir", str(tmp_path / "runs"), "--lr", "1e-3", "--data-dir", str(data_dir)])
    assert r.exit_code == 0, r.output
    argv = seen["argv"]
    assert seen["start"] and "--out" not in argv  # the TUI gives the run its directory
    assert argv[argv.index("--report-to") + 1] == "csv" and argv.count("--report-to") == 2
    assert "tensorboard" in argv and argv[argv.index("--lr") + 1] == "0.001"
    assert seen["run"].parent == tmp_path / "runs"  # the new run lands under --runs-dir


def test_csv_widens_for_a_task_first_seen_late_and_across_a_resume(tmp_path):
    """With --sampling proportional a task may miss the first log window: its column still comes."""
    from bertmtl.sinks.csv import CsvSink

    r = CsvSink(tmp_path)
    r.on_record({"type": "train", "step": 10, "loss": {"para": 0.5}, "lr": 1e-4})
    r.on_record({"type": "train", "step": 20, "loss": {"para": 0.4, "sst": 1.5}, "lr": 1e-4})
    r.close()
    r = CsvSink(tmp_path, resume_step=20)
    r.on_record({"type": "train", "step": 30, "loss": {"para": 0.3, "sst": 1.4, "sts": 0.9}, "lr": 1e-4})
    r.close()
    with open(tmp_path / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["10", "20", "30"]
    assert [r["loss_sst"] for r in rows] == ["", "1.5", "1.4"] and rows[2]["loss_sts"] == "0.9"


@pytest.mark.slow
def test_mlflow_holds_params_metrics_and_the_best_checkpoint_and_a_resume_continues(tiny_bert_dir, data_dir, tmp_path,
                                                                                    monkeypatch):
    """--report-to mlflow into the default local store beside the run, read back through MLflow's
    own client; a run stopped and resumed is one MLflow run with every step."""
    mlflow = pytest.importorskip("mlflow")
    from .conftest import cli

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "runs" / "r"
    args = ["train", "--encoder", tiny_bert_dir, "--data-dir", data_dir, "--max-steps", 4, "--batch-size", 8,
            "--log-every", 1, "--eval-every", 2, "--precision", "fp32", "--no-smart", "--report-to", "mlflow",
            "--out", run]
    cli(*args, "--stop-at-step", 2)
    cli("train", "--resume", run)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bertmtl")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1  # the resume continued the same MLflow run
    r = runs[0]
    assert r.info.status == "FINISHED" and r.info.run_name == "r"
    assert r.data.params["lr"] == "0.0001" and r.data.params["max_steps"] == "4" and r.data.params["combine"] == "pcgrad"
    records = read_records(run / "metrics.jsonl")[0]
    train = [x for x in records if x["type"] == "train"]
    history = client.get_metric_history(r.info.run_id, "loss_sst")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    assert {m.step: m.value for m in history}[4] == pytest.approx(train[-1]["loss"]["sst"])
    last_eval = [x for x in records if x["type"] == "eval"][-1]
    assert r.data.metrics["dev_overall"] == pytest.approx(last_eval["overall"])
    best = [a.path for a in client.list_artifacts(r.info.run_id, "best")]
    assert "best/multitask.safetensors" in best and "best/bertmtl.json" in best


@pytest.mark.slow
def test_mlflow_groups_a_sweeps_trials_by_sweep(tiny_bert_dir, data_dir, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from bertmtl import TrainConfig, train

    store = tmp_path / "store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")  # honoured over the default
    train(TrainConfig(encoder=str(tiny_bert_dir), data_dir=str(data_dir), max_steps=2, batch_size=8,
                      precision="fp32", smart=False, report_to=["mlflow"], out=str(tmp_path / "t"),
                      sweep="lr-sweep/combine=sum-abc"))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    exp = client.get_experiment_by_name("lr-sweep")
    assert exp is not None and len(client.search_runs([exp.experiment_id])) == 1
    assert not (tmp_path / "mlflow.db").exists()


def test_missing_mlflow_is_a_clear_error(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    data = write_task_data(tmp_path / "data")
    r = CliRunner().invoke(main, ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data),
                                  "--out", str(tmp_path / "run"), "--max-steps", "1", "--report-to", "mlflow"])
    assert r.exit_code == 2 and 'pip install -e ".[mlflow]"' in r.output and "mlflow-skinny" in r.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_wandb_offline_run_holds_the_config_and_metrics_and_a_resume_continues(tiny_bert_dir, data_dir, tmp_path,
                                                                              monkeypatch):
    """Without a key, --report-to wandb writes an offline W&B run into RUN/wandb (for `wandb
    sync`); its records hold the configuration, the per-step and the dev metrics; the resumed run
    writes to the same W&B run id."""
    pytest.importorskip("wandb")
    from .conftest import cli

    for k in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "r"
    args = ["train", "--encoder", tiny_bert_dir, "--data-dir", data_dir, "--max-steps", 4, "--batch-size", 8,
            "--log-every", 1, "--eval-every", 2, "--precision", "fp32", "--no-smart", "--report-to", "wandb",
            "--out", run]
    cli(*args, "--stop-at-step", 2)
    cli("train", "--resume", run)
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2  # the first process and the resumed one
    ids = {p.name.split("-", 3)[3] for p in offline}  # offline-run-DATE_TIME-ID
    assert len(ids) == 1 and ids.pop().startswith("bertmtl-")  # one W&B run, continued
    data = b"".join(f.read_bytes() for p in offline for f in p.glob("run-*.wandb"))
    for needle in (b"loss_sst", b"dev_overall", b"combine", b"pcgrad", b"max_steps"):
        assert needle in data, needle


def test_missing_wandb_is_a_clear_error(tiny_bert_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    data = write_task_data(tmp_path / "data")
    r = CliRunner().invoke(main, ["train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data),
                                  "--out", str(tmp_path / "run"), "--max-steps", "1", "--report-to", "wandb"])
    assert r.exit_code == 2 and 'pip install -e ".[wandb]"' in r.output


def test_a_failing_tracking_destination_warns_once_and_never_stops_training(capsys):
    from bertmtl.sinks.records import GuardedSink

    class Broken(GuardedSink):
        label = "mlflow"
        calls = 0

        def _write(self, record):
            Broken.calls += 1
            raise ConnectionError("tracking server gone")

    sink = Broken()
    sink.on_record({"type": "train", "step": 1})
    sink.on_record({"type": "train", "step": 2})
    err = capsys.readouterr().err
    assert Broken.calls == 1 and err.count("warning: --report-to mlflow: ConnectionError") == 1
    assert "metrics.jsonl has it all" in err
