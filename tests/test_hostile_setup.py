"""A hostile set-up gets one clear line before anything is spent: unusable --report-to stores,
damaged encoder weights, labels with nothing to learn, options of a method not chosen, weights
that train nothing, empty names, and outputs that are dangling links."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from .conftest import cli


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The CS224N files without a broken row: nothing to warn about before what a test checks."""
    from .fixtures import write_task_data

    return write_task_data(tmp_path_factory.mktemp("data"), n_train=32, n_dev=16, broken_rows=False)


def _train(data, encoder, *more):
    """A two-step training command (its --out or --runs-dir among `more`)."""
    return ("train", "--data-dir", data, "--encoder", encoder, "--max-steps", 2, "--batch-size", 4,
            "--dev-limit", 8, "--precision", "fp32", *more)


def _one_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return lines[0]


def _no_run_under(root: Path) -> bool:
    return not root.exists() or not any(p.is_dir() for p in root.iterdir())


# -- --report-to destinations are checked before the run exists ----------------------------------

@pytest.mark.slow
def test_a_garbage_mlflow_tracking_uri_is_one_line_and_leaves_no_run(tiny_bert_dir, data, tmp_path):
    pytest.importorskip("mlflow")
    root = tmp_path / "runs"
    r = cli(*_train(data, tiny_bert_dir, "--runs-dir", root, "--report-to", "mlflow"), code=2,
            env={"MLFLOW_TRACKING_URI": "garbage://nowhere"})
    line = _one_line(r)
    assert line.startswith("Error: --report-to mlflow: cannot use the tracking store garbage://nowhere "
                           "($MLFLOW_TRACKING_URI): "), line
    assert "unsupported URI 'garbage://nowhere'" in line
    assert _no_run_under(root)
    assert "no runs" in cli("runs", "--runs-dir", root).output.lower()


def test_an_unreachable_mlflow_server_is_refused_at_once(tiny_bert_dir, data, tmp_path):
    """A closed port: one line naming the store and the cause, exit 2, no run left (the store is asked
    once, not with MLflow's seven retries and back-off: sinks/mlflow.PROBE_ENV)."""
    pytest.importorskip("mlflow")
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "runs" / "run", "--report-to", "mlflow"),
            code=2, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"})
    line = _one_line(r)
    assert line.startswith("Error: --report-to mlflow: cannot use the tracking store http://127.0.0.1:1 "
                           "($MLFLOW_TRACKING_URI): ") and "Connection refused" in line, line
    assert _no_run_under(tmp_path / "runs")


def test_an_unknown_wandb_mode_is_refused_before_the_run(tiny_bert_dir, data, tmp_path):
    pytest.importorskip("wandb")
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "runs" / "run", "--report-to", "wandb"),
            code=2, env={"WANDB_MODE": "sometimes", "WANDB_SILENT": "true"})
    assert _one_line(r) == ("Error: --report-to wandb: WANDB_MODE=sometimes is not a mode W&B takes (online, "
                            "offline, disabled, shared, dryrun, run)")
    assert _no_run_under(tmp_path / "runs")


def test_a_destination_that_fails_to_open_warns_once_and_training_goes_on(tiny_bert_dir, data, tmp_path,
                                                                          monkeypatch):
    from bertmtl.sinks.csv import CsvSink

    def broken(self, run_dir, resume_step=None):
        raise OSError("the disk went away")

    monkeypatch.setattr(CsvSink, "__init__", broken)
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "run", "--report-to", "csv"))
    assert r.output.count("warning: --report-to csv: OSError: the disk went away; nothing more of this run goes "
                          "there (metrics.jsonl has it all)") == 1
    assert (tmp_path / "run" / "best").is_dir()


# -- encoder weights with NaN or inf ------------------------------------------------------------

