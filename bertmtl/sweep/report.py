"""A sweep's report, rebuilt from its runs alone: DIR/report.md, report.json and report.svg.

For every configuration and metric: the mean over seeds, their standard deviation and the 95%
t interval (stats.mean_ci); against the baseline, a paired bootstrap over the dev examples both
scored, pooled over seeds (stats.paired_bootstrap), with its p-value and "within noise" where
the interval of the difference covers zero. The runs are read from DIR/runs (each run's own
metrics.jsonl and dev outputs), so `bertmtl sweep --report DIR` gives the same report at any
time, from whatever has finished; a configuration with fewer finished seeds than the spec asks
for is named, with what became of the others.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..errors import UserError
from .stats import describe_difference
from .spec import REPORT_COLUMNS, ROW, SweepSpec, config_key
from .study import RUNS

SPEC_FILE = "sweep.json"  # the spec as the sweep read it, beside its runs


def collect(out: Path, spec: SweepSpec) -> dict[str, dict[str, dict]]:
    """{"finished" | "pruned" | "other": {config key: {"params", "runs": {seed: run dir}, "states":
    {seed: status}}}} of the runs under DIR/runs, each run's log read once: those trained as far as
    they were meant to (Status.succeeded), those the pruner stopped, and the rest (diverged,
    stopped, crashed: not in the tables, named as missing seeds)."""
    from ..runs.rundir import holds_run
    from ..runs.catalog import run_info
    from ..runs.status import Status

    groups: dict[str, dict[str, dict]] = {"finished": {}, "pruned": {}, "other": {}}
    # A row is not an option of its runs: it is known by its run's name (study.run_dir_of).
    rows = {config_key(p): p for p in spec.grid_points()} if spec.rows else None
    root = Path(out) / RUNS
    for run in sorted(root.iterdir()) if root.is_dir() else ():
        if not run.is_dir() or not holds_run(run):
            continue
        info = run_info(run)
        cfg = info["config"]
        if rows is not None:
            params = rows.get(run.name.rpartition("-s")[0])
        else:
            params = None if any(k not in cfg for k in spec.swept) else {k: cfg[k] for k in spec.swept}
        if params is None:
            continue
        status = Status.of(info["status"])
        group = "finished" if status.succeeded else "pruned" if status == Status.PRUNED else "other"
        c = groups[group].setdefault(config_key(params), {"params": params, "runs": {}, "states": {}})
        c["runs"][int(cfg["seed"])] = run
        c["states"][int(cfg["seed"])] = f"{status} at step {info['step']}" if not status.final else str(status)
    return groups


def metrics_of(spec: SweepSpec, specs) -> list[tuple[str, str]]:
    """(key, label) of the report's metrics: the spec's metric first, then every task's primary one."""
    from ..tasks import metric_labels

    labels = [*metric_labels(specs, primary_only=True), ("overall", "Overall")]
    chosen = [m for m in [*labels, *metric_labels(specs)] if m[0] == spec.metric][:1]
    if not chosen:
        raise UserError(f"metric {spec.metric!r} is not a dev metric of these runs; choose from "
                        f"{', '.join(k for k, _ in [*metric_labels(specs), ('overall', 'Overall')])}")
    return chosen + [m for m in labels if m[0] != spec.metric]


def incomplete(spec: SweepSpec, groups: dict) -> list[dict]:
    """Configurations with fewer finished seeds than the spec asks for, and what became of each
    missing seed (diverged, stopped at a step, not trained); a grid's untrained points included."""
    pruned = set(groups["pruned"])
    keys = [config_key(p) for p in spec.grid_points()] if spec.fixed else []
    params = {config_key(p): p for p in spec.grid_points()} if spec.fixed else {}
    for group in groups.values():
        for k, c in group.items():
            params.setdefault(k, c["params"])
            if k not in keys:
                keys.append(k)
    out = []
    for k in keys:
        if k in pruned:
            continue
        done = set(groups["finished"].get(k, {}).get("runs", {}))
        states = groups["other"].get(k, {}).get("states", {})
        missing = {seed: states.get(seed, "not trained") for seed in spec.seed_list() if seed not in done}
        if missing:
            out.append({"config": k, "params": params[k], "finished": len(done), "missing": missing})
    return out


