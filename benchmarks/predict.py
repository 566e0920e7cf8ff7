"""Prediction speed: cold start of `bertmtl predict "a" "b"`, and streaming pairs through stdin.

Cold start = median wall time of the command minus that of `python -c "import torch"`,
alternating the two. Streaming = 5,000 real Quora pairs piped through `bertmtl predict -`,
alternating with our encoder's raw throughput on the same sentences (sorted batches of 64,
already tokenised, no I/O, no parsing), so the overhead of the stdin path is visible.

    python benchmarks/predict.py [--checkpoint DIR] [--pairs 5000] [--rounds 5] [--stream-rounds 3]

Without --checkpoint, a checkpoint of the default weights with fresh heads is written to a
temporary directory (prediction cost does not depend on training).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(out: Path) -> Path:
    from bertmtl.runs.checkpoint import save_checkpoint
    from bertmtl.model.bert import BertModel
    from bertmtl.model.heads import MultitaskBert
    from bertmtl.encoders.tokenizer import EncoderTokenizer
    from bertmtl.encoders.weights import pretrained_dir

    model = MultitaskBert(BertModel.from_pretrained(pretrained_dir()))
    save_checkpoint(out, model, EncoderTokenizer.from_dir(pretrained_dir()), step=0, epoch=0.0, train_args={},
                    metrics={}, tasks=["sst", "para", "sts"])
    return out


def timed(cmd: list[str], stdin: bytes | None = None) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, input=stdin, capture_output=True, env=env)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{r.stderr.decode()[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--pairs", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5, help="cold-start rounds")
    ap.add_argument("--stream-rounds", type=int, default=3, help="stdin / encoder-alone rounds, alternating")
    args = ap.parse_args()
    import torch

    tmp = tempfile.mkdtemp(prefix="bertmtl-predict-bench-")
    ckpt = args.checkpoint or str(make_checkpoint(Path(tmp) / "ckpt"))
    py = sys.executable
    bertmtl = [py, "-m", "bertmtl", "predict", "--checkpoint", ckpt]

    base, cold = [], []
    for _ in range(args.rounds):
        base.append(timed([py, "-c", "import torch"]))
        cold.append(timed([*bertmtl, "A man is playing a guitar.", "Someone plays the guitar."]))
    b, c = statistics.median(base), statistics.median(cold)
    print(f"cold start: `bertmtl predict \"a\" \"b\"` {c:.2f} s, `python -c \"import torch\"` {b:.2f} s, "
          f"difference {c - b:.2f} s (target <= 1.0 s)")

    with open(data_dir() / "quora-dev.csv", newline="", encoding="utf-8") as f:
        rows = [(r["sentence1"], r["sentence2"]) for r in csv.DictReader(f, delimiter="\t")]
    if len(rows) < args.pairs:
        with open(data_dir() / "quora-train.csv", newline="", encoding="utf-8") as f:
            rows += [(r["sentence1"], r["sentence2"]) for r in csv.DictReader(f, delimiter="\t")
                     if r["sentence1"] and r["sentence2"]]
    rows = [(a.replace("\t", " ").replace("\n", " "), c.replace("\t", " ").replace("\n", " ")) for a, c in rows[: args.pairs]]
    stdin = "".join(f"{a}\t{c}\n" for a, c in rows).encode()

    from bertmtl.inference.predict import Predictor

    p = Predictor(ckpt)
    sents = list(dict.fromkeys(s for pair in rows for s in pair))
    ids = [e.ids for e in p.tokenizer.encode(sents)]

    def encoder_alone() -> float:
        # The same precision as the predictor itself uses (bf16 where the CPU has it natively).
        with torch.inference_mode(), torch.autocast("cpu", dtype=p.autocast_dtype, enabled=p.autocast_dtype is not None):
            t0 = time.perf_counter()
            p._embed(ids)
            return time.perf_counter() - t0

    encoder_alone()  # warm-up
    streams, raws = [], []
    for _ in range(args.stream_rounds):  # alternating, so a busy machine slows both alike
        streams.append(timed([*bertmtl, "-"], stdin=stdin) - (c - b) - b)  # without process start-up
        raws.append(encoder_alone())
        print(f"  round {len(raws)}: stdin {len(rows) / streams[-1]:.0f} pairs/s, encoder alone "
              f"{len(rows) / raws[-1]:.0f} pairs/s, {100 * raws[-1] / streams[-1]:.0f}%", flush=True)
    steady, raw = statistics.median(streams), statistics.median(raws)
    print(f"stdin stream: {len(rows)} Quora pairs at {len(rows) / steady:.0f} pairs/s without process start-up "
          f"(median of {args.stream_rounds} rounds; start-up adds {c:.1f} s)")
    print(f"encoder alone on the same {len(sents)} distinct sentences: {len(sents) / raw:.0f} sentences/s "
          f"= {len(rows) / raw:.0f} pairs/s (the ceiling; stdin path reaches {100 * raw / steady:.0f}% of it, "
          f"target >= 80%)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, predictor precision "
          f"{'bf16' if p.autocast_dtype is not None else 'fp32'} (bertmtl predict --precision auto)")


if __name__ == "__main__":
    main()
