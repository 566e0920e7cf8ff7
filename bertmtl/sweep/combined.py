"""A sweep's ensembles and soups: each configuration's seeds combined (inference/combine.py), scored
on the dev examples its runs were scored on, and kept beside the runs so that the report (and
`bertmtl sweep --report DIR`) reads them like the runs themselves.

    DIR/combined/CONFIG/
      combined.json            the runs combined, and each model's metrics, passes and seconds
      ensemble/, soup/, greedy-soup/      the checkpoints (predict, serve, export take them)
      scored/NAME/dev_outputs.safetensors  each model's dev outputs (the paired bootstraps resample them)

The seeds' own rows here are their best/ checkpoints scored in the same pass, so an ensemble is
compared with exactly the models it averages.
"""

from __future__ import annotations

from pathlib import Path

COMBINED = "combined"
INDEX = "combined.json"


def build_combined(out: Path, groups: dict, ensemble: bool, soup: bool, say=print) -> None:
    """Combine the finished seeds of every configuration of the sweep in `out` (`groups`: its runs,
    as report.collect finds them; at least 2 seeds each); a configuration whose saved combination
    has the same runs and parts is left as it is."""
    from ..fsutil import read_json, write_json
    from ..inference.combine import DevData, combine
    from ..runs.catalog import run_info
    from ..runs.rundir import write_dev_outputs

    pruned = set(groups["pruned"])
    for key, c in groups["finished"].items():
        seeds = sorted(c["runs"])
        if key in pruned:
            continue
        if len(seeds) < 2:
            say(f"{key}: {len(seeds)} finished seed; an ensemble or soup needs 2")
            continue
        runs = [Path(c["runs"][s]) for s in seeds]
        where = Path(out) / COMBINED / key
        try:
            saved = read_json(where / INDEX, "missing")
        except Exception:  # noqa: BLE001 - none yet, or damaged: built again
            saved = {}
        same_runs = saved.get("runs") == [str(r) for r in runs]
        had = saved.get("parts", {}) if same_runs else {}
        if all(had.get(p) for p, on in (("ensemble", ensemble), ("soup", soup)) if on):
            say(f"{key}: ensembles and soups of seeds {seeds} already built ({where})")
            continue
        # what an earlier command built of the same runs is built again with the rest, not dropped
        parts = {"ensemble": ensemble or bool(had.get("ensemble")), "soup": soup or bool(had.get("soup"))}
        cfg = run_info(runs[0])["config"]
        data = DevData(cfg["data_dir"], cfg.get("dev_limit"), cfg.get("eval_batch_size") or 64,
                       cfg.get("device") or "auto", bool(cfg.get("strict")))
        say(f"{key}: combining seeds {seeds}")
        souped = parts["soup"]
        result = combine(runs, ensemble=where / "ensemble" if parts["ensemble"] else None,
                         soup=where / "soup" if souped else None, greedy_soup=where / "greedy-soup" if souped else None,
                         data=data, subsets=parts["ensemble"], overwrite=True, note=say)
        n = len(runs)
        models = [{"name": f"seed {s}", "seed": s, "passes": 1, "members": [s], **_scored(r)}
                  for s, r in zip(seeds, result.singles)]
        for name, r in result.scores.items():
            if name == "ensemble":
                members, passes = seeds, n
            elif name.startswith("ensemble of "):
                k = int(name.rsplit(" ", 1)[1])
                members, passes = seeds[:k], k
            elif name == "greedy soup":
                members, passes = [seeds[i] for i in result.greedy], 1
            else:
                members, passes = seeds, 1
            label = f"ensemble of {n}" if name == "ensemble" else ("uniform soup" if name == "soup" else name)
            models.append({"name": label, "passes": passes, "members": members,
                           "checkpoint": str(result.written[name]) if name in result.written else None, **_scored(r)})
        for m, r in zip(models, [*result.singles, *result.scores.values()]):
            m["dir"] = f"scored/{m['name'].replace(' ', '-')}"
            (where / m["dir"]).mkdir(parents=True, exist_ok=True)
            write_dev_outputs(where / m["dir"], r.outputs)
        write_json(where / INDEX, {"runs": [str(r) for r in runs], "seeds": seeds, "parts": parts, "models": models})


def _scored(r) -> dict:
    metrics = {k: v for k, v in r.metrics.items() if k != "undefined"}
    return {"metrics": metrics, "seconds": r.seconds}


def read_combined(out: Path, key: str) -> dict | None:
    """A configuration's saved combination, each model's dev outputs read ("outputs"); None without one."""
    from ..fsutil import read_json
    from ..runs.rundir import read_dev_outputs

    where = Path(out) / COMBINED / key
    if not (where / INDEX).is_file():
        return None
    try:
        saved = read_json(where / INDEX, "missing")
    except Exception:  # noqa: BLE001 - damaged: the report goes on without it
        return None
    for m in saved.get("models", []):
        m["outputs"] = read_dev_outputs(where / m["dir"])
    return saved
