"""`bertmtl soup`: one model whose weights are the mean of several runs' (a model soup)."""

from __future__ import annotations

import click

from ..configuration.configs import SoupConfig
from .options import options_of, resolved_options


@click.command()
@options_of(SoupConfig)
@click.pass_context
def soup(ctx: click.Context, **opts) -> None:
    """Average runs' weights into one model (a model soup), or with --greedy keep only those that help.

    Averaging works for runs fine-tuned from the same start: the same encoder and the same head
    initialisation (`--init-seed`), differing in `--seed` (data order, dropout). The soup is an
    ordinary checkpoint and answers at one model's cost.

    \b
      bertmtl soup RUN1 RUN2 RUN3 RUN4 --out my-soup
      bertmtl soup RUN1 RUN2 RUN3 RUN4 --out my-soup --greedy --data-dir data
    """
    from .combine import run_combine

    cfg = resolved_options(SoupConfig, ctx, opts)
    run_combine(cfg, "greedy soup" if cfg.greedy else "soup")
