"""`bertmtl augment`: augmented copies of the training data for `train --augment DIR`."""

from __future__ import annotations

import click

from ..configuration.configs import AugmentConfig
from .options import options_of, resolved_options


@click.command()
@options_of(AugmentConfig)
@click.pass_context
def augment(ctx: click.Context, **opts) -> None:
    """Write augmented copies of the training data (labels kept), for `train --augment DIR`.

    \b
    Examples:
      bertmtl augment --data-dir data --out aug --times 2 --methods swap,delete,synonym
      bertmtl augment --data-dir data --out aug --methods contextual --mlm pretrained-mlm
      bertmtl augment --task intents:classification:train.csv:dev.csv --out aug   (your own tasks)
      bertmtl train --data-dir data --augment aug
    """
    from ..data.augment import augment as run_augment

    cfg = resolved_options(AugmentConfig, ctx, opts)
    manifest = run_augment(cfg)
    n = sum(t["copies"] for t in manifest["tasks"].values())
    click.echo(f"{n} augmented examples in {cfg.out}  (use with: bertmtl train --augment {cfg.out})")
