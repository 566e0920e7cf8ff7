"""The documentation: a short README whose links resolve, and a docs site that builds strictly with
a command-line reference generated from the commands themselves."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.count("\n") <= 200
    local = [t.split("#")[0] for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    assert local, "the README links into docs/"
    assert [t for t in local if not (REPO / t).exists()] == []


def test_no_help_text_or_message_points_to_the_readme():
    """A `pip install` user has the commands and the docs site, not the repository's README."""
    found = [f"{p.relative_to(REPO)}:{n}" for p in (REPO / "bertmtl").rglob("*.py")
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if "README" in line and not (p.name == "export.py" and "README.md" in line)]  # an export's model card
    assert found == []


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_command_and_option_in_its_reference(tmp_path):
    pytest.importorskip("mkdocs_click", reason="the docs extra: pip install -e '.[docs]'")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml"),
                        "-d", str(site)], capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING" not in r.stderr, r.stderr[-3000:]  # (material warns of MkDocs 2 unless told not to, above)
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "Sentinel" not in cli  # Click's marker of "no default" (docs/hooks.py)
    from click import Context

    from bertmtl.cli import main

    with Context(main) as ctx:
        for name in main.list_commands(ctx):
            command = main.get_command(ctx, name)
            assert f"bertmtl {name}" in cli, name
            for param in command.params:
                for opt in param.opts if param.param_type_name == "option" else []:
                    assert opt in cli, f"{name} {opt}"
    python = (site / "reference" / "python" / "index.html").read_text(encoding="utf-8")
    for api in ("Predictor", "TrainConfig", "train", "pretrain_config"):
        assert f"{api}</code>" in python or f">{api}<" in python, api


def _table(text: str, after: str) -> dict[str, list[str]]:
    """The first markdown table after the line starting with `after`: first cell (unquoted) -> cells."""
    lines = text[text.index(after):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_the_sweep_spec_reference_names_every_key_the_reader_takes_with_its_default():
    from bertmtl.sweep.spec import DISTRIBUTIONS, KEYS, PRUNE_DEFAULTS, REPORT_COLUMNS, REPORT_KEYS, SAMPLERS, SweepSpec

    text = (REPO / "docs" / "sweeps.md").read_text(encoding="utf-8")
    keys = _table(text, "## The spec, key by key")
    assert list(keys) == list(KEYS)
    assert list(_table(text, "The `report` section")) == list(REPORT_KEYS)
    default = SweepSpec(name="x")
    assert keys["seeds"][1] == str(default.seeds) and keys["metric"][1] == f"`{default.metric}`"
    assert keys["sampler"][1] == f"`{default.sampler}`" and all(f"`{s}`" in keys["sampler"][0] for s in SAMPLERS)
    assert all(f"{{{d}:" in keys["search"][2] for d in DISTRIBUTIONS)
    assert all(k in keys["prune"][0] for k in PRUNE_DEFAULTS)
    assert keys["prune"][1] == f"`false` (`true` = {' and '.join(map(str, PRUNE_DEFAULTS.values()))})"
    assert all(f"`{c}`" in _table(text, "The `report` section")["columns"][0] for c in REPORT_COLUMNS)
