"""`bertmtl ablate`: the paper's ablation table under a shared budget."""

from __future__ import annotations

import shlex
import sys

import click

from .options import (FiniteFloat, data_dir_option, device_option, encoder_option, out_option, parsed, precision_option,
                      seed_option)



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
@data_dir_option()
@out_option("ablation", "Where ablation.md, ablation.json and the runs' logs go.")
@click.option("--rows", default="baseline,multitask,pretrain,final,adamaxw", show_default=True,
              help="Rows to run: baseline, multitask, pretrain, final, adamaxw.")
@click.option("--budget-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="Training steps per row (one step = a batch of each task); ignored with --epochs.")
@click.option("--epochs", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Train each row for full epochs instead of --budget-steps.")
@click.option("--budget-dev", "dev_limit", type=click.IntRange(min=1), default=None,
              help="Score on a fixed subset of N dev examples per task (train's --dev-limit) [default: all dev].")
@click.option("--pretrain-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="MLM steps of further pretraining for the 'pretrain' row.")
@click.option("--pretrained-mlm", type=click.Path(file_okay=False, exists=True, path_type=str), default=None,
              help="Use this `bertmtl pretrain` output for the 'pretrain' row instead of pretraining.")
@encoder_option(note="the base of every row")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Examples per task per step.")
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True, help="Maximum tokens per input.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=5e-5, show_default=True, help="Peak learning rate.")
@seed_option(note="shared by every row")
@device_option()
@precision_option()
@click.option("--keep-checkpoints", is_flag=True, help="Keep each row's best/ and last/ weights (large).")
@click.option("--overwrite", is_flag=True, help="Replace the runs of an earlier ablation in --out.")
@click.pass_context
def ablate(ctx, data_dir, out, rows, budget_steps, epochs, dev_limit, pretrain_steps, pretrained_mlm, encoder,
           batch_size, max_length, lr, seed, device, precision, keep_checkpoints, overwrite) -> None:
    """Reproduce the paper's ablation table with a shared budget; writes Markdown and JSON.

    \b
    Examples:
      bertmtl ablate --data-dir data --budget-steps 300 --budget-dev 300
      bertmtl ablate --data-dir data --rows baseline,final --epochs 3
    """
    from ..ablate import AblateConfig, parse_rows, print_table
    from ..ablate import ablate as run_ablate

    cfg = AblateConfig(data_dir=data_dir, out=out, rows=parsed(parse_rows, rows, "--rows"), budget_steps=budget_steps,
                       epochs=epochs, dev_limit=dev_limit, pretrain_steps=pretrain_steps, pretrained_mlm=pretrained_mlm,
                       encoder=encoder, batch_size=batch_size, max_length=max_length, lr=lr, seed=seed,
                       device=device, precision=precision, keep_checkpoints=keep_checkpoints,
                       overwrite=overwrite, command=_command_line(ctx))
    result = run_ablate(cfg)
    print_table(result)
    click.echo(f"wrote {out}/ablation.md and {out}/ablation.json")
