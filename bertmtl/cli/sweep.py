"""`bertmtl sweep`: options and seeds on an Optuna study, and a report with confidence."""

from __future__ import annotations

from pathlib import Path

import click

from ..configs import SweepConfig
from ..errors import UserError
from .options import options_of, resolved_options


@click.command()
@options_of(SweepConfig)
@click.pass_context
def sweep(ctx: click.Context, **opts) -> None:
    """Train every configuration of SPEC with its seeds, as ordinary runs, and report each
    difference from the baseline with its confidence interval.

    \b
    Examples:
      bertmtl sweep grid.yaml --out sweeps/lr              # one worker, SQLite in sweeps/lr
      bertmtl sweep grid.yaml --out sweeps/lr --workers 2  # two trials at once
      bertmtl sweep grid.yaml --out sweeps/lr --storage postgresql://host/db   # on every machine
      bertmtl sweep --report sweeps/lr                     # rebuild the report from the runs
    """
    cfg = resolved_options(SweepConfig, ctx, opts)
    run_sweep(cfg)


def run_sweep(cfg: SweepConfig, say=click.echo) -> dict | None:
    from ..fsutil import read_json, write_json
    from ..sweep.report import SPEC_FILE, build_report
    from ..sweep.spec import SweepSpec, read_spec
    from ..sweep.study import default_storage, open_study, spawn_workers, work

    out = Path(cfg.report or cfg.out)

    def report(spec: SweepSpec) -> dict:
        built = build_report(out, spec, cfg.bootstrap)
        say(f"wrote {out}/report.md, report.json and report.svg ({len(built['configurations'])} configurations)")
        return built

    if cfg.report:  # from the runs alone, with the spec the sweep saved
        if not (out / SPEC_FILE).is_file():
            raise UserError(f"{out}: not a sweep directory (no {SPEC_FILE})")
        return report(SweepSpec.from_dict(read_json(out / SPEC_FILE, "missing")))
    if cfg.spec is None:
        raise UserError("give the sweep's SPEC file (or --report DIR to rebuild a report)")
    spec = read_spec(cfg.spec)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / SPEC_FILE
    if saved.is_file():
        if SweepSpec.from_dict(read_json(saved, "missing")).to_dict() != spec.to_dict():
            raise UserError(f"{out} holds another sweep (its {SPEC_FILE} differs from {cfg.spec}); use another --out")
    elif not cfg.worker:
        write_json(saved, spec.to_dict())
    storage = cfg.storage or default_storage(out)
    if cfg.worker or cfg.workers == 1:
        work(spec, out, storage, cfg.heartbeat, say=say)
        if cfg.worker:  # one of several: the command that started them reports
            return None
    else:
        open_study(spec, storage, cfg.heartbeat)  # made (and its grid queued) once, before the workers race
        procs = spawn_workers(Path(cfg.spec), out, storage, cfg.workers, cfg.heartbeat)
        codes = [p.wait() for p in procs]
        if any(codes):
            raise UserError(f"{sum(c != 0 for c in codes)} of {cfg.workers} workers failed (exit codes {codes}); "
                            f"run the same command again to continue the study")
    return report(spec)
