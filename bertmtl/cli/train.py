"""`bertmtl train`: parse the options into a TrainConfig and run training."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..configuration.train_config import PANELS, TrainConfig
from .options import complete_runs, options_of, panels, resolved_options


@click.command(cls=panels(PANELS))
@options_of(TrainConfig)
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=str), default=None, shell_complete=complete_runs,
              help="Continue the run in this directory from its last checkpoint (options given again override, but for those that shape the weights; docs: Reliability).")
@click.pass_context
def train(ctx: click.Context, resume: str | None, **opts) -> None:
    """Train the multi-task model; best/ and last/ checkpoints land in the run directory.

    \b
    Examples:
      bertmtl train --data-dir data
      bertmtl train --data-dir data --tasks sst --no-smart --combine sum   (the paper's baseline)
      bertmtl train --resume checkpoints/20261126-101500
      bertmtl train --config checkpoints/20261126-101500/train_args.json --out again   (repeat a run)
      bertmtl train --lr 2e-4 --print-config > my.yaml; bertmtl train --config my.yaml
      bertmtl train --task intents:classification:train.csv:dev.csv   (your own tasks)
      torchrun --nproc_per_node 4 -m bertmtl train --data-dir data        (data parallel)
    """
    saved = None  # saved run < --config file < command line
    if resume is not None:
        from ..runs.rundir import TRAIN_ARGS, read_json

        saved = read_json(Path(resume) / TRAIN_ARGS)
    cfg = resolved_options(TrainConfig, ctx, opts, saved)
    report_summary(cfg, resume)


def report_summary(cfg: TrainConfig, resume: str | None) -> dict:
    """Run training and print its summary (train and pretrain); the summary."""
    from ..training.stopping import STOPPED_EXIT, stop_on_signals

    with stop_on_signals():  # before torch is imported: a signal from here on is a stop, never a half import
        from ..training.loop import train as run_training
        from ..runs.progress import format_metrics
        from ..runs.status import Status
        from ..tasks import TaskSpec

        from ..runs.progress import default_reporter

        console = default_reporter() if int(os.environ.get("RANK", "0")) == 0 else None  # other ranks: silent
        summary = run_training(cfg, resume=resume, reporter=console)
    if int(os.environ.get("RANK", "0")) != 0:
        raise SystemExit(0)  # under torchrun, rank 0 reports
    lines = [f"run: {summary['run']}  ({summary['status']} at step {summary['step']}/{summary['total_steps']})"]
    if summary.get("last_metrics"):
        specs = [TaskSpec.from_dict(d) for d in summary.get("tasks", [])] or None
        lines.append("final dev: " + format_metrics(summary["last_metrics"], specs))
    if summary.get("best_overall") is not None:
        lines.append(f"best overall dev: {summary['best_overall']:.4f}  ->  {summary['run']}/best")
    if summary.get("skipped_rows"):
        lines.append(f"skipped unusable rows: {summary['skipped_rows']} (see warnings above and metrics.jsonl)")
    click.echo("\n".join(lines))
    if summary["status"] == Status.STOPPED:
        raise SystemExit(STOPPED_EXIT)  # stopped by a signal, checkpoint saved: the shell convention for Ctrl-C
    return summary
