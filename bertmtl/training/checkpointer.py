"""Saving a run's checkpoints (RUN/last with the state to resume from, RUN/best) and restoring one."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import UserError
from ..fsutil import WriteError
from ..runs import checkpoint as ckpt
from ..runs.state import TrainingState
from .ema import restore_training_weights, trainable
from .run import Run


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
            ckpt.save_checkpoint(run.dir / name, run.model, run.tokenizer, step=run.state.step,
                                 epoch=run.state.step / run.steps_per_epoch, train_args=run.cfg.to_dict(), metrics=metrics,
                                 tasks=run.tasks, resume=self.resume_state(raw) if with_resume else None)
        except WriteError as e:
            raise UserError(f"{e.message}. Resume with `{run.cfg.resume_command(run.dir)}` once fixed.") from None
        run.callbacks.checkpoint(run.dir / name, run.state.step)

    def resume_state(self, raw: list | None) -> dict:
        """Optimizer moments, RNG states, data position and counters: what resuming needs beyond the weights."""
        run, stepper = self.run, self.run.stepper
        tensors, opt_meta = ckpt.optimizer_state(stepper.optimizer)
        tensors.update(ckpt.rng_state(stepper.combiner.generators()))
        state = {"tensors": tensors, "optimizer": opt_meta, **run.state.resume_fields(), "data": run.rr.state_dict(),
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
        run.state = TrainingState.resumed(state)
        if "scaler" in state and run.cfg.precision == "fp16":
            stepper.scaler.load_state_dict(state["scaler"])
        try:
            if run.averager is not None:
                run.averager.resume(tensors, state.get("ema_updates", 0))
            else:  # a run saved with --ema, resumed with --ema 0: go on from its training weights
                restore_training_weights(*trainable(run.model), tensors)
        except ValueError as e:
            raise UserError(f"{path}: {e}") from None
