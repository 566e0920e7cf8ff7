"""The `bertmtl` command line: thin Click commands that parse options and call one function."""

from __future__ import annotations

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bertmtl")
def main() -> None:
    """Train one BERT on sentiment (SST-5), paraphrase (Quora) and similarity (STS-B) at once.

    \b
    Typical use:
      bertmtl download                      fetch the default weights (all-MiniLM-L6-v2)
      bertmtl train --data-dir data         train, best/last checkpoints under checkpoints/
      bertmtl predict "a sentence" "another" try the trained model
    """


@main.command()
@click.option("--quiet", is_flag=True, help="Print only the directory.")
def download(quiet: bool) -> None:
    """Fetch the default pretrained weights (all-MiniLM-L6-v2) into the cache, print where."""
    from .weights import pretrained_dir

    click.echo(str(pretrained_dir(quiet=quiet)))


if __name__ == "__main__":  # pragma: no cover
    main()
