"""`bertmtl examples DIR`: the sample files the docs name, written out of the installed package.
(tests/test_docs.py runs the docs' examples in such a directory.)"""

from __future__ import annotations

import fnmatch
import tomllib

from bertmtl.examples import FILES, _source, names

from .conftest import REPO, command


def test_examples_writes_every_sample_file_and_never_overwrites_one(tmp_path):
    d = tmp_path / "demo"
    r = command("examples", d, code=0, text=True)
    lines = r.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == list(FILES)  # each file listed with what it is for
    assert lines[-1] == f"wrote {len(names())} files to {d}/"
    assert len(names()) == 18 and all((d / n).read_bytes() == (_source() / n).read_bytes() for n in names())
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) == sorted(names())

    (d / "train.csv").write_text("mine\n")
    (d / "data" / "quora-train.csv").unlink()  # the user's own data/ stays; a missing file comes back
    r = command("examples", d, code=0, text=True)
    assert r.stdout.splitlines()[-1] == f"wrote 1 file to {d}/; kept {len(names()) - 1} already there, unchanged"
    assert (d / "train.csv").read_text() == "mine\n" and (d / "data" / "quora-train.csv").is_file()

    r = command("examples", d / "train.csv", code=2, text=True)
    assert "is a file" in r.stderr and "Traceback" not in r.stderr


def test_the_package_ships_every_sample_file():
    """An editable install reads the source tree; a wheel holds only what package-data names."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bertmtl"]
    shipped = [str(p.relative_to(REPO / "bertmtl")) for p in _source().rglob("*") if p.is_file()]
    assert sorted(shipped) == sorted(f"examples/files/{n}" for n in names())
    assert [f for f in shipped if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
