"""The one training loop: `bertmtl train`, `bertmtl pretrain`, the TUI and torchrun all run `train()`.

Set-up (training/setup.py) builds a `Run`; the loop advances it one step at a time. A step
(mtl/step.py) takes one batch per task (round-robin), backpropagates each task into its own
gradient buffer, and combines them (sum, or PCGrad surgery) into one update; `Checkpointer`
(training/checkpointer.py) saves last/ and `evaluate_dev` (training/evaluation.py) scores the dev
sets and saves best/. Masked LM is one more task kind (tasks/kinds.py), so pretraining is a run
like the others: a fresh MLM head first trains alone (`head_steps`, the encoder frozen), then
everything trains on the schedule.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..configuration.train_config import TrainConfig
from ..data.batching import n_examples
from ..errors import UserError
from ..fsutil import crash_point, write_json
from ..runs.progress import PlainReporter, ThroughputWindow
from ..runs.rundir import BEST, LAST, MARKER, SUMMARY, is_checkpoint, read_json
from ..runs.status import Status
from .callbacks import Callback, Patience, Pruner
from .checkpointer import Checkpointer
from .distributed import Dist
from .evaluation import evaluate_dev
from .run import Run
from .setup import prepare
from .stopping import Stopped, stop_on_signals

__all__ = ["TrainConfig", "TrainResult", "train"]


@dataclass(frozen=True, eq=False)
class TrainResult(Mapping):
    """How a run ended: what `train()` returns (RUN/summary.json holds the same, as `to_dict()`).

    It is also the read-only mapping of summary.json's keys (`result["status"]`, `"run" in result`,
    `dict(result)`), as `train()` returned that dict before."""

    run: Path  # the run directory
    status: Status  # finished, paused, stopped, early-stopped or pruned (a diverged run raises)
    step: int  # the step it ended at
    total_steps: int  # the schedule's length
    best_overall: float | None  # the best overall dev score, which best/ holds
    best_checkpoint: Path | None  # RUN/best, when there is one
    last_metrics: dict | None  # the last dev evaluation's scores
    seconds: float  # wall time of this call, set-up included
    summary: dict = field(default_factory=dict, repr=False)

    def __getitem__(self, key: str):
        return self.summary[key]

    def __iter__(self):
        return iter(self.summary)

    def __len__(self) -> int:
        return len(self.summary)

    def to_dict(self) -> dict:
        return dict(self.summary)


def train(cfg: TrainConfig, resume: str | Path | None = None, reporter: PlainReporter | None = None,
          dist: Dist | None = None, judge: Callable[[int, dict], bool] | None = None,
          callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a run, or resume one; returns how it ended (a TrainResult; RUN/summary.json holds the same).

    Args:
        cfg: the run's options (`bertmtl train`'s, one field each).
        resume: a run directory to go on with from its last/ (as `bertmtl train --resume RUN`).
        reporter: where progress goes [default: the `bertmtl` logger; the command line draws a bar].
        dist: torchrun's process group [default: from the environment].
        judge: `judge(step, dev_metrics) -> bool` ends the run when it says so after a dev evaluation
            (status "pruned", last/ saved): a sweep's pruner (the same as a Pruner callback).
        callbacks: Callback objects that hear every record, evaluation and checkpoint, and may end
            the run (bertmtl.training.callbacks).

    A signal (Ctrl-C, SIGTERM) stops the run at the end of its step, saving last/ (status
    `stopped`); a second one, or one during set-up, raises KeyboardInterrupt
    (bertmtl.training.stopping.Stopped) saying what was kept.
    """
    own_dist = dist is None
    dist = dist or Dist.from_env()
    run, started = None, time.time()

    def say(text: str) -> None:  # the first signal's notice
        if run is not None:
            run.reporter.message(text)
        else:
            print(text, file=sys.stderr, flush=True)

    try:
        with stop_on_signals(say if dist.is_main else None) as stop:
            try:
                with stop.immediate():  # nothing would be saved by waiting: a signal ends the set-up at once
                    run = prepare(cfg, resume, dist, reporter, callbacks=[
                        *([Patience(cfg.patience)] if cfg.patience else []), *([Pruner(judge)] if judge else []),
                        *callbacks])
            except KeyboardInterrupt:
                kept = f"the run is as it was: {cfg.resume_command(resume)}" if resume is not None else \
                    "nothing was trained or saved"
                raise Stopped(f"stopped while the run was being set up; {kept}") from None
            try:
                status, last_metrics = _loop(run, stop)
                return _finish(run, status, last_metrics, started)
            except KeyboardInterrupt:  # a second signal: at once
                _interrupted(run)
            except Exception as e:
                if not isinstance(e, UserError):  # which says itself; this one the run's log keeps too
                    run.reporter.message(f"stopped at step {run.state.step} by an error: {type(e).__name__}: {e}")
                raise
    finally:
        if run is not None:
            run.callbacks.close()
        if run is not None and run.lock is not None:
            run.lock.release()
        if own_dist:
            dist.close()


