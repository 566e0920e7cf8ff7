"""Set-up: missing data is reported before the default weights are fetched, with where to get it."""

from __future__ import annotations

from click.testing import CliRunner

import bertmtl.training.setup
from bertmtl.cli import main
from bertmtl.errors import UserError

from .fixtures import write_task_data


def _no_fetch(*a, **kw):
    raise AssertionError("weights were resolved (fetched) before the data was checked")


def test_missing_data_directory_names_it_and_the_source(tmp_path, monkeypatch):
    monkeypatch.setattr(bertmtl.training.setup, "resolve_with_revision", _no_fetch)
    r = CliRunner().invoke(main, ["train", "--data-dir", str(tmp_path / "nodata"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert f"data directory {str(tmp_path / 'nodata')!r} not found" in r.output
    assert "minbert-default-final-project" in r.output and "data/ folder of its starter code" in r.output
    assert "quora-train.csv" in r.output


def test_missing_file_of_a_chosen_task_is_reported_before_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(bertmtl.training.setup, "resolve_with_revision", _no_fetch)
    data = write_task_data(tmp_path / "data")
    (data / "sts-dev.csv").unlink()
    r = CliRunner().invoke(main, ["train", "--data-dir", str(data), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and "sts-dev.csv: no such file" in r.output
    # a task not trained needs no files of its own: the check passes and the weights come next
    monkeypatch.setattr(bertmtl.training.setup, "resolve_with_revision", lambda *a, **kw: (_ for _ in ()).throw(UserError("weights next")))
    r = CliRunner().invoke(main, ["train", "--data-dir", str(data), "--out", str(tmp_path / "run"), "--tasks",
                                  "sst,para"])
    assert r.exit_code == 2 and "weights next" in r.output
