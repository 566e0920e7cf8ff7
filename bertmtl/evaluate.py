"""Metrics, dev/test evaluation, and CS224N-style prediction files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from .data import TASKS, TaskDataset, bucketed_batches
from .model.heads import MultitaskBert

METRIC_KEYS = ("sst_acc", "sst_f1", "para_acc", "sts_corr", "overall")


def accuracy(pred: torch.Tensor, gold: torch.Tensor) -> float:
    return (pred == gold).float().mean().item()


def macro_f1(pred: torch.Tensor, gold: torch.Tensor, num_classes: int = 5) -> float:
    """Unweighted mean of per-class F1 (a class absent from both counts as F1 0)."""
    f1s = []
    for c in range(num_classes):
        tp = ((pred == c) & (gold == c)).sum().item()
        fp = ((pred == c) & (gold != c)).sum().item()
        fn = ((pred != c) & (gold == c)).sum().item()
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(f1s) / num_classes


def pearson_r(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double(), y.double()
    xc, yc = x - x.mean(), y - y.mean()
    denom = (xc.norm() * yc.norm()).item()
    return (xc @ yc).item() / denom if denom else 0.0


@torch.inference_mode()
def predict(model: MultitaskBert, dataset: TaskDataset, batch_size: int = 64, device="cpu",
            autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Model outputs for every example, in dataset order.

    SST: class probabilities (N, 5); paraphrase: probability of duplicate (N,);
    STS: similarity on 0-5 (N,).
    """
    was_training = model.training
    model.eval()
    out = [None] * len(dataset)
    device = torch.device(device)
    for idx in bucketed_batches(dataset.lengths, batch_size, generator=None, bucket=True):
        batch = dataset.batch(idx).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            raw = model(batch)
        raw = raw.float()
        if batch.task == "sst":
            res = raw.softmax(-1)
        elif batch.task == "para":
            res = raw.sigmoid()
        else:
            res = model.similarity(raw)
        for i, r in zip(idx, res.cpu()):
            out[i] = r
    model.train(was_training)
    return torch.stack(out)


def task_metrics(task: str, outputs: torch.Tensor, labels: torch.Tensor) -> dict:
    if task == "sst":
        pred = outputs.argmax(-1)
        return {"sst_acc": accuracy(pred, labels), "sst_f1": macro_f1(pred, labels), "sst_n": len(labels)}
    if task == "para":
        return {"para_acc": accuracy((outputs > 0.5).float(), labels), "para_n": len(labels)}
    return {"sts_corr": pearson_r(outputs, labels), "sts_n": len(labels)}


def overall(metrics: dict) -> float | None:
    """Mean of SST accuracy, paraphrase accuracy and STS Pearson (the paper's Table 1 score)."""
    parts = [metrics[k] for k in ("sst_acc", "para_acc", "sts_corr") if k in metrics]
    return sum(parts) / len(parts) if parts else None


def evaluate(model: MultitaskBert, datasets: dict[str, TaskDataset], batch_size: int = 64, device="cpu",
             autocast_dtype: torch.dtype | None = None) -> dict:
    """Metrics of every labelled dataset given, plus `overall`."""
    metrics: dict = {}
    for task, ds in datasets.items():
        outputs = predict(model, ds, batch_size, device, autocast_dtype)
        metrics.update(task_metrics(task, outputs, ds.labels))
    metrics["overall"] = overall(metrics)
    return metrics


def write_predictions(model: MultitaskBert, datasets: dict[str, TaskDataset], out_dir: Path, split: str,
                      batch_size: int = 64, device="cpu") -> list[Path]:
    """CS224N-style prediction CSVs: `id,Predicted_...` per task, atomically written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    header = {"sst": "Predicted_Sentiment", "para": "Predicted_Is_Paraphrase", "sts": "Predicted_Similarity"}
    written = []
    for task, ds in datasets.items():
        outputs = predict(model, ds, batch_size, device)
        if task == "sst":
            values = outputs.argmax(-1).tolist()
        elif task == "para":
            values = [float(v) for v in (outputs > 0.5).float().tolist()]
        else:
            values = [round(v, 4) for v in outputs.tolist()]
        path = out_dir / f"{task}-{split}-output.csv"
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["id", header[task]])
            for ex, v in zip(ds.examples, values):
                w.writerow([ex.id, v])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        written.append(path)
    return written


__all__ = ["METRIC_KEYS", "TASKS", "evaluate", "predict", "task_metrics", "overall", "write_predictions"]