def _loop(run: Run, stop) -> tuple[Status, dict | None]:
    """The training loop, from the run's step to where it stops; (how it ended, the last dev metrics)."""
    cfg, dist, reporter, model, main = run.cfg, run.dist, run.reporter, run.model, run.dist.is_main
    saver, window = Checkpointer(run), ThroughputWindow(run.tasks)
    status, last_metrics, saved_at = Status.FINISHED, None, None  # saved_at: the step last/ holds
    with reporter:
        reporter.start(run.stop_at, run.state.step, run.steps_per_epoch)
        _announce(run)
        if run.state.step == 0 and 0 in run.eval_steps:  # a fresh head as it is, before any step
            last_metrics = evaluate_dev(run, saver)
        model.train()
        while run.state.step < run.stop_at:
            # forward and backward, one batch per task
            batches = run.rr.next(run.state.step)
            lr = run.lr_at(run.state.step)
            losses, smart = run.stepper.backward(batches, run.state.step, heads_only=run.state.step < (cfg.head_steps or 0))
            crash_point("step")
            # a non-finite loss skips the update; too many in a row end the run
            if not dist.all_true(all(math.isfinite(v) for v in (*losses.values(), *smart.values()))):
                run.state.nonfinite += 1
                bad = ", ".join(f"{t}={v}" for t, v in {**losses, **smart}.items() if not math.isfinite(v))
                if main:
                    run.emit({"type": "nonfinite", "step": run.state.step + 1, "losses": losses,
                               "consecutive": run.state.nonfinite})
                    reporter.message(f"warning: step {run.state.step + 1} skipped, non-finite loss ({bad})")
                run.state.step += 1  # the batch is consumed; the parameters are not updated
                reporter.advance(run.state.step)
                if run.state.nonfinite >= cfg.max_nonfinite:
                    status = Status.NONFINITE
                    break
                continue
            # update
            run.state.nonfinite = 0
            run.stepper.apply(lr)
            if run.averager is not None:
                run.averager.update()
            run.state.step += 1
            reporter.advance(run.state.step)
            # log
            window.add(n_examples(batches) * dist.world, losses, smart)
            if run.state.step % cfg.log_every == 0 or run.state.step == run.stop_at:
                rec = {"type": "train", "step": run.state.step, "epoch": run.state.step / run.steps_per_epoch, "lr": lr,
                       **window.record(), **run.stepper.conflicts.record(), "time": time.time()}
                if main:
                    run.emit(rec)
                    crash_point("logged")
            # evaluate and save; a signal stops the run at the end of the step
            stopping = dist.any_true(stop.requested or run.callbacks.stop_asked)
            evaluating = (run.state.step % run.eval_every == 0 or run.state.step in run.eval_steps) and run.state.step < run.stop_at \
                and not stopping
            periodic = bool(cfg.save_every) and run.state.step % cfg.save_every == 0 and not stopping
            if (stopping or evaluating or periodic or run.state.step == run.stop_at) and not weights_finite(model):
                status, run.state.diverged = Status.NONFINITE, True  # a finite loss whose update overflowed: save nothing
                break
            if evaluating:
                last_metrics = evaluate_dev(run, saver)
                saver.save(LAST, last_metrics, with_resume=True)
                saved_at = run.state.step
                model.train()
                # --patience, a sweep's pruner and the caller's callbacks decide on the main process (last/
                # was just saved; best/ holds the best); every rank follows
                ending = _decision(run, last_metrics)
                if ending is not None:
                    status = ending
                    break
            elif periodic:
                saver.save(LAST, last_metrics, with_resume=True)
                saved_at = run.state.step
            if stopping:
                status = Status.STOPPED
                break
        # the end: a final evaluation, and last/ unless the weights diverged
        if status == Status.FINISHED and run.state.step < run.total_steps:
            status = Status.PAUSED  # at --stop-at-step: evaluated and saved like the end; --resume goes on
        if status in (Status.FINISHED, Status.PAUSED, Status.STOPPED) and not weights_finite(model):  # e.g. after skipped steps
            status, run.state.diverged = Status.NONFINITE, True
        if status in (Status.FINISHED, Status.PAUSED):
            last_metrics = evaluate_dev(run, saver)
        # last/, unless it holds this step already (early-stopped and pruned have just saved it, and so
        # has a callback's stop after an evaluation); a diverged run must not save
        just_saved = status == Status.STOPPED and saved_at == run.state.step
        if status in (Status.FINISHED, Status.PAUSED, Status.STOPPED) and not just_saved:
            saver.save(LAST, last_metrics, with_resume=True)
    return status, last_metrics


# What the main process sends the other ranks when a callback raised while deciding after an evaluation.
CALLBACK_FAILED = "callback-failed"


def _decision(run: Run, metrics: dict) -> Status | None:
    """The callbacks' decision after an evaluation, made on the main process and sent to every rank. A
    callback that raises is sent as a failure, then raised on the main process; the other ranks stop
    with it rather than wait for a decision that never comes."""
    failure = decision = None
    if run.dist.is_main:
        try:
            decision = run.callbacks.evaluation(run.state.step, metrics, run.state)
        except Exception as e:  # noqa: BLE001 - whatever the caller's code raises, raised again below
            failure, decision = e, CALLBACK_FAILED
    decision = run.dist.broadcast_object(decision)
    if failure is not None:
        raise failure
    if decision == CALLBACK_FAILED:
        raise RuntimeError(f"a training callback failed on the main process at step {run.state.step}; rank "
                           f"{run.dist.rank} stops with it")
    return None if decision is None else Status.of(decision)