def test_an_encoder_whose_weights_hold_nan_is_refused_at_load(tiny_bert_dir, data, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    bad = tmp_path / "nan-bert"
    shutil.copytree(tiny_bert_dir, bad)
    weights = load_file(str(bad / "model.safetensors"))
    weights["encoder.layer.1.attention.self.query.weight"][0, 0] = float("nan")
    save_file(weights, str(bad / "model.safetensors"))
    floats = sum(v.is_floating_point() for v in weights.values())
    r = cli(*_train(data, bad, "--out", tmp_path / "run"), code=2)
    assert _one_line(r) == (f"Error: {bad}: 1 of {floats} tensors hold NaN or inf, e.g. "
                            f"encoder.layer.1.attention.self.query.weight; these weights are damaged (a broken "
                            f"download or a diverged save): nothing can train from them")
    assert not (tmp_path / "run").exists()


# -- labels that are all one value --------------------------------------------------------------

def _constant_copy(src: Path, dst: Path, value: str) -> Path:
    """`src` (a CS224N task file) with every label replaced by `value`."""
    with open(src, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    with open(dst, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(rows[0])
        w.writerows(r[:-1] + [value] for r in rows[1:] if len(r) == len(rows[0]))
    return dst


def test_a_task_whose_labels_are_all_equal_is_warned_about(tiny_bert_dir, data, tmp_path):
    sst = _constant_copy(data / "ids-sst-train.csv", tmp_path / "sst.csv", "2")
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "run", "--sst-train", sst))
    warning = (f"warning: sst: every sentiment in {sst} is neutral (2): nothing to learn (its head learns to "
               f"answer neutral (2) whatever the input)")
    assert r.output.count(warning) == 1, r.output


def test_equal_similarity_labels_under_the_pearson_loss_are_an_error(tiny_bert_dir, data, tmp_path):
    sts = _constant_copy(data / "sts-train.csv", tmp_path / "sts.csv", "3.0")
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "run", "--sts-train", sts), code=2)
    assert _one_line(r) == (f"Error: sts: every similarity in {sts} is 3.0: the Pearson loss (--sts-loss pearson) "
                            f"divides by the labels' spread, which is 0, so it is undefined (and gives no gradient); "
                            f"give the task varied labels, or train it with --sts-loss mse")
    assert not (tmp_path / "run").exists()
    # Squared error is defined: a warning, and the run trains.
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "mse", "--sts-train", sts,
                    "--sts-loss", "mse"))
    assert f"warning: sts: every similarity in {sts} is 3.0: nothing to learn" in r.output


def test_equal_labels_under_mgda_are_an_error(tiny_bert_dir, data, tmp_path):
    quora = _constant_copy(data / "quora-train.csv", tmp_path / "quora.csv", "1.0")
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "run", "--para-train", quora,
                    "--combine", "mgda"), code=2)
    assert _one_line(r) == (f"Error: para: every is_duplicate in {quora} is paraphrase (1.0): nothing to learn, and "
                            f"--combine mgda gives the smallest gradient all the weight (the update is 0 once that "
                            f"gradient is): this task's gradient vanishes as its head learns the one answer, and would "
                            f"take the update over. Fix the labels, leave the task out, or choose another --combine "
                            f"(e.g. pcgrad, upgrad)")
    assert not (tmp_path / "run").exists()


# -- options of a method that is not selected ---------------------------------------------------

@pytest.mark.parametrize("given, message", [
    (("--cagrad-c", 0.5, "--combine", "pcgrad"),
     "--cagrad-c 0.5 applies to --combine cagrad only; this run's --combine is pcgrad (drop --cagrad-c, or choose "
     "--combine cagrad)"),
    (("--nash-update-every", 2),
     "--nash-update-every 2 applies to --combine nash-mtl only; this run's --combine is pcgrad (drop "
     "--nash-update-every, or choose --combine nash-mtl)"),
    (("--dwa-temperature", 3, "--loss-weighting", "none"),
     "--dwa-temperature 3.0 applies to --loss-weighting dwa only; this run's --loss-weighting is none (drop "
     "--dwa-temperature, or choose --loss-weighting dwa)"),
    (("--weighting-lr", 0.1, "--loss-weighting", "dwa"),
     "--weighting-lr 0.1 applies to --loss-weighting uncertainty or gradnorm only; this run's --loss-weighting is "
     "dwa (drop --weighting-lr, or choose --loss-weighting uncertainty or gradnorm)"),
])
def test_an_option_of_a_method_not_selected_is_refused(given, message):
    r = cli("train", *given, "--print-config", "yaml", code=2)
    assert _one_line(r) == f"Error: {message}"


