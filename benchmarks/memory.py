"""Peak resident memory (RSS) of real training steps of the default configuration.

Runs `python -m bertmtl train` for a fixed number of steps on the real data in a child
process (the final dev evaluation included, as in a real run) and prints that child's peak RSS
beside the peak RSS of a child that only imports torch, so the figure that the training itself
adds is visible. Options this script does not know are passed on to `bertmtl train`.

    python benchmarks/memory.py [--steps 30 | --full] [--encoder NAME|DIR] [--data-dir DIR] [train options...]
    python benchmarks/memory.py --full                 the whole default run (2 epochs, 3 dev evaluations)
    python benchmarks/memory.py --steps 30 --encoder mpnet
    python benchmarks/memory.py --steps 30 -- --smart --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_of(cmd: list[str], env: dict | None = None, quiet: bool = True) -> tuple[float, float, int]:
    """(peak RSS in GiB, wall seconds, exit status) of one child process.

    os.wait4 returns the resource usage of exactly that child (ru_maxrss, KiB on Linux), so
    earlier children of this process do not mix into the figure.
    """
    out = subprocess.DEVNULL if quiet else None
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.PIPE if quiet else None)
    stderr = proc.stderr.read() if quiet else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode and stderr:
        sys.stderr.write(stderr.decode(errors="replace")[-4000:])
    return usage.ru_maxrss / 2**20, time.perf_counter() - t0, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="training steps (then one dev evaluation)")
    ap.add_argument("--full", action="store_true", help="the whole run the options give (the default: 2 epochs), "
                                                        "not --steps: its longest batches and every evaluation")
    ap.add_argument("--data-dir", default=None, help="task CSVs [default: $BERTMTL_DATA, ./data or ../shared/data]")
    ap.add_argument("--encoder", "--pretrained", dest="encoder", default=None,
                    help="built-in encoder name (minilm, mpnet) or directory, passed to train")
    ap.add_argument("--verbose", action="store_true", help="show the training output")
    args, extra = ap.parse_known_args()
    extra = [a for a in extra if a != "--"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

    base, _, _ = peak_rss_of([sys.executable, "-c", "import torch"], env)
    with tempfile.TemporaryDirectory(prefix="bertmtl-mem-") as tmp:
        cmd = [sys.executable, "-m", "bertmtl", "train", "--data-dir", str(args.data_dir or data_dir()),
               "--out", str(Path(tmp) / "run"), *([] if args.full else ["--max-steps", str(args.steps)])]
        if args.encoder:
            cmd += ["--encoder", args.encoder]
        cmd += extra
        peak, secs, rc = peak_rss_of(cmd, env, quiet=not args.verbose)
    if rc:
        raise SystemExit(f"training failed (exit status {rc}): {' '.join(cmd)}")
    shown = " ".join(cmd[3:6] + ["--out", "TMP"] + cmd[8:])
    print(f"command: bertmtl {shown}")
    what = "train, the whole run" if args.full else f"train, {args.steps} steps + dev eval"
    rows = [('python -c "import torch"', base, ""), (what, peak, f"   ({secs:.0f} s)"),
            ("added by training", peak - base, "")]
    print(f"{'process':<34} {'peak RSS':>11}")
    for label, gib, note in rows:
        print(f"{label:<34} {gib:>7.2f} GiB{note}")


if __name__ == "__main__":
    main()
