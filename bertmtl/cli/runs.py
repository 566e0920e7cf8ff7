"""`bertmtl runs`: the runs under the runs root as a table (or JSON), or two runs side by side."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import click

from .options import complete_runs, runs_dir_option


@click.command()
@click.argument("names", nargs=-1, metavar="[RUN]...", shell_complete=complete_runs)
@runs_dir_option()
@click.option("--compare", nargs=2, metavar="RUN_A RUN_B", default=None,
              help="Show two runs' configurations and metrics side by side (only what differs); a run is a "
                   "directory or a name under --runs-dir.")
@click.option("--delete", is_flag=True, help="Delete the runs named (whole directories inside the runs root; never a "
                                             "running one).")
@click.option("--drop-last", is_flag=True,
              help="Delete the resumable last/ (weights and optimizer moments) of finished runs, keeping best/: "
                   "of the runs named, or of every finished run.")
@click.option("--dry-run", is_flag=True, help="With --delete or --drop-last: show what would go and the space it "
                                              "would free, and delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def runs(names: tuple[str, ...], runs_dir: str | None, compare: tuple[str, str] | None, delete: bool, drop_last: bool,
         dry_run: bool, as_json: bool) -> None:
    """List the runs: start, steps, status, encoder, best dev scores; clean them up.

    \b
    Status: finished, stopped (Ctrl-C / SIGTERM, resumable), paused (at --stop-at-step, before
    the end of its schedule: resumable), early-stopped (--patience), pruned (by a sweep's pruner),
    nonfinite (diverged), interrupted (a second Ctrl-C: stopped at once, resumable from its last
    checkpoint), running (a live process holds the run's writer lock), crashed
    (no end record and nobody writing: resume it with `bertmtl train --resume RUN`).
    Best dev scores are those of the run's best checkpoint (RUN/best).

    \b
      bertmtl runs
      bertmtl runs --json
      bertmtl runs --compare 20261126-101500 20261126-120000
      bertmtl runs --drop-last --dry-run        what dropping finished runs' last/ would free
      bertmtl runs --delete 20261126-101500     delete one run
    """
    from ..runs.catalog import compare_runs, find_run, list_runs, run_info, runs_root

    root = runs_root(runs_dir)
    # one mode per call: an option of another mode would otherwise be dropped without a word
    if compare and (delete or drop_last):
        removes = "--delete removes runs" if delete else "--drop-last removes runs' last/"
        raise click.UsageError(f"--compare shows two runs side by side and {removes}: give one of them")
    if compare and names:
        raise click.UsageError("--compare takes the two runs it compares (RUN_A RUN_B); RUN names without it list "
                               "those runs: give one or the other")
    if delete and drop_last:
        raise click.UsageError("--delete removes whole runs and --drop-last their last/ only: give one of them")
    if dry_run and not (delete or drop_last):
        raise click.UsageError("--dry-run goes with --delete or --drop-last")
    if delete or drop_last:
        if delete and not names:
            raise click.UsageError("--delete needs the runs to delete by name (see `bertmtl runs`)")
        _clean(root, [find_run(n, root) for n in names], delete, dry_run, as_json)
        return
    if names:
        infos = [run_info(find_run(n, root)) for n in names]
        if as_json:
            click.echo(json.dumps(infos))
        else:
            _print_table(root, infos)
        return
    if compare:
        a, b = (run_info(find_run(name, root)) for name in compare)
        rows = compare_runs(a, b)
        if as_json:
            click.echo(json.dumps({"a": a["path"], "b": b["path"],
                                   "differences": [{"key": k, "a": va, "b": vb} for k, va, vb in rows]}))
            return
        _print_compare(a, b, rows)
        return
    infos = list_runs(root)
    if as_json:
        click.echo(json.dumps(infos))
        return
    if not infos:
        click.echo(f"no runs under {root}/ (train one with `bertmtl train`, or point --runs-dir / $BERTMTL_RUNS "
                   f"at another directory)")
        return
    _print_table(root, infos)


def _clean(root: Path, named: list[Path], delete: bool, dry_run: bool, as_json: bool) -> None:
    """--delete / --drop-last: plan every removal first (so a refusal removes nothing), then remove."""
    from ..runs.catalog import human_bytes, plan_clean, remove

    plans, kept = plan_clean(root, named, delete)
    for r in plans:
        if not dry_run:
            remove(r)
    total = sum(r.bytes for r in plans)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "bytes": total,
                               "removed": [{"run": str(r.run), "path": str(r.path), "bytes": r.bytes,
                                            "links": [str(link) for link in r.links]} for r in plans],
                               "kept": [{"run": str(r), "why": why} for r, why in kept]}))
        return
    verb = "would delete" if dry_run else "deleted"
    for r in plans:
        links = "".join(f" and the link {link}" for link in r.links)
        click.echo(f"{verb} {r.path}{links}  ({human_bytes(r.bytes)})")
    for r, why in kept:
        click.echo(f"kept: {r} {why}")
    if not plans:
        click.echo("nothing to delete" + ("" if named else f" (no finished run under {root}/ has a last/ beside "
                                                           f"its best/)"))
        return
    what = "run(s)" if delete else "last/ director(y/ies)"
    click.echo(f"{'would free' if dry_run else 'freed'} {human_bytes(total)} ({len(plans)} {what})")


def _cell(text) -> str:
    """A name as a table cell: escaped repr-style when it holds a newline or another control character
    (it would split its row in a pipe), and Rich's markup brackets shown as they are."""
    from rich.markup import escape

    text = str(text)
    return escape(text if text.isprintable() else repr(text))


def _short(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "–"


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return str(v)


# Wide enough for any table of runs: in a pipe no cell is cut or wrapped (the table is as wide as its cells).
PIPE_WIDTH = 100_000


def _print_table(root, infos: list[dict]) -> None:
    import time

    from rich import box
    from rich.console import Console
    from rich.table import Table

    from ..runs.status import Status
    from ..tasks import BUILTIN, metric_labels

    # each task's primary metric (the one in `overall`), headed by the task's title to keep the table narrow
    specs = [s for s in BUILTIN if any(s.primary_metric in i["best"] for i in infos)]
    metrics = [(s.primary_metric, s.title) for s in specs]
    shown = ", ".join(label for _, label in metric_labels(specs, primary_only=True))
    table = Table(title=f"runs under {_cell(root)}/  (dev scores of each run's best checkpoint: {shown})",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col, justify in (("run", "left"), ("started", "left"), ("steps", "right"), ("status", "left")):
        table.add_column(col, justify=justify, no_wrap=True)
    table.add_column("encoder", overflow="fold")
    sweeps = any((i.get("config") or {}).get("sweep") for i in infos)
    if sweeps:  # the sweep and configuration each trial's run belongs to (bertmtl sweep)
        table.add_column("sweep", overflow="fold")
    for _, label in (*metrics, ("overall", "overall")):
        table.add_column(label, justify="right", no_wrap=True)
    for i in infos:
        started = time.strftime("%m-%d %H:%M", time.localtime(i["started"])) if i["started"] else "–"
        steps = f"{i['step']}/{i['total_steps']}" if i["total_steps"] else str(i["step"])
        style = Status.of(i["status"]).style
        sweep = [_cell((i.get("config") or {}).get("sweep") or "–")] if sweeps else []
        table.add_row(_cell(i["name"]), started, steps, f"[{style}]{i['status']}[/]" if style else i["status"],
                      _cell(Path(i["encoder"]).name), *sweep, *(_short(i["best"].get(k)) for k, _ in metrics),
                      _short(i["best"].get("overall")))
    if not _is_terminal(sys.stdout):
        # In a pipe (`bertmtl runs | grep NAME`, a file) each run stays on one line, its cells whole.
        wide = Console(file=io.StringIO(), width=PIPE_WIDTH, color_system=None, soft_wrap=False)
        wide.print(table)
        click.echo("\n".join(line.rstrip() for line in wide.file.getvalue().splitlines()))
        return
    console = Console()
    # Too narrow a terminal would cut run names and scores to "…": wrap lines instead.
    Console(width=max(console.width, 110)).print(table)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream
        return False


def _print_compare(a: dict, b: dict, rows: list) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not rows:
        console.print(f"{_cell(a['name'])} and {_cell(b['name'])}: same configuration, status and best dev metrics")
        return
    table = Table(title=f"{_cell(a['name'])} vs {_cell(b['name'])} (only what differs)")
    table.add_column("")
    table.add_column(_cell(a["name"]), overflow="fold")
    table.add_column(_cell(b["name"]), overflow="fold")
    for key, va, vb in rows:
        table.add_row(key, _fmt(va), _fmt(vb))
    console.print(table)
