"""`bertmtl export`: a trained model for transformers, sentence-transformers or ONNX Runtime, and
with --push-to-hub on the Hugging Face Hub."""

from __future__ import annotations

import click

from ..configuration.configs import ExportConfig
from .options import options_of, resolved_options


@click.command()
@options_of(ExportConfig)
@click.pass_context
def export(ctx: click.Context, **opts) -> None:
    """Export a checkpoint or run (its best/) [default: best/ of the most recent run that has one].

    \b
      bertmtl export checkpoints/RUN --format hf --out my-encoder
      bertmtl export checkpoints/RUN --format sentence-transformers --out my-st-model
      bertmtl export checkpoints/RUN --format onnx --out my-onnx
      bertmtl export checkpoints/RUN --format sentence-transformers --push-to-hub my-org/my-st-model
    """
    from ..inference.export import command_line
    from ..inference.export import export as run_export
    from ..runs.catalog import choose_checkpoint

    cfg = resolved_options(ExportConfig, ctx, opts)
    choice = choose_checkpoint(cfg.source)
    if choice.note:
        click.echo(f"note: {choice.note}", err=True)
    command = command_line(cfg.source, cfg.format, cfg.out, cfg.overwrite, cfg.push_to_hub, cfg.private, cfg.revision)
    if cfg.push_to_hub:
        from ..inference.hub_push import push_export

        pushed = push_export(choice.path, cfg.format, cfg.push_to_hub, out=cfg.out, private=cfg.private,
                             revision=cfg.revision, command=command, overwrite=cfg.overwrite)
        if pushed.local is not None:
            click.echo(f"{cfg.format} export written to {pushed.local} (see {pushed.local}/README.md)")
        click.echo(pushed)
        return
    path = run_export(choice.path, cfg.format, cfg.out, command=command, overwrite=cfg.overwrite)
    click.echo(f"{cfg.format} export written to {path} (see {path}/README.md)")
