"""How soon a large grid sweep says what it will train and starts its first run.

Writes a spec of an 8,000-point grid (1,000 learning rates x 2 combiners x 2 dropouts x 2 warmups,
3 steps each, the CS224N data), starts `bertmtl sweep SPEC --out DIR`, and prints the seconds
until its plan line ("N configurations x 1 seed = N runs") and until the first run's start record
in its metrics.jsonl (the data and the encoder loaded, training begun); then stops it with one
SIGTERM. `--limit` bounds the wait (a version that queues every point first never gets there).

    python benchmarks/sweep_start.py [--limit 600]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import data_dir

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=float, default=600.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bertmtl-sweep-start-"))
    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"name": "start", "base": {"max_steps": 3, "data_dir": str(data_dir())},
                                "grid": {"lr": [round(1e-5 * (i + 1), 8) for i in range(1000)],
                                         "combine": ["sum", "pcgrad"], "dropout": [0.1, 0.2], "warmup": [0.0, 0.1]}}))
    out = tmp / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bertmtl", "sweep", str(spec), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    lines: list[tuple[float, str]] = []
    threading.Thread(target=lambda: [lines.append((time.monotonic() - t0, x.rstrip())) for x in proc.stdout],
                     daemon=True).start()
    first = None
    while time.monotonic() - t0 < args.limit and proc.poll() is None:
        runs = list((out / "runs").glob("*/metrics.jsonl")) if (out / "runs").is_dir() else []
        if any('"start"' in r.read_text() for r in runs):
            first = time.monotonic() - t0
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(300)
    plan = next((t for t, line in lines if "configurations x" in line), None)
    said = f"{plan:.1f} s" if plan is not None else f"not within {args.limit:.0f} s"
    began = f"{first:.1f} s" if first is not None else f"not within {args.limit:.0f} s"
    print(f"8,000-point grid: plan line after {said}; first run's start record after {began}; "
          f"exit {proc.returncode} after one SIGTERM")


if __name__ == "__main__":
    main()
