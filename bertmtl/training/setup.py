"""Setting up a training run: options and data checked, the run directory made and locked, the
datasets read, the model built (or restored from last/), the schedule fixed; `prepare()` returns
the `Run` the loop advances.

The caller's TrainConfig is never changed: what set-up resolves (the Hub commit of --encoder, the
head-only steps of a fresh masked-LM head, a paused run's --stop-at-step left behind) goes into the
run's own copy, `Run.cfg`, which its train_args.json and checkpoints record.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..configuration.train_config import TrainConfig, builtin_files, check_data_files
from ..data import batching
from ..data.batching import RoundRobin
from ..encoders.tokenizer import EncoderTokenizer
from ..encoders.weights import resolve, resolve_with_revision
from ..errors import UserError
from ..fsutil import check_writable, recover_dir, write_json
from ..model.bert import BertModel, Dropout
from ..model.device import compile_encoder, pick_device, precision_name
from ..threads import use_threads
from ..model.heads import HeadConfig, MultitaskBert, heads_of
from ..mtl.step import MultitaskStep
from ..runs import checkpoint as ckpt
from ..runs.catalog import new_run_dir, runs_root
from ..runs.ownership import check_output
from ..runs.progress import LoggingReporter, RunReporter, SilentReporter
from ..runs.rundir import (BEST, LAST, MESSAGES, METRICS_LOG, PROGRESS, SUMMARY, TRAIN_ARGS, TRAINER_STATE,
                           TRAIN_LOG, WRITER_LOCK, WriterLock, is_checkpoint, read_json, read_specs)
from ..runs.status import Status
from ..sinks import ConsoleSink, report_sinks, require_sinks
from .callbacks import Callbacks
from ..sinks.metrics_log import MetricsLog
from ..tasks import BUILTIN, POOLED, TASKS, TOKENS, TaskSpec
from ..tasks.files import TaskSource
from .checkpointer import Checkpointer
from .distributed import Dist
from .ema import WeightAverage
from .run import Run


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
    from ..tasks.declared import column_flags, declared_specs

    if resume_ckpt is not None:  # the declared tasks as the checkpoint has them: their files' absolute paths,
        specs = read_specs(resume_ckpt)  # so a run resumes from any directory, whatever the flags said
        declared = [s for s in specs if s.name not in TASKS and s.train_file]
    else:
        declared = declared_specs(cfg.task, cfg.tasks_file, taken=cfg.tasks, columns=column_flags(cfg)) \
            if cfg.task or cfg.tasks_file else []
        specs = cfg.new_run_specs(declared)
    if cfg.mlm_text:  # the sources named, before any download
        from ..data.mlm_text import check_amounts, source_specs

        check_amounts(source_specs(cfg.mlm_text, declared), cfg.mlm_caps, cfg.mlm_upsample)
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
    """Train datasets of the trained tasks, dev datasets of every task with a dev file, skip counts:
    each head family's tasks read by its own source (DATA)."""
    trained = cfg.builtin_tasks() if trained is None else trained
    source = task_source(cfg)
    train, dev, skipped = {}, {}, {}
    for family, data in DATA.items():  # in this order: it is the order of the tasks' batches
        members = [s for s in specs if s.output.head_family == family]
        if members:
            t, d, s = data(cfg, members, trained, source, tokenizer, warn, note, declared)
            train.update(t)
            dev.update(d)
            skipped.update(s)
    return train, dev, skipped


def task_file_datasets(cfg: TrainConfig, specs: list[TaskSpec], trained: list[str], source: TaskSource,
                       tokenizer: EncoderTokenizer, warn, note, declared) -> tuple[dict, dict, dict]:
    """Tasks answered from pooled embeddings: rows of their task files, train for the trained tasks
    (their labels checked), dev for every task (optional for those not trained)."""
    train, read_train = batching.load_datasets([s for s in specs if s.name in trained], "train", source, tokenizer,
                                               cfg.pair_mode, warn=warn)
    check_constant_labels(cfg, train, source, warn)
    # Heads that do not train are evaluated only when their dev file is there.
    dev, read_dev = batching.load_datasets(specs, "dev", source, tokenizer, cfg.pair_mode, warn=warn,
                                           optional=lambda s: s.name not in trained)
    return train, dev, {**read_train.skipped, **read_dev.skipped}


def masked_text_datasets(cfg: TrainConfig, specs: list[TaskSpec], trained: list[str], source: TaskSource,
                         tokenizer: EncoderTokenizer, warn, note, declared) -> tuple[dict, dict, dict]:
    """A masked-LM task: its sources' text, and a held-out part of it."""
    train, dev, skipped = {}, {}, {}
    for spec in specs:
        train[spec.name], dev[spec.name], s = mlm_datasets(cfg, spec, source, tokenizer, declared, warn, note)
        skipped.update(s)
    return train, dev, skipped


# Where each head family's tasks (model/heads.py) get their examples.
DATA = {POOLED: task_file_datasets, TOKENS: masked_text_datasets}


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


