"""Small task files in the CS224N format, written for the tests (never the real data)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POS = ["good", "great", "best", "love", "fun"]
NEG = ["bad", "terrible", "worst", "hate", "boring"]
FILLER = ["the", "movie", "film", "story", "plot", "acting", "is", "was", "very", "and", "of", "a"]
TOPICS = [["dog", "cat", "eat", "food"], ["python", "code", "learn", "language"],
          ["guitar", "play", "playing", "man"], ["run", "running", "fast", "slow"],
          ["question", "answer", "people", "woman"]]


def _sentence(rng: random.Random, words: list[str], n: int) -> str:
    return " ".join(rng.choice(words) for _ in range(n))


def sst_rows(n: int, rng: random.Random, labelled=True):
    rows = []
    for i in range(n):
        label = rng.randrange(5)
        pol = POS if label >= 3 else NEG if label <= 1 else FILLER
        k = {0: 3, 1: 1, 2: 0, 3: 1, 4: 3}[label]
        words = [rng.choice(pol) for _ in range(k)] + [rng.choice(FILLER) for _ in range(rng.randint(2, 9))]
        rng.shuffle(words)
        rows.append([str(i), f"sst{i:05d}", " ".join(words) + " ."] + ([str(label)] if labelled else []))
    return rows


def pair_rows(n: int, rng: random.Random, task: str, labelled=True):
    rows = []
    for i in range(n):
        t1 = rng.randrange(len(TOPICS))
        a = _sentence(rng, TOPICS[t1] + FILLER[:4], rng.randint(3, 8))
        same = rng.random() < 0.5
        t2 = t1 if same else (t1 + rng.randint(1, len(TOPICS) - 1)) % len(TOPICS)
        b = _sentence(rng, TOPICS[t2] + FILLER[:4], rng.randint(3, 8))
        if task == "para":
            label = "1.0" if same else "0.0"
        else:
            label = f"{(4.0 + rng.random()) if same else rng.random() * 1.5:.1f}"
        rows.append([str(i), f"{task}{i:05d}", a + " ?", b + " ?"] + ([label] if labelled else []))
    return rows


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(header)
        w.writerows(rows)


def write_task_data(d: Path, seed: int = 0, n_train: int = 96, n_dev: int = 32, broken_rows: bool = True) -> Path:
    """All nine CS224N files (train/dev/test-student of SST, Quora, STS) with small synthetic data."""
    rng = random.Random(seed)
    d.mkdir(parents=True, exist_ok=True)
    sst_h, pair_h = ["", "id", "sentence", "sentiment"], ["", "id", "sentence1", "sentence2"]
    write_tsv(d / "ids-sst-train.csv", sst_h, sst_rows(n_train, rng))
    write_tsv(d / "ids-sst-dev.csv", sst_h, sst_rows(n_dev, rng))
    write_tsv(d / "ids-sst-test-student.csv", sst_h[:3], sst_rows(n_dev, rng, labelled=False))
    for task, prefix, col in (("para", "quora", "is_duplicate"), ("sts", "sts", "similarity")):
        write_tsv(d / f"{prefix}-train.csv", pair_h + [col], pair_rows(n_train, rng, task))
        write_tsv(d / f"{prefix}-dev.csv", pair_h + [col], pair_rows(n_dev, rng, task))
        write_tsv(d / f"{prefix}-test-student.csv", pair_h, pair_rows(n_dev, rng, task, labelled=False))
    if broken_rows:
        # As in the official quora-train.csv: a stray opening quote swallows the rest of the line.
        with open(d / "quora-train.csv", "a", encoding="utf-8") as fh:
            fh.write('9001\tbrokenid1\twhat is the food ?\t"what do dogs eat ?\t\n')
    return d
