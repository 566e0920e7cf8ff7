"""`bertmtl ablate`: the paper's ablation table under a shared budget."""

from __future__ import annotations

import click

from ..configuration.configs import AblateConfig
from .options import command_line, options_of, resolved_options


@click.command()
@options_of(AblateConfig)
@click.pass_context
def ablate(ctx: click.Context, **opts) -> None:
    """Reproduce the paper's ablation table, or compare every gradient combiner or loss weighting,
    with a shared budget and seeds; writes the sweep report (Markdown, JSON, SVG; with telemetry,
    conflicts.svg).

    The rows train as one Optuna study (a sweep with fixed rows): --workers trains several at
    once, --storage lets workers on other machines share it, and the same command again
    continues where it stopped without training a finished row again.

    \b
    Examples:
      bertmtl ablate --data-dir data --budget-steps 300 --budget-dev 300
      bertmtl ablate --data-dir data --rows baseline,final --epochs 3
      bertmtl ablate --data-dir data --table combiners --seeds 3 --budget-steps 300
      bertmtl ablate --data-dir data --table combiners --rows sum,pcgrad,upgrad --seeds 2
      bertmtl ablate --data-dir data --table combiners --seeds 3 --workers 2   # two rows at once
    """
    from ..training.stopping import stop_on_signals

    with stop_on_signals():  # before torch is imported: a signal from here on is a stop, never a half import
        from ..sweep.ablate import TABLES, print_table
        from ..sweep.ablate import ablate as run_ablate

        cfg = resolved_options(AblateConfig, ctx, opts)
        cfg.command = command_line(ctx)
        from ..runs.progress import default_reporter

        report = run_ablate(cfg, reporter_factory=default_reporter)  # the command's console, as before
    print_table(report, TABLES[cfg.table])
    extra = f" and {cfg.out}/{report['picture']['file']}" if report.get("picture") else ""
    click.echo(f"wrote {cfg.out}/report.md, report.json, report.svg{extra} (its study: "
               f"{cfg.storage or f'{cfg.out}/study.db'})")
