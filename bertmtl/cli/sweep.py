"""`bertmtl sweep`: options and seeds on an Optuna study, and a report with confidence."""

from __future__ import annotations

import click

from ..configuration.configs import SweepConfig
from .options import command_line, options_of, resolved_options


@click.command()
@options_of(SweepConfig)
@click.pass_context
def sweep(ctx: click.Context, **opts) -> None:
    """Train every configuration of SPEC with its seeds, as ordinary runs, and report each
    difference from the baseline with its confidence interval.

    It first says how many configurations, seeds and runs it trains, and the steps of each run.
    One Ctrl-C (or SIGTERM) stops it as a whole once the running trials have saved their runs;
    the same command again continues, resuming those seeds and never training a finished one.

    \b
    Examples:
      bertmtl sweep grid.yaml --out sweeps/lr --dry-run    # what it would train, and nothing more
      bertmtl sweep grid.yaml --out sweeps/lr              # one worker, SQLite in sweeps/lr
      bertmtl sweep grid.yaml --out sweeps/lr --workers 2  # two trials at once
      bertmtl sweep grid.yaml --out sweeps/lr --storage postgresql://host/db   # on every machine
      bertmtl sweep --report sweeps/lr                     # rebuild the report from the runs
    """
    from ..sweep.run import run_sweep

    cfg = resolved_options(SweepConfig, ctx, opts)
    cfg.command = command_line(ctx)
    run_sweep(cfg, say=click.echo)
