"""What `bertmtl ensemble` and `bertmtl soup` share: build, score, say what was written."""

from __future__ import annotations

import shlex
import sys

import click


def run_combine(cfg, what: str) -> None:
    """Build `what` ("ensemble", "soup" or "greedy soup") of cfg.sources into cfg.out; print the
    dev table when cfg.data_dir is given."""
    import signal

    from ..inference.combine import DevData, combine
    from ..runs.progress import progress_bar
    from ..threads import use_threads
    from ..training.stopping import Stopped

    def terminated(signum, frame):  # as Ctrl-C: the half-built output and its lock are removed on the way out
        raise Stopped(f"stopped ({signal.Signals(signum).name}): nothing was written to {cfg.out}")

    signal.signal(signal.SIGTERM, terminated)
    use_threads(cfg.threads)
    data = DevData(cfg.data_dir, cfg.dev_limit, cfg.batch_size, cfg.device, cfg.strict) if cfg.data_dir else None
    key = {"ensemble": "ensemble", "soup": "soup", "greedy soup": "greedy_soup"}[what]
    with progress_bar("scoring", None) as advance:
        result = combine(cfg.sources, **{key: cfg.out}, data=data, overwrite=cfg.overwrite,
                         note=lambda text: click.echo(text, err=True), progress=advance,
                         command=shlex.join(["bertmtl", *sys.argv[1:]]))
    out = result.written[what]
    if what == "greedy soup":
        kept = ", ".join(str(result.members[i]) for i in result.greedy)
        click.echo(f"the greedy soup kept {len(result.greedy)} of {len(result.members)}: {kept}")
    if data is not None:
        _table(result, what)
    click.echo(f"{what} written to {out}")


def _table(result, what: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..tasks import metric_labels

    rows = [(str(m), s) for m, s in zip(result.members, result.singles)] + [(what, result.scores[what])]
    columns = [*metric_labels(result.specs.values(), primary_only=True), ("overall", "overall")]
    table = Table(title="dev")
    table.add_column("model")
    for _, label in columns:
        table.add_column(label, justify="right")
    for name, s in rows:
        table.add_row(name, *("undefined" if s.metrics.get(k) is None else f"{s.metrics[k]:.4f}" for k, _ in columns))
    Console(file=sys.stdout).print(table)
