"""One multi-task training step, shared by the training loop and benchmarks/mtl_step.py.

Each step takes one batch per task, computes each task's loss (plus its SMART term),
backpropagates each task into its own flat gradient buffer of the shared encoder, and
combines the buffers into one update with the weights a combiner (combiners/, --combine) draws
from their Gram matrix, which also gives the step's task-conflict statistics (telemetry.py).
A loss weighting (weightings/, --loss-weighting) scales each task's loss before its backward
and learns or adapts its weights from the step's losses (and Gram matrix).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..model.device import autocast_dtype
from ..training.distributed import Dist
from ..model.heads import MultitaskBert
from ..training.optim import OPTIMIZERS, parameter_groups
from .combiners import combine_into, gram_matrix, make_combiner
from .smart import SmartConfig, smart_loss
from .telemetry import ConflictWindow, step_stats
from .weightings import make_weighting

if TYPE_CHECKING:
    from ..configuration.train_config import TrainConfig


class GradBuffers:
    """Flat gradient buffers for the shared encoder; parameters' .grad are views into them.

    Autograd accumulates into an existing .grad in place, so pointing .grad at a slice of a
    flat buffer before a task's backward collects that task's gradient as one vector without
    copying; a combiner then works on whole vectors, and DDP reduces one tensor per task.
    """

    def __init__(self, params: list[torch.nn.Parameter], names: list[str]):
        self.params = params
        numel = sum(p.numel() for p in params)
        self.buffers = {n: torch.zeros(numel, device=params[0].device) for n in names}

    def point(self, name: str) -> None:
        buf, o = self.buffers[name], 0
        for p in self.params:
            n = p.numel()
            p.grad = buf[o:o + n].view_as(p)
            o += n

    def zero(self) -> None:
        for b in self.buffers.values():
            b.zero_()


class MultitaskStep:
    """One round-robin training step: per-task losses and backward, gradient combination, update.

    Shared by the training loop and benchmarks/mtl_step.py, so the benchmark times exactly
    what training runs.
    """

    def __init__(self, model: MultitaskBert, cfg: TrainConfig, tasks: list[str], device: torch.device,
                 dist: Dist | None = None, steps_per_epoch: int | None = None):
        self.model, self.cfg, self.tasks, self.device = model, cfg, tasks, device
        self.dist = dist or Dist()
        self.shared = [p for p in model.encoder.parameters() if p.requires_grad]
        self.head_params = [p for n, p in model.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
        # A combiner needs one buffer per task and writes their combination over the first one
        # (apply()), which saves an encoder-sized buffer; the plain sum without telemetry needs
        # one buffer that every task accumulates into.
        self.combiner = make_combiner(cfg, seed=cfg.seed + 1)
        self.weighting = make_weighting(cfg, tasks, steps_per_epoch, device)
        self.telemetry = cfg.telemetry == "on" or (cfg.telemetry == "auto" and cfg.combine != "sum")
        self.per_task = cfg.combine != "sum" or self.telemetry or self.weighting.needs_gram
        self.grads = GradBuffers(self.shared, list(tasks) if self.per_task else ["combined"])
        self.combined = tasks[0] if self.per_task else "combined"  # the buffer the update reads
        self.conflicts = ConflictWindow()  # the telemetry of the steps since the last log record
        # The flat buffers already hold a dense gradient, so the word embeddings can hand autograd
        # a sparse one (only the rows in the batch) that is added into the buffer in place,
        # instead of materialising a dense vocab x hidden tensor per task per step.
        model.encoder.embeddings.word_embeddings.sparse = True
        groups = parameter_groups(model, cfg.weight_decay, cfg.layer_decay)
        if self.weighting.parameters():  # learned loss weights: their own rate, no decay, the same schedule
            groups.append({"params": self.weighting.parameters(), "weight_decay": 0.0,
                           "lr_scale": cfg.weighting_lr / cfg.lr})
        self.optimizer = OPTIMIZERS[cfg.optimizer](groups, lr=cfg.lr)
        self.autocast_dtype = autocast_dtype(cfg.precision, device, training=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.smart = SmartConfig.of(cfg)
        self.stepped = list(tasks)  # the tasks of the last backward(): all, unless sampling leaves some out
        self.heads_only = False  # the last backward() froze the encoder (--head-steps)
        self.loss_scale = self.weighting.weights()  # the loss weighting's weights of the current step
        self.objectives: dict[str, torch.Tensor] = {}  # each task's unweighted loss (+ SMART term) this step
        self.gram: torch.Tensor | None = None  # the last combine()'s Gram matrix

    def stateful(self) -> dict:
        """The parts with state of their own that a resume restores, by the prefix of their keys."""
        return {"combiner": self.combiner, "weighting": self.weighting}

    def backward(self, batches: dict, step: int = 0, heads_only: bool = False) -> tuple[dict[str, float], dict[str, float]]:
        """Forward and backward every task's batch into its gradient buffer; (losses, SMART terms).

        A task's batch may be a list of micro-batches (--grad-accum): each one's loss is weighted
        by its share of the examples, so the buffer ends up with the gradient of the mean loss
        over all of them, as one large batch would give (for losses that are means over examples).
        With `heads_only` (--head-steps) the encoder runs without gradients.
        """
        self.heads_only = heads_only
        for p in self.head_params:
            p.grad = None
        self.grads.zero()
        losses, smart_terms = {}, {}
        self.stepped = list(batches)  # the tasks whose gradients apply() combines
        self.loss_scale = self.weighting.weights()
        self.objectives = {}
        with self._autocast():  # one region per step: see _backward_one
            self._backward_tasks(batches, step, losses, smart_terms)
        return ({t: float(v) for t, v in losses.items()}, {t: float(v) for t, v in smart_terms.items()})

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _backward_tasks(self, batches: dict, step: int, losses: dict, smart_terms: dict) -> None:
        cfg = self.cfg
        for task, batch in batches.items():
            self.grads.point(task if self.per_task else "combined")
            if not isinstance(batch, list):
                losses[task], s_term, self.objectives[task] = self._backward_one(task, batch, 1.0,
                                                                                 cfg.seed * 100_003 + step)
                if s_term is not None:
                    smart_terms[task] = s_term
                continue
            total = sum(len(b) for b in batch)
            for j, micro in enumerate(batch):
                share = len(micro) / total
                key = (cfg.seed * 100_003 + step) * cfg.grad_accum + j  # SMART noise: its own per micro-batch
                loss, s_term, objective = self._backward_one(task, micro, share, key)
                losses[task] = losses.get(task, 0.0) + share * loss
                self.objectives[task] = self.objectives.get(task, 0.0) + share * objective
                if s_term is not None:
                    smart_terms[task] = smart_terms.get(task, 0.0) + share * s_term

    def _backward_one(self, task: str, batch, share: float, key: int):
        """One batch's forward and backward (its loss scaled by `share`); (loss, SMART term or None,
        the two as the loss weighting weighs them) as tensors."""
        model, cfg, spec = self.model, self.cfg, batch.spec
        if self.device.type == "cuda":  # pinned host memory lets the copy overlap compute
            batch = batch.pin_memory()
        batch = batch.to(self.device, non_blocking=True)
        s_term = None
        # Inside backward()'s one autocast region: autocast casts each weight to bf16 once and
        # keeps the copy until the region ends, so every task's forward of the step reuses it
        # (a region per forward cast every weight once per task: 3x the casts). A nested region
        # that turns autocast off (the backward below) keeps that cache. Before torch 2.10 a copy
        # cast under no_grad was cached without its gradient link (pytorch#112583), so within a
        # step a weight must never be first used under no_grad and then with gradients: the
        # head-only steps run the encoder under no_grad for every task, never with gradients.
        if self.heads_only:  # the encoder frozen: its states without a graph, only the head learns
            with torch.no_grad():
                features = model.features(batch, model.embed(batch))
            out, embeds = model.head_of(batch, features), None
        else:
            embeds = model.embed(batch)
            out = model.head(batch, embeds)
        loss = model.loss(task, out, batch.labels)
        total = loss
        w = self.smart.weights.get(task, spec.smart_weight) if cfg.smart and embeds is not None else 0.0
        if w > 0:
            s_term = smart_loss(model, batch, embeds, out, self.smart, key=key)
            total = loss + w * s_term
            s_term = s_term.detach()
        objective = total.detach()
        weight = cfg.loss_weights.get(task, spec.loss_weight) * self.loss_scale[task]
        if weight != 1.0:
            total = weight * total
        with torch.autocast(self.device.type, enabled=False):  # backward without autocast, as before
            self.scaler.scale(total if share == 1.0 else total * share).backward()
        return loss.detach(), s_term, objective

    def combine(self) -> None:
        """The combiner's weighted sum of the (reduced) task gradients, over the first one's buffer."""
        stepped, combiner = self.stepped, self.combiner
        task_grads = [self.grads.buffers[t] for t in stepped]
        # The frozen encoder of --head-steps has zero gradients: no statistics, but the combiner
        # still runs, so a random one draws the same numbers as ever.
        watch = self.telemetry and not self.heads_only
        grams = combiner.needs_gram or watch or (self.weighting.needs_gram and not self.heads_only)
        gram = gram_matrix(task_grads) if grams else None  # the step's one host sync
        weights = combiner(gram, stepped)
        if watch:
            self.conflicts.add(step_stats(gram, weights, stepped))
        self.gram = gram
        # The combination overwrites the first stepped task's buffer: every gradient has been
        # read into the Gram matrix before it is written.
        self.combined = stepped[0]
        combine_into(self.grads.buffers[self.combined], task_grads, weights)

    def apply(self, lr: float) -> None:
        """Reduce across ranks, combine, clip, and step the optimizer."""
        dist, grads = self.dist, self.grads
        if self.per_task:
            # A combiner needs each task's global gradient: reduce per task, then combine identically
            # everywhere. (Every rank samples the same tasks for a step, so they reduce the same buffers.)
            for t in self.stepped:
                dist.all_reduce_mean(grads.buffers[t])
            self.combine()
        else:
            dist.all_reduce_mean(grads.buffers[self.combined])
            self.gram = None
        for p in self.head_params:
            if p.grad is not None:
                dist.all_reduce_mean(p.grad)
        grads.point(self.combined)
        if self.heads_only:  # no update, no decay, no moments for a frozen encoder (the optimizer skips it)
            for p in self.shared:
                p.grad = None
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        self.scaler.unscale_(self.optimizer)
        if self.cfg.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.update_weighting()  # after unscale_: the loss weights' gradients are never scaled
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.weighting.after_step()

    def update_weighting(self) -> None:
        """Hand the loss weighting this step's losses (the mean over ranks: every rank keeps the
        same weights) and Gram matrix; record its weights for the telemetry."""
        weighting = self.weighting
        if not weighting.uses_losses:
            return
        losses = torch.stack([torch.as_tensor(self.objectives[t], dtype=torch.float64, device=self.device)
                              for t in self.stepped])
        self.dist.all_reduce_mean(losses)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        weighting.update(losses.cpu(), self.stepped, None if self.heads_only else self.gram, scale)
        self.conflicts.add_loss_weights({t: self.loss_scale[t] for t in self.stepped})