def _interrupted(run: Run) -> None:
    """A second signal stopped the run mid-step: say so in its log (it is resumable from the last/ it
    had), and give up without saving."""
    if run.state.ended is not None:  # while finishing, its end record written: that is how it ended
        raise Stopped(f"stopped at once while finishing; the run had ended {run.state.ended}")
    if run.dist.is_main and run.callbacks.recording:
        run.emit({"type": "end", **run.state.end_fields(Status.INTERRUPTED), "time": time.time()})
    last = run.dir / LAST
    if is_checkpoint(last):
        saved = read_json(last / MARKER).get("step")
        kept = f"{last} holds step {saved}: go on from there with `{run.cfg.resume_command(run.dir)}`"
    else:
        kept = "no checkpoint had been saved yet"
    raise Stopped(f"stopped at once at step {run.state.step}, without saving; {kept}")


def weights_finite(model) -> bool:
    """Whether every parameter is finite (one device sync: checked where weights are saved, not every step)."""
    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


def _announce(run: Run) -> None:
    """The run's opening messages: encoder, device and precision; skipped data rows."""
    enc = run.model.encoder.config
    params = sum(p.numel() for p in run.model.encoder.parameters()) / 1e6
    source = f"{run.dir / LAST} (resumed)" if run.resumed else run.cfg.encoder
    n = torch.get_num_threads()
    threads = f" ({n} thread{'s' if n != 1 else ''})" if run.device.type == "cpu" else ""
    run.reporter.message(f"encoder {source}: {enc.model_type}, {enc.num_hidden_layers} layers, hidden "
                         f"{enc.hidden_size}, {params:.0f}M parameters; device {run.device}{threads}; training steps in "
                         f"{run.precision}, evaluation in fp32")
    if run.cfg.precision == "auto" and run.precision != "fp32":
        run.reporter.message(f"--precision auto chose {run.precision}: this CPU multiplies it natively "
                             f"(--precision fp32 turns it off)")
    if run.warnings:
        run.reporter.message(f"{len(run.warnings)} unusable row(s) skipped: " +
                             ", ".join(f"{Path(p).name}: {n}" for p, n in run.skipped.items()))


def _finish(run: Run, status: Status, last_metrics: dict | None, started: float) -> TrainResult:
    """Write the end record and RUN/summary.json, tell the callbacks; a diverged run is a UserError."""
    summary = {"run": str(run.dir), **run.state.end_fields(status), "total_steps": run.total_steps,
               "last_metrics": last_metrics, "skipped_rows": sum(run.skipped.values()),
               "skipped": run.skipped, "world_size": run.dist.world,
               "tasks": [s.to_dict() for s in run.model.specs.values()]}
    best_dir = run.dir / BEST
    result = TrainResult(run.dir, Status.of(status), run.state.step, run.total_steps, run.state.best,
                         best_dir if is_checkpoint(best_dir) else None, last_metrics, time.time() - started, summary)
    if run.dist.is_main:
        run.emit({"type": "end", **run.state.end_fields(status)})
        run.state.ended = status
        crash_point("end")
        write_json(run.dir / SUMMARY, summary)
        if status == Status.EARLY_STOPPED:
            best = f"best/ holds the best ({run.state.best:.4f})" if run.state.best is not None else "no evaluation had an overall score"
            run.reporter.message(f"early stop at step {run.state.step}: no better overall dev score in {run.state.since_best} "
                                 f"evaluations (--patience); {best}")
        if status == Status.PRUNED:
            run.reporter.message(f"pruned at step {run.state.step}: the sweep's pruner found its dev score behind the "
                                 f"other trials'")
        if status == Status.STOPPED:  # a sweep's trial: the sweep says how to go on
            run.reporter.message(f"stopped at step {run.state.step}; checkpoint saved" + (
                "" if run.cfg.sweep else f". Resume with: {run.cfg.resume_command(run.dir)}"))
        if status == Status.PAUSED:
            run.reporter.message(f"paused at step {run.state.step} of {run.total_steps} (--stop-at-step); checkpoint saved. "
                                 f"Go on with: {run.cfg.resume_command(run.dir)} [--stop-at-step N]")
        if status == Status.NONFINITE:
            last = run.dir / LAST
            kept = f"the last good weights are in {last}" if is_checkpoint(last) else \
                "no checkpoint was saved before"
            why = "the weights became non-finite (NaN or inf)" if run.state.diverged else \
                f"{run.state.nonfinite} consecutive non-finite losses"
            run.callbacks.end(result)
            raise UserError(f"stopped at step {run.state.step}: {why}; {kept} (try a lower --lr, or --precision fp32)")
        run.callbacks.end(result)
    return result
