"""The one training loop: `bertmtl train`, the TUI and torchrun all end up in `train()`.

Each step takes one batch per task (round-robin), computes each task's loss (plus its SMART
term), backpropagates each task into its own flat gradient buffer of the shared encoder, and
combines the buffers (sum, or PCGrad surgery) into one update.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .accel import cpu_has_native_bf16
from .data import TASKS, RoundRobin, TaskDataset, parse_tasks, read_task_file, task_path
from .distributed import Dist
from .ema import WeightAverage, restore_training_weights, trainable
from .errors import UserError
from .evaluate import evaluate
from .metrics_log import MetricsLog
from .model.bert import BertModel, Dropout
from .model.heads import HeadConfig, MultitaskBert, task_loss
from .mtl import SmartConfig, pcgrad, smart_loss
from .optim import OPTIMIZERS, parameter_groups, scheduled_lr
from .progress import SilentReporter, default_reporter
from .tokenizer import DEFAULT_MAX_LENGTH, WordPieceTokenizer
from .weights import resolve

PRECISIONS = {"auto": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def training_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training steps (None = fp32).

    "auto" is bf16 on CPUs that multiply bf16 natively: a training step ran 1.55-1.66x faster on this
    project's AVX512-BF16 CPU, and a default run reached the same dev scores as fp32 (README,
    Results). GPUs stay in fp32: at the default model size a step there is bound by kernel
    launches, and bf16 (which adds cast kernels) measured slower on an H200.
    """
    if precision == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    return PRECISIONS[precision]


