"""CLI commands of the optional stages: `bertmtl augment`, `bertmtl pretrain`, `bertmtl ablate`.

Imported at the end of cli.py, so the commands register on the `main` group. Each command
parses its options and calls one function; heavy imports happen inside the commands.
"""

from __future__ import annotations

import shlex
import sys

import click

from .cli import main


def _bad(fn, value, param_hint=None):
    """Run a parser, turning its ValueError into a usage error on the option."""
    try:
        return fn(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=param_hint) from None


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


# -- augment -------------------------------------------------------------------------------

@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str), default="data", show_default=True,
              help="Directory with the CS224N task CSVs (the train files are augmented).")
@click.option("--out", type=click.Path(file_okay=False, path_type=str), default="augmented", show_default=True,
              help="Output directory (train files in the same format, plus augment.json).")
@click.option("--tasks", default="sst,para,sts", show_default=True, help="Tasks whose train files to augment.")
@click.option("--methods", "--method", "methods", default="swap,delete", show_default=True,
              help="Any of swap, delete, synonym (WordNet), contextual (our BERT + MLM head; needs --mlm). "
                   "Copies take the methods in turn.")
@click.option("--times", type=click.IntRange(min=1), default=1, show_default=True,
              help="Augmented copies per example.")
@click.option("--aug-p", type=click.FloatRange(min=0, max=1, min_open=True), default=0.15, show_default=True,
              help="Fraction of the words each method changes (at least one).")
@click.option("--mlm", type=click.Path(file_okay=False, exists=True, path_type=str), default=None,
              help="For contextual: a BERT directory with a masked-LM head (e.g. `bertmtl pretrain` output).")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True,
              help="For contextual: draw each new word from the model's top-k predictions.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Augment only the first N examples of each task [default: all].")
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed (same seed, same output).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Device for the contextual method.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it already holds files.")
def augment(data_dir, out, tasks, methods, times, aug_p, mlm, top_k, limit, seed, device, overwrite) -> None:
    """Write augmented copies of the training data (labels kept), for `train --augment DIR`.

    \b
    Examples:
      bertmtl augment --data-dir data --out aug --times 2 --methods swap,delete,synonym
      bertmtl augment --data-dir data --out aug --methods contextual --mlm pretrained-mlm
      bertmtl train --data-dir data --augment aug
    """
    from .augment import AugmentConfig, parse_methods
    from .augment import augment as run_augment
    from .data import parse_tasks

    cfg = AugmentConfig(data_dir=data_dir, out=out, tasks=_bad(parse_tasks, tasks, "--tasks"),
                        methods=_bad(parse_methods, methods, "--methods"), times=times, aug_p=aug_p, seed=seed,
                        mlm=mlm, top_k=top_k, device=device, limit=limit, overwrite=overwrite)
    manifest = run_augment(cfg)
    n = sum(t["copies"] for t in manifest["tasks"].values())
    click.echo(f"{n} augmented examples in {out}  (use with: bertmtl train --augment {out})")


# -- pretrain ------------------------------------------------------------------------------

@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str), default="data", show_default=True,
              help="Directory with the CS224N task CSVs (train files' text is used).")
@click.option("--out", type=click.Path(file_okay=False, path_type=str), default="pretrained-mlm", show_default=True,
              help="Output: an HF BERT directory for `bertmtl train --pretrained DIR`.")
@click.option("--pretrained", default=None,
              help="Encoder to start from: minilm (default), mpnet or a BERT / MPNet directory; its MLM head is reused if it has one.")
@click.option("--datasets", default="sst,quora,sts,imdb", show_default=True,
              help="Text sources: sst, quora, sts, imdb (ids-cfimdb-train.csv, used when present).")
@click.option("--augmented", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Also use the text of a `bertmtl augment` output directory.")
@click.option("--cap", "caps", multiple=True, metavar="DATASET=N",
              help="At most N training texts from a dataset (e.g. quora=5000; repeatable or comma-separated).")
@click.option("--upsample", "upsample", multiple=True, metavar="DATASET=FACTOR",
              help="Repeat a dataset's texts (e.g. sts=2, sst=1.5).")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Passes over the training text.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Train for exactly N steps (overrides --epochs).")
@click.option("--head-steps", type=click.IntRange(min=0), default=None,
              help="Head-only steps before measuring 'before' [default: 20% of the steps when the head is new, else 0].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Texts per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-5, show_default=True,
              help="Peak learning rate (warm-up, then linear decay).")
@click.option("--mask-prob", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), default=0.15,
              show_default=True, help="Fraction of tokens chosen for prediction (80% [MASK], 10% random, 10% kept).")
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True,
              help="Maximum tokens per text (longer IMDB reviews are truncated).")
