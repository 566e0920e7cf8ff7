"""The `bertmtl` command line: thin Click commands that parse options and call one function."""

from __future__ import annotations

import os
from pathlib import Path

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
    from .allocator import configure_allocator

    configure_allocator()  # before anything allocates tensors: see allocator.py


@main.command()
@click.option("--quiet", is_flag=True, help="Print only the directory.")
def download(quiet: bool) -> None:
    """Fetch the default pretrained weights (all-MiniLM-L6-v2) into the cache, print where."""
    from .weights import pretrained_dir

    click.echo(str(pretrained_dir(quiet=quiet)))




# -- train ---------------------------------------------------------------------------------

def _tasks_option(value: str) -> list[str]:
    from .data import parse_tasks

    try:
        return parse_tasks(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _smart_weights(value: str | None) -> dict | None:
    if value is None:
        return None
    out = {}
    for part in value.split(","):
        try:
            k, v = part.split("=")
            out[k.strip()] = float(v)
        except ValueError:
            raise click.BadParameter(f"expected task=weight pairs like sst=0.5,para=0,sts=0.5, got {part!r}") from None
    bad = set(out) - {"sst", "para", "sts"}
    if bad:
        raise click.BadParameter(f"unknown task(s) {', '.join(sorted(bad))}")
    return out


def train_options(f):
    """The options of `bertmtl train` (also accepted by `bertmtl tui --train`)."""
    from .train import TrainConfig

    d = TrainConfig()
    opts = [
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=str), default=d.data_dir, show_default=True,
                     help="Directory with the CS224N task CSVs."),
        click.option("--out", type=click.Path(file_okay=False, path_type=str), default=None,
                     help="Run directory [default: a new checkpoints/DATE-TIME]."),
        click.option("--pretrained", type=click.Path(file_okay=False, exists=True, path_type=str), default=None,
                     help="A Hugging Face BERT directory to start from [default: all-MiniLM-L6-v2, fetched on first use]."),
        click.option("--tasks", default="sst,para,sts", show_default=True, help="Tasks to train, any of sst, para, sts."),
        click.option("--epochs", type=click.FloatRange(min=0, min_open=True), default=d.epochs, show_default=True,
                     help="Epochs (one epoch = one pass over the largest task)."),
        click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
                     help="Override the epoch length in steps."),
        click.option("--max-steps", type=click.IntRange(min=1), default=None,
                     help="Stop after this many steps (the schedule still assumes --epochs)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=d.batch_size, show_default=True,
                     help="Examples per task per step (per process under torchrun)."),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=d.lr, show_default=True,
                     help="Peak learning rate."),
        click.option("--layer-decay", type=click.FloatRange(min=0, max=1, min_open=True), default=d.layer_decay,
                     show_default=True,
                     help="Layer-wise learning-rate decay: the heads train at --lr, transformer layer i of L "
                          "at --lr x DECAY^(L-i), the embeddings lowest (1 = off)."),
        click.option("--weight-decay", type=click.FloatRange(min=0), default=d.weight_decay, show_default=True,
                     help="Decoupled weight decay (not applied to biases and LayerNorm)."),
        click.option("--warmup", type=click.FloatRange(min=0, max=1, max_open=True), default=d.warmup, show_default=True,
                     help="Fraction of the steps with linear warm-up."),
        click.option("--schedule", type=click.Choice(["linear", "constant"]), default=d.schedule, show_default=True,
                     help="Learning rate after warm-up: linear decay to 0, or constant."),
        click.option("--clip", type=click.FloatRange(min=0), default=d.clip, show_default=True,
                     help="Gradient norm clipping (0 = off)."),
        click.option("--dropout", type=click.FloatRange(min=0, max=1, max_open=True), default=d.dropout, show_default=True,
                     help="Dropout in the encoder and heads."),
        click.option("--ema", type=click.FloatRange(min=0, max=1, max_open=True), default=d.ema, show_default=True,
                     help="Evaluate and save an exponential moving average of the weights with this decay "
                          "(e.g. 0.99; 0 = off)."),
        click.option("--combine", type=click.Choice(["sum", "pcgrad"]), default=d.combine, show_default=True,
                     help="How per-task gradients become one update."),
        click.option("--smart/--no-smart", default=d.smart, show_default=True, help="SMART adversarial regularisation."),
        click.option("--smart-weights", default=None, metavar="TASK=W,...",
                     help="Per-task SMART weights [default: sst=0.5,para=0,sts=0.5, as in the paper]."),
        click.option("--smart-steps", type=click.IntRange(min=1), default=d.smart_steps, show_default=True,
                     help="SMART ascent steps K."),
        click.option("--optimizer", type=click.Choice(["adamw", "adamaxw"]), default=d.optimizer, show_default=True,
                     help="Optimizer (ours)."),
        click.option("--seed", type=int, default=d.seed, show_default=True, help="Random seed (CPU runs repeat exactly)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=d.device, show_default=True,
                     help="auto = CUDA when available."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=d.precision,
                     show_default=True,
                     help="Autocast precision of training steps: auto = bf16 on CPUs that multiply it natively "
                          "(AVX512-BF16, AMX), fp32 elsewhere; fp16 adds a gradient scaler. Evaluation is fp32."),
        click.option("--compile/--no-compile", default=d.compile, show_default=True,
                     help="torch.compile the encoder (falls back when unsupported)."),
        click.option("--eval-every", type=click.IntRange(min=1), default=None,
                     help="Evaluate on dev every N steps [default: every epoch]."),
        click.option("--save-every", type=click.IntRange(min=1), default=None,
                     help="Also save RUN/last every N steps [default: at each evaluation]."),
        click.option("--log-every", type=click.IntRange(min=1), default=d.log_every, show_default=True,
                     help="Write a metrics.jsonl record every N steps."),
        click.option("--pooling", type=click.Choice(["mean", "cls", "pooler"]), default=d.pooling, show_default=True,
                     help="Sentence embedding: mean of tokens, [CLS] state, or the tanh pooler."),
        click.option("--pair-mode", type=click.Choice(["bi", "cross"]), default=d.pair_mode, show_default=True,
                     help="Pairs as two embeddings (cosine + MLP) or one [CLS] a [SEP] b [SEP] input."),
        click.option("--pair-features", type=click.Choice(["concat", "symmetric"]), default=d.pair_features,
                     show_default=True,
                     help="Bi-encoder MLP input: [u, v, |u-v|, u*v], or [u+v, |u-v|, u*v], which scores "
                          "(a, b) and (b, a) alike."),
        click.option("--sts-loss", type=click.Choice(["pearson", "mse"]), default=d.sts_loss, show_default=True,
                     help="STS loss: 1 - Pearson r over the batch, or squared error on the 0-5 scale."),
        click.option("--max-length", type=click.IntRange(min=8), default=d.max_length, show_default=True,
                     help="Maximum tokens per input (capped by the model's positions)."),
        click.option("--bucket/--no-bucket", default=d.bucket, show_default=True,
                     help="Length-bucketed batches (less padding)."),
        click.option("--augment", type=click.Path(file_okay=False, path_type=str), default=None,
                     help="Also train on the augmented copies in this directory (from `bertmtl augment`)."),
        click.option("--strict", is_flag=True, help="Stop at the first unusable data row instead of skipping it."),
        click.option("--sst-train", "sst_train", type=click.Path(dir_okay=False), default=None, help="Override the SST train file."),
        click.option("--sst-dev", "sst_dev", type=click.Path(dir_okay=False), default=None, help="Override the SST dev file."),
        click.option("--para-train", "para_train", type=click.Path(dir_okay=False), default=None, help="Override the Quora train file."),
        click.option("--para-dev", "para_dev", type=click.Path(dir_okay=False), default=None, help="Override the Quora dev file."),
        click.option("--sts-train", "sts_train", type=click.Path(dir_okay=False), default=None, help="Override the STS train file."),
        click.option("--sts-dev", "sts_dev", type=click.Path(dir_okay=False), default=None, help="Override the STS dev file."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


# Options that shape the saved weights or the optimizer's parameter groups.
FIXED_ON_RESUME = ("pooling", "pair_mode", "pair_features", "layer_decay", "weight_decay", "optimizer")
FILE_KEYS = ("sst_train", "sst_dev", "para_train", "para_dev", "sts_train", "sts_dev")


def config_from_options(ctx: click.Context, opts: dict, base=None):
    """A TrainConfig from command-line values; with `base` (resuming), only options given explicitly override."""
    from click.core import ParameterSource

    from .train import TrainConfig

    values = dict(opts)
    values["files"] = {k: values.pop(k) for k in FILE_KEYS if values.get(k)}
    for k in FILE_KEYS:
        values.pop(k, None)
    values["tasks"] = _tasks_option(values["tasks"])
    sw = _smart_weights(values.pop("smart_weights"))
    if base is None:
        cfg = TrainConfig.from_dict(values)
        if sw is not None:
            cfg.smart_weights.update(sw)
        return cfg
    cfg = TrainConfig.from_dict(base)
    for k, v in values.items():
        if k in ("files",):
            if v:
                cfg.files.update(v)
            continue
        if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE:
            if k in FIXED_ON_RESUME and v != getattr(cfg, k):
                raise click.UsageError(f"--{k.replace('_', '-')} cannot change when resuming: the run was trained "
                                       f"with {getattr(cfg, k)!r} (its weights or optimizer state depend on it)")
            setattr(cfg, k, v)
    if sw is not None:
        cfg.smart_weights.update(sw)
    return cfg


@main.command()
@train_options
@click.option("--resume", type=click.Path(file_okay=False, exists=True, path_type=str), default=None,
              help="Continue the run in this directory from its last checkpoint (options given again override).")
@click.pass_context
def train(ctx: click.Context, resume: str | None, **opts) -> None:
    """Train the multi-task model; best/ and last/ checkpoints land in the run directory.

    \b
    Examples:
      bertmtl train --data-dir data
      bertmtl train --data-dir data --tasks sst --no-smart --combine sum   (the paper's baseline)
      bertmtl train --resume checkpoints/20261126-101500
      torchrun --nproc_per_node 4 -m bertmtl train --data-dir data        (data parallel)
    """
    from .checkpoint import read_json
    from .progress import format_metrics
    from .train import train as run_training

    base = None
    if resume is not None:
        base = read_json(Path(resume) / "train_args.json")
    cfg = config_from_options(ctx, opts, base)
    summary = run_training(cfg, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun, rank 0 reports
    lines = [f"run: {summary['run']}  ({summary['status']} at step {summary['step']}/{summary['total_steps']})"]
    if summary.get("last_metrics"):
        lines.append("final dev: " + format_metrics(summary["last_metrics"]))
    if summary.get("best_overall") is not None:
        lines.append(f"best overall dev: {summary['best_overall']:.4f}  ->  {summary['run']}/best")
    if summary.get("skipped_rows"):
        lines.append(f"skipped unusable rows: {summary['skipped_rows']} (see warnings above and metrics.jsonl)")
    click.echo("\n".join(lines))
    if summary["status"] == "stopped":
        raise SystemExit(130)  # interrupted (checkpoint saved): the shell convention for Ctrl-C


# -- evaluate ------------------------------------------------------------------------------

@main.command()
@click.option("--checkpoint", "checkpoint_path", type=click.Path(path_type=str), default=None,
              help="Checkpoint directory (or a run directory: its best/) [default: the latest run's best].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=str), default="data", show_default=True,
              help="Directory with the CS224N task CSVs.")
@click.option("--split", type=click.Choice(["dev", "test"]), default="dev", show_default=True,
              help="dev: metrics on labelled data; test: predictions for the unlabelled test files.")
@click.option("--tasks", default="sst,para,sts", show_default=True, help="Tasks to evaluate.")
@click.option("--write-predictions", "pred_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Write CS224N-style prediction CSVs (id, prediction) into this directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Evaluation batch size.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="Device.")
@click.option("--strict", is_flag=True, help="Stop at the first unusable data row.")
def evaluate(checkpoint_path, data_dir, split, tasks, pred_dir, as_json, batch_size, device, strict) -> None:
    """Score a checkpoint on dev (accuracy, macro-F1, Pearson, overall) or predict the test split."""
    import json
    import sys

    from .checkpoint import load_checkpoint
    from .data import TASKS, TaskDataset, read_task_file, task_path
    from .evaluate import evaluate as run_eval
    from .evaluate import write_predictions
    from .runs import resolve_checkpoint
    from .train import pick_device

    dev = pick_device(device)
    path = resolve_checkpoint(checkpoint_path)
    ck = load_checkpoint(path, device=dev)
    warn = lambda row: click.echo(f"warning: {row}", err=True)  # noqa: E731
    datasets, skipped, missing = {}, {}, []
    for name in _tasks_option(tasks):
        task = TASKS[name]
        p = task_path(data_dir, task, split)
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
        metrics = run_eval(ck.model, datasets, batch_size, dev)
        result.update(metrics)
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

    console = Console(file=sys.stdout)
    if split == "dev":
        table = Table(title=f"{path} on {split}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("examples", justify="right")
        for key, label, n in (("sst_acc", "SST accuracy", "sst_n"), ("sst_f1", "SST macro-F1", "sst_n"),
                              ("para_acc", "Quora accuracy", "para_n"), ("sts_corr", "STS Pearson r", "sts_n"),
                              ("overall", "overall", None)):
            if result.get(key) is not None:
                table.add_row(label, f"{result[key]:.4f}", str(result.get(n, "")) if n else "")
        console.print(table)
    for w in result.get("predictions", []):
        console.print(f"wrote {w}")


# -- predict -------------------------------------------------------------------------------

@main.command()
@click.argument("texts", nargs=-1)
@click.option("--checkpoint", "checkpoint_path", type=click.Path(path_type=str), default=None,
              help="Checkpoint or run directory [default: the best checkpoint of the latest run under checkpoints/].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "tsv"]), default="jsonl", show_default=True,
              help="Output format when reading stdin.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Sentences per forward pass.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True, help="Device.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto = bf16 where the hardware multiplies bf16 natively (~2x faster on such CPUs; "
                   "probabilities within ~0.01 of fp32), else fp32.")
def predict(texts: tuple[str, ...], checkpoint_path, as_json, fmt, batch_size, device, precision) -> None:
    """Predict with a trained model: one sentence, a pair, or lines from stdin.

    \b
      bertmtl predict "A gorgeous, witty film."           sentiment of one sentence
      bertmtl predict "How do I learn Python?" "What is the best way to learn Python?"
                                                          all three heads for a pair
      cat pairs.tsv | bertmtl predict -                   one JSON object per input line

    Each stdin line is a sentence, two tab-separated sentences, or a JSON object with
    "sentence" or "sentence1"/"sentence2" (and an optional "id", echoed back).
    """
    import sys

    stdin_mode = texts == ("-",) or (not texts and not sys.stdin.isatty())
    if not stdin_mode and len(texts) not in (1, 2):
        raise click.UsageError("give one sentence, two sentences (a pair), or - to read lines from stdin")
    if not stdin_mode and any(not t.strip() for t in texts):
        raise click.BadParameter("sentences must not be empty", param_hint="TEXTS")
    from .predict import Predictor
    from .train import pick_device

    predictor = Predictor(checkpoint_path, device=str(pick_device(device)), batch_size=batch_size, precision=precision)
    if stdin_mode:
        raise SystemExit(_predict_stdin(predictor, fmt))
    res = predictor.sentence(texts[0]) if len(texts) == 1 else predictor.pair(texts[0], texts[1])
    if as_json:
        import json

        click.echo(json.dumps(res))
        return
    _print_prediction(res, texts)


def _predict_stdin(predictor, fmt: str) -> int:
    """Answer stdin line by line (streaming); exit status 1 if any line failed."""
    import json
    import sys

    from .predict import TSV_COLUMNS, parse_line, read_lines, to_tsv

    lines, ready = read_lines(sys.stdin.fileno())
    items = (parse_line(n, raw) for n, raw in lines)
    failed = 0
    out = sys.stdout
    if fmt == "tsv":
        out.write("\t".join(TSV_COLUMNS) + "\n")
    line = 0
    try:
        for res in predictor.stream(items, ready=ready):
            line += 1
            if "error" in res:
                failed += 1
            out.write((json.dumps(res) if fmt == "jsonl" else to_tsv(res, res.get("line", line))) + "\n")
            if not ready():  # nothing more waiting: let the reader see what we have
                out.flush()
        out.flush()
    except BrokenPipeError:  # e.g. `| head`: the reader is gone, which is not an error
        sys.stderr.close()
        return 0
    if failed:
        click.echo(f"{failed} of {line} input line(s) could not be answered (see the error objects)", err=True)
    return 1 if failed else 0


def _print_prediction(res: dict, texts: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("prediction")
    table.add_column("details", overflow="fold")

    def sent_row(name, s):
        probs = "  ".join(f"{p:.2f}" for p in s["probabilities"])
        table.add_row(name, f"{s['label']} ({s['index']})", f"p = {probs}")

    if "sentiment" in res:
        sent_row("sentiment", res["sentiment"])
    else:
        sent_row("sentiment 1", res["sentiment1"])
        sent_row("sentiment 2", res["sentiment2"])
        table.add_row("paraphrase", "yes" if res["is_paraphrase"] else "no", f"p = {res['paraphrase_prob']:.3f}")
        table.add_row("similarity", f"{res['similarity']:.2f} / 5", "")
    console.print(table)
    if "truncated" in res:
        console.print(f"[yellow]note:[/] {res['truncated']}")


# -- tui -----------------------------------------------------------------------------------

@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("run", required=False, type=click.Path(file_okay=False, path_type=str))
@click.option("--checkpoint", "checkpoint_path", type=click.Path(path_type=str), default=None,
              help="Checkpoint for the playground [default: the run's best/].")
@click.option("--train", "start_training", is_flag=True,
              help="Start a training run (with the train options below) in the background and watch it.")
@train_options
@click.pass_context
def tui(ctx: click.Context, run: str | None, checkpoint_path: str | None, start_training: bool, **opts) -> None:
    """Watch a run live (loss curves, dev metrics, progress) and try its model in a playground.

    \b
      bertmtl tui                          the latest run under checkpoints/
      bertmtl tui checkpoints/20261126-1015
      bertmtl tui --train --data-dir data  start training and watch it (s stops it cleanly)
    """
    import sys

    from click.core import ParameterSource

    from .errors import UserError
    from .runs import latest_run

    train_argv = None
    if start_training:
        if run is not None and (Path(run) / "metrics.jsonl").exists():
            raise click.UsageError("with --train, give a new run directory through --out (or none)")
        from .train import new_run_dir

        out = opts.get("out") or run or str(new_run_dir())
        opts["out"] = out
        train_argv = [sys.executable, "-m", "bertmtl", "train"]
        for param in ctx.command.params:
            name = param.name
            if name in ("run", "checkpoint_path", "start_training") or not isinstance(param, click.Option):
                continue
            if name != "out" and ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
                continue  # the child uses its own defaults for options not given
            value = opts.get(name)
            if param.is_flag and param.secondary_opts:
                train_argv.append(param.opts[0] if value else param.secondary_opts[0])
            elif param.is_flag:
                if value:
                    train_argv.append(param.opts[0])
            elif value is not None:
                train_argv += [param.opts[0], str(value)]
        run = out
    elif run is None:
        latest = latest_run()
        if latest is None:
            raise UserError("no runs under checkpoints/ yet. Start one and watch it with "
                            "`bertmtl tui --train --data-dir DATA`, or train with `bertmtl train` first")
        run = str(latest)
    elif not Path(run).is_dir():
        raise UserError(f"{run}: no such run directory")
    from .tui.app import run_tui

    run_tui(Path(run), checkpoint=checkpoint_path, train_argv=train_argv)


# The optional stages (augment, pretrain, ablate) live in their own module; importing it
# registers their commands on the group.
from . import cli_stages  # noqa: E402,F401
