"""Masked-LM perplexity of pretrained models on text none of them was trained on: the dev files.

    python benchmarks/mlm_perplexity.py --data-dir data DIR [DIR ...] [--per-source 500] [--seed 0]

DIR: a `bertmtl pretrain` run or checkpoint, an HF directory with a masked-LM head (the output of
`bertmtl pretrain` before 0.2), or a built-in name (its head is then fresh). `bertmtl pretrain`
scores its own held-out split of the train text, which depends on the run's seed; this scores
every DIR on the same texts with the same masks (fixed per example by --seed), so two runs, two
seeds or two versions of the code compare directly.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from bertmtl.data.batching import MlmDataset  # noqa: E402
from bertmtl.inference.evaluate import token_metrics  # noqa: E402
from bertmtl.tasks.files import TaskSource, read_tasks  # noqa: E402
from bertmtl.tasks import MLM, TASKS  # noqa: E402
from bertmtl.encoders.tokenizer import EncoderTokenizer  # noqa: E402
from bertmtl.encoders.weights import load_mlm  # noqa: E402


def dev_texts(data_dir: str, per_source: int) -> dict[str, list[str]]:
    """The first `per_source` distinct sentences of each built-in task's dev file."""
    out = {}
    for name, spec in TASKS.items():
        read = read_tasks([spec], "dev", TaskSource(data_dir), labelled=False)
        seen: list[str] = []
        for e in read.examples[name]:
            for t in (e.text_a, e.text_b):
                if t is not None and t not in seen and len(seen) < per_source:
                    seen.append(t)
        out[name] = seen
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--per-source", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0, help="seeds the masks")
    args = ap.parse_args()
    torch.manual_seed(0)
    texts = dev_texts(args.data_dir, args.per_source)
    print(f"dev text: {', '.join(f'{n} {len(t)}' for n, t in texts.items())} sentences; masks seeded {args.seed}; "
          f"torch {torch.__version__}, fp32, {torch.get_num_threads()} threads")
    print(f"{'model':<40} {'masked':>7} {'loss':>7} {'perplexity':>11} {'accuracy':>9} {'s':>6}")
    for path in args.models:
        t0 = time.perf_counter()
        loaded = load_mlm(path)
        tokenizer = EncoderTokenizer.from_dir(loaded.source)
        data = MlmDataset(MLM, texts, tokenizer, args.seed, fixed=True)
        m = token_metrics(loaded.model, MLM, data)
        head = "" if loaded.head_from_checkpoint else " (fresh head)"
        print(f"{path + head:<40} {m[MLM.count_key]:>7} {m[MLM.metric_key('loss')]:>7.3f} "
              f"{m[MLM.metric_key('perplexity')]:>11.2f} {m[MLM.metric_key('accuracy')]:>9.4f} "
              f"{time.perf_counter() - t0:>6.1f}")


if __name__ == "__main__":
    main()
