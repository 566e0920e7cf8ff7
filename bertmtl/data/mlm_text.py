"""The text of masked-LM further pretraining: which train files, a held-out split, caps and repeats.

Sources are named as the options name them: sst, quora, sts (the CS224N tasks, by title), imdb
(ids-cfimdb-train.csv: movie-review text, used when present) and any declared task's name. Their
train files are read as training reads them (tasks/files.py read_tasks: the same rows skipped, the
augmented copies of --augment joined), both sides of a pair taken, exact duplicates dropped.
A held-out slice of each source, chosen by example id, measures the masked-LM loss; augmented
copies of held-out examples are dropped, so held-out text is never trained on, not even reworded.
No torch: batching.MlmDataset masks and batches the texts.
"""

from __future__ import annotations

import random

from ..errors import UserError
from ..numbers import number_problem
from ..tasks.files import TaskSource, read_tasks, stable_seed
from ..tasks import BUILTIN, IMDB

# The CS224N tasks' text by title (what --mlm-text and --datasets say), and IMDB's reviews.
BUILTIN_SOURCES = {s.title.lower(): s for s in BUILTIN} | {IMDB.title.lower(): IMDB}
SOURCE_ALIASES = {a: s.title.lower() for s in BUILTIN for a in (s.name, *s.aliases) if a != s.title.lower()} | \
    {"cfimdb": IMDB.title.lower()}
OPTIONAL = (IMDB.title.lower(),)  # pretraining goes on without it, with a note


def source_name(text: str) -> str:
    name = text.strip().lower()
    return SOURCE_ALIASES.get(name, name)


def parse_sources(spec: str | list) -> list[str]:
    """'sst,quora' -> ['sst', 'quora'] (also para/paraphrase, similarity, cfimdb). Names that are not
    built-in sources stay, to be matched with the run's declared tasks."""
    parts = spec if isinstance(spec, (list, tuple)) else spec.replace(" ", ",").split(",")
    names = [source_name(p) for p in parts if p.strip()]
    if not names:
        raise ValueError(f"no dataset named in {spec!r}; choose from {', '.join(BUILTIN_SOURCES)} or a declared task")
    return list(dict.fromkeys(names))


def parse_amounts(spec, what: str, integer: bool) -> dict[str, float]:
    """'quora=5000,sts=2' (or several such strings) -> {'quora': 5000, 'sts': 2}."""
    parts = [spec] if isinstance(spec, str) else list(spec)
    out: dict[str, float] = {}
    for part in (p for s in parts for p in s.split(",") if p.strip()):
        try:
            k, v = part.split("=")
            value = int(v) if integer else float(v)
        except ValueError:
            raise ValueError(f"{what}: expected DATASET={'N' if integer else 'FACTOR'} pairs like "
                             f"quora={'5000' if integer else '2'}, got {part!r}") from None
        if number_problem(value, min=0 if integer else 1):
            raise ValueError(f"{what}: {part!r} must be {'>= 0' if integer else 'a factor >= 1'}")
        out[source_name(k)] = value
    return out


def source_specs(names: list[str], declared) -> dict:
    """The task spec whose train file each source reads: a built-in source, or a declared task."""
    by_name = {**BUILTIN_SOURCES, **{s.name: s for s in declared}}
    if bad := [n for n in names if n not in by_name]:
        raise UserError(f"--mlm-text: unknown dataset(s) {', '.join(bad)}; choose from "
                        f"{', '.join(by_name)}")
    return {n: by_name[n] for n in names}


def check_amounts(sources: dict, caps: dict, upsample: dict) -> None:
    """UserError for a cap or repeat factor of a source that is not among `sources`."""
    for option, amounts in (("--mlm-caps", caps), ("--mlm-upsample", upsample)):
        if bad := [k for k in amounts if k not in sources]:
            raise UserError(f"{option}: unknown dataset(s) {', '.join(bad)}; this run's masked-LM text comes from "
                            f"{', '.join(sources)}")


def base_id(example_id: str) -> str:
    """'abc-aug2' -> 'abc': an augmented copy belongs with its original."""
    head, sep, tail = example_id.rpartition("-aug")
    return head if sep and tail.isdigit() else example_id


def collect_texts(sources: dict, source: TaskSource, warn=None, note=None) -> tuple[dict, dict[str, int]]:
    """Each source's texts as (example id, text), both sides of a pair, exact duplicates dropped,
    augmented copies (ids ending -augN) after the originals; and the rows skipped per file.

    `warn(row)` hears of each skipped row, `note(text)` of a missing optional source."""
    out, skipped = {}, {}
    for name, spec in sources.items():
        # The labels play no part here, but reading labelled keeps the rows training keeps (IMDB
        # is no task here: its rows all count).
        read = read_tasks([spec], "train", source, labelled=name not in OPTIONAL, warn=warn,
                          optional=lambda s: name in OPTIONAL)
        skipped.update(read.skipped)
        if spec.name in read.absent:
            if note:
                note(f"{read.absent[spec.name]} not found; pretraining without {spec.title} text")
            continue
        seen, items = set(), []
        for e in read.examples[spec.name]:
            for t in (e.text_a, e.text_b):
                if t is not None and t not in seen:
                    seen.add(t)
                    items.append((e.id, t))
        out[name] = items
    if not out:
        raise UserError(f"no masked-LM text found for {', '.join(sources)}")
    return out, skipped


def split_heldout(texts: dict, fraction: float, max_per: int, seed: int) -> tuple[dict, dict]:
    """(train, heldout) texts per source: a seeded `fraction` of each source's example ids (at most
    `max_per`, at least one) held out with every augmented copy of them."""
    train, heldout = {}, {}
    for name, items in texts.items():
        ids = sorted({base_id(i) for i, _ in items})
        random.Random(stable_seed(seed, "heldout", name)).shuffle(ids)
        k = min(max_per, max(1, round(fraction * len(ids)))) if len(ids) >= 2 else 0
        held = set(ids[:k])
        heldout[name] = [t for i, t in items if i in held]
        train[name] = [t for i, t in items if base_id(i) not in held]
    return train, heldout


def balance(train: dict[str, list[str]], caps: dict, upsample: dict, seed: int) -> dict[str, list[str]]:
    """Cap sources at N texts (a seeded random subset) and repeat small ones by a factor."""
    out = {}
    for name, texts in train.items():
        texts = list(texts)
        rng = random.Random(stable_seed(seed, "balance", name))
        if name in caps and len(texts) > caps[name]:
            texts = rng.sample(texts, int(caps[name]))
        if name in upsample:
            factor = upsample[name]
            whole, frac = int(factor), factor - int(factor)
            texts = texts * whole + rng.sample(texts, round(frac * len(texts)))
        out[name] = texts
    return out
