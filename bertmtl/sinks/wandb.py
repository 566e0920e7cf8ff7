"""`--report-to wandb`: a run's configuration, per-step metrics and dev metrics in Weights & Biases.

Online when W&B can be reached with a key ($WANDB_API_KEY); otherwise offline, into
RUN/wandb/, for `wandb sync RUN/wandb/offline-run-*` later ($WANDB_MODE, when set, decides).
The W&B run's id is derived from the run directory, so a resumed run continues the same W&B run.
Runs go to the project $WANDB_PROJECT (default "bertmtl"); a sweep's trials are grouped by sweep.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import UserError, extra_hint
from .records import NOT_SCALARS, GuardedSink, flatten


def require_wandb():
    try:
        import wandb
    except ImportError:
        raise UserError(f"--report-to wandb needs wandb: {extra_hint('wandb', 'wandb')}") from None
    return wandb


# The values wandb.Settings' `mode` takes (its validation refuses the rest when the run starts).
MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")


def check_wandb(run_dir: Path) -> None:
    """A UserError before the run exists when wandb is missing or $WANDB_MODE is not a mode it takes
    (what can be checked without the network)."""
    require_wandb()
    if (m := os.environ.get("WANDB_MODE")) and m not in MODES:
        raise UserError(f"--report-to wandb: WANDB_MODE={m} is not a mode W&B takes ({', '.join(MODES)})")


def mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


class WandbSink(GuardedSink):
    label = "wandb"

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.wandb = require_wandb()
        self.dir = Path(run_dir).resolve()
        self.run = None

    def _write(self, record: dict) -> None:
        kind = record.get("type")
        if kind in ("start", "resume"):
            config = record.get("config") or {}
            sweep = (config.get("sweep") or "").split("/")[0] or None
            self.run = self.wandb.init(
                project=os.environ.get("WANDB_PROJECT", "bertmtl"), name=self.dir.name, group=sweep,
                id="bertmtl-" + hashlib.sha1(str(self.dir).encode()).hexdigest()[:16], resume="allow",
                dir=str(self.dir), config=config, mode=mode(), reinit="create_new")
        elif self.run is None:
            return
        elif kind == "train":
            self.run.log({k: v for k, v in flatten(record).items() if k not in NOT_SCALARS}, step=record["step"])
        elif kind == "eval":
            self.run.log({f"dev_{k}": v for k, v in flatten(record).items() if k not in NOT_SCALARS},
                         step=record["step"])
        elif kind == "end":
            from ..runs.status import Status

            status = Status.of(record.get("status"))
            self.run.summary["status"] = str(status)
            # W&B has no "killed" a client can set: a run ended by a decision (stopped, pruned: MLflow's
            # KILLED) ends cleanly, its status in the summary; only a failure is a failed W&B run.
            self.run.finish(exit_code=1 if status.tracker_state == "FAILED" else 0)
            self.run = None

    def close(self) -> None:
        if self.run is not None and not self.broken:
            try:
                self.run.finish(exit_code=1)
            except Exception:  # noqa: BLE001
                pass
        self.run = None
