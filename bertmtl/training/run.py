"""A training run in memory: what set-up builds (training/setup.py) and the loop advances (training/loop.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..configuration.train_config import TrainConfig
from ..data.batching import RoundRobin
from ..encoders.tokenizer import EncoderTokenizer
from ..model.heads import MultitaskBert
from ..mtl.step import MultitaskStep
from ..runs.rundir import WriterLock
from ..runs.state import TrainingState
from .callbacks import Callbacks
from .distributed import Dist
from .ema import WeightAverage
from .optim import scheduled_lr


@dataclass
class Run:
    """Everything a training run holds between steps; `prepare()` builds it, the loop advances it."""

    cfg: TrainConfig
    dir: Path
    dist: Dist
    device: torch.device
    reporter: object
    tokenizer: EncoderTokenizer
    train_sets: dict
    dev_sets: dict
    skipped: dict  # file -> unusable rows skipped
    model: MultitaskBert
    stepper: MultitaskStep
    rr: RoundRobin
    averager: WeightAverage | None
    steps_per_epoch: int
    total_steps: int  # the schedule's length
    stop_at: int  # where this run stops (--stop-at-step)
    eval_every: int
    precision: str  # of the training steps
    resumed: bool
    eval_steps: set = field(default_factory=set)  # evaluations besides every eval_every steps (--head-steps)
    state: TrainingState = field(default_factory=TrainingState)  # step, best score, patience, ...
    lock: WriterLock | None = None  # held while the main process trains (`bertmtl runs`: running)
    # Where records go, in order: the sinks (the metrics log first, on the main process only),
    # --patience, a sweep's pruner, the caller's.
    callbacks: Callbacks = field(default_factory=Callbacks)
    warnings: list = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return self.stepper.tasks

    def emit(self, record: dict) -> None:
        """Send a record to every sink and callback once: metrics.jsonl, the console, the --report-to
        destinations, then the other callbacks."""
        self.callbacks.emit(record)

    def lr_at(self, step: int) -> float:
        """The learning rate of 0-based `step`: the head-only steps' (--head-lr, decaying to 0), then
        the --lr schedule over the steps after them."""
        cfg, heads = self.cfg, self.cfg.head_steps or 0
        if step < heads:
            return (cfg.head_lr or cfg.lr) * (heads - step) / heads
        return scheduled_lr(step - heads, self.total_steps - heads, cfg.lr, cfg.warmup, cfg.schedule)