@dataclass
class TrainConfig:
    """Every option of a training run (saved as train_args.json)."""

    data_dir: str = "data"
    out: str | None = None
    pretrained: str | None = None
    tasks: list = field(default_factory=lambda: ["sst", "para", "sts"])
    files: dict = field(default_factory=dict)  # per-task file overrides, e.g. {"sst_train": path}
    augment: str | None = None  # a `bertmtl augment` output directory: extra training examples
    # Defaults chosen by dev measurements (README, Results): batch 64 per task and lr 1e-4 for
    # two epochs beat batch 32 / lr 5e-5 / three epochs, and SMART, which doubles the cost of
    # a step, did not pay for itself within that budget (it stays one flag away).
    epochs: float = 2.0
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 128
    lr: float = 1e-4
    layer_decay: float = 1.0  # layer-wise lr decay: layer i of L trains at lr * layer_decay ** (L - i)
    weight_decay: float = 0.01
    warmup: float = 0.06  # fraction of all steps
    schedule: str = "linear"  # linear decay to 0 | constant
    clip: float = 1.0
    dropout: float = 0.1
    ema: float = 0.0  # decay of the weight average that is evaluated and saved; 0 = off
    combine: str = "pcgrad"
    smart: bool = False
    smart_weights: dict = field(default_factory=lambda: dict(SmartConfig().weights))
    smart_noise: float = 1e-5
    smart_step: float = 1e-3
    smart_epsilon: float = 1e-6
    smart_steps: int = 1
    optimizer: str = "adamw"
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"  # see training_dtype
    compile: bool = False
    eval_every: int | None = None
    save_every: int | None = None
    log_every: int = 10
    pooling: str = "mean"
    pair_mode: str = "bi"
    pair_features: str = "concat"
    sts_loss: str = "pearson"
    mlp_hidden: int = 256
    max_length: int = DEFAULT_MAX_LENGTH
    bucket: bool = True
    strict: bool = False
    max_nonfinite: int = 5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def head_config(self) -> HeadConfig:
        return HeadConfig(pooling=self.pooling, pair_mode=self.pair_mode, pair_features=self.pair_features,
                          mlp_hidden=self.mlp_hidden, dropout=self.dropout, sts_loss=self.sts_loss)

    def smart_config(self) -> SmartConfig:
        return SmartConfig(weights=dict(self.smart_weights), noise=self.smart_noise, step=self.smart_step,
                           epsilon=self.smart_epsilon, steps=self.smart_steps)

    def validate(self) -> None:
        self.tasks = parse_tasks(",".join(self.tasks)) if not isinstance(self.tasks, str) else parse_tasks(self.tasks)
        checks = [
            (self.combine in ("sum", "pcgrad"), "combine must be sum or pcgrad"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}"),
            (self.schedule in ("linear", "constant"), "schedule must be linear or constant"),
            (self.batch_size >= 1 and self.eval_batch_size >= 1, "batch sizes must be >= 1"),
            (self.epochs > 0, "epochs must be > 0"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (0 <= self.warmup < 1, "warmup is a fraction of the run, in [0, 1)"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.ema < 1, "ema must be in [0, 1)"),
            (0 < self.layer_decay <= 1, "layer_decay must be in (0, 1]"),
            (self.max_length >= 8, "max_length must be >= 8"),
            (self.log_every >= 1, "log_every must be >= 1"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(msg)


def pick_device(name: str) -> torch.device:
    """'auto' -> CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA device is available (try --device cpu)")
    return dev


def new_run_dir(root: Path = Path("checkpoints")) -> Path:
    """checkpoints/YYYYmmdd-HHMMSS (with a suffix if that exists)."""
    base = root / time.strftime("%Y%m%d-%H%M%S")
    cand, n = base, 1
    while cand.exists():
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    return cand


def _check_writable(run: Path, need_bytes: int) -> None:
    """Fail before training, not at the first save, when --out cannot hold checkpoints."""
    try:
        run.mkdir(parents=True, exist_ok=True)
        probe = run / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"{run}: cannot write there ({e.strerror or e})") from None
    free = shutil.disk_usage(run).free
    if free < need_bytes:
        raise UserError(f"{run}: {free / 2**20:.0f} MiB free, but checkpoints need about "
                        f"{need_bytes / 2**20:.0f} MiB; free some space or choose another --out")


class _StopFlag:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and stops at the step's end."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


class GradBuffers:
    """Flat gradient buffers for the shared encoder; parameters' .grad are views into them.

    Autograd accumulates into an existing .grad in place, so pointing .grad at a slice of a
    flat buffer before a task's backward collects that task's gradient as one vector without
    copying; PCGrad then works on whole vectors, and DDP reduces one tensor per task.
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
                 dist: Dist | None = None):
        self.model, self.cfg, self.tasks, self.device = model, cfg, tasks, device
        self.dist = dist or Dist()
        self.shared = [p for p in model.encoder.parameters() if p.requires_grad]
        self.head_params = [p for n, p in model.named_parameters() if not n.startswith("encoder.") and p.requires_grad]
        # PCGrad needs one buffer per task; their combination is written over the first task's
        # buffer (each task's gradient is read before it is overwritten), which saves an
        # encoder-sized buffer. Summing needs one buffer that every task accumulates into.
        pc = cfg.combine == "pcgrad"
        self.grads = GradBuffers(self.shared, list(tasks) if pc else ["combined"])
        self.combined = tasks[0] if pc else "combined"
        # The flat buffers already hold a dense gradient, so the word embeddings can hand autograd
        # a sparse one (only the rows in the batch) that is added into the buffer in place,
        # instead of materialising a dense vocab x hidden tensor per task per step.
        model.encoder.embeddings.word_embeddings.sparse = True
        self.optimizer = OPTIMIZERS[cfg.optimizer](parameter_groups(model, cfg.weight_decay, cfg.layer_decay), lr=cfg.lr)
        self.pc_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.autocast_dtype = training_dtype(cfg.precision, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.smart = cfg.smart_config()

    def backward(self, batches: dict, step: int = 0) -> tuple[dict[str, float], dict[str, float]]:
        """Forward and backward every task's batch into its gradient buffer; (losses, SMART terms)."""
        model, cfg = self.model, self.cfg
        for p in self.head_params:
            p.grad = None
        self.grads.zero()
        losses, smart_terms = {}, {}
        for task, batch in batches.items():
            if self.device.type == "cuda":  # pinned host memory lets the copy overlap compute
                batch = batch.pin_memory()
            batch = batch.to(self.device, non_blocking=True)
            self.grads.point(task if cfg.combine == "pcgrad" else "combined")
            with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                embeds = model.embed(batch)
                out = model.head(batch, embeds)
                loss = task_loss(model, task, out, batch.labels)
                total = loss
                w = self.smart.weights.get(task, 0.0) if cfg.smart else 0.0
                if w > 0:
                    s_term = smart_loss(model, batch, embeds, out, self.smart, key=cfg.seed * 100_003 + step)
                    total = loss + w * s_term
                    smart_terms[task] = s_term.detach()
            self.scaler.scale(total).backward()
            losses[task] = loss.detach()
        return ({t: v.item() for t, v in losses.items()}, {t: v.item() for t, v in smart_terms.items()})

    def apply(self, lr: float) -> None:
        """Reduce across ranks, combine (sum or PCGrad), clip, and step the optimizer."""
        dist, grads = self.dist, self.grads
        if self.cfg.combine == "pcgrad":
            # PCGrad needs each task's global gradient: reduce per task, then project identically everywhere.
            for t in self.tasks:
                dist.all_reduce_mean(grads.buffers[t])
            pcgrad([grads.buffers[t] for t in self.tasks], self.pc_gen, out=grads.buffers[self.combined])
        else:
            dist.all_reduce_mean(grads.buffers[self.combined])
        for p in self.head_params:
            if p.grad is not None:
                dist.all_reduce_mean(p.grad)
        grads.point(self.combined)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        self.scaler.unscale_(self.optimizer)
        if self.cfg.clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()


def load_datasets(cfg: TrainConfig, tokenizer: WordPieceTokenizer, warn) -> tuple[dict, dict, dict]:
    """Train datasets of the chosen tasks, dev datasets of every task with a dev file, skip counts."""
    train, dev, skipped = {}, {}, {}
    for name, task in TASKS.items():
        for split, target in (("train", train), ("dev", dev)):
            if split == "train" and name not in cfg.tasks:
                continue
            path = task_path(cfg.data_dir, task, split, cfg.files)
            if split == "dev" and name not in cfg.tasks and not path.is_file():
                continue  # untrained heads are evaluated only when their dev file is there
            f = read_task_file(path, task, labelled=True, strict=cfg.strict, warn=warn)
            if f.skipped:
                skipped[str(path)] = len(f.skipped)
            examples = f.examples
            if split == "train" and cfg.augment:
                extra = Path(cfg.augment) / task.filename("train")
                if extra.is_file():  # augmented copies, in the same format, added to the originals
                    a = read_task_file(extra, task, labelled=True, strict=cfg.strict, warn=warn)
                    if a.skipped:
                        skipped[str(extra)] = len(a.skipped)
                    examples = examples + a.examples
            target[name] = TaskDataset(task, examples, tokenizer, cfg.pair_mode)
    return train, dev, skipped


def train(cfg: TrainConfig, resume: str | Path | None = None, reporter=None, dist: Dist | None = None) -> dict:
    """Train (or resume) a run; returns the run summary (also in RUN/summary.json)."""
    own_dist = dist is None
    dist = dist or Dist.from_env()
    cfg.validate()
    device = pick_device(cfg.device) if not dist.enabled else dist.device(cfg.device)
    if reporter is None:
        reporter = default_reporter() if dist.is_main else SilentReporter()
    run = Path(resume) if resume is not None else Path(cfg.out) if cfg.out else None
    resume_ckpt = None
    if resume is not None:
        ckpt.recover_dir(run / "last")
        if not (run / "last" / "trainer_state.json").is_file():
            raise UserError(f"{run}: nothing to resume (no {run / 'last'} checkpoint with resume state)")
        resume_ckpt = run / "last"
    elif run is None:
        run = dist.broadcast_object(new_run_dir() if dist.is_main else None)
    elif dist.is_main and ((run / "metrics.jsonl").exists() or (run / "last").exists()):
        raise UserError(f"{run} already holds a run; continue it with `bertmtl train --resume {run}` "
                        f"or choose another --out")
    if cfg.augment and not Path(cfg.augment).is_dir():
        raise UserError(f"--augment {cfg.augment}: no such directory (make one with `bertmtl augment`)")

    torch.manual_seed(cfg.seed)
    pretrained = resolve(cfg.pretrained) if resume_ckpt is None else resume_ckpt
    tokenizer = WordPieceTokenizer.from_dir(pretrained, max_length=cfg.max_length)
    warnings = []

    def warn(row):
        warnings.append(row)
        reporter.message(f"warning: {row}")

    train_sets, dev_sets, skipped = load_datasets(cfg, tokenizer, warn)
    if resume_ckpt is None:
        encoder = BertModel.from_pretrained(pretrained)
        model = MultitaskBert(encoder, cfg.head_config())
    else:
        model = ckpt.load_checkpoint(resume_ckpt, max_length=cfg.max_length).model
    for m in model.modules():  # --dropout applies to the encoder as well as the heads
        if isinstance(m, Dropout):
            m.p = cfg.dropout
    model.to(device)

    params_bytes = sum(p.numel() for p in model.parameters()) * 4
    if dist.is_main:
        _check_writable(run, need_bytes=params_bytes * 5)

    rr = RoundRobin(train_sets, cfg.batch_size, cfg.seed, bucket=cfg.bucket, shard=(dist.rank, dist.world))
    steps_per_epoch = cfg.steps_per_epoch or rr.steps_per_epoch()
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    stop_at = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    eval_every = cfg.eval_every or steps_per_epoch

    tasks = list(train_sets)
    stepper = MultitaskStep(model, cfg, tasks, device, dist)
    optimizer, scaler, pc_gen = stepper.optimizer, stepper.scaler, stepper.pc_gen
    precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[stepper.autocast_dtype]
    if cfg.compile:
        from .accel import compile_encoder

        compile_encoder(model, reporter.message)

    averager = WeightAverage(model, cfg.ema) if cfg.ema else None
    step, best, nonfinite = 0, None, 0
    if resume_ckpt is not None:
        tensors, state = ckpt.load_resume_state(resume_ckpt)
        ckpt.load_optimizer_state(optimizer, {k: v.to(device) if k.startswith("state.") and not k.endswith(".step") else v
                                              for k, v in tensors.items()}, state["optimizer"])
        ckpt.load_rng_state(tensors, {"pcgrad": pc_gen})
        rr.load_state_dict(state["data"])
        step, best, nonfinite = state["step"], state.get("best"), state.get("nonfinite", 0)
        if "scaler" in state and cfg.precision == "fp16":
            scaler.load_state_dict(state["scaler"])
        try:
            if averager is not None:
                averager.resume(tensors, state.get("ema_updates", 0))
            else:  # a run saved with --ema, resumed with --ema 0: go on from its training weights
                restore_training_weights(*trainable(model), tensors)
        except ValueError as e:
            raise UserError(f"{resume_ckpt}: {e}") from None

    log = MetricsLog(run / "metrics.jsonl") if dist.is_main else None
    summary = {"run": str(run), "status": "running"}
    if dist.is_main:
        ckpt.write_json(run / "train_args.json", cfg.to_dict())
        log.write({"type": "resume" if resume_ckpt else "start", "step": step, "config": cfg.to_dict(),
                   "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
                   "examples": {t: len(d) for t, d in train_sets.items()},
                   "dev_examples": {t: len(d) for t, d in dev_sets.items()}, "skipped": skipped,
                   "world_size": dist.world, "device": str(device), "precision": precision})

    def averaged():
        """With --ema, the model holds the weight average inside (what is evaluated and saved);
        yields the training weights, which last/'s resume state keeps."""
        return averager.applied() if averager is not None else contextlib.nullcontext(None)

    def save(name: str, metrics: dict | None, with_resume: bool) -> None:
        if dist.is_main:
            with averaged() as raw:
                save_as_is(name, metrics, with_resume, raw)

    def save_as_is(name: str, metrics: dict | None, with_resume: bool, raw: list | None) -> None:
        resume_state = None
        if with_resume:
            opt_tensors, opt_meta = ckpt.optimizer_state(optimizer)
            opt_tensors.update(ckpt.rng_state({"pcgrad": pc_gen}))
            resume_state = {"tensors": opt_tensors, "optimizer": opt_meta, "step": step, "best": best,
                            "nonfinite": nonfinite, "data": rr.state_dict(), "total_steps": total_steps}
            if cfg.precision == "fp16":
                resume_state["scaler"] = scaler.state_dict()
            if averager is not None:
                opt_tensors.update(averager.raw_tensors(raw))
                resume_state["ema_updates"] = averager.updates
        try:
            ckpt.save_checkpoint(run / name, model, tokenizer, step=step, epoch=step / steps_per_epoch,
                                 train_args=cfg.to_dict(), metrics=metrics, tasks=tasks, resume=resume_state)
        except OSError as e:
            raise UserError(f"could not save {run / name} ({e.strerror or e}); the previous checkpoint "
                            f"there is intact. Resume with `bertmtl train --resume {run}` once fixed.") from None

    def run_eval() -> dict:
        nonlocal best
        with averaged() as raw:
            # Always in fp32, whatever the training precision: dev scores stay comparable between
            # runs and are exactly what `bertmtl evaluate` reports for the saved checkpoint.
            metrics = evaluate(model, dev_sets, cfg.eval_batch_size, device) if dist.is_main else {}
            metrics = dist.broadcast_object(metrics)
            is_best = metrics.get("overall") is not None and (best is None or metrics["overall"] > best)
            if is_best:
                best = metrics["overall"]
            rec = {"type": "eval", "split": "dev", "step": step, "epoch": step / steps_per_epoch, **metrics,
                   "best": is_best, "best_overall": best}
            if dist.is_main:
                log.write(rec)
                reporter.evaluation(rec)
                if is_best:
                    save_as_is("best", metrics, False, raw)
        return metrics

    window = {"loss": {t: 0.0 for t in tasks}, "smart": {t: 0.0 for t in tasks}, "n": 0, "examples": 0,
              "t0": time.perf_counter()}
    last_metrics = None
    status = "finished"
    with reporter, _StopFlag() as stop:
        reporter.start(stop_at, step, steps_per_epoch)
        if cfg.precision == "auto" and precision != "fp32":
            reporter.message(f"training steps in {precision} (--precision auto: this CPU multiplies {precision} "
                             f"natively; --precision fp32 turns it off); evaluation in fp32")
        if warnings:
            reporter.message(f"{len(warnings)} unusable row(s) skipped: " +
                             ", ".join(f"{Path(p).name}: {n}" for p, n in skipped.items()))
        model.train()
        while step < stop_at:
            batches = rr.next()
            lr = scheduled_lr(step, total_steps, cfg.lr, cfg.warmup, cfg.schedule)
            loss_values, smart_values = stepper.backward(batches, step)
            finite = dist.all_true(all(math.isfinite(v) for v in (*loss_values.values(), *smart_values.values())))
            if not finite:
                nonfinite += 1
                bad = ", ".join(f"{t}={v}" for t, v in {**loss_values, **smart_values}.items() if not math.isfinite(v))
                if dist.is_main:
                    log.write({"type": "nonfinite", "step": step + 1, "losses": loss_values, "consecutive": nonfinite})
                    reporter.message(f"warning: step {step + 1} skipped, non-finite loss ({bad})")
                step += 1  # the batch is consumed; the parameters are not updated
                if nonfinite >= cfg.max_nonfinite:
                    status = "nonfinite"
                    break
                continue
            nonfinite = 0
            stepper.apply(lr)
            if averager is not None:
                averager.update()
            step += 1

            window["n"] += 1
            window["examples"] += sum(len(b) for b in batches.values()) * dist.world
            for t in tasks:
                window["loss"][t] += loss_values[t]
                window["smart"][t] += smart_values.get(t, 0.0)
            if step % cfg.log_every == 0 or step == stop_at:
                elapsed = time.perf_counter() - window["t0"]
                rec = {"type": "train", "step": step, "epoch": step / steps_per_epoch, "lr": lr,
                       "loss": {t: v / window["n"] for t, v in window["loss"].items()},
                       "smart": {t: v / window["n"] for t, v in window["smart"].items()},
                       "examples_per_s": window["examples"] / max(elapsed, 1e-9), "time": time.time()}
                if dist.is_main:
                    log.write(rec)
                    reporter.step(rec)
                window = {"loss": {t: 0.0 for t in tasks}, "smart": {t: 0.0 for t in tasks}, "n": 0,
                          "examples": 0, "t0": time.perf_counter()}
            stopping = dist.any_true(stop.signal is not None)
            if step % eval_every == 0 and step < stop_at and not stopping:
                last_metrics = run_eval()
                save("last", last_metrics, with_resume=True)
                model.train()
            elif cfg.save_every and step % cfg.save_every == 0 and not stopping:
                save("last", last_metrics, with_resume=True)
            if stopping:
                status = "stopped"
                break
        if status == "finished":
            last_metrics = run_eval()
        if status != "nonfinite":  # never replace the last good checkpoint with diverged weights
            save("last", last_metrics, with_resume=True)

    summary.update(status=status, step=step, total_steps=total_steps, best_overall=best, last_metrics=last_metrics,
                   skipped_rows=sum(skipped.values()), skipped=skipped, world_size=dist.world)
    if dist.is_main:
        log.write({"type": "end", "status": status, "step": step, "best_overall": best})
        log.close()
        ckpt.write_json(run / "summary.json", summary)
        if status == "stopped":
            reporter.message(f"stopped at step {step}; checkpoint saved. Resume with: bertmtl train --resume {run}")
    if own_dist:
        dist.close()
    if dist.is_main and status == "nonfinite":
        raise UserError(f"stopped after {nonfinite} consecutive non-finite losses at step {step}; the last "
                        f"good weights are in {run / 'last'} (try a lower --lr, or --precision fp32)")
    return summary

