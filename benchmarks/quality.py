"""Quality benchmark: train the default configuration on the real task data, score dev.

    python benchmarks/quality.py                       # defaults, data from ../shared/data
    python benchmarks/quality.py --json-out q.json -- --pair-mode cross --epochs 2

Everything after `--` goes to `bertmtl train` unchanged. Prints the dev metrics beside the
paper's (CS224N report, bert-base) and the targets, with the wall time and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir  # noqa: E402

PAPER = {"sst_acc": 0.514, "para_acc": 0.789, "sts_corr": 0.727, "overall": 0.677}
TARGET = {"sst_acc": 0.515, "para_acc": 0.85, "sts_corr": 0.87, "overall": 0.745}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, help="task CSVs [default: $BERTMTL_DATA, ./data or ../shared/data]")
    ap.add_argument("--out", default=None, help="run directory [default: a temporary one]")
    ap.add_argument("--json-out", default=None, help="also write the result as JSON here")
    args = ap.parse_args(own)

    import torch

    from bertmtl.cli import main as cli

    data = args.data_dir or str(data_dir())
    out = args.out or tempfile.mkdtemp(prefix="bertmtl-quality-")
    out_run = str(Path(out) / "run") if args.out is None else out
    cmd = ["train", "--data-dir", data, "--out", out_run, *extra]
    print("bertmtl " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    try:
        cli.main(cmd, standalone_mode=False)
    except SystemExit as e:
        if e.code:
            raise
    wall = time.perf_counter() - t0
    best = json.loads((Path(out_run) / "best" / "metrics.json").read_text())
    summary = json.loads((Path(out_run) / "summary.json").read_text())
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU threads visible, torch {torch.__version__}, "
               f"{torch.get_num_threads()} intra-op threads"
               + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    print(f"\n{'':<12}{'SST acc':>9}{'Quora acc':>11}{'STS r':>8}{'overall':>9}")
    for name, row in (("paper", PAPER), ("target", TARGET), ("ours (best)", best)):
        print(f"{name:<12}{row['sst_acc']:>9.3f}{row['para_acc']:>11.3f}{row['sts_corr']:>8.3f}{row['overall']:>9.3f}")
    met = all(best[k] >= v for k, v in TARGET.items())
    print(f"\nSST macro-F1 {best['sst_f1']:.3f}; steps {summary['step']}; wall {wall / 60:.1f} min; "
          f"targets {'met' if met else 'NOT met'}\nmachine: {machine}\nrun: {out_run}")
    result = {"args": extra, "best": best, "wall_s": wall, "steps": summary["step"], "machine": machine,
              "targets_met": met, "run": out_run, "best_overall": summary.get("best_overall"),
              "last": summary.get("last_metrics")}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
