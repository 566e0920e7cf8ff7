"""`bertmtl examples DIR`: the sample files the docs name, written out of the installed package.
(tests/test_docs.py runs the docs' examples in such a directory.)"""

from __future__ import annotations

import fnmatch
import tomllib

from bertmtl.examples import FILES, SAMPLE, _source, content, names

from .conftest import REPO, command


def test_examples_writes_every_sample_file_and_never_overwrites_one(tmp_path):
    d = tmp_path / "demo"
    r = command("examples", d, code=0, text=True)
    lines = r.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [["wrote", e] for e in FILES]  # each with what it is for
    assert lines[-1] == f"wrote {len(names())} files to {d}/"
    assert len(names()) == 18 and all((d / n).read_bytes() == content(n) for n in names())
    assert (d / "data" / "ids-sst-dev.csv").read_text().splitlines()[:2] == [
        "\tid\tsentence\tsentiment", "0\tsst-dev-000\tA witty and seductive movie .\t4"]  # the course's layout
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) == sorted(names())

    (d / "train.csv").write_text("mine\n")
    (d / "dev.csv").unlink()  # a missing file comes back ...
    (d / "data" / "quora-train.csv").unlink()  # ... but an existing data/ is the user's: no sample rows mixed in
    r = command("examples", d, code=0, text=True)
    assert [line.split()[0] for line in r.stdout.splitlines()[:-1]] == ["wrote" if e == "dev.csv" else "kept" for e in FILES]
    assert r.stdout.splitlines()[-1] == f"wrote 1 file to {d}/; kept {len(FILES) - 1} already there (never overwritten)"
    assert (d / "train.csv").read_text() == "mine\n" and (d / "dev.csv").is_file()
    assert not (d / "data" / "quora-train.csv").exists() and not list(d.rglob(".*.tmp"))

    r = command("examples", "", code=2, text=True, cwd=tmp_path)  # not a silent write into the working directory
    assert "name a directory" in r.stderr and not (tmp_path / "train.csv").exists()
    r = command("examples", d / "train.csv", code=2, text=True)
    assert "is a file" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    r = command("examples", tmp_path / "gone", code=2, text=True)
    assert "which does not exist" in r.stderr and "Traceback" not in r.stderr


def _glob_match(path: str, pattern: str) -> bool:
    """setuptools' package-data globs: `*` stays inside one folder."""
    parts, pats = path.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pats))


def test_the_package_ships_every_sample_file():
    """An editable install reads the source tree; a wheel holds only what package-data names."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bertmtl"]
    shipped = [p.relative_to(REPO / "bertmtl").as_posix() for p in _source().rglob("*") if p.is_file()]
    assert sorted(shipped) == sorted(f"examples/files/{n}" for n in [*names(), SAMPLE] if not n.startswith("data/"))
    assert [f for f in shipped if not any(_glob_match(f, g) for g in globs)] == []
    assert not _glob_match("examples/files/data/x.csv", "examples/files/*")  # the check is not vacuous
