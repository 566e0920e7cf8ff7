"""The one training loop: `bertmtl train`, the TUI and torchrun all end up in `train()`.

`prepare()` builds everything a run needs (a `Run`), `Checkpointer` saves and restores it,
`evaluate_dev()` scores it, and `train()` is the loop. A step (mtl/step.py) takes one batch per
task (round-robin), backpropagates each task into its own gradient buffer, and combines them
(sum, or PCGrad surgery) into one update.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import checkpoint as ckpt
from .data import RoundRobin, TaskDataset, n_examples, read_task_file, stable_seed, task_files, task_path
from .device import compile_encoder, pick_device, precision_name
from .distributed import Dist
from .ema import WeightAverage, restore_training_weights, trainable
from .errors import UserError
from .fsutil import WriteError, check_writable, crash_point
from .evaluate import evaluate
from .metrics_log import MetricsLog
from .model.bert import BertModel, Dropout
from .model.heads import MultitaskBert
from .mtl.step import GradBuffers, MultitaskStep
from .optim import scheduled_lr
from .progress import SilentReporter, ThroughputWindow, default_reporter
from .reports import open_reports, require_tensorboard
from .outputs import WRITER_LOCK, check_output
from .runs import WriterLock, new_run_dir, runs_root
from .tasks import BUILTIN, TASKS, TaskSpec
from .tokenizer import WordPieceTokenizer
from .train_config import TrainConfig
from .weights import resolve

__all__ = ["GradBuffers", "MultitaskStep", "TrainConfig", "load_datasets", "Run", "prepare", "Checkpointer",
           "evaluate_dev", "train"]


def checkpoint_peak_bytes(model, cfg: TrainConfig) -> int:
    """Disk a run needs at its peak: while last/ is replaced, the old last/ and its staged successor
    (each: the weights, two optimizer moments, and the training weights under --ema) beside best/."""
    weights = sum(p.numel() * 4 for p in model.parameters())  # saved in fp32
    last = weights * (3 + (1 if cfg.ema else 0))
    return 2 * last + weights + 16 * 2**20  # and the small files: vocabulary, JSON, the metrics log


class _StopFlag:
    """SIGINT / SIGTERM set a flag; the loop saves a checkpoint and stops at the step's end.

    `said(text)` tells the user at once that the stop is coming (a step can take seconds).
    """

    def __init__(self, said=None):
        self.signal: int | None = None
        self._old = {}
        self._said = said

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal = signum
        if self._said is not None:
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            text = (f"{name}: stopping after this step and saving a checkpoint "
                    f"(Ctrl-C again stops at once, without saving)")
            try:
                self._said(text)
            except RuntimeError:  # the signal came while that stream was mid-write: write around it
                os.write(2, (text + "\n").encode())

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


# Where the CS224N files come from, for messages about a missing data directory.
DATA_SOURCE = ("the Stanford CS224N default final project (\"minbert\") ships them in the data/ folder of its "
               "starter code, the repository gpoesia/minbert-default-final-project linked from the course's "
               "project handout; copy that folder here as ./data or pass --data-dir DIR")


def check_data_files(cfg: TrainConfig) -> None:
    """Fail before anything slow (fetching weights, tokenising) when the training or dev files are missing."""
    missing = [p for p in task_files(cfg.data_dir, {t: TASKS[t] for t in cfg.tasks}, overrides=cfg.files).values()
               if not p.is_file()]
    if not missing:
        return
    if not Path(cfg.data_dir).is_dir() and all(p.parent == Path(cfg.data_dir) for p in missing):
        names = ", ".join(TASKS[t].filename(split) for t in cfg.tasks for split in ("train", "dev"))
        raise UserError(f"data directory {cfg.data_dir!r} not found (resolved: {Path(cfg.data_dir).resolve()}). "
                        f"Training reads {names}: {DATA_SOURCE}")
    also = f" (also missing: {', '.join(p.name for p in missing[1:])})" if len(missing) > 1 else ""
    raise UserError(f"{missing[0]}: no such file{also}. Where the files come from: {DATA_SOURCE}; single files "
                    f"can be given with --sst-train PATH and friends")


def task_specs(cfg: TrainConfig, resume_ckpt: Path | None) -> tuple[list[TaskSpec], list[str]]:
    """The model's tasks (one head each) and the names of those trained.

    Without declared tasks the model has the three built-in heads whichever are trained (as
    always); with them, the chosen built-in tasks and the declared ones. A resumed run takes
    its specs from its checkpoint, so it does not depend on the files' current labels.
    """
    if resume_ckpt is not None:
        specs = ckpt.read_specs(resume_ckpt)
    elif cfg.declares_tasks:
        from .user_tasks import declared_specs

        specs = [TASKS[n] for n in cfg.tasks] + declared_specs(cfg.task, cfg.tasks_file, taken=cfg.tasks)
    else:
        specs = list(BUILTIN)
    trained = [s.name for s in specs if s.name in cfg.tasks or s.name not in TASKS]
    known = {s.name for s in specs} | set(TASKS)
    for option, weights in (("--smart-weights", cfg.smart_weights), ("--loss-weights", cfg.loss_weights)):
        if bad := sorted(set(weights) - known):
            raise UserError(f"{option}: unknown task(s) {', '.join(bad)}; this run's tasks are "
                            f"{', '.join(s.name for s in specs)}")
    return specs, trained


def load_datasets(cfg: TrainConfig, tokenizer: WordPieceTokenizer, warn, specs=BUILTIN,
                  trained: list[str] | None = None) -> tuple[dict, dict, dict]:
    """Train datasets of the trained tasks, dev datasets of every task with a dev file, skip counts."""
    trained = cfg.builtin_tasks() if trained is None else trained
    train, dev, skipped = {}, {}, {}
    for task in specs:
        name = task.name
        for split, target in (("train", train), ("dev", dev)):
            if split == "train" and name not in trained:
                continue
            path = task_path(cfg.data_dir, task, split, cfg.files)
            if path is None:
                continue  # a declared task without a dev file
            if split == "dev" and name not in trained and not path.is_file():
                continue  # untrained heads are evaluated only when their dev file is there
            f = read_task_file(path, task, labelled=True, strict=cfg.strict, warn=warn)
            if f.skipped:
                skipped[str(path)] = len(f.skipped)
            examples = f.examples
            if split == "dev" and cfg.dev_limit:
                examples = dev_subset(examples, cfg.dev_limit, name)
            if split == "train" and cfg.augment:
                extra = Path(cfg.augment) / task.filename("train")
                if extra.is_file():  # augmented copies, in the same format, added to the originals
                    a = read_task_file(extra, task, labelled=True, strict=cfg.strict, warn=warn)
                    if a.skipped:
                        skipped[str(extra)] = len(a.skipped)
                    examples = examples + a.examples
            target[name] = TaskDataset(task, examples, tokenizer, cfg.pair_mode)
    return train, dev, skipped


def dev_subset(examples: list, n: int, task: str) -> list:
    """A fixed subset of n examples (in file order), the same for every run of the task: seeded by
    the task's name only, so runs with other seeds or options score the same examples, and the
    subset for a smaller n lies inside the one for a larger."""
    if n >= len(examples):
        return examples
    order = list(range(len(examples)))
    random.Random(stable_seed("dev-limit", task)).shuffle(order)
    return [examples[i] for i in sorted(order[:n])]


@dataclass
class Run:
    """Everything a training run holds between steps; `prepare()` builds it, the loop advances it."""

    cfg: TrainConfig
    dir: Path
    dist: Dist
    device: torch.device
    reporter: object
    tokenizer: WordPieceTokenizer
    train_sets: dict
    dev_sets: dict
    skipped: dict  # file -> unusable rows skipped
    model: MultitaskBert
    stepper: MultitaskStep
    rr: RoundRobin
    averager: WeightAverage | None
    log: MetricsLog | None  # on the main process only
    steps_per_epoch: int
    total_steps: int  # the schedule's length
    stop_at: int  # where this run stops (--stop-at-step)
    eval_every: int
    precision: str  # of the training steps
    resumed: bool
    step: int = 0
    best: float | None = None
    since_best: int = 0  # evaluations since the best one (--patience)
    nonfinite: int = 0  # consecutive steps with a non-finite loss
    diverged: bool = False  # the weights themselves became non-finite
    lock: WriterLock | None = None  # held while the main process trains (`bertmtl runs`: running)
    warnings: list = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return self.stepper.tasks


def _inputs(cfg: TrainConfig) -> dict[str, Path | str | None]:
    """What a run reads, for the overlap check of its directory (outputs.check_output)."""
    inputs: dict[str, Path | str | None] = task_files(cfg.data_dir, {t: TASKS[t] for t in cfg.tasks},
                                                      overrides=cfg.files)
    inputs.update({"--augment": cfg.augment, "--encoder": cfg.encoder, "--init-heads-from": cfg.init_heads_from,
                   "--tasks-file": cfg.tasks_file})
    if cfg.declares_tasks:
        from .user_tasks import declared_entries

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
            return Path(resume), Path(resume) / "last", None, False
        return (Path(cfg.out) if cfg.out is not None else dist.broadcast_object(None)), None, None, False
    if resume is not None:
        run = Path(resume)
        check_output(run, _inputs(cfg), "--resume")
        if not run.is_dir():
            raise UserError(f"{run}: no such run directory")
        lock = WriterLock(run)
        try:
            ckpt.recover_dir(run / "last")
            if not (run / "last" / "trainer_state.json").is_file():
                raise UserError(f"{run}: nothing to resume (no {run / 'last'} checkpoint with resume state)")
            cfg.check_resume(ckpt.read_json(run / "last" / "train_args.json"))
        except BaseException:
            lock.release()
            raise
        return run, run / "last", lock, False
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
    if (run / "metrics.jsonl").exists() or (run / "last").exists():
        lock.release()
        raise UserError(f"{run} already holds a run; continue it with `bertmtl train --resume {run}` "
                        f"or choose another --out")
    if any(p.name != WRITER_LOCK for p in run.iterdir()):  # a new run goes into a new or empty directory
        lock.release()
        raise UserError(f"--out {run}: already holds files (not a run); give a new or empty directory")
    return run, None, lock, created


def _discard_if_unused(run_dir: Path) -> None:
    """Remove a run directory that a failed start left empty (nothing was logged or saved in it)."""
    try:
        if not any(p.name != WRITER_LOCK for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
    except OSError:
        pass


def prepare(cfg: TrainConfig, resume: str | Path | None, dist: Dist, reporter=None) -> Run:
    """Validate the options and build the run: directory, data, model, optimizer step, resume state, log."""
    cfg.validate()
    if "tensorboard" in cfg.report_to and dist.is_main:
        require_tensorboard()  # before any work, not after loading the data
    device = pick_device(cfg.device) if not dist.enabled else dist.device(cfg.device)
    if reporter is None:
        reporter = default_reporter() if dist.is_main else SilentReporter()
    if cfg.augment and not Path(cfg.augment).is_dir():
        raise UserError(f"--augment {cfg.augment}: no such directory (make one with `bertmtl augment`)")
    check_data_files(cfg)
    run_dir, resume_ckpt, lock, created = _run_dir(cfg, resume, dist)
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
    specs, trained = task_specs(cfg, resume_ckpt)  # declared tasks' files are read here: before any download
    torch.manual_seed(cfg.seed)
    pretrained = resolve(cfg.encoder) if resume_ckpt is None else resume_ckpt
    tokenizer = WordPieceTokenizer.from_dir(pretrained, max_length=cfg.max_length)
    warnings = []

    def warn(row):
        warnings.append(row)
        reporter.message(f"warning: {row}")

    with contextlib.suppress(AttributeError):  # evaluation lines name this run's metrics
        reporter.specs = specs
    train_sets, dev_sets, skipped = load_datasets(cfg, tokenizer, warn, specs, trained)
    if resume_ckpt is None:
        model = MultitaskBert(BertModel.from_pretrained(pretrained), cfg.head_config(), tuple(specs))
        if cfg.init_heads_from:
            from .model.loading import load_heads

            taken = load_heads(model, resolve(cfg.init_heads_from))
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
    total_steps = cfg.max_steps or max(1, int(round(cfg.epochs * steps_per_epoch)))
    stepper = MultitaskStep(model, cfg, list(train_sets), device, dist)
    if cfg.compile:
        compile_encoder(model, reporter.message)
    run = Run(cfg=cfg, dir=run_dir, dist=dist, device=device, reporter=reporter, tokenizer=tokenizer,
              train_sets=train_sets, dev_sets=dev_sets, skipped=skipped, model=model, stepper=stepper, rr=rr,
              averager=WeightAverage(model, cfg.ema) if cfg.ema else None, log=None,
              steps_per_epoch=steps_per_epoch, total_steps=total_steps,
              stop_at=min(total_steps, cfg.stop_at_step) if cfg.stop_at_step else total_steps,
              eval_every=cfg.eval_every or steps_per_epoch, precision=precision_name(stepper.autocast_dtype),
              resumed=resume_ckpt is not None, warnings=warnings)
    if resume_ckpt is not None:
        Checkpointer(run).restore(resume_ckpt)

    return run


def _open_log(run: Run) -> None:
    cfg = run.cfg
    run.log = MetricsLog(run.dir / "metrics.jsonl", open_reports(cfg.report_to, run.dir, run.step if run.resumed else None))
    ckpt.write_json(run.dir / "train_args.json", cfg.to_dict())
    run.log.write({"type": "resume" if run.resumed else "start", "step": run.step, "time": time.time(),
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
            raise UserError(f"{e.message}. Resume with `bertmtl train --resume {run.dir}` once fixed.") from None

    def resume_state(self, raw: list | None) -> dict:
        """Optimizer moments, RNG states, data position and counters: what resuming needs beyond the weights."""
        run, stepper = self.run, self.run.stepper
        tensors, opt_meta = ckpt.optimizer_state(stepper.optimizer)
        tensors.update(ckpt.rng_state({"pcgrad": stepper.pc_gen}))
        state = {"tensors": tensors, "optimizer": opt_meta, "step": run.step, "best": run.best,
                 "since_best": run.since_best, "nonfinite": run.nonfinite, "data": run.rr.state_dict(),
                 "total_steps": run.total_steps}
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
        ckpt.load_rng_state(tensors, {"pcgrad": stepper.pc_gen})
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
        metrics = {}
        if dist.is_main:
            with run.reporter.evaluating(sum(map(len, run.dev_sets.values()))) as advance:
                metrics = evaluate(run.model, run.dev_sets, run.cfg.eval_batch_size, run.device, progress=advance)
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
            run.log.write(rec)
            crash_point("eval:logged")
            run.reporter.evaluation(rec)
            if is_best:
                checkpointer.save_as_is("best", metrics, False, raw)
                crash_point("eval:saved-best")
    return metrics


def train(cfg: TrainConfig, resume: str | Path | None = None, reporter=None, dist: Dist | None = None) -> dict:
    """Train (or resume) a run; returns the run summary (also in RUN/summary.json)."""
    own_dist = dist is None
    dist = dist or Dist.from_env()
    run = None
    try:
        run = prepare(cfg, resume, dist, reporter)
        reporter, log, model, main = run.reporter, run.log, run.model, dist.is_main
        saver, window = Checkpointer(run), ThroughputWindow(run.tasks)
        status, last_metrics = "finished", None
        with reporter, _StopFlag(reporter.message if main else None) as stop:
            reporter.start(run.stop_at, run.step, run.steps_per_epoch)
            _announce(run)
            model.train()
            while run.step < run.stop_at:
                # forward and backward, one batch per task
                batches = run.rr.next(run.step)
                lr = scheduled_lr(run.step, run.total_steps, cfg.lr, cfg.warmup, cfg.schedule)
                losses, smart = run.stepper.backward(batches, run.step)
                crash_point("step")
                # a non-finite loss skips the update; too many in a row end the run
                if not dist.all_true(all(math.isfinite(v) for v in (*losses.values(), *smart.values()))):
                    run.nonfinite += 1
                    bad = ", ".join(f"{t}={v}" for t, v in {**losses, **smart}.items() if not math.isfinite(v))
                    if main:
                        log.write({"type": "nonfinite", "step": run.step + 1, "losses": losses,
                                   "consecutive": run.nonfinite})
                        reporter.message(f"warning: step {run.step + 1} skipped, non-finite loss ({bad})")
                    run.step += 1  # the batch is consumed; the parameters are not updated
                    reporter.advance(run.step)
                    if run.nonfinite >= cfg.max_nonfinite:
                        status = "nonfinite"
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
                           **window.record(), "time": time.time()}
                    if main:
                        log.write(rec)
                        crash_point("logged")
                        reporter.step(rec)
                # evaluate and save; a signal stops the run at the end of the step
                stopping = dist.any_true(stop.signal is not None)
                evaluating = run.step % run.eval_every == 0 and run.step < run.stop_at and not stopping
                periodic = bool(cfg.save_every) and run.step % cfg.save_every == 0 and not stopping
                if (stopping or evaluating or periodic or run.step == run.stop_at) and not weights_finite(model):
                    status, run.diverged = "nonfinite", True  # a finite loss whose update overflowed: save nothing
                    break
                if evaluating:
                    last_metrics = evaluate_dev(run, saver)
                    saver.save("last", last_metrics, with_resume=True)
                    model.train()
                    if cfg.patience and run.since_best >= cfg.patience:
                        status = "early-stopped"  # last/ was just saved; best/ holds the best
                        break
                elif periodic:
                    saver.save("last", last_metrics, with_resume=True)
                if stopping:
                    status = "stopped"
                    break
            # the end: a final evaluation, and last/ unless the weights diverged
            if status in ("finished", "stopped") and not weights_finite(model):  # e.g. after skipped steps
                status, run.diverged = "nonfinite", True
            if status == "finished":
                last_metrics = evaluate_dev(run, saver)
            if status not in ("nonfinite", "early-stopped"):  # early stopping has just saved last/
                saver.save("last", last_metrics, with_resume=True)
        return _finish(run, status, last_metrics)
    finally:
        if run is not None and run.log is not None:
            run.log.close()
        if run is not None and run.lock is not None:
            run.lock.release()
        if own_dist:
            dist.close()


def weights_finite(model) -> bool:
    """Whether every parameter is finite (one device sync: checked where weights are saved, not every step)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def _announce(run: Run) -> None:
    """The run's opening messages: encoder, device and precision; skipped data rows."""
    enc = run.model.encoder.config
    params = sum(p.numel() for p in run.model.encoder.parameters()) / 1e6
    source = f"{run.dir / 'last'} (resumed)" if run.resumed else run.cfg.encoder
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
        run.log.write({"type": "end", "status": status, "step": run.step, "best_overall": run.best})
        crash_point("end")
        ckpt.write_json(run.dir / "summary.json", summary)
        if status == "early-stopped":
            best = f"best/ holds the best ({run.best:.4f})" if run.best is not None else "no evaluation had an overall score"
            run.reporter.message(f"early stop at step {run.step}: no better overall dev score in {run.since_best} "
                                 f"evaluations (--patience); {best}")
        if status == "stopped":
            run.reporter.message(f"stopped at step {run.step}; checkpoint saved. Resume with: "
                                 f"bertmtl train --resume {run.dir}")
        if status == "nonfinite":
            last = run.dir / "last"
            kept = f"the last good weights are in {last}" if (last / "bertmtl.json").is_file() else \
                "no checkpoint was saved before"
            why = "the weights became non-finite (NaN or inf)" if run.diverged else \
                f"{run.nonfinite} consecutive non-finite losses"
            raise UserError(f"stopped at step {run.step}: {why}; {kept} (try a lower --lr, or --precision fp32)")
    return summary
