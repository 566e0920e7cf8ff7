"""The TUI playground's answer time once its model is loaded: a sentence and a pair, answered by
the Predictor with the TUI's own thread count (tui/app.py PLAYGROUND_THREADS), median of rounds.

(This was a wall-clock assertion in tests/test_tui.py, which a loaded machine made flaky; a timing
belongs here, printed with the machine it ran on.)

    python benchmarks/playground_latency.py [--checkpoint DIR] [--rounds 30]

Without --checkpoint, a checkpoint of the default weights with fresh heads (answer time does not
depend on training), as benchmarks/predict.py writes it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from predict import make_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    from bertmtl.inference.predict import Predictor
    from bertmtl.tui.app import PLAYGROUND_THREADS

    torch.set_num_threads(PLAYGROUND_THREADS)
    ckpt = args.checkpoint or str(make_checkpoint(Path(tempfile.mkdtemp(prefix="bertmtl-play-bench-")) / "ckpt"))
    p = Predictor(ckpt)
    p.pair("warm up", "the cache")
    sentence, pair = [], []
    for i in range(args.rounds):  # alternating, so that machine noise hits both alike
        t0 = time.perf_counter()
        p.sentence(f"the movie number {i} is very good")
        t1 = time.perf_counter()
        p.pair(f"the movie number {i} is very good", "a bad film")
        sentence.append(t1 - t0)
        pair.append(time.perf_counter() - t1)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {PLAYGROUND_THREADS} thread(s), "
          f"checkpoint {ckpt}")
    print(f"playground answer, median of {args.rounds}: sentence {statistics.median(sentence) * 1000:.1f} ms, "
          f"pair {statistics.median(pair) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
