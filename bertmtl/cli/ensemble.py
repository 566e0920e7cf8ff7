"""`bertmtl ensemble`: several trained runs as one checkpoint that answers the mean of their answers."""

from __future__ import annotations

import click

from ..configuration.configs import CombineConfig
from .options import options_of, resolved_options


@click.command()
@options_of(CombineConfig)
@click.pass_context
def ensemble(ctx: click.Context, **opts) -> None:
    """Combine runs into one ensemble checkpoint: its answers are the mean of theirs.

    The members must answer the same tasks with the same labels and read text with the same
    tokenizer (runs of one sweep configuration do). predict, evaluate, serve, the TUI playground
    and `export --format onnx` take the result like any checkpoint; it costs one pass of each
    member per input.

    \b
      bertmtl ensemble sweeps/s/runs/*-s42 sweeps/s/runs/*-s43 --out my-ensemble
      bertmtl ensemble RUN1 RUN2 RUN3 --out my-ensemble --data-dir data   also scores each on dev
      bertmtl predict --checkpoint my-ensemble "A gorgeous, witty film."
    """
    from .combine import run_combine

    run_combine(resolved_options(CombineConfig, ctx, opts), "ensemble")
