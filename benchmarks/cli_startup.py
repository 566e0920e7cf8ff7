"""CLI start-up: wall time of `bertmtl --help` and `bertmtl train --help` beside `python -c "import torch"`.

The CLI loads a command's module only when it runs and imports no torch to print help, so
both help commands should take well under the time torch alone needs to import (target: 0.3 s).
Each command is run `--rounds` times, alternating, and the median is printed.

    python benchmarks/cli_startup.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "bertmtl --help": [sys.executable, "-m", "bertmtl", "--help"],
    "bertmtl train --help": [sys.executable, "-m", "bertmtl", "train", "--help"],
    "bertmtl --version": [sys.executable, "-m", "bertmtl", "--version"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
    'python -c "pass"': [sys.executable, "-c", "pass"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.rounds):
        for name, argv in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"{name:28s} {statistics.median(ts):6.3f} s  (median of {args.rounds})")
    ok = all(statistics.median(times[k]) < 0.3 for k in ("bertmtl --help", "bertmtl train --help"))
    print(f"target < 0.3 s for both help commands: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
