"""Scoring a run on its dev sets during training: the scores logged, RUN/best saved when they improve."""

from __future__ import annotations

from ..fsutil import crash_point
from ..inference.evaluate import evaluate
from ..runs.rundir import BEST, write_dev_outputs
from .checkpointer import Checkpointer
from .run import Run


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
        is_best = run.state.consider(metrics.get("overall"), has_dev=bool(run.dev_sets))
        rec = {"type": "eval", "split": "dev", "step": run.state.step, "epoch": run.state.step / run.steps_per_epoch, **metrics,
               "best": is_best, "best_overall": run.state.best}
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
