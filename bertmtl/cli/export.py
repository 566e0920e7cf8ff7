"""`bertmtl export`: a trained model for transformers, sentence-transformers or ONNX Runtime."""

from __future__ import annotations

import click

FORMATS = ("hf", "sentence-transformers", "onnx")  # bertmtl.export.FORMATS, without importing torch


@click.command()
@click.argument("source", required=False, type=click.Path(path_type=str))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True,
              help="hf: transformers' AutoModel + AutoTokenizer (the encoder); sentence-transformers: "
                   "SentenceTransformer(DIR).encode gives our sentence embeddings; onnx: encoder and task "
                   "heads in one graph for ONNX Runtime (needs `pip install -e \".[onnx]\"`).")
@click.option("--out", required=True, type=click.Path(path_type=str), help="Directory to write (new or empty).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it already holds files.")
def export(source, fmt, out, overwrite) -> None:
    """Export a checkpoint or run (its best/) [default: best/ of the most recent run that has one].

    \b
      bertmtl export checkpoints/RUN --format hf --out my-encoder
      bertmtl export checkpoints/RUN --format sentence-transformers --out my-st-model
      bertmtl export checkpoints/RUN --format onnx --out my-onnx
    """
    from ..export import command_line
    from ..export import export as run_export
    from ..runs import choose_checkpoint

    choice = choose_checkpoint(source)
    if choice.note:
        click.echo(f"note: {choice.note}", err=True)
    path = run_export(choice.path, fmt, out, command=command_line(source, fmt, out, overwrite), overwrite=overwrite)
    click.echo(f"{fmt} export written to {path} (see {path}/README.md)")