def prepare(cfg: TrainConfig, resume: str | Path | None, dist: Dist, reporter=None, callbacks=()) -> Run:
    """Validate the options and build the run: directory, data, model, optimizer step, resume state, log."""
    cfg = replace(cfg)  # validate() normalises (task names, sources): the run's copy, not the caller's
    cfg.validate()
    if dist.is_main:
        # before any work, not after loading the data; and before the run's directory exists, so an
        # unusable destination leaves no empty run behind (local stores sit beside that directory)
        require_sinks(cfg.report_to, Path(resume or cfg.out or runs_root(cfg.runs_dir) / "RUN"))
    device = pick_device(cfg.device) if not dist.enabled else dist.device(cfg.device)
    use_threads(cfg.threads)
    if reporter is None:  # a Python caller's run reports through the `bertmtl` logger
        reporter = LoggingReporter() if dist.is_main else SilentReporter()
    if dist.is_main:  # and the run's own record of what it says and how far it is
        reporter = RunReporter(reporter)
    if cfg.augment and not Path(cfg.augment).is_dir():
        raise UserError(f"--augment {cfg.augment}: no such directory (make one with `bertmtl augment`)")
    check_data_files(cfg)
    run_dir, resume_ckpt, lock, created = _run_dir(cfg, resume, dist)
    if dist.is_main:
        reporter.attach(run_dir)
    run = None
    try:
        run = _build(cfg, run_dir, resume_ckpt, dist, device, reporter)
        run.lock = lock
        run.callbacks = Callbacks(callbacks)  # before the start record, which they hear
        if dist.is_main:  # the metrics log opens with the whole configuration
            _open_log(run)
        return run
    except BaseException:
        if run is not None:  # sinks opened before the start record failed
            run.callbacks.close()
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
        cfg = replace(cfg, encoder_revision=revision or cfg.encoder_revision)
    else:
        pretrained = resume_ckpt
    tokenizer = EncoderTokenizer.from_dir(pretrained, max_length=cfg.max_length)
    warnings = []

    def warn(row):
        warnings.append(row)
        reporter.message(f"warning: {row}")

    with contextlib.suppress(AttributeError):  # evaluation lines name this run's metrics
        reporter.specs = specs
    if resume_ckpt is None:  # what was guessed from the headers, said before anything slow
        for spec in declared:
            reporter.message(f"task {spec.reading()}")
    train_sets, dev_sets, skipped = load_datasets(cfg, tokenizer, warn, specs, trained, note=reporter.message,
                                                  declared=declared)
    fresh_heads = []  # heads the encoder does not bring (masked LM): initialised, then trained alone first
    if resume_ckpt is None:
        # --init-seed draws the heads' initial values from a generator of their own, so runs that
        # share it start from the same point whatever their --seed (what a soup needs); the
        # global generator is left as it was, and --init-seed equal to --seed changes nothing.
        separate = cfg.init_seed is not None and cfg.init_seed != cfg.seed
        with torch.random.fork_rng(devices=[], enabled=separate):
            if separate:
                torch.manual_seed(cfg.init_seed)
            model = MultitaskBert(BertModel.from_pretrained(pretrained), HeadConfig.of(cfg), tuple(specs))
        for spec in specs:
            if not (family := heads_of(spec)).take_pretrained(model, spec, pretrained):
                fresh_heads.append(spec.name)
                reporter.message(f"{pretrained} {family.fresh}")
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
    if cfg.head_steps is None and resume_ckpt is not None:  # a Python caller's fresh options: the saved schedule
        cfg = replace(cfg, head_steps=read_json(resume_ckpt / TRAIN_ARGS).get("head_steps"))
    if cfg.head_steps is None:  # resolved once, and saved: a resumed run keeps the schedule it started with
        cfg = replace(cfg, head_steps=max(1, main_steps // 5) if fresh_heads else 0)
    total_steps = cfg.head_steps + main_steps
    stepper = MultitaskStep(model, cfg, list(train_sets), device, dist, steps_per_epoch=steps_per_epoch)
    if cfg.compile:
        compile_encoder(model, reporter.message)
    run = Run(cfg=cfg, dir=run_dir, dist=dist, device=device, reporter=reporter, tokenizer=tokenizer,
              train_sets=train_sets, dev_sets=dev_sets, skipped=skipped, model=model, stepper=stepper, rr=rr,
              averager=WeightAverage(model, cfg.ema) if cfg.ema else None,
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
        if run.state.step >= total_steps and status.final and summary.get("step") == run.state.step:
            model_dir = run_dir / BEST if is_checkpoint(run_dir / BEST) else run_dir / LAST
            raise UserError(f"{run_dir}: nothing to resume, it is {status} at step {run.state.step} of {total_steps}. "
                            f"Its model is {model_dir}; to train more, start a new "
                            f"run from it, e.g. `bertmtl {cfg.command} --encoder {run_dir} --out NEW_DIR`")
        if run.stop_at <= run.state.step:  # a paused run's --stop-at-step is behind it: --resume goes on to the end
            run.stop_at, run.cfg = total_steps, replace(cfg, stop_at_step=None)

    return run


def _open_log(run: Run) -> None:
    cfg = run.cfg
    run.callbacks.open_log([MetricsLog(run.dir / METRICS_LOG), ConsoleSink(run.reporter),
                            *report_sinks(cfg.report_to, run.dir, run.state.step if run.resumed else None)])
    write_json(run.dir / TRAIN_ARGS, cfg.to_dict())
    run.emit({"type": "resume" if run.resumed else "start", "step": run.state.step, "time": time.time(),
                   "config": cfg.to_dict(), "total_steps": run.total_steps, "steps_per_epoch": run.steps_per_epoch,
                   "examples": {t: len(d) for t, d in run.train_sets.items()},
                   "dev_examples": {t: len(d) for t, d in run.dev_sets.items()}, "skipped": run.skipped,
                   "world_size": run.dist.world, "device": str(run.device), "precision": run.precision,
                   "tasks": [s.to_dict() for s in run.model.specs.values()]})
