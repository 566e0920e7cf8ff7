"""`bertmtl augment`: augmented copies of the training data for `train --augment DIR`."""

from __future__ import annotations

import click

from .options import FiniteFloat, data_dir_option, device_option, out_option, parsed, seed_option


@click.command()
@data_dir_option(note="the train files are augmented")
@out_option("augmented", "Output directory (train files in the same format, plus augment.json).")
@click.option("--tasks", default="sst,para,sts", show_default=True, help="Tasks whose train files to augment.")
@click.option("--methods", "--method", "methods", default="swap,delete", show_default=True,
              help="Any of swap, delete, synonym (WordNet), contextual (our BERT + MLM head; needs --mlm). "
                   "Copies take the methods in turn.")
@click.option("--times", type=click.IntRange(min=1), default=1, show_default=True,
              help="Augmented copies per example.")
@click.option("--aug-p", type=FiniteFloat(min=0, max=1, min_open=True), default=0.15, show_default=True,
              help="Fraction of the words each method changes (at least one).")
@click.option("--mlm", type=click.Path(file_okay=False, exists=True, path_type=str), default=None,
              help="For contextual: a BERT directory with a masked-LM head (e.g. `bertmtl pretrain` output).")
@click.option("--top-k", type=click.IntRange(min=1), default=10, show_default=True,
              help="For contextual: draw each new word from the model's top-k predictions.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Augment only the first N examples of each task [default: all].")
@seed_option()
@device_option(note="for the contextual method")
@click.option("--overwrite", is_flag=True, help="Replace --out if it already holds files.")
def augment(data_dir, out, tasks, methods, times, aug_p, mlm, top_k, limit, seed, device, overwrite) -> None:
    """Write augmented copies of the training data (labels kept), for `train --augment DIR`.

    \b
    Examples:
      bertmtl augment --data-dir data --out aug --times 2 --methods swap,delete,synonym
      bertmtl augment --data-dir data --out aug --methods contextual --mlm pretrained-mlm
      bertmtl train --data-dir data --augment aug
    """
    from ..augment import AugmentConfig, parse_methods
    from ..augment import augment as run_augment
    from ..train_config import parse_tasks

    cfg = AugmentConfig(data_dir=data_dir, out=out, tasks=parsed(parse_tasks, tasks, "--tasks"),
                        methods=parsed(parse_methods, methods, "--methods"), times=times, aug_p=aug_p, seed=seed,
                        mlm=mlm, top_k=top_k, device=device, limit=limit, overwrite=overwrite)
    manifest = run_augment(cfg)
    n = sum(t["copies"] for t in manifest["tasks"].values())
    click.echo(f"{n} augmented examples in {out}  (use with: bertmtl train --augment {out})")
