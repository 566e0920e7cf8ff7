"""`bertmtl evaluate`: dev metrics of a checkpoint, or test-split predictions."""

from __future__ import annotations

from pathlib import Path

import click

from .options import checkpoint_option, data_dir_option, device_option, parsed, runs_dir_option


@click.command()
@checkpoint_option()
@runs_dir_option()
@data_dir_option()
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True,
              help="dev: metrics on labelled data; test: predictions for the unlabelled test files.")
@click.option("--tasks", default=None, help="Tasks to evaluate [default: every task of the checkpoint; built-in "
                                             "ones read from --data-dir, declared ones from their own files].")
@click.option("--write-predictions", "pred_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Write CS224N-style prediction CSVs (id, prediction) into this directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Evaluation batch size.")
@device_option()
@click.option("--strict", is_flag=True, help="Stop at the first unusable data row.")
def evaluate(checkpoint_path, runs_dir, data_dir, split, tasks, pred_dir, as_json, batch_size, device, strict) -> None:
    """Score a checkpoint on dev (accuracy, macro-F1, Pearson, overall) or predict the test split."""
    import json
    import sys

    from ..checkpoint import load_checkpoint
    from ..data import TASK_ALIASES, TaskDataset, parse_choices, read_task_file, task_path
    from ..evaluate import evaluate as run_eval
    from ..evaluate import leaderboard_overall
    from ..evaluate import write_predictions
    from ..runs import choose_checkpoint
    from ..tasks import undefined_warnings
    from ..device import pick_device

    dev = pick_device(device)
    choice = choose_checkpoint(checkpoint_path, runs_dir)
    path = choice.path
    if choice.note:
        click.echo(f"note: {choice.note}", err=True)
    if pred_dir:  # checked before the evaluation runs, not after
        from ..fsutil import check_writable
        from ..outputs import check_output

        check_output(pred_dir, {"the checkpoint": path, "--data-dir": data_dir}, "--write-predictions")
        check_writable(Path(pred_dir))
    ck = load_checkpoint(path, device=dev)
    warn = lambda row: click.echo(f"warning: {row}", err=True)  # noqa: E731
    datasets, skipped, missing = {}, {}, []
    names = list(ck.model.specs)
    if tasks is not None:
        names = parsed(lambda t: parse_choices(t, names, "task", TASK_ALIASES), tasks, "--tasks")
    for name in names:
        task = ck.model.specs[name]
        p = task_path(data_dir, task, split)
        if p is None:  # a declared task names a train and a dev file only
            missing.append(f"no {split} file declared for {task.title}: not evaluated")
            continue
        if split == "test" and not p.is_file():
            missing.append(f"{p.name} not found: no {task.title} predictions")
            continue
        f = read_task_file(p, task, labelled=split == "dev", strict=strict, warn=warn)
        if f.skipped:
            skipped[p.name] = len(f.skipped)
        datasets[name] = TaskDataset(task, f.examples, ck.tokenizer, ck.model.cfg.pair_mode)
    for m in missing:
        click.echo(m, err=True)
    result: dict = {"checkpoint": str(path), "split": split}
    if split == "dev":
        from ..progress import progress_bar

        with progress_bar("evaluating", sum(map(len, datasets.values()))) as advance:
            metrics = run_eval(ck.model, datasets, batch_size, dev, progress=advance)
        for line in undefined_warnings(metrics, ck.model.specs.values()):
            click.echo(f"warning: {line}", err=True)
        result.update(metrics)  # an undefined metric is null, with its reason under "undefined"
        result["skipped_rows"] = skipped
    if pred_dir:
        written = write_predictions(ck.model, datasets, Path(pred_dir), split, batch_size, dev)
        result["predictions"] = [str(w) for w in written]
    elif split == "test":
        click.echo("note: --split test has no labels; add --write-predictions DIR to save predictions", err=True)
    if as_json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    from ..tasks import metric_rows

    console = Console(file=sys.stdout)
    if split == "dev":
        table = Table(title=f"{path} on {split}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("examples", justify="right")
        for key, label, n in (*metric_rows(ck.model.specs.values()), ("overall", "overall", None)):
            if key in result:  # evaluated; None: undefined (the warning above says why)
                value = "undefined" if result[key] is None else f"{result[key]:.4f}"
                table.add_row(label, value, str(result.get(n, "")) if n else "")
        if (board := leaderboard_overall(result)) is not None:
            table.add_row("overall, CS224N leaderboard ((r + 1) / 2 for STS)", f"{board:.4f}", "")
        console.print(table)
    for w in result.get("predictions", []):
        console.print(f"wrote {w}")
