"""Whether `--compile` pays: graph breaks, compile time, and the compiled step against the eager one.

Builds the default training step (default weights, `bertmtl train`'s options, real batches from
the CS224N data) and compiles the encoder's layer stack as `bertmtl train --compile` does
(bertmtl.model.device.compile_encoder). Then:

1. graph breaks: torch._dynamo.explain on the stack in training mode with a real packed batch;
   the graphs it captures and every break with its reason (the target: one graph, no break);
2. compile time: the first compiled steps on the real batches (new shapes recompile where
   dynamic shapes do not cover them), less the eager step's time;
3. steady state: compiled and eager steps alternating on the same batches, the compiled stack
   switched on and off between them; the median of each and their ratio;
4. what a default run would gain: its step count (one epoch of the default data) times the
   difference, against the compile time.

    python benchmarks/compile.py [--rounds 4] [--warmup 6] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_step  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds of compiled / eager steps")
    ap.add_argument("--warmup", type=int, default=6, help="compiled steps (new shapes) before timing")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    import torch._dynamo

    from bertmtl.data.batching import RoundRobin
    from bertmtl.model.bert import Packing
    from bertmtl.model.device import compile_encoder

    _, train_sets, model, step, rr = default_step(args.batch_size)
    batches = [rr.next() for _ in range(args.warmup + args.rounds)]
    stack = model.encoder.encoder

    def one(b) -> float:
        t0 = time.perf_counter()
        step.backward(b)
        step.apply(1e-5)
        return time.perf_counter() - t0

    # 1. graph breaks, on one task's real padded batch packed as the encoder packs it
    first = next(iter(batches[0].values())).inputs
    packing = Packing(first.attention_mask)
    x = packing.pack(model.encoder.embeddings(first.input_ids, first.token_type_ids))
    explained = torch._dynamo.explain(stack)(x, None, packing, packing.seq)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, step precision "
          f"{step.autocast_dtype or 'fp32'}; batch {args.batch_size} per task, 3 tasks")
    print(f"graph breaks in the layer stack (torch._dynamo.explain, training mode): {explained.graph_break_count}; "
          f"graphs {explained.graph_count}, ops {explained.op_count}")
    for reason in explained.break_reasons[:10]:
        where = reason.user_stack[-1] if reason.user_stack else None
        print(f"  break: {reason.reason.splitlines()[0][:120]}"
              + (f" at {Path(where.filename).name}:{where.lineno}" if where else ""))
    torch._dynamo.reset()

    eager = statistics.median(one(b) for b in batches[:2])  # warm eager (kernels, allocations)
    messages = []
    assert compile_encoder(model, messages.append), messages
    compiled_call = stack._compiled_call_impl
    torch._dynamo.utils.counters.clear()
    t0 = time.perf_counter()
    warm = [one(b) for b in batches[:args.warmup]]
    spent = time.perf_counter() - t0
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    print(f"compile: first {args.warmup} compiled steps {spent:.1f} s (first {warm[0]:.1f} s), "
          f"{frames} graph(s) compiled; compile time ~ {spent - args.warmup * eager:.1f} s over eager")

    times = {"compiled": [], "eager": []}
    for b in batches[args.warmup:]:
        for name in ("compiled", "eager"):  # alternating, the same batch for both
            stack._compiled_call_impl = compiled_call if name == "compiled" else None
            times[name].append(one(b))
    c, e = statistics.median(times["compiled"]), statistics.median(times["eager"])
    print(f"steady state: compiled {c:.3f} s/step, eager {e:.3f} s/step, compiled/eager {c / e:.2f} "
          f"({args.rounds} alternating rounds)")
    steps = RoundRobin(train_sets, args.batch_size, seed=1).steps_per_epoch()  # a default run: one epoch
    cost = spent - args.warmup * eager
    print(f"a default run of {steps} steps: eager {steps * e / 60:.0f} min, compiled {(steps * c + cost) / 60:.0f} min "
          f"with compile time; break-even after {cost / (e - c):.0f} steps" if c < e else
          f"a default run of {steps} steps: compiled is not faster per step, so --compile stays off by default")


if __name__ == "__main__":
    main()
