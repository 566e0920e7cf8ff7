"""Metrics, dev/test evaluation, and CS224N-style prediction files."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import torch

from ..data.batching import TaskDataset, bucketed_batches
from .metrics import accuracy, binary_f1, macro_f1, pearson_r, spearman_rho
from ..errors import UserError
from ..fsutil import WriteError
from ..model.heads import MultitaskBert
from ..tasks import BUILTIN, CORRELATIONS, POOLED, TASKS, TOKENS, TaskSpec, overall_keys, spec_of


@torch.inference_mode()
def outputs_of(model: MultitaskBert, dataset: TaskDataset, batch_size: int = 64, device="cpu",
            autocast_dtype: torch.dtype | None = None, progress=None) -> torch.Tensor:
    """Model outputs for every example, in dataset order, as `model.postprocess` gives them:
    class probabilities (N, classes), probability of the second label (N,), or a score (N,).
    `progress(n)` (optional) is called with the examples of each batch done."""
    was_training = model.training
    model.eval()
    out = [None] * len(dataset)
    device = torch.device(device)
    for idx in bucketed_batches(dataset.lengths, batch_size, generator=None, bucket=True):
        batch = dataset.batch(idx).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            raw = model(batch)
        res = model.postprocess(batch.task, raw)
        for i, r in zip(idx, res.cpu()):
            out[i] = r
        if progress is not None:
            progress(len(idx))
    model.train(was_training)
    return torch.stack(out)


def decisions(task: str | TaskSpec, outputs: torch.Tensor) -> torch.Tensor:
    """Post-processed outputs -> predictions (the output kind's: the most probable class,
    probability > 0.5 as 1.0 / 0.0, or the score itself)."""
    return spec_of(task).output.decide(outputs)


# Why a metric can be undefined, and what that does to `overall`:
# - because of the dev data (fewer than two examples, or every gold label equal, for a
#   correlation): the same at every evaluation of a run, so the metric is left out of `overall`,
#   which stays comparable between evaluations (the mean of the other tasks' scores);
# - because of the model (non-finite outputs, or constant predictions for a correlation): the
#   evaluation has no `overall` (None), so it can never become best/.
DATA, MODEL = "data", "model"


def undefined_reason(metric: str, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[str, str] | None:
    """(cause, why) when `metric` of the task is undefined on these outputs and labels, else None."""
    if not torch.isfinite(outputs).all():
        return MODEL, "the model's outputs are not finite (NaN or inf)"
    if metric not in CORRELATIONS:
        return None  # accuracy and F1 are defined for any finite outputs and at least one example
    if len(labels) < 2:
        return DATA, f"{len(labels)} dev example(s); a correlation needs at least 2"
    if bool((labels == labels[0]).all()):
        return DATA, f"all {len(labels)} gold labels are equal ({labels[0].item():g})"
    if bool((outputs == outputs[0]).all()):
        return MODEL, f"the model predicts one value ({outputs[0].item():g}) for every example"
    return None


def task_metrics(task: str | TaskSpec, outputs: torch.Tensor, labels: torch.Tensor,
                 undefined: dict | None = None) -> dict:
    """The task's metrics (keys like sst_acc) and the number of examples scored (sst_n).

    An undefined metric is None; with `undefined`, its key is added there:
    {"cause": "data" or "model", "reason": why}."""
    spec = spec_of(task)
    pred = decisions(spec, outputs)
    scores = {"accuracy": lambda: accuracy(pred, labels),
              "macro_f1": lambda: macro_f1(pred, labels, len(spec.labels)),
              "f1": lambda: binary_f1(pred, labels),
              "pearson": lambda: pearson_r(outputs, labels),
              "spearman": lambda: spearman_rho(outputs, labels)}
    out = {}
    for m in spec.metrics:
        key, reason = spec.metric_key(m), undefined_reason(m, outputs, labels)
        value = None if reason else scores[m]()
        if reason is None and (value is None or not math.isfinite(value)):  # e.g. overflow to inf
            reason, value = (MODEL, "it is not a finite number"), None
        out[key] = value
        if reason is not None and undefined is not None:
            undefined[key] = {"cause": reason[0], "reason": reason[1]}
    out[spec.count_key] = len(labels)
    return out


@torch.inference_mode()
def token_metrics(model: MultitaskBert, spec: TaskSpec, dataset, batch_size: int = 64, device="cpu",
                  autocast_dtype: torch.dtype | None = None, progress=None) -> dict:
    """A masked-LM task's held-out scores: masked-token accuracy, perplexity and mean loss, summed
    over every masked token (the dataset's masks are fixed, so every call scores the same tokens)."""
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    device = torch.device(device)
    loss_sum, correct, n = 0.0, 0, 0
    for idx in bucketed_batches(dataset.lengths, batch_size, generator=None, bucket=True):
        batch = dataset.batch(idx).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(batch)
        gold = batch.labels[batch.labels != -100]
        loss_sum += F.cross_entropy(logits.float(), gold, reduction="sum").item()
        correct += int((logits.argmax(-1) == gold).sum())
        n += len(gold)
        if progress is not None:
            progress(len(idx))
    model.train(was_training)
    loss = loss_sum / max(n, 1)
    values = {"accuracy": correct / max(n, 1), "perplexity": math.exp(min(loss, 700.0)), "loss": loss}
    return {**{spec.metric_key(m): values[m] for m in spec.metrics}, spec.count_key: n}


def _pooled_scores(model, spec, ds, batch_size, device, autocast_dtype, progress, undefined, keep) -> dict:
    """A task answered from pooled embeddings: its metrics over its examples' outputs (kept in `keep`)."""
    outputs = outputs_of(model, ds, batch_size, device, autocast_dtype, progress)
    if keep is not None:
        keep[spec.name] = ([str(ex.id) for ex in ds.examples], outputs, ds.labels)
    return task_metrics(spec, outputs, ds.labels, undefined)


def _token_scores(model, spec, ds, batch_size, device, autocast_dtype, progress, undefined, keep) -> dict:
    """A masked-LM task: scored over its masked tokens (nothing to keep: no example has one answer)."""
    return token_metrics(model, spec, ds, batch_size, device, autocast_dtype, progress)


# How each head family (model/heads.py) is scored.
SCORES = {POOLED: _pooled_scores, TOKENS: _token_scores}


def overall(metrics: dict, specs=BUILTIN, undefined: dict | None = None) -> float | None:
    """Mean of each task's primary metric (for the CS224N tasks: SST accuracy, paraphrase
    accuracy and STS Pearson, the paper's Table 1 score).

    Metrics undefined because of the data (None) are left out; any metric undefined because of
    the model (`undefined` holds its cause) leaves the evaluation without an overall score."""
    if any(u["cause"] == MODEL for u in (undefined or {}).values()):
        return None
    parts = [metrics[k] for k in overall_keys(specs) if metrics.get(k) is not None]
    return sum(parts) / len(parts) if parts else None


def kept_metrics(kept: dict, specs: dict, index: dict | None = None) -> dict:
    """The metrics and `overall` of kept dev outputs ({task: (ids, outputs, labels)}, as `evaluate`'s
    `keep` receives them), on the examples `index[task]` picks (all by default): what a run's,
    a resample's or an ensemble's outputs score, without the model."""
    metrics: dict = {}
    undefined: dict = {}
    for task, (_, out, labels) in kept.items():
        idx = None if index is None else index[task]
        metrics.update(task_metrics(specs[task], out if idx is None else out[idx],
                                    labels if idx is None else labels[idx], undefined))
    metrics["overall"] = overall(metrics, [specs[t] for t in kept], undefined)
    if undefined:
        metrics["undefined"] = undefined
    return metrics


def leaderboard_overall(metrics: dict) -> float | None:
    """The CS224N course leaderboard's overall score: the mean of SST accuracy, Quora accuracy and
    STS Pearson r mapped to [0, 1] as (r + 1) / 2 (the plain `overall` averages r itself); None
    unless all three are in `metrics`."""
    parts = [metrics.get(s.primary_metric) for s in BUILTIN]
    if any(not isinstance(v, (int, float)) for v in parts):
        return None
    return sum((v + 1) / 2 if s.metrics[0] in CORRELATIONS else v for s, v in zip(BUILTIN, parts)) / len(parts)


def evaluate(model: MultitaskBert, datasets: dict[str, TaskDataset], batch_size: int = 64, device="cpu",
             autocast_dtype: torch.dtype | None = None, progress=None, keep: dict | None = None) -> dict:
    """Metrics of every labelled dataset given, plus `overall`; with an "undefined" entry
    ({metric key: {"cause", "reason"}}) when some metric is undefined (its value is None).
    `progress(n)` (optional) is called with the examples of each batch scored. `keep` (a dict)
    receives each scored task's (example ids, outputs, labels): what a paired comparison of two
    runs resamples (sweep/stats.py)."""
    metrics: dict = {}
    undefined: dict = {}
    for task, ds in datasets.items():
        spec = model.specs[task]
        score = SCORES[spec.output.head_family]  # its head family's way (tasks/kinds.py names it)
        metrics.update(score(model, spec, ds, batch_size, device, autocast_dtype, progress, undefined, keep))
    metrics["overall"] = overall(metrics, model.specs.values(), undefined)
    if undefined:  # travels with the metrics into metrics.jsonl, best/metrics.json and the reporters' warnings
        metrics["undefined"] = undefined
    return metrics


def write_predictions(model: MultitaskBert, datasets: dict[str, TaskDataset], out_dir: Path, split: str,
                      batch_size: int = 64, device="cpu") -> list[Path]:
    """CS224N-style prediction CSVs: `id,Predicted_...` per task, atomically written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task, ds in datasets.items():
        spec = model.specs[task]
        values = [spec.output.prediction_value(v) for v in decisions(spec, outputs_of(model, ds, batch_size, device)).tolist()]
        path = out_dir / f"{task}-{split}-output.csv"
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["id", spec.prediction_header])
                for ex, v in zip(ds.examples, values):
                    w.writerow([ex.id, v])
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as e:  # a full disk: say so, leave no half file
            tmp.unlink(missing_ok=True)
            raise WriteError(f"could not write {path} ({e.strerror or e}); the files written before it are "
                             f"{', '.join(map(str, written)) or 'none'}") from None
        written.append(path)
    return written


def evaluate_checkpoint(cfg, note=None, progress=None) -> tuple[dict, dict[str, TaskSpec]]:
    """`bertmtl evaluate`: a checkpoint's dev metrics, or its prediction files (`cfg`: EvaluateConfig);
    (the result, the checkpoint's tasks).

    The result is what `--json` prints: checkpoint, split, the metrics (an undefined one is null,
    with its reason under "undefined") and the rows skipped, or the prediction files written.
    `note(text)` hears the notes and warnings; `progress(description, total)` is a context manager
    yielding `advance(n)` (runs/progress.py progress_bar).
    """
    from ..data.batching import load_datasets
    from ..fsutil import check_writable
    from ..model.device import pick_device
    from ..runs.catalog import choose_checkpoint
    from ..runs.checkpoint import load_checkpoint
    from ..runs.ownership import check_output
    from ..runs.progress import progress_bar
    from ..tasks import TASK_ALIASES, undefined_warnings
    from ..tasks.files import TaskSource, parse_choices
    from ..threads import use_threads

    note = note or (lambda text: None)
    progress = progress or progress_bar
    dev = pick_device(cfg.device)
    use_threads(cfg.threads)
    choice = choose_checkpoint(cfg.checkpoint, cfg.runs_dir)
    path = choice.path
    if choice.note:
        note(f"note: {choice.note}")
    if cfg.write_predictions:  # checked before the evaluation runs, not after
        check_output(cfg.write_predictions, {"the checkpoint": path, "--data-dir": cfg.data_dir},
                     "--write-predictions")
        check_writable(Path(cfg.write_predictions))
    ck = load_checkpoint(path, device=dev)
    # Masked LM is scored on held-out train text while it trains (the run's metrics.jsonl), not here.
    names = [n for n, s in ck.model.specs.items() if s.output.answers]
    if not names:
        raise UserError(f"{path} has only a masked-LM task, which evaluate does not score: its held-out perplexity "
                        f"is in its run's metrics.jsonl (`bertmtl runs`), and `python benchmarks/mlm_perplexity.py "
                        f"--data-dir DATA {path}` scores it on the dev sentences")
    if cfg.tasks is not None:
        try:
            names = parse_choices(cfg.tasks, names, "task", TASK_ALIASES)
        except ValueError as e:
            raise UserError(f"Invalid value for '--tasks': {e}") from None
    specs = [ck.model.specs[n] for n in names]
    split = cfg.split
    # Test files are optional (a task without one predicts nothing); a declared task names its train
    # and dev files only.
    source = TaskSource(cfg.data_dir, strict=cfg.strict, dev_limit=cfg.dev_limit)
    datasets, read = load_datasets(specs, split, source, ck.tokenizer, ck.model.cfg.pair_mode,
                                   labelled=split == "dev", warn=lambda row: note(f"warning: {row}"),
                                   optional=lambda s: split == "test")
    for name, p in read.absent.items():
        title = ck.model.specs[name].title
        note(f"no {split} data declared for {title} (a file, or a dataset's split): not evaluated" if p is None else
             f"{p.name} not found: no {title} predictions")
    result: dict = {"checkpoint": str(path), "split": split}
    if split == "dev":
        with progress("evaluating", sum(map(len, datasets.values()))) as advance:
            metrics = evaluate(ck.model, datasets, cfg.batch_size, dev, progress=advance)
        for line in undefined_warnings(metrics, ck.model.specs.values()):
            note(f"warning: {line}")
        result.update(metrics)
        result["skipped_rows"] = {Path(p).name: n for p, n in read.skipped.items()}
    if cfg.write_predictions:
        written = write_predictions(ck.model, datasets, Path(cfg.write_predictions), split, cfg.batch_size, dev)
        result["predictions"] = [str(w) for w in written]
    elif split == "test":
        note("note: --split test has no labels; add --write-predictions DIR to save predictions")
    return result, ck.model.specs


__all__ = ["TASKS", "decisions", "evaluate", "evaluate_checkpoint", "leaderboard_overall", "outputs_of", "task_metrics",
           "overall", "write_predictions"]
