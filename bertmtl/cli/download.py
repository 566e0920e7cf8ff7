"""`bertmtl download`: fetch the default pretrained weights."""

from __future__ import annotations

import click


@click.command()
@click.option("--quiet", is_flag=True, help="Print only the directory.")
def download(quiet: bool) -> None:
    """Fetch the default pretrained weights (all-MiniLM-L6-v2) into the cache, print where."""
    from ..weights import pretrained_dir

    click.echo(str(pretrained_dir(quiet=quiet)))
