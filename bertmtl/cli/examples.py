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
    from ..examples import FILES, files_of, write

    if not directory.strip():
        raise click.BadParameter("name a directory (`.` for this one)", param_hint="DIRECTORY")
    done = write(directory)
    width = max(map(len, FILES))
    for entry, what in FILES.items():
        click.echo(f"  {'wrote' if done[entry] else 'kept':5}  {entry:{width}}  {what}")
    n = sum(len(files_of(e)) for e, wrote in done.items() if wrote)
    where = directory.rstrip("/") or "/"
    summary = f"wrote {n} file{'' if n == 1 else 's'} to {where}/"
    if kept := sum(not wrote for wrote in done.values()):
        summary += f"; kept {kept} already there (never overwritten)"
    click.echo(summary)