def test_options_of_the_selected_method_pass():
    cli("train", "--cagrad-c", 0.5, "--combine", "cagrad", "--print-config", "yaml")
    cli("train", "--weighting-lr", 0.1, "--loss-weighting", "gradnorm", "--gradnorm-alpha", 1, "--print-config", "yaml")
    cli("train", "--cagrad-c", 0.4, "--combine", "sum", "--print-config", "yaml")  # the default: nothing said


def test_a_sweep_base_may_hold_options_of_some_of_its_points(tmp_path, data):
    """base's cagrad_c applies to the cagrad point and is reset for the pcgrad one; a point that
    itself sets an option its combiner ignores is refused (it would train a duplicate)."""
    spec = tmp_path / "s.yaml"
    spec.write_text(f"base: {{cagrad_c: 0.5, max_steps: 2, data_dir: '{data}'}}\ngrid: {{combine: [pcgrad, cagrad]}}\n")
    r = cli("sweep", spec, "--out", tmp_path / "sw", "--dry-run")
    assert "2 configurations" in r.output
    spec.write_text("base: {max_steps: 2}\ngrid: {combine: [pcgrad, cagrad], cagrad_c: [0.3, 0.5]}\n")
    r = cli("sweep", spec, "--out", tmp_path / "sw", "--dry-run", code=2)
    assert "--cagrad-c 0.3 applies to --combine cagrad only; this run's --combine is pcgrad" in _one_line(r)


def test_a_resume_that_chooses_another_combiner_drops_the_old_ones_options(tiny_bert_dir, data, tmp_path):
    """The saved run's --cagrad-c was for its cagrad: a --resume with --combine pcgrad goes on without it
    (and so does --config of its train_args.json); given on the command line, it is refused."""
    import json

    run = tmp_path / "run"
    cli(*_train(data, tiny_bert_dir, "--out", run, "--combine", "cagrad", "--cagrad-c", 0.5, "--stop-at-step", 1))
    cli("train", "--config", run / "train_args.json", "--combine", "pcgrad", "--out", tmp_path / "again",
        "--print-config", "yaml")
    r = cli("train", "--resume", run, "--combine", "pcgrad", "--cagrad-c", 0.5, code=2)
    assert "--cagrad-c 0.5 applies to --combine cagrad only" in _one_line(r)
    cli("train", "--resume", run, "--combine", "pcgrad")
    saved = json.loads((run / "train_args.json").read_text())
    assert saved["combine"] == "pcgrad" and saved["cagrad_c"] == 0.4


# -- loss weights that train nothing --------------------------------------------------------------

def test_every_loss_weight_zero_is_refused(tiny_bert_dir, data, tmp_path):
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "run", "--loss-weights", "sst=0,para=0,sts=0"),
            code=2)
    assert _one_line(r) == ("Error: every trained task has loss weight 0 (sst=0, para=0, sts=0: --loss-weights, or "
                            "a tasks file's loss_weight): nothing would train; give one a weight above 0, or train "
                            "fewer tasks")
    assert not (tmp_path / "run").exists()
    cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "some", "--loss-weights", "sst=0,sts=0"))


def test_a_zero_loss_weight_under_mgda_is_refused(tiny_bert_dir, data, tmp_path):
    r = cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "run", "--loss-weights", "sts=0",
                    "--combine", "mgda"), code=2)
    assert _one_line(r) == ("Error: sts has loss weight 0, so its gradient is 0 at every step, and --combine mgda "
                            "gives the smallest gradient all the weight (the update is 0 once that gradient is): "
                            "nothing would train; leave the task out instead, or choose another --combine")
    assert not (tmp_path / "run").exists()


