"""`train --config FILE` and `--print-config`: a run repeats from its train_args.json; the printed
configuration reads back to itself; the command line overrides the file; mistakes are named."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from bertmtl.configuration.train_config import FIELDS, TrainConfig

from .conftest import cli
from .fixtures import write_task_data


@pytest.mark.slow
def test_a_run_repeats_from_its_train_args(tiny_bert_dir, tmp_path):
    data = write_task_data(tmp_path / "data")
    first = tmp_path / "first"
    r = cli("train", "--pretrained", str(tiny_bert_dir), "--data-dir", str(data), "--out", str(first),
            "--max-steps", "3", "--batch-size", "8", "--lr", "2e-3", "--seed", "3", "--precision", "fp32",
            "--combine", "sum", "--smart", "--dropout", "0.2", "--eval-every", "2", code=None)
    assert r.exit_code == 0, r.output
    again = tmp_path / "again"
    r = cli("train", "--config", str(first / "train_args.json"), "--out", str(again), code=None)
    assert r.exit_code == 0, r.output
    a = load_file(str(first / "last" / "multitask.safetensors"))
    b = load_file(str(again / "last" / "multitask.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)  # bit for bit
    saved = json.loads((again / "train_args.json").read_text())
    assert saved == {**json.loads((first / "train_args.json").read_text()), "out": str(again)}


def test_print_config_round_trips_and_flags_override_the_file(tmp_path):
    r = cli("train", "--lr", "3e-4", "--tasks", "sts,sst", "--smart-weights", "sst=0.25", "--report-to", "csv",
            "--print-config", code=None)
    assert r.exit_code == 0, r.output
    printed = yaml.safe_load(r.output)
    assert set(printed) == set(FIELDS)  # every option, resolved
    assert printed["lr"] == 3e-4 and printed["tasks"] == ["sst", "sts"] and printed["report_to"] == ["csv"]
    assert printed["smart_weights"] == {"sst": 0.25, "para": 0.0, "sts": 0.5}
    path = tmp_path / "c.yaml"
    path.write_text(r.output)
    again = cli("train", "--config", str(path), "--print-config", code=None)
    assert again.exit_code == 0 and again.output == r.output
    as_json = cli("train", "--config", str(path), "--print-config", "json", code=None)
    assert json.loads(as_json.output) == printed
    over = cli("train", "--config", str(path), "--lr", "1e-5", "--print-config", "json", code=None)
    assert json.loads(over.output) == {**printed, "lr": 1e-5}


def test_config_file_keys_may_be_flag_names_and_yaml_exponents(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("batch-size: 8\nlr: 1e-5\ntasks: sst,para\nsmart: true\n")
    r = cli("train", "--config", str(path), "--print-config", "json", code=None)
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got == {**TrainConfig(batch_size=8, lr=1e-5, tasks=["sst", "para"], smart=True).to_dict()}


@pytest.mark.parametrize("text, message", [
    ("lr: 1e-4\nbogus: 1\nmax-step: 3\n", "unknown option(s) bogus, max-step"),
    ("lr: fast\n", "lr: must be a number"),
    ("epochs: -1\n", "epochs must be > 0"),
    ("combine: gradnorm\n", "combine must be one of sum, mean, pcgrad"),
    ("report_to: [csv, neptune]\n", "--report-to has unknown value(s) neptune"),
    ("grad_accum: 2.5\n", "grad_accum: must be a whole number"),
    ("- lr\n", "expected a mapping"),
    ("lr: [1\n", "not valid YAML"),
])
def test_config_file_mistakes_are_named(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    r = cli("train", "--config", str(path), "--print-config", code=None)
    assert r.exit_code == 2, r.output
    assert message in r.output


def test_runs_saved_before_the_encoder_option_resume_and_repeat(tmp_path):
    """Older train_args.json say "pretrained" (null = the default): they still load, resume and repeat."""
    from bertmtl.configuration.options import read_options_file
    from bertmtl.errors import UserError
    from bertmtl.configuration.train_config import TrainConfig

    old = {**TrainConfig().to_dict(), "pretrained": None}
    del old["encoder"]
    cfg = TrainConfig.from_dict(old)
    cfg.validate()
    assert cfg.encoder == "minilm"
    cfg.check_resume(old)  # the same run: nothing differs
    cfg.encoder = "mpnet"
    with pytest.raises(UserError, match="--encoder cannot change"):
        cfg.check_resume(old)
    (tmp_path / "train_args.json").write_text(json.dumps({**old, "pretrained": "/models/bert"}))
    assert read_options_file(TrainConfig, tmp_path / "train_args.json")["encoder"] == "/models/bert"
