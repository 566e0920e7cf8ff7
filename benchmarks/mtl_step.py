"""Cost of one multi-task training step: sum vs PCGrad vs PCGrad + SMART, bucketed vs not,
fp32 vs bf16 autocast (what `--precision auto` picks on CPUs that multiply bf16 natively).

Every variant runs the training loop's own step (bertmtl.mtl.step.MultitaskStep) on the same
real batches (default weights, ../shared/data), alternating variants round by round; prints
the median seconds per step and ratios against `sum`.

    python benchmarks/mtl_step.py [--rounds 6] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir, interleaved  # noqa: E402

from bertmtl.batching import RoundRobin  # noqa: E402
from bertmtl.device import cpu_has_native_bf16  # noqa: E402
from bertmtl.model.bert import BertModel  # noqa: E402
from bertmtl.model.heads import HeadConfig, MultitaskBert  # noqa: E402
from bertmtl.mtl.step import MultitaskStep  # noqa: E402
from bertmtl.tokenizer import WordPieceTokenizer  # noqa: E402
from bertmtl.engine import load_datasets  # noqa: E402
from bertmtl.train_config import TrainConfig  # noqa: E402
from bertmtl.weights import pretrained_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    torch.manual_seed(0)
    # fp32 is the reference for every comparison but the last one.
    base = TrainConfig(data_dir=str(data_dir()), batch_size=args.batch_size, precision="fp32")
    tok = WordPieceTokenizer.from_dir(pretrained_dir())
    train_sets, _, _ = load_datasets(base, tok, warn=lambda row: None)
    tasks = list(train_sets)
    model = MultitaskBert(BertModel.from_pretrained(pretrained_dir()), HeadConfig.of(base)).train()
    dev = torch.device("cpu")

    variants = {
        "sum": dict(combine="sum", smart=False),
        "pcgrad": dict(combine="pcgrad", smart=False),
        "pcgrad+smart": dict(combine="pcgrad", smart=True),
        "pcgrad, unbucketed": dict(combine="pcgrad", smart=False),
        "pcgrad, bf16": dict(combine="pcgrad", smart=False, precision="bf16"),
    }
    steppers = {}
    for name, kw in variants.items():
        cfg = TrainConfig(**{**base.to_dict(), **kw})
        steppers[name] = MultitaskStep(model, cfg, tasks, dev)
    # The same examples for every variant: draw batches once (bucketed and not) per round.
    bucketed = RoundRobin(train_sets, args.batch_size, seed=1)
    plain = RoundRobin(train_sets, args.batch_size, seed=1, bucket=False)
    rounds = [(bucketed.next(), plain.next()) for _ in range(args.rounds + 1)]
    it = {name: iter(rounds) for name in variants}
    tokens = {"bucketed": 0, "unbucketed": 0}

    def make(name):
        def run():
            b, u = next(it[name])
            batches = u if "unbucketed" in name else b
            if name in ("pcgrad", "pcgrad, unbucketed"):
                key = "unbucketed" if "unbucketed" in name else "bucketed"
                tokens[key] += sum(x.inputs.input_ids.numel() for x in batches.values())
            steppers[name].backward(batches)
            steppers[name].apply(1e-5)
        return run

    times = interleaved({n: make(n) for n in variants}, rounds=args.rounds, warmup=1)
    print(f"{args.batch_size} examples per task per step, 3 tasks, CPU threads {torch.get_num_threads()}; "
          f"median of {args.rounds} steps each, interleaved")
    print(f"{'variant':<22}{'s/step':>8}{'vs sum':>8}")
    for name, t in times.items():
        print(f"{name:<22}{t:>8.2f}{t / times['sum']:>8.2f}")
    print(f"PCGrad overhead over sum: {100 * (times['pcgrad'] / times['sum'] - 1):+.1f}% (target <= +15%)")
    print(f"padded tokens per step, bucketed vs unbucketed: {tokens['bucketed']} vs {tokens['unbucketed']}; "
          f"unbucketed/bucketed time {times['pcgrad, unbucketed'] / times['pcgrad']:.2f}x")
    print(f"bf16 autocast vs fp32 step: {times['pcgrad'] / times['pcgrad, bf16']:.2f}x faster "
          f"(native bf16 on this CPU: {cpu_has_native_bf16()}; --precision auto uses bf16 only then)")


if __name__ == "__main__":
    main()
