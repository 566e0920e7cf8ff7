"""`bertmtl tui`: watch a run live and try its model; `--train` starts one with the train options."""

from __future__ import annotations

from pathlib import Path

import click

from ..configuration.train_config import PANELS, TrainConfig
from .options import complete_runs, given_args, options_of, panels


@click.command(cls=panels(PANELS), context_settings={"ignore_unknown_options": False})
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=str), shell_complete=complete_runs)
@click.option("--checkpoint", "checkpoint_path", type=click.Path(path_type=str), default=None,
              help="Checkpoint for the playground [default: the run's best/].")
@click.option("--train", "start_training", is_flag=True,
              help="Start a training run (with the train options below) in the background and watch it.")
@options_of(TrainConfig, config_file=False)
@click.pass_context
def tui(ctx: click.Context, run: str | None, checkpoint_path: str | None, start_training: bool, **opts) -> None:
    """Watch a run live (progress every step, loss and dev curves, dev metrics, its log) and try its
    model in a playground; start training runs from it (--train, or the n key).

    With --train, the `bertmtl train` options below pass through to the training run (--runs-dir
    also says where to look for runs); --checkpoint and --train are the TUI's own.

    \b
      bertmtl tui                          the latest run under --runs-dir ($BERTMTL_RUNS, else ./checkpoints)
      bertmtl tui checkpoints/20261126-101500
      bertmtl tui --train --data-dir data  start training and watch it (s stops it cleanly)
    """
    from ..errors import UserError
    from ..runs.rundir import METRICS_LOG, holds_run
    from ..runs.catalog import latest_run, new_run_dir, resume_command, run_dirs, runs_root

    root = runs_root(opts.get("runs_dir"))
    # The train options given here, as `bertmtl train` takes them; the TUI gives each run its --out.
    train_args = given_args(ctx, opts, skip=("checkpoint_path", "start_training", "out"))
    if start_training:
        from ..tui.training import plan_training

        if run is not None and opts.get("out") and Path(run) != Path(opts["out"]):
            raise click.UsageError(f"RUN ({run}) and --out ({opts['out']}) name two directories; give one")
        run = opts.get("out") or run
        if run is not None and (Path(run) / METRICS_LOG).exists():
            raise click.UsageError(f"{run} already holds a run; with --train, give a new run directory through "
                                   f"--out (or none); to continue it: {resume_command(Path(run))}")
        plan_training(train_args)  # refused here, as train would refuse it, not in a child that fails at once
        run = run or str(new_run_dir(root))
    elif run is None:
        latest = latest_run(root)
        if latest is None:
            raise UserError(f"no runs under {root}/ yet. Start one and watch it with "
                            "`bertmtl tui --train --data-dir DATA`, or train with `bertmtl train` first")
        run = str(latest)
    elif not Path(run).is_dir():
        raise UserError(f"{run}: no such run directory")
    elif not holds_run(Path(run)):  # nothing there will ever write metrics.jsonl: say so, not wait for it
        inside = run_dirs(run)
        hint = f"it holds runs: bertmtl tui --runs-dir {run} (the latest), or bertmtl tui {inside[0]}" if inside \
            else "start one there with bertmtl tui --train --out DIR"
        raise UserError(f"{run}: not a run (no metrics.jsonl, no training writes it); {hint}")
    from ..tui.app import run_tui

    run_tui(Path(run), checkpoint=checkpoint_path, train_args=train_args, start_training=start_training,
            runs_root=root)
