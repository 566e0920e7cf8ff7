"""The one training engine: `bertmtl train`, `bertmtl pretrain`, the TUI and torchrun all run `train()`.

`prepare()` builds everything a run needs (a `Run`), `Checkpointer` saves and restores it,
`evaluate_dev()` scores it, and `train()` is the loop. A step (mtl/step.py) takes one batch per
task (round-robin), backpropagates each task into its own gradient buffer, and combines them
(sum, or PCGrad surgery) into one update. Masked LM is one more task kind (tasks/kinds.py), so
pretraining is a run like the others: a fresh MLM head first trains alone (`head_steps`, the
encoder frozen), then everything trains on the schedule.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..runs import checkpoint as ckpt
from ..data import batching
from ..data.batching import RoundRobin, n_examples
from ..tasks.files import TaskSource
from ..configuration.train_config import builtin_files, check_data_files
from ..model.device import compile_encoder, pick_device, precision_name
from .distributed import Dist
from .ema import WeightAverage, restore_training_weights, trainable
from ..errors import UserError
from ..fsutil import WriteError, check_writable, crash_point
from ..inference.evaluate import evaluate
from ..sinks import ConsoleSink, report_sinks, require_sinks
from ..sinks.metrics_log import MetricsLog
from ..runs.status import Status
from .stopping import Stopped, stop_on_signals
from ..model.bert import BertModel, Dropout
from ..model.heads import HeadConfig, MultitaskBert
from ..model.mlm import load_head, source_head
from ..mtl.step import GradBuffers, MultitaskStep
from .optim import scheduled_lr
from ..runs.progress import RunReporter, SilentReporter, ThroughputWindow, default_reporter
from ..runs.ownership import check_output
from ..runs.rundir import (BEST, LAST, MARKER, MESSAGES, METRICS_LOG, PROGRESS, SUMMARY, TRAIN_ARGS, TRAINER_STATE, TRAIN_LOG, WRITER_LOCK, WriterLock,
                     is_checkpoint, read_json, read_specs, write_dev_outputs)
from ..fsutil import recover_dir, write_json
from ..runs.catalog import new_run_dir, runs_root
from ..tasks import BUILTIN, TASKS, TaskSpec
from ..encoders.tokenizer import EncoderTokenizer
from ..configuration.train_config import TrainConfig
from ..encoders.weights import resolve, resolve_with_revision

__all__ = ["GradBuffers", "MultitaskStep", "TrainConfig", "load_datasets", "Run", "prepare", "Checkpointer",
           "evaluate_dev", "train"]


def checkpoint_peak_bytes(model, cfg: TrainConfig) -> int:
    """Disk a run needs at its peak: while last/ is replaced, the old last/ and its staged successor
    (each: the weights, two optimizer moments, and the training weights under --ema) beside best/."""
    weights = sum(p.numel() * 4 for p in model.parameters())  # saved in fp32
    last = weights * (3 + (1 if cfg.ema else 0))
    return 2 * last + weights + 16 * 2**20  # and the small files: vocabulary, JSON, the metrics log


def task_specs(cfg: TrainConfig, resume_ckpt: Path | None) -> tuple[list[TaskSpec], list[str], list[TaskSpec]]:
    """The model's tasks (one head each: TrainConfig.new_run_specs), the names of those trained, and
    the declared tasks. A resumed run takes its specs from its checkpoint, so it does not depend on
    the files' current labels.
    """
    from ..tasks.declared import declared_specs

    declared = declared_specs(cfg.task, cfg.tasks_file, taken=cfg.tasks) if cfg.task or cfg.tasks_file else []
    if cfg.mlm_text:  # the sources named, before any download
        from ..data.mlm_text import check_amounts, source_specs

        check_amounts(source_specs(cfg.mlm_text, declared), cfg.mlm_caps, cfg.mlm_upsample)
    specs = read_specs(resume_ckpt) if resume_ckpt is not None else cfg.new_run_specs(declared)
    trained = [s.name for s in specs if s.name in cfg.tasks or s.name not in TASKS]
    known = {s.name for s in specs} | set(TASKS)
    for option, weights in (("--smart-weights", cfg.smart_weights), ("--loss-weights", cfg.loss_weights)):
        if bad := sorted(set(weights) - known):
            raise UserError(f"{option}: unknown task(s) {', '.join(bad)}; this run's tasks are "
                            f"{', '.join(s.name for s in specs)}")
    check_loss_weights(cfg, [s for s in specs if s.name in trained])
    return specs, trained, declared


def check_loss_weights(cfg: TrainConfig, trained: list[TaskSpec]) -> None:
    """Refuse loss weights that train nothing: 0 for every trained task, or 0 for one under a
    combiner that an exactly zero gradient stops (MGDA's min-norm point is then 0)."""
    from ..mtl.combiners import REGISTRY

    weights = {s.name: cfg.loss_weights.get(s.name, s.loss_weight) for s in trained}
    if weights and not any(weights.values()):
        shown = ", ".join(f"{t}={w:g}" for t, w in weights.items())
        raise UserError(f"every trained task has loss weight 0 ({shown}: --loss-weights, or a tasks file's "
                        f"loss_weight): nothing would train; give one a weight above 0, or train fewer tasks")
    combiner = REGISTRY[cfg.combine]
    if combiner.stalls_on_zero and (zero := [t for t, w in weights.items() if w == 0]):
        raise UserError(f"{zero[0]} has loss weight 0, so its gradient is 0 at every step, and --combine "
                        f"{cfg.combine} {combiner.vanishing}: nothing would train; leave the task out instead, or "
                        f"choose another --combine")


def task_source(cfg: TrainConfig) -> TaskSource:
    """Where a run's task files are (train's options)."""
    return TaskSource(cfg.data_dir, files=dict(cfg.files), augment=cfg.augment, strict=cfg.strict,
                      dev_limit=cfg.dev_limit)


def load_datasets(cfg: TrainConfig, tokenizer: EncoderTokenizer, warn, specs=BUILTIN,
                  trained: list[str] | None = None, note=None, declared=()) -> tuple[dict, dict, dict]:
    """Train datasets of the trained tasks, dev datasets of every task with a dev file, skip counts."""
    trained = cfg.builtin_tasks() if trained is None else trained
    source = task_source(cfg)
    pooled = [s for s in specs if s.output.head_family == "pooled"]  # read from their task files
    train, read_train = batching.load_datasets([s for s in pooled if s.name in trained], "train", source, tokenizer,
                                               cfg.pair_mode, warn=warn)
    check_constant_labels(cfg, train, source, warn)
    # Heads that do not train are evaluated only when their dev file is there.
    dev, read_dev = batching.load_datasets(pooled, "dev", source, tokenizer, cfg.pair_mode, warn=warn,
                                           optional=lambda s: s.name not in trained)
    for spec in specs:
        if spec.output.head_family == "tokens":  # masked LM: its sources' text, and a held-out part of it
            train[spec.name], dev[spec.name], skipped = mlm_datasets(cfg, spec, source, tokenizer, declared, warn,
                                                                     note)
            read_dev.skipped.update(skipped)
    return train, dev, {**read_train.skipped, **read_dev.skipped}


def check_constant_labels(cfg: TrainConfig, train: dict, source: TaskSource, warn) -> None:
    """A warning for each trained task whose training labels are all one value (nothing to learn but
    giving that answer); an error where its kind's loss is undefined then (the kind says), or where
    the combiner would let such a task take the update over.

    An error under such a combiner, not a warning: the task's gradient vanishes as its head learns
    the one answer, and the combiner then weights it up until it steers the update (MGDA's is 0 from
    then on), so the whole run would spend its budget training nothing; the fix is in the data or in
    the choice of tasks or --combine, not in an option of the run.
    """
    from ..mtl.combiners import REGISTRY

    for name, ds in train.items():
        labels = ds.labels
        if labels is None or not len(labels) or not bool((labels == labels[0]).all()):
            continue
        spec = ds.task
        shown = spec.output.label_name(spec, labels[0].item())
        said = f"{name}: every {spec.label_column} in {source.path(spec, 'train')} is {shown}"
        if problem := spec.output.constant_labels(spec, cfg):
            raise UserError(f"{said}: {problem}")
        if takes := REGISTRY[cfg.combine].vanishing:
            raise UserError(f"{said}: nothing to learn, and --combine {cfg.combine} {takes}: this task's gradient "
                            f"vanishes as its head learns the one answer, and would take the update over. Fix the "
                            f"labels, leave the task out, or choose another --combine (e.g. pcgrad, upgrad)")
        warn(f"{said}: nothing to learn (its head learns to answer {shown} whatever the input)")


def mlm_datasets(cfg: TrainConfig, spec: TaskSpec, source: TaskSource, tokenizer: EncoderTokenizer, declared,
                 warn, note=None) -> tuple[batching.MlmDataset, batching.MlmDataset, dict]:
    """The masked-LM task's train and held-out text (data/mlm_text.py), masked per example."""
    from ..data import mlm_text

    if tokenizer.mask_id is None:
        raise UserError(f"the vocabulary has no {tokenizer.mask_token} token, so masked-LM training is impossible")
    sources = mlm_text.source_specs(cfg.mlm_text, declared)
    texts, skipped = mlm_text.collect_texts(sources, replace(source, dev_limit=None), warn, note)
    train, held = mlm_text.split_heldout(texts, cfg.mlm_heldout, cfg.mlm_heldout_max, cfg.seed)
    train = mlm_text.balance(train, cfg.mlm_caps, cfg.mlm_upsample, cfg.seed)
    if not any(train.values()):
        raise UserError("no masked-LM training text left after the held-out split and caps; lower --mlm-heldout or "
                        "raise --mlm-caps")
    if not any(held.values()):
        raise UserError("no held-out masked-LM text (each source needs at least 2 examples); add data or raise "
                        "--mlm-heldout")
    return (batching.MlmDataset(spec, train, tokenizer, cfg.seed, cfg.mask_prob),
            batching.MlmDataset(spec, held, tokenizer, cfg.seed, cfg.mask_prob, fixed=True), skipped)


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
    sinks: list | None  # where records go (the metrics log first), on the main process only
    steps_per_epoch: int
    total_steps: int  # the schedule's length
    stop_at: int  # where this run stops (--stop-at-step)
    eval_every: int
    precision: str  # of the training steps
    resumed: bool
    eval_steps: set = field(default_factory=set)  # evaluations besides every eval_every steps (--head-steps)
    step: int = 0
    best: float | None = None
    since_best: int = 0  # evaluations since the best one (--patience)
    nonfinite: int = 0  # consecutive steps with a non-finite loss
    diverged: bool = False  # the weights themselves became non-finite
    lock: WriterLock | None = None  # held while the main process trains (`bertmtl runs`: running)
    ended: Status | None = None  # the status of its end record, once written
    warnings: list = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return self.stepper.tasks

    def emit(self, record: dict) -> None:
        """Send a record to every sink once: metrics.jsonl, the console, the --report-to destinations."""
        for sink in self.sinks:
            sink.write(record)

    def lr_at(self, step: int) -> float:
        """The learning rate of 0-based `step`: the head-only steps' (--head-lr, decaying to 0), then
        the --lr schedule over the steps after them."""
        cfg, heads = self.cfg, self.cfg.head_steps or 0
        if step < heads:
            return (cfg.head_lr or cfg.lr) * (heads - step) / heads
        return scheduled_lr(step - heads, self.total_steps - heads, cfg.lr, cfg.warmup, cfg.schedule)


def _inputs(cfg: TrainConfig) -> dict[str, Path | str | None]:
    """What a run reads, for the overlap check of its directory (ownership.check_output)."""
    inputs: dict[str, Path | str | None] = builtin_files(cfg)
    inputs.update({"--augment": cfg.augment, "--encoder": cfg.encoder, "--init-heads-from": cfg.init_heads_from,
                   "--tasks-file": cfg.tasks_file})
    if cfg.declares_tasks:
        from ..tasks.declared import declared_entries

        for e in declared_entries(cfg.task, cfg.tasks_file):
            for split in ("train", "dev"):
                inputs[f"task {e.get('name')}'s {split} file"] = e.get(split)
    return inputs


def _run_dir(cfg: TrainConfig, resume: str | Path | None, dist: Dist) -> tuple[Path, Path | None, WriterLock | None, bool]:
    """(run directory, its last/ checkpoint when resuming, the lock that makes this process its only
    writer, whether the directory was made for this run).

    The main process takes the run's lock before it reads or writes anything there and holds it
    to the end, so a second `bertmtl train` on the same directory (a shared --out, a --resume of a
    run still training) is refused instead of interleaving with this one. Runs without --out get
    a directory of their own (runs.new_run_dir creates it).
    """
    if not dist.is_main:  # the main process checks and locks; the others follow it
        if resume is not None:
            return Path(resume), Path(resume) / LAST, None, False
        return (Path(cfg.out) if cfg.out is not None else dist.broadcast_object(None)), None, None, False
    if resume is not None:
        run = Path(resume)
        check_output(run, _inputs(cfg), "--resume")
        if not run.is_dir():
            raise UserError(f"{run}: no such run directory")
        lock = WriterLock(run)
        try:
            recover_dir(run / LAST)
            if not (run / LAST / TRAINER_STATE).is_file():
                raise UserError(f"{run}: nothing to resume (no {run / LAST} checkpoint with resume state)")
            cfg.check_resume(read_json(run / LAST / TRAIN_ARGS))
        except BaseException:
            lock.release()
            raise
        return run, run / LAST, lock, False
    if cfg.out is None:
        check_output(runs_root(cfg.runs_dir) / "RUN", _inputs(cfg), "--runs-dir")  # a new run under it
        run, created = dist.broadcast_object(new_run_dir(runs_root(cfg.runs_dir))), True
    else:
        run = Path(cfg.out)
        check_output(run, _inputs(cfg), "--out")
        created = not run.exists()
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{run}: cannot write there ({e.strerror or e})") from None
    lock = WriterLock(run)
    if (run / METRICS_LOG).exists() or (run / LAST).exists():
        lock.release()
        raise UserError(f"{run} already holds a run; continue it with `{cfg.resume_command(run)}` "
                        f"or choose another --out")
    # A new run goes into a new or empty directory: its lock aside, the console log that `bertmtl tui
    # --train` opens before it starts the run, and what a start that failed before it made a run said
    # (replaced: this is the run they would have been about).
    leftovers = (MESSAGES, PROGRESS)
    if any(p.name not in (WRITER_LOCK, TRAIN_LOG, *leftovers) for p in run.iterdir()):
        lock.release()
        raise UserError(f"--out {run}: already holds files (not a run); give a new or empty directory")
    for name in leftovers:
        (run / name).unlink(missing_ok=True)
    return run, None, lock, created


def _discard_if_unused(run_dir: Path) -> None:
    """Remove a run directory that a failed start left empty (nothing was logged or saved in it; what
    it said while setting up went to the console too)."""
    try:
        if not any(p.name not in (WRITER_LOCK, MESSAGES, PROGRESS) for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
    except OSError:
        pass


def prepare(cfg: TrainConfig, resume: str | Path | None, dist: Dist, reporter=None) -> Run:
    """Validate the options and build the run: directory, data, model, optimizer step, resume state, log."""
    cfg.validate()
    if dist.is_main:
        # before any work, not after loading the data; and before the run's directory exists, so an
        # unusable destination leaves no empty run behind (local stores sit beside that directory)
        require_sinks(cfg.report_to, Path(resume or cfg.out or runs_root(cfg.runs_dir) / "RUN"))
    device = pick_device(cfg.device) if not dist.enabled else dist.device(cfg.device)
    if reporter is None:
        reporter = default_reporter() if dist.is_main else SilentReporter()
    if dist.is_main:  # and the run's own record of what it says and how far it is
        reporter = RunReporter(reporter)
    if cfg.augment and not Path(cfg.augment).is_dir():
        raise UserError(f"--augment {cfg.augment}: no such directory (make one with `bertmtl augment`)")
    check_data_files(cfg)
    run_dir, resume_ckpt, lock, created = _run_dir(cfg, resume, dist)
    if dist.is_main:
        reporter.attach(run_dir)
    try:
        run = _build(cfg, run_dir, resume_ckpt, dist, device, reporter)
        run.lock = lock
        if dist.is_main:  # the metrics log opens with the whole configuration
            _open_log(run)
        return run
    except BaseException:
        if created:  # while still holding the lock: nobody else can have started in it
            _discard_if_unused(run_dir)
        if lock is not None:
            lock.release()
        raise


def _build(cfg: TrainConfig, run_dir: Path, resume_ckpt: Path | None, dist: Dist, device, reporter) -> Run:
    """Data, model, optimizer step and resume state of a run whose directory is ours."""
    # data and model (the seed fixes the heads' initialisation)
    specs, trained, declared = task_specs(cfg, resume_ckpt)  # declared tasks' files are read here: before any download
    torch.manual_seed(cfg.seed)
    if resume_ckpt is None:  # a Hub name's commit is recorded: the run names exactly what it started from
        pretrained, revision = resolve_with_revision(cfg.encoder)
        cfg.encoder_revision = revision or cfg.encoder_revision
    else:
        pretrained = resume_ckpt
    tokenizer = EncoderTokenizer.from_dir(pretrained, max_length=cfg.max_length)
    warnings = []

    def warn(row):
        warnings.append(row)
        reporter.message(f"warning: {row}")

    with contextlib.suppress(AttributeError):  # evaluation lines name this run's metrics
        reporter.specs = specs
    train_sets, dev_sets, skipped = load_datasets(cfg, tokenizer, warn, specs, trained, note=reporter.message,
                                                  declared=declared)
    fresh_heads = []  # masked-LM heads the encoder does not bring: initialised, then trained alone first
    if resume_ckpt is None:
        model = MultitaskBert(BertModel.from_pretrained(pretrained), HeadConfig.of(cfg), tuple(specs))
        for spec in specs:
            if spec.output.head_family == "tokens":
                head = source_head(pretrained)
                if head is None:
                    fresh_heads.append(spec.name)
                    reporter.message(f"{pretrained} has no masked-LM head: initialised a fresh one (BERT's init)")
                else:
                    load_head(model, head, pretrained)
        if cfg.init_heads_from:
            taken = ckpt.load_heads(model, resolve(cfg.init_heads_from))
            reporter.message(f"heads from {cfg.init_heads_from}: {', '.join(taken) or 'none'}")
    else:
        model = ckpt.load_checkpoint(resume_ckpt, max_length=cfg.max_length).model
    for m in model.modules():  # --dropout applies to the encoder as well as the heads
        if isinstance(m, Dropout):
            m.p = cfg.dropout
    model.to(device)
    if dist.is_main:
        check_writable(run_dir, checkpoint_peak_bytes(model, cfg), "checkpoints")

    # schedule, data order, optimizer step
    rr = RoundRobin(train_sets, cfg.batch_size, cfg.seed, bucket=cfg.bucket, shard=(dist.rank, dist.world),
                    accum=cfg.grad_accum, proportional=cfg.sampling == "proportional")
    steps_per_epoch = cfg.steps_per_epoch or rr.steps_per_epoch()
    main_steps = cfg.max_steps or max(1, int(round(cfg.epochs * steps_per_epoch)))
    if cfg.head_steps is None:  # resolved once, and saved: a resumed run keeps the schedule it started with
        cfg.head_steps = max(1, main_steps // 5) if fresh_heads else 0
    total_steps = cfg.head_steps + main_steps
    stepper = MultitaskStep(model, cfg, list(train_sets), device, dist, steps_per_epoch=steps_per_epoch)
    if cfg.compile:
        compile_encoder(model, reporter.message)
    run = Run(cfg=cfg, dir=run_dir, dist=dist, device=device, reporter=reporter, tokenizer=tokenizer,
              train_sets=train_sets, dev_sets=dev_sets, skipped=skipped, model=model, stepper=stepper, rr=rr,
              averager=WeightAverage(model, cfg.ema) if cfg.ema else None, sinks=None,
              steps_per_epoch=steps_per_epoch, total_steps=total_steps,
              stop_at=min(total_steps, cfg.stop_at_step) if cfg.stop_at_step else total_steps,
              eval_every=cfg.eval_every or steps_per_epoch, precision=precision_name(stepper.autocast_dtype),
              resumed=resume_ckpt is not None, warnings=warnings,
              # a fresh head is scored as it is, then after its head-only steps ("before" the rest)
              eval_steps={*([0] if fresh_heads or cfg.mlm_only else ()), *([cfg.head_steps] if cfg.head_steps else ())})
    if resume_ckpt is not None:
        Checkpointer(run).restore(resume_ckpt)
        summary = {}
        with contextlib.suppress(UserError, OSError):  # none, or damaged: not a clean end
            summary = read_json(run_dir / SUMMARY)
        status = Status.of(summary.get("status"))
        # Ended for good at this step (summary.json is written last) and trained to the end of the schedule
        # these options give: resuming would only evaluate it again and add records to its log. A run
        # stopped or killed at its last step, before its summary, still resumes: that writes its end.
        if run.step >= total_steps and status.final and summary.get("step") == run.step:
            model_dir = run_dir / BEST if is_checkpoint(run_dir / BEST) else run_dir / LAST
            raise UserError(f"{run_dir}: nothing to resume, it is {status} at step {run.step} of {total_steps}. "
                            f"Its model is {model_dir}; to train more, start a new "
                            f"run from it, e.g. `bertmtl {cfg.command} --encoder {run_dir} --out NEW_DIR`")
        if run.stop_at <= run.step:  # a paused run's --stop-at-step is behind it: --resume goes on to the end
            run.stop_at, cfg.stop_at_step = total_steps, None

    return run


def _open_log(run: Run) -> None:
    cfg = run.cfg
    run.sinks = [MetricsLog(run.dir / METRICS_LOG), ConsoleSink(run.reporter),
                 *report_sinks(cfg.report_to, run.dir, run.step if run.resumed else None)]
    write_json(run.dir / TRAIN_ARGS, cfg.to_dict())
    run.emit({"type": "resume" if run.resumed else "start", "step": run.step, "time": time.time(),
                   "config": cfg.to_dict(), "total_steps": run.total_steps, "steps_per_epoch": run.steps_per_epoch,
                   "examples": {t: len(d) for t, d in run.train_sets.items()},
                   "dev_examples": {t: len(d) for t, d in run.dev_sets.items()}, "skipped": run.skipped,
                   "world_size": run.dist.world, "device": str(run.device), "precision": run.precision,
                   "tasks": [s.to_dict() for s in run.model.specs.values()]})


class Checkpointer:
    """Saves RUN/last (with the state to resume from) and RUN/best, and restores a run from last/.

    With --ema the model holds the weight average while it is saved or evaluated; the training
    weights go into last/'s resume state.
    """

    def __init__(self, run: Run):
        self.run = run

    def averaged(self):
        """Swap the weight average in (a no-op without --ema); yields the training weights."""
        return self.run.averager.applied() if self.run.averager is not None else contextlib.nullcontext(None)

    def save(self, name: str, metrics: dict | None, with_resume: bool) -> None:
        """Save the evaluated weights as RUN/<name> (main process only)."""
        if self.run.dist.is_main:
            with self.averaged() as raw:
                self.save_as_is(name, metrics, with_resume, raw)

    def save_as_is(self, name: str, metrics: dict | None, with_resume: bool, raw: list | None) -> None:
        """Save the model as it is now; `raw` = the training weights when the average is swapped in."""
        run = self.run
        try:
            ckpt.save_checkpoint(run.dir / name, run.model, run.tokenizer, step=run.step,
                                 epoch=run.step / run.steps_per_epoch, train_args=run.cfg.to_dict(), metrics=metrics,
                                 tasks=run.tasks, resume=self.resume_state(raw) if with_resume else None)
        except WriteError as e:
            raise UserError(f"{e.message}. Resume with `{run.cfg.resume_command(run.dir)}` once fixed.") from None

    def resume_state(self, raw: list | None) -> dict:
        """Optimizer moments, RNG states, data position and counters: what resuming needs beyond the weights."""
        run, stepper = self.run, self.run.stepper
        tensors, opt_meta = ckpt.optimizer_state(stepper.optimizer)
        tensors.update(ckpt.rng_state(stepper.combiner.generators()))
        state = {"tensors": tensors, "optimizer": opt_meta, "step": run.step, "best": run.best,
                 "since_best": run.since_best, "nonfinite": run.nonfinite, "data": run.rr.state_dict(),
                 "total_steps": run.total_steps}
        for part, obj in stepper.stateful().items():  # the combiner's and the loss weighting's own state
            part_tensors, state[part] = obj.state_dict()
            tensors.update({f"{part}.{k}": v for k, v in part_tensors.items()})
        if run.cfg.precision == "fp16":
            state["scaler"] = stepper.scaler.state_dict()
        if run.averager is not None:
            tensors.update(run.averager.raw_tensors(raw))
            state["ema_updates"] = run.averager.updates
        return state

    def restore(self, path: Path) -> None:
        """Load a resumable checkpoint's optimizer, RNG, data position, counters and weight average."""
        run, stepper = self.run, self.run.stepper
        tensors, state = ckpt.load_resume_state(path)
        ckpt.load_optimizer_state(stepper.optimizer, {
            k: v.to(run.device) if k.startswith("state.") and not k.endswith(".step") else v
            for k, v in tensors.items()}, state["optimizer"])
        ckpt.load_rng_state(tensors, stepper.combiner.generators())
        for part, obj in stepper.stateful().items():
            obj.load_state_dict({k[len(part) + 1:]: v for k, v in tensors.items() if k.startswith(f"{part}.")},
                                state.get(part, {}))
        run.rr.load_state_dict(state["data"])
        run.step, run.best, run.nonfinite = state["step"], state.get("best"), state.get("nonfinite", 0)
        run.since_best = state.get("since_best", 0)
        if "scaler" in state and run.cfg.precision == "fp16":
            stepper.scaler.load_state_dict(state["scaler"])
        try:
            if run.averager is not None:
                run.averager.resume(tensors, state.get("ema_updates", 0))
            else:  # a run saved with --ema, resumed with --ema 0: go on from its training weights
                restore_training_weights(*trainable(run.model), tensors)
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None


def evaluate_dev(run: Run, checkpointer: Checkpointer) -> dict:
    """Score the dev sets, log the scores, and save RUN/best when the overall score improves.

    Always in fp32, whatever the training precision: dev scores stay comparable between runs and
    are exactly what `bertmtl evaluate` reports for the saved checkpoint.
    """
    dist = run.dist
    with checkpointer.averaged() as raw:
        metrics, kept = {}, {}
        if dist.is_main:
            with run.reporter.evaluating(sum(map(len, run.dev_sets.values()))) as advance:
                metrics = evaluate(run.model, run.dev_sets, run.cfg.eval_batch_size, run.device, progress=advance,
                                   keep=kept)
        metrics = dist.broadcast_object(metrics)
        crash_point("eval:scored")
        # An undefined (None) or non-finite score never becomes best/: a diverged model scores NaN.
        score = metrics.get("overall")
        is_best = isinstance(score, (int, float)) and math.isfinite(score) and (run.best is None or score > run.best)
        if is_best:
            run.best = score
        if run.dev_sets:  # no dev set, nothing to be patient about; an undefined score is no improvement
            run.since_best = 0 if is_best else run.since_best + 1
        rec = {"type": "eval", "split": "dev", "step": run.step, "epoch": run.step / run.steps_per_epoch, **metrics,
               "best": is_best, "best_overall": run.best}
        if dist.is_main:
            run.emit(rec)
            crash_point("eval:logged")
            if kept:  # the outputs behind these scores, for paired comparisons of runs (bertmtl sweep)
                try:
                    write_dev_outputs(run.dir, kept)
                except OSError as e:  # a comparison loses this run's outputs; the training goes on
                    run.reporter.message(f"warning: could not write the dev outputs ({e})")
            if is_best:
                checkpointer.save_as_is(BEST, metrics, False, raw)
                crash_point("eval:saved-best")
    return metrics


def train(cfg: TrainConfig, resume: str | Path | None = None, reporter=None, dist: Dist | None = None,
          judge=None) -> dict:
    """Train (or resume) a run; returns the run summary (also in RUN/summary.json).

    `judge(step, dev_metrics) -> bool`, called after each dev evaluation during training, ends
    the run when it says so (status "pruned", last/ saved): how a sweep's pruner stops a trial."""
    own_dist = dist is None
    dist = dist or Dist.from_env()
    run = None

    def say(text: str) -> None:  # the first signal's notice
        if run is not None:
            run.reporter.message(text)
        else:
            print(text, file=sys.stderr, flush=True)

    try:
        with stop_on_signals(say if dist.is_main else None) as stop:
            try:
                with stop.immediate():  # nothing would be saved by waiting: a signal ends the set-up at once
                    run = prepare(cfg, resume, dist, reporter)
            except KeyboardInterrupt:
                kept = f"the run is as it was: {cfg.resume_command(resume)}" if resume is not None else \
                    "nothing was trained or saved"
                raise Stopped(f"stopped while the run was being set up; {kept}") from None
            try:
                status, last_metrics = _loop(run, stop, judge)
                return _finish(run, status, last_metrics)
            except KeyboardInterrupt:  # a second signal: at once
                _interrupted(run)
    finally:
        for sink in (run.sinks or []) if run is not None else []:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - a destination that fails to close does not keep the lock
                pass
        if run is not None and run.lock is not None:
            run.lock.release()
        if own_dist:
            dist.close()


def _loop(run: Run, stop, judge) -> tuple[Status, dict | None]:
    """The training loop, from the run's step to where it stops; (how it ended, the last dev metrics)."""
    cfg, dist, reporter, model, main = run.cfg, run.dist, run.reporter, run.model, run.dist.is_main
    saver, window = Checkpointer(run), ThroughputWindow(run.tasks)
    status, last_metrics = Status.FINISHED, None
    with reporter:
        reporter.start(run.stop_at, run.step, run.steps_per_epoch)
        _announce(run)
        if run.step == 0 and 0 in run.eval_steps:  # a fresh head as it is, before any step
            last_metrics = evaluate_dev(run, saver)
        model.train()
        while run.step < run.stop_at:
            # forward and backward, one batch per task
            batches = run.rr.next(run.step)
            lr = run.lr_at(run.step)
            losses, smart = run.stepper.backward(batches, run.step, heads_only=run.step < (cfg.head_steps or 0))
            crash_point("step")
            # a non-finite loss skips the update; too many in a row end the run
            if not dist.all_true(all(math.isfinite(v) for v in (*losses.values(), *smart.values()))):
                run.nonfinite += 1
                bad = ", ".join(f"{t}={v}" for t, v in {**losses, **smart}.items() if not math.isfinite(v))
                if main:
                    run.emit({"type": "nonfinite", "step": run.step + 1, "losses": losses,
                               "consecutive": run.nonfinite})
                    reporter.message(f"warning: step {run.step + 1} skipped, non-finite loss ({bad})")
                run.step += 1  # the batch is consumed; the parameters are not updated
                reporter.advance(run.step)
                if run.nonfinite >= cfg.max_nonfinite:
                    status = Status.NONFINITE
                    break
                continue
            # update
            run.nonfinite = 0
            run.stepper.apply(lr)
            if run.averager is not None:
                run.averager.update()
            run.step += 1
            reporter.advance(run.step)
            # log
            window.add(n_examples(batches) * dist.world, losses, smart)
            if run.step % cfg.log_every == 0 or run.step == run.stop_at:
                rec = {"type": "train", "step": run.step, "epoch": run.step / run.steps_per_epoch, "lr": lr,
                       **window.record(), **run.stepper.conflicts.record(), "time": time.time()}
                if main:
                    run.emit(rec)
                    crash_point("logged")
            # evaluate and save; a signal stops the run at the end of the step
            stopping = dist.any_true(stop.requested)
            evaluating = (run.step % run.eval_every == 0 or run.step in run.eval_steps) and run.step < run.stop_at \
                and not stopping
            periodic = bool(cfg.save_every) and run.step % cfg.save_every == 0 and not stopping
            if (stopping or evaluating or periodic or run.step == run.stop_at) and not weights_finite(model):
                status, run.diverged = Status.NONFINITE, True  # a finite loss whose update overflowed: save nothing
                break
            if evaluating:
                last_metrics = evaluate_dev(run, saver)
                saver.save(LAST, last_metrics, with_resume=True)
                model.train()
                if cfg.patience and run.since_best >= cfg.patience:
                    status = Status.EARLY_STOPPED  # last/ was just saved; best/ holds the best
                    break
                # the judge (a sweep's pruner) asks on the main process; every rank follows it
                if judge is not None and dist.any_true(dist.is_main and bool(judge(run.step, last_metrics))):
                    status = Status.PRUNED  # last/ was just saved
                    break
            elif periodic:
                saver.save(LAST, last_metrics, with_resume=True)
            if stopping:
                status = Status.STOPPED
                break
        # the end: a final evaluation, and last/ unless the weights diverged
        if status == Status.FINISHED and run.step < run.total_steps:
            status = Status.PAUSED  # at --stop-at-step: evaluated and saved like the end; --resume goes on
        if status in (Status.FINISHED, Status.PAUSED, Status.STOPPED) and not weights_finite(model):  # e.g. after skipped steps
            status, run.diverged = Status.NONFINITE, True
        if status in (Status.FINISHED, Status.PAUSED):
            last_metrics = evaluate_dev(run, saver)
        if status in (Status.FINISHED, Status.PAUSED, Status.STOPPED):  # early-stopped and pruned have just
            saver.save(LAST, last_metrics, with_resume=True)                # saved it; a diverged run must not
    return status, last_metrics


def _interrupted(run: Run) -> None:
    """A second signal stopped the run mid-step: say so in its log (it is resumable from the last/ it
    had), and give up without saving."""
    if run.ended is not None:  # while finishing, its end record written: that is how it ended
        raise Stopped(f"stopped at once while finishing; the run had ended {run.ended}")
    if run.dist.is_main and run.sinks:
        run.emit({"type": "end", "status": Status.INTERRUPTED, "step": run.step, "best_overall": run.best,
                  "time": time.time()})
    last = run.dir / LAST
    if is_checkpoint(last):
        saved = read_json(last / MARKER).get("step")
        kept = f"{last} holds step {saved}: go on from there with `{run.cfg.resume_command(run.dir)}`"
    else:
        kept = "no checkpoint had been saved yet"
    raise Stopped(f"stopped at once at step {run.step}, without saving; {kept}")


def weights_finite(model) -> bool:
    """Whether every parameter is finite (one device sync: checked where weights are saved, not every step)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def _announce(run: Run) -> None:
    """The run's opening messages: encoder, device and precision; skipped data rows."""
    enc = run.model.encoder.config
    params = sum(p.numel() for p in run.model.encoder.parameters()) / 1e6
    source = f"{run.dir / LAST} (resumed)" if run.resumed else run.cfg.encoder
    run.reporter.message(f"encoder {source}: {enc.model_type}, {enc.num_hidden_layers} layers, hidden "
                         f"{enc.hidden_size}, {params:.0f}M parameters; device {run.device}; training steps in "
                         f"{run.precision}, evaluation in fp32")
    if run.cfg.precision == "auto" and run.precision != "fp32":
        run.reporter.message(f"--precision auto chose {run.precision}: this CPU multiplies it natively "
                             f"(--precision fp32 turns it off)")
    if run.warnings:
        run.reporter.message(f"{len(run.warnings)} unusable row(s) skipped: " +
                             ", ".join(f"{Path(p).name}: {n}" for p, n in run.skipped.items()))


def _finish(run: Run, status: str, last_metrics: dict | None) -> dict:
    """Write the end record and RUN/summary.json; a diverged run is a UserError."""
    summary = {"run": str(run.dir), "status": status, "step": run.step, "total_steps": run.total_steps,
               "best_overall": run.best, "last_metrics": last_metrics, "skipped_rows": sum(run.skipped.values()),
               "skipped": run.skipped, "world_size": run.dist.world,
               "tasks": [s.to_dict() for s in run.model.specs.values()]}
    if run.dist.is_main:
        run.emit({"type": "end", "status": status, "step": run.step, "best_overall": run.best})
        run.ended = status
        crash_point("end")
        write_json(run.dir / SUMMARY, summary)
        if status == Status.EARLY_STOPPED:
            best = f"best/ holds the best ({run.best:.4f})" if run.best is not None else "no evaluation had an overall score"
            run.reporter.message(f"early stop at step {run.step}: no better overall dev score in {run.since_best} "
                                 f"evaluations (--patience); {best}")
        if status == Status.PRUNED:
            run.reporter.message(f"pruned at step {run.step}: the sweep's pruner found its dev score behind the "
                                 f"other trials'")
        if status == Status.STOPPED:  # a sweep's trial: the sweep says how to go on
            run.reporter.message(f"stopped at step {run.step}; checkpoint saved" + (
                "" if run.cfg.sweep else f". Resume with: {run.cfg.resume_command(run.dir)}"))
        if status == Status.PAUSED:
            run.reporter.message(f"paused at step {run.step} of {run.total_steps} (--stop-at-step); checkpoint saved. "
                                 f"Go on with: {run.cfg.resume_command(run.dir)} [--stop-at-step N]")
        if status == Status.NONFINITE:
            last = run.dir / LAST
            kept = f"the last good weights are in {last}" if is_checkpoint(last) else \
                "no checkpoint was saved before"
            why = "the weights became non-finite (NaN or inf)" if run.diverged else \
                f"{run.nonfinite} consecutive non-finite losses"
            raise UserError(f"stopped at step {run.step}: {why}; {kept} (try a lower --lr, or --precision fp32)")
    return summary
