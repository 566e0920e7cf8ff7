"""Ensembles and soups of a sweep's seeds: their dev scores, which runs soup well, and their cost.

    python benchmarks/ensembles.py SWEEP_DIR [--own-init RUN ...] [--pairs 512] [--rounds 3]

SWEEP_DIR is a sweep built with `bertmtl sweep SPEC --out SWEEP_DIR --ensemble --soup` (one
configuration over several seeds that share `--init-seed`); its report.json holds every dev score
and paired bootstrap, printed here as the docs' table.

--own-init RUN ...: runs of the same configuration and the sweep's later seeds (43, 44, ...) but
their own head initialisation (no --init-seed). The uniform soup of the sweep's first seed with
them is scored on the same dev examples beside the soup of the sweep's first seeds (shared
initialisation): what a shared start is worth to a soup.

Cost: a Predictor of one run, of the uniform soup and of the ensembles of 2, 3, ... seeds each
answer the same Quora dev pairs (--pairs, fp32, one process), the variants alternating in each of
--rounds rounds; pairs per second is the median round's, the ratio to the single run is computed
within each round (the machine may be busy: ratios hold where absolute rates do not).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_dir  # noqa: E402


def quality(report: dict) -> None:
    from bertmtl.sweep.stats import describe_difference

    metrics = report["metrics"]
    for row in report["configurations"]:
        if not row.get("combined"):
            raise SystemExit("the sweep has no ensembles or soups: run it again with --ensemble --soup")
        singles = row["summary"]
        print(f"\n{row['config']}: seeds {row['seeds']} (the runs' last evaluation: mean [95% t interval])")
        print("  " + "  ".join(f"{lbl} {singles[m]['mean']:.4f} [{singles[m]['lo']:.4f}, {singles[m]['hi']:.4f}]"
                                 for m, lbl in metrics if singles[m]["lo"] is not None))
        head = ["model", *(lbl for _, lbl in metrics), f"vs single runs ({metrics[0][1]})",
                f"vs best single ({metrics[0][1]})", "passes"]
        print("| " + " | ".join(head) + " |\n" + "|---" * len(head) + "|")
        for c in row["combined"]:
            cells = ["—" if c["values"].get(m) is None else f"{c['values'][m]:.4f}" for m, _ in metrics]
            print(f"| {c['name']} | " + " | ".join(cells) + f" | {describe_difference(c.get('vs_singles'))} | "
                  f"{describe_difference(c.get('vs_best'))} | {c['passes']} |")


def own_init(report: dict, runs: list[str]) -> None:
    """The uniform soup of the first seed with runs of their own initialisation, against the soup of
    the sweep's first seeds (which share it), on the same dev examples."""
    from bertmtl.inference.combine import DevData, combine, mean_scored
    from bertmtl.runs.catalog import run_info
    from bertmtl.sweep.stats import describe_difference, paired_bootstrap

    row = report["configurations"][0]
    shared = [Path(r) for r in row["runs"][:len(runs) + 1]]
    cfg = run_info(shared[0])["config"]
    data = DevData(cfg["data_dir"], cfg.get("dev_limit"), cfg.get("eval_batch_size") or 64, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        a = combine(shared, soup=Path(tmp) / "shared", data=data)
        b = combine([shared[0], *runs], soup=Path(tmp) / "own", data=data)
    specs = a.specs
    print(f"\nuniform soups of {len(shared)} runs (seeds {row['seeds'][:len(shared)]}), dev overall:")
    print(f"  shared --init-seed: members {[round(s.overall, 4) for s in a.singles]} -> soup "
          f"{a.scores['soup'].overall:.4f}")
    print(f"  own initialisation: members {[round(s.overall, 4) for s in b.singles]} -> soup "
          f"{b.scores['soup'].overall:.4f}")
    d = paired_bootstrap([a.scores["soup"].outputs], [b.scores["soup"].outputs], specs, "overall", n=1000)
    print(f"  own minus shared: {describe_difference(d)}")
    ea, eb = mean_scored(a.singles, specs), mean_scored(b.singles, specs)
    print(f"ensembles of the same runs, dev overall: shared --init-seed {ea.overall:.4f}, own initialisation "
          f"{eb.overall:.4f}")
    d = paired_bootstrap([ea.outputs], [eb.outputs], specs, "overall", n=1000)
    print(f"  own minus shared: {describe_difference(d)}")


def cost(report: dict, n_pairs: int, rounds: int) -> None:
    from bertmtl.inference.combine import combine
    from bertmtl.inference.predict import Predictor

    row = report["configurations"][0]
    runs = [Path(r) for r in row["runs"]]
    soup = next(c["checkpoint"] for c in row["combined"] if c["name"] == "uniform soup")
    with open(data_dir() / "quora-dev.csv", newline="", encoding="utf-8") as fh:
        pairs = [(r["sentence1"], r["sentence2"]) for r in csv.DictReader(fh, delimiter="\t")][:n_pairs]
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"single run": runs[0], "uniform soup": Path(soup)}
        for k in range(2, len(runs) + 1):
            variants[f"ensemble of {k}"] = combine(runs[:k], ensemble=Path(tmp) / f"e{k}").written["ensemble"]
        predictors = {name: Predictor(path, precision="fp32") for name, path in variants.items()}
        for p in predictors.values():
            p.predict(pairs[:8])  # warm
        rates: dict[str, list[float]] = {name: [] for name in variants}
        ratios: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            this = {}
            for name in order:
                start = time.perf_counter()
                predictors[name].predict(pairs)
                this[name] = len(pairs) / (time.perf_counter() - start)
                rates[name].append(this[name])
            for name in variants:
                ratios[name].append(this[name] / this["single run"])
    print(f"\nprediction cost: {len(pairs)} Quora dev pairs, fp32, {rounds} rounds alternating "
          f"(pairs/s: the median round's; ratio: within each round, the median)")
    for name in variants:
        print(f"  {name:16s} {statistics.median(rates[name]):7.1f} pairs/s  {statistics.median(ratios[name]):.2f}x "
              f"the single run's rate")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--own-init", nargs="*", default=[])
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-cost", action="store_true", help="leave out the prediction cost")
    args = ap.parse_args()
    import torch

    from bertmtl.sweep.report import machine

    report = json.loads((args.sweep / "report.json").read_text())
    print("machine:", machine(), "threads", torch.get_num_threads())
    quality(report)
    if args.own_init:
        own_init(report, args.own_init)
    if not args.no_cost:
        cost(report, args.pairs, args.rounds)


if __name__ == "__main__":
    main()
