"""`bertmtl pretrain`: further masked-LM pretraining on the task text."""

from __future__ import annotations

import click

from .options import FiniteFloat, data_dir_option, device_option, encoder_option, out_option, parsed, seed_option


@click.command()
@data_dir_option(note="the train files' text is used")
@out_option("pretrained-mlm", "Output: an HF BERT / MPNet directory for `bertmtl train --encoder DIR`.")
@encoder_option(note="its MLM head is reused if it has one")
@click.option("--datasets", default="sst,quora,sts,imdb", show_default=True,
              help="Text sources: sst, quora, sts, imdb (ids-cfimdb-train.csv, used when present).")
@click.option("--augmented", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Also use the text of a `bertmtl augment` output directory.")
@click.option("--cap", "caps", multiple=True, metavar="DATASET=N",
              help="At most N training texts from a dataset (e.g. quora=5000; repeatable or comma-separated).")
@click.option("--upsample", "upsample", multiple=True, metavar="DATASET=FACTOR",
              help="Repeat a dataset's texts (e.g. sts=2, sst=1.5).")
@click.option("--epochs", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True,
              help="Passes over the training text.")
@click.option("--max-steps", "steps", type=click.IntRange(min=1), default=None,
              help="Train for exactly N steps (overrides --epochs; the schedule spans them).")
@click.option("--steps", "old_steps", type=click.IntRange(min=1), default=None, hidden=True,
              help="The former name of --max-steps.")
@click.option("--head-steps", type=click.IntRange(min=0), default=None,
              help="Head-only steps before measuring 'before' [default: 20% of the steps when the head is new, else 0].")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Texts per step.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=5e-5, show_default=True,
              help="Peak learning rate (warm-up, then linear decay).")
@click.option("--mask-prob", type=FiniteFloat(min=0, max=1, min_open=True, max_open=True), default=0.15,
              show_default=True, help="Fraction of tokens chosen for prediction (80% [MASK], 10% random, 10% kept).")
@click.option("--max-length", type=click.IntRange(min=8), default=128, show_default=True,
              help="Maximum tokens per text (longer IMDB reviews are truncated).")
@click.option("--heldout", type=FiniteFloat(min=0, max=1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Fraction of each dataset held out for the before/after perplexity.")
@click.option("--heldout-max", type=click.IntRange(min=1), default=500, show_default=True,
              help="At most this many held-out examples per dataset.")
@seed_option()
@device_option()
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True,
              help="Report the training loss every N steps.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it already holds files.")
def pretrain(data_dir, out, encoder, datasets, augmented, caps, upsample, epochs, steps, old_steps, head_steps, batch_size,
             lr, mask_prob, max_length, heldout, heldout_max, seed, device, log_every, overwrite) -> None:
    """Further masked-LM pretraining on the task text; reports held-out perplexity before and after.

    \b
    Examples:
      bertmtl pretrain --data-dir data --out pretrained-mlm --cap quora=8000
      bertmtl train --data-dir data --encoder pretrained-mlm
    """
    from ..pretrain import PretrainConfig, parse_amounts, parse_sources
    from ..pretrain import pretrain as run_pretrain

    steps = steps if steps is not None else old_steps
    cfg = PretrainConfig(
        data_dir=data_dir, out=out, encoder=encoder, datasets=parsed(parse_sources, datasets, "--datasets"),
        augmented=augmented, caps=parsed(lambda v: parse_amounts(v, "--cap", True), caps, "--cap"),
        upsample=parsed(lambda v: parse_amounts(v, "--upsample", False), upsample, "--upsample"), epochs=epochs,
        steps=steps, head_steps=head_steps, batch_size=batch_size, lr=lr, mask_prob=mask_prob, max_length=max_length,
        heldout=heldout, heldout_max=heldout_max, seed=seed, device=device, log_every=log_every, overwrite=overwrite)
    r = run_pretrain(cfg)
    b, a = r["before"], r["after"]
    click.echo(f"held-out MLM ({b['tokens']} masked tokens): loss {b['loss']:.3f} -> {a['loss']:.3f}, "
               f"perplexity {b['perplexity']:.2f} -> {a['perplexity']:.2f}  ({r['steps']} steps, {r['wall_s']:.0f} s)")
    if "initial" in r:
        click.echo(f"(the checkpoint had no MLM head: perplexity {r['initial']['perplexity']:.1f} with the fresh head, "
                   f"'before' is after {r['head_steps']} head-only steps)")
    click.echo(f"wrote {out}  (use with: bertmtl train --encoder {out})")
