"""The default training step on a quiet CPU and beside a CPU-bound competitor, by thread setting.

One child process per setting (OpenMP's thread count and wait policy are fixed when torch loads,
so each setting needs a process of its own) builds the default step once (default weights,
`bertmtl train`'s options, real batches from the CS224N data) and runs steps when the parent
asks. Round by round the parent alternates a quiet phase and a loaded one (one busy-looping
process: a core's worth of other work, as a browser or a second run would take), and in each
phase asks every child for the same number of steps; it prints the median seconds per step of
every setting in each phase and the ratios the contention question turns on:

    python benchmarks/contention.py [--rounds 3] [--steps 3] [--batch-size 32] [--competitors 1]

--competitors K loads the machine with K busy-looping processes instead of one (a load average
of about K + 1 on a quiet machine: the heavier case).

Settings: torch's own default (a thread per core, OpenMP's spinning wait: what bertmtl ran with
before bertmtl/threads.py), one thread, and what the `bertmtl` command sets up (a thread per
core, passive waiting).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# name -> (environment, whether the child sets up threads as the `bertmtl` command does)
SETTINGS = {
    "spinning": ({}, False),  # torch's own default: a thread per core, OpenMP's spinning wait
    "1 thread": ({"OMP_NUM_THREADS": "1"}, False),
    "bertmtl": ({}, True),  # what `bertmtl train` runs with (bertmtl/threads.py: passive waiting)
}
COMPETITOR = "while True: pass"


def child(batch_size: int, as_command: bool) -> None:
    """Build the default step, then answer `N` lines on stdin with N steps' seconds (a JSON list)."""
    if as_command:  # before torch loads, as the command's entry point does
        from bertmtl.threads import configure_threads

        configure_threads()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import default_step

    _, _, _, step, rr = default_step(batch_size)
    print(json.dumps({"threads": torch.get_num_threads(), "precision": str(step.autocast_dtype)}), flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            batches = rr.next()
            t0 = time.perf_counter()
            step.backward(batches)
            step.apply(1e-5)
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="steps per setting per phase and round")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--competitors", type=int, default=1, help="busy-looping processes in the loaded phase")
    ap.add_argument("--child", choices=("plain", "command"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.batch_size, args.child == "command")
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    kids = {name: subprocess.Popen([sys.executable, __file__, "--child", "command" if as_command else "plain",
                                    "--batch-size", str(args.batch_size)],
                                   env={**base, **env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            for name, (env, as_command) in SETTINGS.items()}
    info = {name: json.loads(k.stdout.readline()) for name, k in kids.items()}

    def ask(n: int) -> dict[str, list[float]]:
        out = {}
        for name, k in kids.items():  # one at a time: the children never compete with each other
            k.stdin.write(f"{n}\n")
            k.stdin.flush()
            out[name] = json.loads(k.stdout.readline())
        return out

    ask(1)  # warm-up: first-step allocations and kernel selection
    times = {(name, phase): [] for name in kids for phase in ("quiet", "loaded")}
    try:
        for _ in range(args.rounds):
            for phase in ("quiet", "loaded"):
                competitors = [subprocess.Popen([sys.executable, "-c", COMPETITOR])
                               for _ in range(args.competitors if phase == "loaded" else 0)]
                try:
                    if competitors:
                        time.sleep(0.5)  # scheduled and spinning before the first step
                    for name, ts in ask(args.steps).items():
                        times[name, phase] += ts
                finally:
                    for c in competitors:
                        c.kill()
                        c.wait()
    finally:
        for k in kids.values():
            k.stdin.close()
            k.wait()
    med = {key: statistics.median(v) for key, v in times.items()}
    print(f"{os.cpu_count()} CPUs; batch {args.batch_size} per task, 3 tasks; {args.rounds} rounds x {args.steps} "
          f"steps per setting and phase, quiet and loaded alternating; loaded = {args.competitors} busy-looping "
          f"process(es)")
    print(f"{'setting':<10}{'threads':>8}{'quiet s/step':>14}{'loaded s/step':>15}{'loaded/quiet':>14}")
    for name in kids:
        q, lo = med[name, "quiet"], med[name, "loaded"]
        print(f"{name:<10}{info[name]['threads']:>8}{q:>14.2f}{lo:>15.2f}{lo / q:>14.2f}")
    one = med["1 thread", "loaded"]
    print(f"loaded: bertmtl / 1 thread = {med['bertmtl', 'loaded'] / one:.2f} (target <= 1.25); "
          f"spinning / 1 thread = {med['spinning', 'loaded'] / one:.2f}")
    print(f"quiet: bertmtl / spinning = {med['bertmtl', 'quiet'] / med['spinning', 'quiet']:.2f} (target <= 1.05); "
          f"1 thread / spinning = {med['1 thread', 'quiet'] / med['spinning', 'quiet']:.2f}")


if __name__ == "__main__":
    main()