def build_report(out: Path, spec: SweepSpec, replicates: int = 1000) -> dict:
    """The report of the sweep in `out` (written there); returns it."""
    from ..fsutil import write_bytes, write_json
    from .pictures import intervals_svg
    from ..runs.rundir import read_dev_outputs
    from ..runs.state import RunState
    from .stats import mean_ci, paired_bootstrap
    from ..tasks import metric_range
    from ..numbers import finite_number

    out = Path(out)
    groups = collect(out, spec)
    configs = groups["finished"]
    missing = incomplete(spec, groups)
    pruned = [{"config": k, "params": c["params"], "runs": [str(r) for _, r in sorted(c["runs"].items())]}
              for k, c in groups["pruned"].items()]
    # A configuration pruned in a later seed has finished seeds too: it is pruned, not a row.
    configs = {k: c for k, c in configs.items() if k not in {p["config"] for p in pruned}}
    if not configs:
        raise UserError(f"{out / RUNS}: no finished run of this sweep yet")
    first_run = next(iter(next(iter(configs.values()))["runs"].values()))
    specs = RunState.of(first_run).specs
    spec_by_task = {s.name: s for s in specs}
    metrics = metrics_of(spec, specs)
    ranges = {m: metric_range(specs, m) for m, _ in metrics}
    baseline_key = None
    if spec.baseline:
        baseline_key = next((k for k, c in configs.items()
                             if all(c["params"].get(n) == v for n, v in spec.baseline.items())), None)
    shown = spec.report or {}
    columns = [(k, REPORT_COLUMNS[k]) for k in shown.get("columns", [])]
    rows = []
    outputs = {k: [read_dev_outputs(r) for _, r in sorted(c["runs"].items())] for k, c in configs.items()}
    for key, c in configs.items():
        seeds = sorted(c["runs"])
        states = [RunState.of(c["runs"][s]) for s in seeds]  # each run's log, read once
        evals = [s.eval_records[-1] if s.eval_records else {} for s in states]
        per_seed = {m: [finite_number(e.get(m)) for e in evals] for m, _ in metrics}
        name = c["params"].get(ROW, key)  # a row's name, or the grid point's key
        row = {"config": key, "params": c["params"], "seeds": seeds, "runs": [str(c["runs"][s]) for s in seeds],
               "values": per_seed, "summary": {m: mean_ci(v, ranges[m]) for m, v in per_seed.items()},
               "baseline": key == baseline_key, "vs_baseline": None,
               "title": (shown.get("titles") or {}).get(name),
               "training_s": sum(s.training_seconds or 0.0 for s in states),
               "reference": ((shown.get("reference") or {}).get("values") or {}).get(name)}
        if columns:  # each run's mean over its log records, then over seeds
            runs = [{k: mean_ci([r.get(k) for r in s.telemetry])["mean"] for k, _ in columns} for s in states]
            row["telemetry"] = {k: mean_ci([r[k] for r in runs]) for k, _ in columns}
        if shown.get("loss_weights"):  # the last log record's, of the first seed
            row["loss_weight"] = next((r["loss_weight"] for r in reversed(states[0].telemetry) if r.get("loss_weight")),
                                      None)
        if baseline_key and key != baseline_key and all(outputs[key]) and all(outputs[baseline_key]):
            row["vs_baseline"] = {m: paired_bootstrap(outputs[baseline_key], outputs[key], spec_by_task, m,
                                                      n=replicates, seed=0) for m, _ in metrics}
        row["combined"] = combined_rows(out, key, metrics, spec_by_task, replicates)
        rows.append(row)
    lead = metrics[0][0]
    if spec.rows:  # named rows stay in the spec's order (a table's); other configurations: baseline, then best first
        order = list(spec.rows)
        rows.sort(key=lambda r: order.index(r["params"][ROW]))
    else:
        rows.sort(key=lambda r: (not r["baseline"], -(r["summary"][lead]["mean"] if r["summary"][lead]["mean"] is not None
                                                       else -math.inf)))
    report = {"sweep": spec.name, "spec": spec.to_dict(), "metric": spec.metric, "metrics": metrics,
              "baseline": baseline_key, "configurations": rows, "pruned": pruned, "incomplete": missing,
              "replicates": replicates, "title": shown.get("title"), "columns": columns,
              "loss_weights": bool(shown.get("loss_weights")), "reference_label": (shown.get("reference") or {}).get("label"),
              "notes": shown.get("notes", []), "machine": machine(),
              "expected_seeds": spec.seed_list(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if shown.get("picture"):
        report["picture"] = conflict_picture(out, rows[0])
    write_json(out / "report.json", report)
    write_bytes(out / "report.md", markdown(report).encode())
    write_bytes(out / "report.svg", intervals_svg(
        [(r["config"], {m: r["summary"][m] for m, _ in metrics}) for r in rows], metrics,
        title=f"sweep {spec.name}: mean over seeds, 95% interval").encode())
    return report


def combined_rows(out: Path, key: str, metrics: list, specs: dict, replicates: int) -> list[dict] | None:
    """A configuration's ensembles and soups (sweep/combined.py), each with its dev metrics and the
    paired bootstrap of the lead metric against the configuration's single runs (pooled over seeds)
    and against its best single run; the single runs first (their best/ checkpoints), mean and best."""
    from .combined import read_combined
    from .stats import paired_bootstrap

    saved = read_combined(out, key)
    if not saved:
        return None
    lead = metrics[0][0]
    singles = [m for m in saved["models"] if "seed" in m]
    if not singles or not all(m["outputs"] for m in saved["models"]):
        return None
    best = max(singles, key=lambda m: m["metrics"].get(lead) if m["metrics"].get(lead) is not None else -math.inf)
    rows = [{"name": f"single runs, mean of {len(singles)}", "passes": 1,
             "values": {k: _mean([m["metrics"].get(k) for m in singles]) for k, _ in metrics},
             "seconds": _mean([m["seconds"] for m in singles])},
            {"name": f"best single run (seed {best['seed']})", "passes": 1,
             "values": {k: best["metrics"].get(k) for k, _ in metrics}, "seconds": best["seconds"]}]
    for m in saved["models"]:
        if "seed" in m:
            continue
        rows.append({"name": m["name"], "passes": m["passes"], "members": m["members"],
                     "checkpoint": m.get("checkpoint"), "seconds": m["seconds"],
                     "values": {k: m["metrics"].get(k) for k, _ in metrics},
                     "vs_singles": paired_bootstrap([s["outputs"] for s in singles], [m["outputs"]], specs, lead,
                                                    n=replicates, seed=0),
                     "vs_best": paired_bootstrap([best["outputs"]], [m["outputs"]], specs, lead, n=replicates,
                                                 seed=0)})
    return rows


def _mean(values: list) -> float | None:
    vs = [v for v in values if isinstance(v, (int, float))]
    return sum(vs) / len(vs) if vs else None


def incomplete_lines(report: dict) -> list[str]:
    """One line per incomplete configuration: its finished seeds, and each missing seed's state."""
    return [_params(c["params"]) + f": {c['finished']} of "
            f"{len(report['expected_seeds'])} seeds finished (" + "; ".join(f"seed {s}: {state}" for s, state in
                                                                            c["missing"].items()) + ")"
            for c in report.get("incomplete", [])]


def _ci(s: dict) -> str:
    if s["mean"] is None:
        return "—"
    if s["lo"] is None:
        return f"{s['mean']:.3f}"
    return f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"


def machine() -> dict:
    """Where the report's numbers were measured (its runs' own logs say where each trained)."""
    import os
    import platform

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def conflict_picture(out: Path, row: dict) -> dict:
    """conflicts.svg: the task-conflict telemetry of a configuration's first run (sweep/pictures.py)."""
    from ..fsutil import write_bytes
    from ..runs.state import RunState
    from .pictures import conflict_svg

    name = row["title"] or _name(row)
    seed, run = row["seeds"][0], row["runs"][0]
    write_bytes(out / "conflicts.svg", conflict_svg(RunState.of(Path(run)), title=f"{name}, seed {seed}").encode())
    return {"file": "conflicts.svg", "run": run,
            "caption": f"{name} (seed {seed}): each task pair's gradient cosine over the run (left: its mean, red "
                       "where the tasks conflict) and per log window (right)."}


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _name(row: dict) -> str:
    return row.get("title") or _params(row["params"])


def _combined_markdown(report: dict) -> list[str]:
    """The section of ensembles and soups (`bertmtl sweep --ensemble --soup`), one table per configuration."""
    metrics = report["metrics"]
    combined = [r for r in report["configurations"] if r.get("combined")]
    if not combined:
        return []
    lead = metrics[0][1]
    lines = ["", "## Ensembles and soups", "",
             "Each configuration's seeds combined: ensembles (the mean of the members' answers; an ensemble of k "
             "takes the first k seeds) and soups (one model, the mean of the members' "
             "weights; the greedy soup adds members in order of dev score while its dev score does not drop, so its "
             "score is chosen on these dev examples). The single runs are their best/ checkpoints, scored with the "
             f"others. The comparisons are paired bootstraps of {lead} over the dev examples "
             f"({report['replicates']} replicates), against the single runs pooled over seeds and against the best "
             "one. Passes: encoder passes per input at prediction (the cost); seconds: its dev evaluation's (an "
             "ensemble's: its members' together, what evaluating it takes)."]
    for r in combined:
        lines += ["", f"### {_name(r)}", "",
                  "| Model | " + " | ".join(lbl for _, lbl in metrics) + f" | vs single runs ({lead}) | "
                  f"vs best single ({lead}) | Passes | Seconds |", "|---" * (len(metrics) + 5) + "|"]
        for c in r["combined"]:
            cells = ["—" if c["values"].get(m) is None else f"{c['values'][m]:.4f}" for m, _ in metrics]
            lines.append(f"| {c['name']} | " + " | ".join(cells) + f" | {describe_difference(c.get('vs_singles'))} | "
                         f"{describe_difference(c.get('vs_best'))} | {c['passes']} | {c['seconds'] or 0:.1f} |")
    return lines


def mean_sd(s: dict) -> str:
    """A mean, ± one standard deviation over seeds where there are several."""
    if s["mean"] is None:
        return "—"
    return f"{s['mean']:.3f}" if s.get("sd") is None else f"{s['mean']:.3f} ± {s['sd']:.3f}"


def _weights(weights: dict | None) -> str:
    return ", ".join(f"{t} {w:.2f}" for t, w in weights.items()) if weights else "—"


def markdown(report: dict) -> str:
    metrics = report["metrics"]
    columns = report.get("columns") or []
    label = report.get("reference_label")
    head = ["Configuration", "Seeds", *(lbl for _, lbl in metrics), *(lbl for _, lbl in columns),
            *(["Final loss weights"] if report.get("loss_weights") else []),
            *([f"{label} {lbl}" for _, lbl in metrics] if label else []), "Training time"]
    lines = [f"# {report.get('title') or 'Sweep ' + report['sweep']}", "",
             f"Mean over seeds with its 95% t interval [low, high]; seeds {report['expected_seeds']}.", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in report["configurations"]:
        name = _name(r) + (" (baseline)" if r["baseline"] else "")
        expected = len(report["expected_seeds"])
        seeds = f"{len(r['seeds'])}" + (f" of {expected}" if len(r["seeds"]) < expected else "")
        cells = [_ci(r["summary"][m]) for m, _ in metrics] + [mean_sd(r["telemetry"][k]) for k, _ in columns]
        if report.get("loss_weights"):
            cells.append(_weights(r.get("loss_weight")))
        if label:
            ref = r.get("reference") or {}
            cells += [f"{ref[m]:.3f}" if m in ref else "—" for m, _ in metrics]
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {r.get('training_s') or 0:.0f} s |")
    if report["baseline"]:
        lines += ["", "## Against the baseline", "",
                  f"Paired bootstrap over the dev examples both scored, pooled over seeds ({report['replicates']} "
                  "replicates): the difference (configuration minus baseline), its 95% interval, a two-sided "
                  "p-value, and \"within noise\" where the interval covers zero.", "",
                  "| Configuration | " + " | ".join(lbl for _, lbl in metrics) + " |",
                  "|---" * (len(metrics) + 1) + "|"]
        for r in report["configurations"]:
            if r["baseline"]:
                continue
            lines.append(f"| {_name(r)} | " + " | ".join(describe_difference((r["vs_baseline"] or {}).get(m)) for m, _ in metrics) + " |")
    lines += _combined_markdown(report)
    if report.get("incomplete"):
        lines += ["", "Incomplete (fewer finished seeds than the spec's "
                  f"{len(report['expected_seeds'])}; their rows average the seeds that finished):", ""]
        lines += [f"- {line}" for line in incomplete_lines(report)]
    if report.get("pruned"):
        lines += ["", "Pruned (stopped early by the median pruner, not in the tables): "
                  + "; ".join(_params(p["params"]) for p in report["pruned"]) + "."]
    lines += ["", "![metrics per configuration with their intervals](report.svg)", ""]
    if report.get("picture"):
        lines += [f"![task-conflict telemetry of one run]({report['picture']['file']})", "",
                  f"The picture: {report['picture']['caption']}", ""]
    if report.get("notes"):
        lines += ["Notes: " + " ".join(report["notes"]), ""]
    if report.get("machine"):
        lines += ["Machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()) + ".", ""]
    return "\n".join(lines)
