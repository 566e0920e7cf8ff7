"""`bertmtl evaluate`: dev metrics of a checkpoint, or test-split predictions."""

from __future__ import annotations

import click

from ..configuration.configs import EvaluateConfig
from .options import options_of, resolved_options


@click.command()
@options_of(EvaluateConfig)
@click.pass_context
def evaluate(ctx: click.Context, **opts) -> None:
    """Score a checkpoint on dev (accuracy, macro-F1, Pearson, overall) or predict the test split."""
    import json
    import sys

    from ..inference.evaluate import evaluate_checkpoint, leaderboard_overall

    cfg = resolved_options(EvaluateConfig, ctx, opts)
    result, specs = evaluate_checkpoint(cfg, note=lambda text: click.echo(text, err=True))
    if cfg.json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    from ..tasks import metric_rows

    console = Console(file=sys.stdout)
    if result["split"] == "dev":
        table = Table(title=f"{result['checkpoint']} on dev")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("examples", justify="right")
        for key, label, n in (*metric_rows(specs.values()), ("overall", "overall", None)):
            if key in result:  # evaluated; None: undefined (the warning above says why)
                value = "undefined" if result[key] is None else f"{result[key]:.4f}"
                table.add_row(label, value, str(result.get(n, "")) if n else "")
        if (board := leaderboard_overall(result)) is not None:
            table.add_row("overall, CS224N leaderboard ((r + 1) / 2 for STS)", f"{board:.4f}", "")
        console.print(table)
    for w in result.get("predictions", []):
        console.print(f"wrote {w}")
