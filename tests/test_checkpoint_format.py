"""Honest checkpoints: nothing takes one for an HF model; old ones still load; new runs start from them."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from bertmtl.runs import checkpoint as ckpt
from bertmtl.cli import main
from bertmtl.training.distributed import Dist
from bertmtl.errors import UserError
from bertmtl.inference.predict import Predictor
from bertmtl.runs.progress import SilentReporter
from bertmtl.training.loop import TrainConfig
from bertmtl.training.setup import prepare


@pytest.fixture
def run(trained_run):
    return trained_run


def _as_format_1(src, dst):
    """A copy of checkpoint `src` laid out as bertmtl wrote it before format 2."""
    shutil.copytree(src, dst)
    (dst / "multitask.safetensors").rename(dst / "model.safetensors")
    info = json.loads((dst / "bertmtl.json").read_text())
    (dst / "bertmtl.json").write_text(json.dumps({**info, "format": 1}))
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "architectures": ["BertModel"]}))
    return dst


def test_checkpoint_is_not_taken_for_an_hf_model(run):
    best = run / "best"
    assert not (best / "model.safetensors").exists() and (best / "multitask.safetensors").is_file()
    assert "architectures" not in json.loads((best / "config.json").read_text())
    transformers = pytest.importorskip("transformers")
    with pytest.raises(OSError):  # before format 2 this loaded a random encoder and succeeded
        transformers.AutoModel.from_pretrained(str(best))


def test_format_1_checkpoint_still_loads_and_predicts(run, tmp_path):
    old = _as_format_1(run / "best", tmp_path / "old")
    a = Predictor(run / "best").pair("the movie was good", "a film is great")
    b = Predictor(old).pair("the movie was good", "a film is great")
    assert a == b
    r = CliRunner().invoke(main, ["predict", "--checkpoint", str(old), "--json", "good fun"])
    assert r.exit_code == 0, r.output


def _prepare(tmp_path, data_dir, **kw):
    cfg = TrainConfig(data_dir=str(data_dir), out=str(tmp_path / "new"), max_steps=1, batch_size=8, seed=1, **kw)
    return prepare(cfg, None, Dist.from_env(), SilentReporter())


@pytest.mark.parametrize("layout", ["run", "best", "format-1"])
def test_encoder_from_a_run_starts_a_new_run_with_fresh_heads(run, data_dir, tmp_path, layout):
    source = {"run": run, "best": run / "best", "format-1": None}[layout]
    if source is None:
        source = _as_format_1(run / "best", tmp_path / "old")
    trained = ckpt.load_checkpoint(run / "best").model.state_dict()
    new = _prepare(tmp_path, data_dir, encoder=str(source)).model.state_dict()
    enc = [k for k in trained if k.startswith("encoder.")]
    assert enc and all(torch.equal(new[k], trained[k]) for k in enc)
    heads = [k for k in trained if not k.startswith("encoder.")]
    assert any(not torch.equal(new[k], trained[k]) for k in heads)  # fresh heads


def test_init_heads_from_takes_the_trained_heads(run, data_dir, tmp_path):
    trained = ckpt.load_checkpoint(run / "best").model.state_dict()
    new = _prepare(tmp_path, data_dir, encoder=str(run), init_heads_from=str(run)).model.state_dict()
    assert new.keys() == trained.keys() and all(torch.equal(new[k], trained[k]) for k in trained)


def test_init_heads_from_refuses_heads_of_another_shape(run, data_dir, tmp_path):
    with pytest.raises(UserError, match="mlp_hidden"):
        _prepare(tmp_path, data_dir, encoder=str(run), init_heads_from=str(run), mlp_hidden=8)


def test_train_cli_from_a_run(run, data_dir, tmp_path):
    r = CliRunner().invoke(main, ["train", "--encoder", str(run / "best"), "--init-heads-from", str(run / "best"),
                                  "--data-dir", str(data_dir), "--out", str(tmp_path / "next"), "--max-steps", "1",
                                  "--batch-size", "8"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "next" / "best" / "multitask.safetensors").is_file()
