"""`bertmtl evaluate`: dev metrics of a checkpoint, or test-split predictions."""

from __future__ import annotations

from pathlib import Path

import click

from ..configuration.configs import EvaluateConfig
from .options import options_of, parsed, resolved_options


@click.command()
@options_of(EvaluateConfig)
@click.pass_context
def evaluate(ctx: click.Context, **opts) -> None:
    """Score a checkpoint on dev (accuracy, macro-F1, Pearson, overall) or predict the test split."""
    import json
    import sys

    from ..data.batching import load_datasets
    from ..runs.checkpoint import load_checkpoint
    from ..model.device import pick_device
    from ..errors import UserError
    from ..inference.evaluate import evaluate as run_eval
    from ..inference.evaluate import leaderboard_overall, write_predictions
    from ..runs.catalog import choose_checkpoint
    from ..tasks.files import TaskSource, parse_choices
    from ..tasks import TASK_ALIASES, undefined_warnings

    cfg = resolved_options(EvaluateConfig, ctx, opts)
    dev = pick_device(cfg.device)
    choice = choose_checkpoint(cfg.checkpoint, cfg.runs_dir)
    path = choice.path
    if choice.note:
        click.echo(f"note: {choice.note}", err=True)
    if cfg.write_predictions:  # checked before the evaluation runs, not after
        from ..fsutil import check_writable
        from ..runs.ownership import check_output

        check_output(cfg.write_predictions, {"the checkpoint": path, "--data-dir": cfg.data_dir},
                     "--write-predictions")
        check_writable(Path(cfg.write_predictions))
    ck = load_checkpoint(path, device=dev)
    warn = lambda row: click.echo(f"warning: {row}", err=True)  # noqa: E731
    # Masked LM is scored on held-out train text while it trains (the run's metrics.jsonl), not here.
    names = [n for n, s in ck.model.specs.items() if s.output.answers]
    if not names:
        raise UserError(f"{path} has only a masked-LM task, which evaluate does not score: its held-out perplexity "
                        f"is in its run's metrics.jsonl (`bertmtl runs`), and `python benchmarks/mlm_perplexity.py "
                        f"--data-dir DATA {path}` scores it on the dev sentences")
    if cfg.tasks is not None:
        names = parsed(lambda t: parse_choices(t, names, "task", TASK_ALIASES), cfg.tasks, "--tasks")
    specs = [ck.model.specs[n] for n in names]
    split = cfg.split
    # Test files are optional (a task without one predicts nothing); a declared task names its train
    # and dev files only.
    datasets, read = load_datasets(specs, split, TaskSource(cfg.data_dir, strict=cfg.strict, dev_limit=cfg.dev_limit), ck.tokenizer,
                                   ck.model.cfg.pair_mode, labelled=split == "dev", warn=warn,
                                   optional=lambda s: split == "test")
    for name, p in read.absent.items():
        title = ck.model.specs[name].title
        click.echo(f"no {split} file declared for {title}: not evaluated" if p is None else
                   f"{p.name} not found: no {title} predictions", err=True)
    result: dict = {"checkpoint": str(path), "split": split}
    if split == "dev":
        from ..runs.progress import progress_bar

        with progress_bar("evaluating", sum(map(len, datasets.values()))) as advance:
            metrics = run_eval(ck.model, datasets, cfg.batch_size, dev, progress=advance)
        for line in undefined_warnings(metrics, ck.model.specs.values()):
            click.echo(f"warning: {line}", err=True)
        result.update(metrics)  # an undefined metric is null, with its reason under "undefined"
        result["skipped_rows"] = {Path(p).name: n for p, n in read.skipped.items()}
    if cfg.write_predictions:
        written = write_predictions(ck.model, datasets, Path(cfg.write_predictions), split, cfg.batch_size, dev)
        result["predictions"] = [str(w) for w in written]
    elif split == "test":
        click.echo("note: --split test has no labels; add --write-predictions DIR to save predictions", err=True)
    if cfg.json:
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
