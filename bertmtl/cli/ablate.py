"""`bertmtl ablate`: the paper's ablation table under a shared budget."""

from __future__ import annotations

import shlex
import sys

import click

from ..configs import AblateConfig
from .options import options_of, resolved_options


def _command_line(ctx: click.Context) -> str:
    """The command as typed (or as rebuilt from the options given when not run from a shell)."""
    if sys.argv and sys.argv[0].endswith(("bertmtl", "__main__.py")) and ctx.info_name in sys.argv:
        return "bertmtl " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from click.core import ParameterSource

    parts = ["bertmtl", ctx.info_name]  # the root is "main" when run from Python
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            parts.append(param.opts[0] if value else (param.secondary_opts or [param.opts[0]])[0])
        elif isinstance(value, tuple):
            parts += [f"{param.opts[0]} {shlex.quote(str(v))}" for v in value]
        else:
            parts.append(f"{param.opts[0]} {shlex.quote(str(value))}")
    return " ".join(parts)


@click.command()
@options_of(AblateConfig)
@click.pass_context
def ablate(ctx: click.Context, **opts) -> None:
    """Reproduce the paper's ablation table, or compare every gradient combiner or loss weighting,
    with a shared budget and seeds; writes Markdown and JSON (and, with telemetry, conflicts.svg).

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
    from ..ablate import ablate as run_ablate
    from ..ablate import print_table

    cfg = resolved_options(AblateConfig, ctx, opts)
    cfg.command = _command_line(ctx)
    result = run_ablate(cfg)
    print_table(result)
    extra = f" and {cfg.out}/{result['picture']['file']}" if result.get("picture") else ""
    click.echo(f"wrote {cfg.out}/ablation.md, {cfg.out}/ablation.json{extra} (the sweep's own report: "
               f"{cfg.out}/report.md; its study: {cfg.storage or f'{cfg.out}/study.db'})")
