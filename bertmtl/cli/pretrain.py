"""`bertmtl pretrain`: further masked-LM pretraining on the task text (a training run; see training/pretrain.py)."""

from __future__ import annotations

from pathlib import Path

import click

from ..configuration.train_config import PANELS, PRETRAIN_DEFAULTS, PRETRAIN_HELP, PRETRAIN_OPTIONS, TrainConfig
from .options import complete_runs, options_of, panels, resolved_options


@click.command(cls=panels(PANELS))
@options_of(TrainConfig, only=PRETRAIN_OPTIONS, defaults=PRETRAIN_DEFAULTS, helps=PRETRAIN_HELP)
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=str), default=None, shell_complete=complete_runs,
              help="Continue the pretraining run in this directory from its last checkpoint.")
@click.option("--overwrite", is_flag=True,
              help="Replace the earlier pretraining run (or pre-0.2 output) at --out; refused while a process "
                   "writes it, and for a directory that is not one.")
@click.pass_context
def pretrain(ctx: click.Context, resume: str | None, overwrite: bool, **opts) -> None:
    """Further masked-LM pretraining on the task text; reports held-out perplexity before and after.

    A training run whose one task is masked LM: checkpoints in --out (best/, last/), --resume,
    Ctrl-C stops cleanly, --report-to as for train.

    \b
    Examples:
      bertmtl pretrain --data-dir data --out pretrained-mlm --cap quora=8000
      bertmtl pretrain --resume pretrained-mlm
      bertmtl pretrain --task reviews:classification:reviews.csv --out mlm-reviews   (your own text)
      bertmtl train --data-dir data --encoder pretrained-mlm
    """
    from ..errors import UserError
    from ..training.pretrain import remove_earlier, report
    from ..runs.rundir import TRAIN_ARGS, read_json
    from .train import report_summary

    if overwrite and resume is not None:
        raise UserError("--overwrite replaces a run and --resume continues one: give one of them")
    saved = read_json(Path(resume) / TRAIN_ARGS) if resume is not None else None
    cfg = resolved_options(TrainConfig, ctx, opts, saved, defaults=PRETRAIN_DEFAULTS)
    if overwrite and cfg.out is not None and Path(cfg.out).exists():
        remove_earlier(Path(cfg.out))
    summary = report_summary(cfg, resume)
    r = report(Path(summary["run"]))
    if "before" in r:
        b, a = r["before"], r["after"]
        click.echo(f"held-out MLM ({b['tokens']} masked tokens): loss {b['loss']:.3f} -> {a['loss']:.3f}, "
                   f"perplexity {b['perplexity']:.2f} -> {a['perplexity']:.2f}  ({r['steps']} steps)")
    if "initial" in r:
        click.echo(f"(the encoder had no masked-LM head: perplexity {r['initial']['perplexity']:.1f} with the fresh "
                   f"head; 'before' is after {r['head_steps']} head-only steps)")
    click.echo(f"use with: bertmtl train --encoder {summary['run']}")
