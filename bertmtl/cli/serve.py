"""`bertmtl serve`: a trained model answering over HTTP."""

from __future__ import annotations

import click

from ..configuration.configs import ServeConfig
from .options import options_of, resolved_options


@click.command()
@options_of(ServeConfig)
@click.pass_context
def serve(ctx: click.Context, **opts) -> None:
    """Answer over HTTP with a checkpoint or a run's best [default: the most recent run's].

    Requests arriving together are answered in one pass of the model. Needs the serve extra
    (pip install -e ".[serve]"). Ctrl-C or SIGTERM stops it once the requests in flight are answered.

    \b
      bertmtl serve checkpoints/RUN
      curl -s localhost:8000/predict -d '"A gorgeous, witty film."'
      curl -s localhost:8000/predict -d '[["How do I learn Python?", "What is the best way to learn Python?"]]'
      printf 'a fine film\\tan awful film\\n' | curl -s localhost:8000/predict -H 'Content-Type: application/x-ndjson' --data-binary @-
      curl -s localhost:8000/encode -d '["a sentence", "another"]'
      bertmtl serve --follow checkpoints/RUN        the best checkpoint so far, while it trains
    """
    from ..serve.server import serve as run_server

    cfg = resolved_options(ServeConfig, ctx, opts)
    if cfg.follow is not None and cfg.source is not None:
        raise click.UsageError(f"RUN ({cfg.source}) and --follow ({cfg.follow}) name two models; give one")
    run_server(cfg, say=lambda text: click.echo(text, err=True))
