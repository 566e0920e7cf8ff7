"""`bertmtl predict`: one sentence, a pair, or a stream of lines from stdin."""

from __future__ import annotations

import click

from ..configuration.configs import PredictConfig
from .options import config_from_options, options_of


@click.command()
@options_of(PredictConfig, config_file=False)
@click.pass_context
def predict(ctx: click.Context, **opts) -> None:
    """Predict with a trained model: one sentence, a pair, or lines from stdin.

    Every task of the checkpoint answers (declared tasks under their names).

    \b
      bertmtl predict "A gorgeous, witty film."           sentiment of one sentence
      bertmtl predict "How do I learn Python?" "What is the best way to learn Python?"
                                                          all three heads for a pair
      cat pairs.tsv | bertmtl predict -                   one JSON object per input line

    Each stdin line is a sentence, two tab-separated sentences, or a JSON object with
    "sentence" or "sentence1"/"sentence2" (and an optional "id", echoed back).
    """
    import sys

    cfg = config_from_options(PredictConfig, ctx, opts)
    cfg.validate()
    texts = tuple(cfg.texts)
    stdin_mode = texts == ("-",) or (not texts and sys.stdin is not None and not sys.stdin.isatty())
    if not stdin_mode and len(texts) not in (1, 2):
        raise click.UsageError("give one sentence, two sentences (a pair), or - to read lines from stdin")
    if not stdin_mode and any(not t.strip() for t in texts):
        raise click.BadParameter("sentences must not be empty", param_hint="TEXTS")
    from ..inference.predict import Predictor
    from ..model.device import pick_device

    predictor = Predictor(cfg.checkpoint, device=str(pick_device(cfg.device)), batch_size=cfg.batch_size,
                          precision=cfg.precision, runs_dir=cfg.runs_dir, threads=cfg.threads)
    # Which checkpoint answers, on stderr (stdout stays the answers): a newcomer with several
    # runs should never have to guess.
    if predictor.note:
        click.echo(f"note: {predictor.note}", err=True)
    click.echo(f"checkpoint: {predictor.describe()}", err=True)
    if stdin_mode:
        from ..inference.protocol import answer_stream

        raise SystemExit(answer_stream(predictor, cfg.format, note=lambda text: click.echo(text, err=True)))
    res = predictor.sentence(texts[0]) if len(texts) == 1 else predictor.pair(texts[0], texts[1])
    if cfg.json:
        import json

        click.echo(json.dumps({**res, "checkpoint": str(predictor.path)}))
        return
    _print_prediction(res, predictor.specs)


def _print_prediction(res: dict, specs) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("prediction")
    table.add_column("details", overflow="fold")

    from ..inference.predict import answer_rows

    for row in answer_rows(res, specs):
        table.add_row(*row)
    console.print(table)
    if "truncated" in res:
        console.print(f"[yellow]note:[/] {res['truncated']}")