def test_cagrad_with_a_zero_gradient_gives_no_update_not_a_crash():
    from bertmtl.mtl.combiners.cagrad import cagrad_weights

    g = torch.tensor([[1.0, 0.5, 0.0], [-0.2, 1.0, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64)
    w = cagrad_weights(g @ g.T, 0.4)
    assert torch.isfinite(w).all() and float((w @ g).norm()) < 1e-6


# -- encoder names -------------------------------------------------------------------------------

def test_an_empty_encoder_name_is_refused(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # '' must not mean this directory
    r = cli(*_train(data, "", "--out", tmp_path / "runs" / "run"), code=2)
    assert _one_line(r) == "Error: --encoder must not be empty (write . to mean the current directory)"


def test_an_empty_revision_after_the_at_sign_is_named(data, tmp_path):
    r = cli(*_train(data, "org/name@", "--out", tmp_path / "run"), code=2)
    assert _one_line(r) == ("Error: org/name@: the revision after @ is empty; give a branch, tag or commit "
                            "(org/name@main), or leave out the @")
    assert not (tmp_path / "run").exists()


# -- outputs that are dangling links ------------------------------------------------------------

def test_export_to_a_dangling_symlink_talks_about_the_link(tiny_bert_dir, data, tmp_path):
    cli(*_train(data, tiny_bert_dir, "--out", tmp_path / "run"))
    link = tmp_path / "LINK"
    link.symlink_to(tmp_path / "missing" / "target")
    r = cli("export", tmp_path / "run", "--format", "hf", "--out", link, code=2)
    assert _one_line(r) == (f"Error: --out {link}: is a symbolic link to {tmp_path / 'missing' / 'target'}, in a "
                            f"directory that does not exist ({tmp_path / 'missing'}); create it, or give another "
                            f"directory")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "missing").mkdir()  # a link to where the output is to be made: written there
    cli("export", tmp_path / "run", "--format", "hf", "--out", link)
    assert (tmp_path / "missing" / "target" / "config.json").is_file()


def test_a_run_saved_with_another_methods_option_still_resumes(tiny_bert_dir, data, tmp_path):
    """Runs of sweeps made before the check kept their base's --cagrad-c whatever their --combine:
    resuming one resets it (it applied to nothing), it is not refused."""
    import json

    run = tmp_path / "run"
    cli(*_train(data, tiny_bert_dir, "--out", run, "--stop-at-step", 1))
    for saved in (run / "train_args.json", run / "last" / "train_args.json"):
        args = json.loads(saved.read_text())
        saved.write_text(json.dumps({**args, "cagrad_c": 0.5}))
    cli("train", "--resume", run)
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert json.loads((run / "train_args.json").read_text())["cagrad_c"] == 0.4  # the default, as it applied
    r = cli("train", "--resume", run, "--cagrad-c", 0.5, code=2)  # typed: checked
    assert "--cagrad-c 0.5 applies to --combine cagrad only" in r.output


# -- resuming a run that has nothing left to train -----------------------------------------------

@pytest.mark.slow
def test_resuming_a_finished_run_is_refused_and_changes_nothing(tiny_bert_dir, data, tmp_path):
    """A run that trained every step of its schedule has nothing to resume: a --resume would only
    evaluate it again and add records to its log. A paused one resumes, and so does a finished one
    whose schedule the options lengthen."""
    import json

    run = tmp_path / "run"
    cli(*_train(data, tiny_bert_dir, "--out", run))
    log = (run / "metrics.jsonl").read_bytes()
    r = cli("train", "--resume", run, code=2)
    assert _one_line(r) == (f"Error: {run}: nothing to resume, it is finished at step 2 of 2. Its model is "
                            f"{run / 'best'}; to train more, start a new run from it, e.g. "
                            f"`bertmtl train --encoder {run} --out NEW_DIR`")
    assert (run / "metrics.jsonl").read_bytes() == log
    (run / "summary.json").rename(tmp_path / "summary.json")  # as a kill -9 after its end record leaves it
    cli("train", "--resume", run)  # ends it again, summary included
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    cli("train", "--resume", run, "--max-steps", 3)  # a longer schedule: one more step
    assert json.loads((run / "summary.json").read_text())["step"] == 3

    paused = tmp_path / "paused"
    cli(*_train(data, tiny_bert_dir, "--out", paused, "--stop-at-step", 1))
    cli("train", "--resume", paused)
    assert json.loads((paused / "summary.json").read_text())["status"] == "finished"


# -- one option under two spellings ----------------------------------------------------------------

@pytest.mark.parametrize("keys, first, second", [
    ("max_steps: 2\nmax-steps: 3\n", "max_steps", "max-steps"),
    ("encoder: minilm\npretrained: mpnet\n", "encoder", "pretrained"),  # today's name and the older one
])
def test_a_config_file_giving_one_option_twice_is_refused(tmp_path, keys, first, second):
    config = tmp_path / "c.yaml"
    config.write_text(keys)
    r = cli("train", "--config", config, "--print-config", "yaml", code=2)
    name = first.replace("-", "_") if first != "pretrained" else "encoder"
    assert _one_line(r) == f"Error: --config {config}: {first} and {second} are the same option ({name}): give it once"


@pytest.mark.parametrize("spec_text, where, first, second, name", [
    ("base: {max_steps: 2, max-steps: 3}\ngrid: {lr: [0.0001, 0.0002]}\n", "base", "max_steps", "max-steps",
     "max_steps"),
    ("base: {max_steps: 2}\ngrid: {batch_size: [4, 8], batch-size: [16]}\n", "grid", "batch_size", "batch-size",
     "batch_size"),
    ("base: {max_steps: 2}\nrows: {a: {lr: 0.001}, b: {encoder: minilm, pretrained: mpnet}}\n", "rows: b",
     "encoder", "pretrained", "encoder"),
    ("base: {max_steps: 2}\nsearch: {batch_size: {int: [4, 8]}, batch-size: {int: [8, 16]}}\ntrials: 2\n",
     "search", "batch_size", "batch-size", "batch_size"),
])
def test_a_sweep_spec_giving_one_option_twice_is_refused(tmp_path, spec_text, where, first, second, name):
    spec = tmp_path / "s.yaml"
    spec.write_text(spec_text)
    r = cli("sweep", spec, "--out", tmp_path / "sw", "--dry-run", code=2)
    assert _one_line(r) == (f"Error: sweep spec {spec}: {where}: {first} and {second} are the same option ({name}): "
                            f"give it once")


def test_a_sweep_spec_accepts_the_older_name_of_an_option_as_config_does(tiny_bert_dir, data, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"base: {{max_steps: 2, data_dir: '{data}', pretrained: '{tiny_bert_dir}'}}\n"
                    f"grid: {{lr: [0.0001, 0.0002]}}\n")
    r = cli("sweep", spec, "--out", tmp_path / "sw", "--dry-run")
    assert "2 configurations" in r.output
    config = tmp_path / "c.yaml"
    config.write_text(f"pretrained: '{tiny_bert_dir}'\n")
    assert f"encoder: {tiny_bert_dir}" in cli("train", "--config", config, "--print-config", "yaml").output


@pytest.mark.parametrize("flag", ["--loss-weights", "--smart-weights"])
def test_a_task_weighted_twice_is_a_usage_error(flag):
    r = cli("train", flag, "sst=1,para=0.5, sst=2", "--print-config", "yaml", code=2)
    assert r.output.splitlines()[-1] == (f"Error: Invalid value for '{flag}': sst is given twice (sst=1 and sst=2): "
                                         f"give each task one weight")
