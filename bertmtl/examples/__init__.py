"""The sample files that the documentation's examples name, shipped inside the package.

`bertmtl examples DIR` writes them out, so every example in the docs runs as written after a
`pip install`, in DIR; the docs' test (tests/test_docs.py) runs the examples in such a directory.
The rows are written for bertmtl (never copies of the CS224N data): enough to run every command,
far too few to learn anything. The CS224N-layout sample is kept as one JSON file of rows
(cs224n-sample.json) and written out as the course's tab-separated files, so the package holds
no file that could be taken for the course's own data. No torch.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from ..errors import UserError

# What each file is for, in the order `bertmtl examples` lists them (a folder ends in /).
FILES: dict[str, str] = {
    "data/": "a sample in the CS224N layout: SST, Quora, STS (20 train, 10 dev, 6 test rows)",
    "train.csv": "intents, your own classification task: text, intent (with dev.csv)",
    "dev.csv": "intents' dev rows",
    "pairs.csv": "dupes, your own pair task: question1, question2, is_duplicate (with pairs-dev.csv)",
    "pairs-dev.csv": "dupes' dev rows",
    "ratings.jsonl": "stars, a pair-regression task from 1 to 5: query, document, rating",
    "tasks.yaml": "the three tasks above with their columns named (--tasks-file)",
    "pairs.tsv": "lines for `bertmtl predict -`: pairs, a sentence, a JSON object with an id",
    "combine.yaml": "a sweep spec: --combine sum against pcgrad over three seeds",
    "defaults.yaml": "the sweep of the docs' Results page: options of the defaults, two seeds",
}


def _source():
    return files(__name__) / "files"


SAMPLE = "cs224n-sample.json"  # data/'s files: name -> rows (the header first)


def _sample() -> dict[str, list[list[str]]]:
    import json

    return json.loads((_source() / SAMPLE).read_text(encoding="utf-8"))


def files_of(entry: str) -> list[str]:
    """The files of one FILES entry, relative to the examples' directory (a folder spelled out)."""
    if not entry.endswith("/"):
        return [entry]
    return sorted(f"{entry}{name}" for name in _sample())


def content(name: str) -> bytes:
    """The bytes `write` writes for `name`: a shipped file, or a data/ file made from the sample's
    rows (tab-separated, as the CS224N files are)."""
    if not name.startswith("data/"):
        return (_source() / name).read_bytes()
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, delimiter="\t", lineterminator="\n").writerows(_sample()[name.removeprefix("data/")])
    return out.getvalue().encode("utf-8")


def names() -> list[str]:
    """Every file `write` writes, relative to its directory."""
    return [name for entry in FILES for name in files_of(entry)]


def write(directory: str | Path) -> dict[str, bool]:
    """Write the sample files into `directory` (made if missing). Nothing there is overwritten: a
    file already there is kept, and so is a folder (data/) as a whole, so the user's own CS224N
    files never get sample rows mixed in. Returns, for each FILES entry, whether it was written."""
    directory = Path(directory)
    if directory.is_symlink() and not directory.exists():
        raise UserError(f"{directory} is a link to {os.readlink(directory)}, which does not exist")
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file; name a directory to write the examples into")
    done = {}
    for entry in FILES:
        if entry.endswith("/") and os.path.lexists(directory / entry.rstrip("/")):
            done[entry] = False
            continue
        wrote = False
        for name in files_of(entry):
            target = directory / name
            if os.path.lexists(target):
                continue
            # Whole or not at all: a file cut short (a full disk, Ctrl-C) would be kept next time.
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(content(name))
                os.replace(tmp, target)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise UserError(f"could not write {target}: {e.strerror or e}") from None
            wrote = True
        done[entry] = wrote
    return done
