"""Derive the "your own tasks" demo files (docs/own-tasks.md) from data the project never
trained on as declared tasks.

  python benchmarks/own_tasks_data.py DATA_DIR OUT_DIR

writes OUT_DIR/sts-binary-{train,dev}.csv: the STS pairs thresholded into a binary pair task
(similar = similarity >= 3.0, else different), comma-separated with columns id, sentence1,
sentence2, label. The IMDB files (DATA_DIR/ids-cfimdb-*.csv) are used as they are.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

THRESHOLD = 3.0  # STS 3 = "roughly equivalent, some important information differs"


def threshold(src: Path, dst: Path) -> tuple[int, int]:
    """Write the thresholded copy of one STS file; (rows written, rows labelled similar)."""
    n = similar = 0
    with open(src, newline="", encoding="utf-8") as fin, open(dst, "w", newline="", encoding="utf-8") as fout:
        w = csv.writer(fout)
        w.writerow(["id", "sentence1", "sentence2", "label"])
        for row in csv.DictReader(fin, delimiter="\t"):
            try:
                score = float(row["similarity"])
            except (TypeError, ValueError):
                continue  # the training reader reports bad rows; here they are simply left out
            label = "similar" if score >= THRESHOLD else "different"
            w.writerow([row["id"], row["sentence1"], row["sentence2"], label])
            n += 1
            similar += label == "similar"
    return n, similar


def main(data_dir: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        n, similar = threshold(Path(data_dir) / f"sts-{split}.csv", out / f"sts-binary-{split}.csv")
        print(f"{out / f'sts-binary-{split}.csv'}: {n} pairs, {similar} similar ({similar / n:.1%})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