@click.option("--heldout", type=click.FloatRange(min=0, max=1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Fraction of each dataset held out for the before/after perplexity.")
@click.option("--heldout-max", type=click.IntRange(min=1), default=500, show_default=True,
              help="At most this many held-out examples per dataset.")
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto = CUDA when available.")
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True,
              help="Report the training loss every N steps.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it already holds files.")
def pretrain(data_dir, out, pretrained, datasets, augmented, caps, upsample, epochs, steps, head_steps, batch_size,
             lr, mask_prob, max_length, heldout, heldout_max, seed, device, log_every, overwrite) -> None:
    """Further masked-LM pretraining on the task text; reports held-out perplexity before and after.

    \b
    Examples:
      bertmtl pretrain --data-dir data --out pretrained-mlm --cap quora=8000
      bertmtl train --data-dir data --pretrained pretrained-mlm
    """
    from .pretrain import PretrainConfig, parse_amounts, parse_sources
    from .pretrain import pretrain as run_pretrain

    cfg = PretrainConfig(
        data_dir=data_dir, out=out, pretrained=pretrained, datasets=_bad(parse_sources, datasets, "--datasets"),
        augmented=augmented, caps=_bad(lambda v: parse_amounts(v, "--cap", True), caps, "--cap"),
        upsample=_bad(lambda v: parse_amounts(v, "--upsample", False), upsample, "--upsample"), epochs=epochs,
        steps=steps, head_steps=head_steps, batch_size=batch_size, lr=lr, mask_prob=mask_prob, max_length=max_length,
        heldout=heldout, heldout_max=heldout_max, seed=seed, device=device, log_every=log_every, overwrite=overwrite)
    r = run_pretrain(cfg)
    b, a = r["before"], r["after"]
    click.echo(f"held-out MLM ({b['tokens']} masked tokens): loss {b['loss']:.3f} -> {a['loss']:.3f}, "
               f"perplexity {b['perplexity']:.2f} -> {a['perplexity']:.2f}  ({r['steps']} steps, {r['wall_s']:.0f} s)")
    if "initial" in r:
        click.echo(f"(the checkpoint had no MLM head: perplexity {r['initial']['perplexity']:.1f} with the fresh head, "
                   f"'before' is after {r['head_steps']} head-only steps)")
    click.echo(f"wrote {out}  (use with: bertmtl train --pretrained {out})")


# -- ablate --------------------------------------------------------------------------------

@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str), default="data", show_default=True,
              help="Directory with the CS224N task CSVs.")
@click.option("--out", type=click.Path(file_okay=False, path_type=str), default="ablation", show_default=True,
              help="Where ablation.md, ablation.json and the runs' logs go.")
@click.option("--rows", default="baseline,multitask,pretrain,final,adamaxw", show_default=True,
              help="Rows to run: baseline, multitask, pretrain, final, adamaxw.")
@click.option("--budget-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="Training steps per row (one step = a batch of each task); ignored with --epochs.")
@click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Train each row for full epochs instead of --budget-steps.")
@click.option("--budget-dev", "dev_limit", type=click.IntRange(min=1), default=None,
              help="Score on a seeded subset of N dev examples per task [default: all dev].")
@click.option("--pretrain-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="MLM steps of further pretraining for the 'pretrain' row.")
@click.option("--pretrained-mlm", type=click.Path(file_okay=False, exists=True, path_type=str), default=None,
              help="Use this `bertmtl pretrain` output for the 'pretrain' row instead of pretraining.")
@click.option("--pretrained", default=None,
              help="Base encoder: minilm (default), mpnet or a BERT / MPNet directory.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Examples per task per step.")
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True, help="Maximum tokens per input.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=5e-5, show_default=True, help="Peak learning rate.")
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed shared by every row.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto = CUDA when available.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="Training-step precision of every row, as in `bertmtl train`.")
@click.option("--keep-checkpoints", is_flag=True, help="Keep each row's best/ and last/ weights (large).")
@click.option("--overwrite", is_flag=True, help="Replace the runs of an earlier ablation in --out.")
@click.pass_context
def ablate(ctx, data_dir, out, rows, budget_steps, epochs, dev_limit, pretrain_steps, pretrained_mlm, pretrained,
           batch_size, max_length, lr, seed, device, precision, keep_checkpoints, overwrite) -> None:
    """Reproduce the paper's ablation table with a shared budget; writes Markdown and JSON.

    \b
    Examples:
      bertmtl ablate --data-dir data --budget-steps 300 --budget-dev 300
      bertmtl ablate --data-dir data --rows baseline,final --epochs 3
    """
    from .ablate import AblateConfig, parse_rows, print_table
    from .ablate import ablate as run_ablate

    cfg = AblateConfig(data_dir=data_dir, out=out, rows=_bad(parse_rows, rows, "--rows"), budget_steps=budget_steps,
                       epochs=epochs, dev_limit=dev_limit, pretrain_steps=pretrain_steps, pretrained_mlm=pretrained_mlm,
                       pretrained=pretrained, batch_size=batch_size, max_length=max_length, lr=lr, seed=seed,
                       device=device, precision=precision, keep_checkpoints=keep_checkpoints,
                       overwrite=overwrite, command=_command_line(ctx))
    result = run_ablate(cfg)
    print_table(result)
    click.echo(f"wrote {out}/ablation.md and {out}/ablation.json")
