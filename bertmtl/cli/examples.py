"""`bertmtl examples DIR`: write the sample files that the docs' examples name."""

from __future__ import annotations

import click


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
def examples(directory: str) -> None:
    """Write the docs' sample files into DIRECTORY: a small CS224N-layout data/, your-own-task files,
    a tasks file, lines for `predict -` and a sweep spec. Files already there are kept.

    \b
      bertmtl examples demo && cd demo && bertmtl train --data-dir data --max-steps 20
    """
    from ..examples import FILES, write

    written, kept = write(directory)
    width = max(map(len, FILES))
    for entry, what in FILES.items():
        click.echo(f"  {entry:{width}}  {what}")
    where = directory.rstrip("/") or "/"
    summary = f"wrote {len(written)} file{'' if len(written) == 1 else 's'} to {where}/"
    if kept:
        summary += f"; kept {len(kept)} already there, unchanged"
    click.echo(summary)
