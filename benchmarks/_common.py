"""Shared helpers for the benchmark scripts: interleaved timing and the data location."""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def data_dir() -> Path:
    """The task CSVs: $BERTMTL_DATA, ./data, or ../shared/data beside the checkout."""
    for cand in (os.environ.get("BERTMTL_DATA"), "data", SHARED_DATA):
        if cand and (Path(cand) / "ids-sst-train.csv").is_file():
            return Path(cand)
    raise SystemExit("no task data found: set BERTMTL_DATA to the directory with the CS224N CSVs")


def default_step(batch_size: int):
    """`bertmtl train`'s default training step on the real data, on the CPU: (its TrainConfig, the
    train sets, the model with the default weights, the MultitaskStep, a RoundRobin of batches)."""
    from bertmtl.configuration.train_config import TrainConfig
    from bertmtl.data.batching import RoundRobin
    from bertmtl.encoders.tokenizer import EncoderTokenizer
    from bertmtl.encoders.weights import pretrained_dir
    from bertmtl.model.bert import BertModel
    from bertmtl.model.heads import HeadConfig, MultitaskBert
    from bertmtl.mtl.step import MultitaskStep
    from bertmtl.training.setup import load_datasets

    cfg = TrainConfig(data_dir=str(data_dir()), batch_size=batch_size)
    train_sets, _, _ = load_datasets(cfg, EncoderTokenizer.from_dir(pretrained_dir()), warn=lambda row: None)
    torch.manual_seed(0)
    model = MultitaskBert(BertModel.from_pretrained(pretrained_dir()), HeadConfig.of(cfg)).train()
    step = MultitaskStep(model, cfg, list(train_sets), torch.device("cpu"))
    return cfg, train_sets, model, step, RoundRobin(train_sets, batch_size, seed=1)


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, callable], rounds: int, inner: int = 1, warmup: int = 1,
                device: str = "cpu") -> dict[str, float]:
    """Median seconds per call of each function, run alternately so machine noise hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_gflops(n: int = 2048, rounds: int = 5, device: str = "cpu", dtype=torch.float32) -> float:
    """Achieved GFLOP/s of an n x n matmul: the ceiling that dense layers can approach."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    # The best of several rounds: a ceiling, so noise must not lower it.
    best = min(interleaved({"mm": lambda: a @ b}, rounds=1, warmup=2 if i == 0 else 0, device=device)["mm"]
               for i in range(rounds))
    return 2 * n**3 / best / 1e9


def encoder_flops(config, batch: int, seq: int, tokens: int | None = None) -> float:
    """Forward FLOPs of a BERT encoder on a padded (batch, seq) input (matmuls only)."""
    h, i, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    n = tokens if tokens is not None else batch * seq
    dense = 2 * n * (3 * h * h + h * h + 2 * h * i)
    attn = 2 * 2 * batch * seq * seq * h
    return L * (dense + attn)
