"""How fast `bertmtl sweep` stops on one SIGTERM, against the time of one training step.

A scheduler's SIGTERM should end a sweep within one step and one checkpoint save. This starts a
real sweep (a grid of two configurations, two seeds, the given encoder on the CS224N data), waits
until its first run has trained `--after` steps, sends one SIGTERM to the sweep (with --workers,
to the parent, which passes it on), and measures the time until every process of it has exited.
The step time is the median gap between the run's train records (logged every step here:
--log-every 1); the checkpoint save is what remains. Then it runs the
same command again and reports whether every configuration x seed finished with one start record.

    python benchmarks/sweep_stop.py [--encoder minilm] [--workers 1] [--after 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import data_dir


def records(run: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--after", type=int, default=3, help="steps of the first run before the SIGTERM")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="steps per run")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bertmtl-sweep-stop-"))
    spec = work / "spec.json"
    spec.write_text(json.dumps({
        "name": "stop", "seeds": 2, "grid": {"combine": ["sum", "pcgrad"]},
        "base": {"encoder": args.encoder, "data_dir": str(data_dir()), "max_steps": args.steps, "eval_every": 1000,
                 "dev_limit": 20, "batch_size": args.batch_size, "log_every": 1}}))
    out = work / "out"
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "bertmtl", "sweep", str(spec), "--out", str(out), "--workers", str(args.workers),
           "--bootstrap", "100"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the sweep ended before {args.after} steps: {proc.stderr.read().decode()[-2000:]}")
        steps = {run: [r for r in records(run) if r.get("type") == "train"] for run in (out / "runs").glob("*/")}
        if any(len(t) >= args.after for t in steps.values()):
            break
        time.sleep(0.01)
    gaps = [b["time"] - a["time"] for t in steps.values() for a, b in zip(t, t[1:]) if b["step"] == a["step"] + 1]
    children = []
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as fh:
            children = [int(p) for p in fh.read().split()]
    except OSError:
        pass
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    parent_exit = time.perf_counter() - t0
    for pid in children:  # every process of the sweep gone
        while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]:
            time.sleep(0.01)
    all_exit = time.perf_counter() - t0
    step = statistics.median(gaps) if gaps else float("nan")
    print(f"encoder {args.encoder}, workers {args.workers}, batch {args.batch_size} per task, SIGTERM after step "
          f"{args.after}: exit code {proc.returncode}")
    print(f"step (median of {len(gaps)} gaps): {step:.2f} s; SIGTERM to exit: parent {parent_exit:.2f} s, every process "
          f"{all_exit:.2f} s ({all_exit / step:.2f} steps)")
    t0 = time.perf_counter()
    again = subprocess.run(cmd, env=env, capture_output=True)
    runs = sorted((out / "runs").iterdir())
    starts = [[r["type"] for r in records(run)].count("start") for run in runs]
    ends = [records(run)[-1].get("status") for run in runs]
    print(f"the same command again: exit code {again.returncode} in {time.perf_counter() - t0:.0f} s; {len(runs)} runs, "
          f"start records {starts}, statuses {ends}")


if __name__ == "__main__":
    main()
