"""The sample files that the documentation's examples name, shipped inside the package.

`bertmtl examples DIR` writes them out, so every example in the docs runs as written after a
`pip install`, in DIR; the docs' test (tests/test_docs.py) runs the examples in such a directory.
The rows are written for bertmtl (never copies of the CS224N data): enough to run every command,
far too few to learn anything. No torch.
"""

from __future__ import annotations

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


def names() -> list[str]:
    """Every file `write` writes, relative to its directory (data/ spelled out)."""
    out = []
    for entry in FILES:
        if entry.endswith("/"):
            out += sorted(f"{entry}{f.name}" for f in (_source() / entry.rstrip("/")).iterdir() if f.is_file())
        else:
            out.append(entry)
    return out


def write(directory: str | Path) -> tuple[list[str], list[str]]:
    """Write the sample files into `directory` (made if missing); a file already there is kept,
    never overwritten (the user's own data/ stays theirs). Returns (written, kept) names."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file; name a directory to write the examples into")
    written, kept = [], []
    for name in names():
        target = directory / name
        if target.exists() or target.is_symlink():
            kept.append(name)
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((_source() / name).read_bytes())
        except OSError as e:
            raise UserError(f"could not write {target}: {e.strerror or e}") from None
        written.append(name)
    return written, kept
