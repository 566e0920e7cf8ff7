"""`--report-to mlflow`: a run's parameters, per-step metrics, dev metrics and best checkpoint in
MLflow, where people already look.

The tracking store is $MLFLOW_TRACKING_URI when set, else a local SQLite store beside the run
(RUNS_ROOT/mlflow.db, artifacts in RUNS_ROOT/mlartifacts): nothing to start. Runs go to the
experiment "bertmtl", or to their sweep's name for the trials of `bertmtl sweep` (grouped by
sweep). A resumed run continues its MLflow run (found by the run directory, a tag). Written
through MlflowClient, not the fluent API, so that no global active run is left behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import UserError, extra_hint
from .records import NOT_SCALARS, GuardedSink, flatten, is_number

RUN_TAG = "bertmtl.run_dir"


def require_mlflow():
    try:
        import mlflow
    except ImportError:
        raise UserError(f"--report-to mlflow needs MLflow: {extra_hint('mlflow', 'mlflow-skinny')}") from None
    return mlflow


def tracking_uri(run_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(run_dir).parent / 'mlflow.db').resolve()}"


# MLflow retries a request 7 times with back-off (minutes) by default; asking once, with a timeout,
# is enough to tell a store that works from one that does not. The user's own settings win.
PROBE_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def check_mlflow(run_dir: Path) -> None:
    """A UserError naming the store and the cause, before the run exists, when the tracking store
    the run at `run_dir` would use cannot be used: its client is made and asked for one experiment."""
    mlflow = require_mlflow()
    try:
        run_dir = Path(run_dir).resolve()  # as the sink resolves it: the store beside the real directory
    except (OSError, RuntimeError):
        return  # a symlink loop: the run directory's own check says so next
    own = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    if not own and not run_dir.parent.is_dir():
        return  # a new local store, made with the runs root when the run's directory is made
    uri = tracking_uri(run_dir)
    saved = {k: os.environ.get(k) for k in PROBE_ENV}
    os.environ.update({k: v for k, v in PROBE_ENV.items() if saved[k] is None})
    try:
        mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - whatever the store's client raises is the cause to show
        lines = str(e).strip().splitlines()
        cause = lines[0].strip() if lines else type(e).__name__
        where = "$MLFLOW_TRACKING_URI" if own else "beside the runs; set $MLFLOW_TRACKING_URI for another"
        raise UserError(f"--report-to mlflow: cannot use the tracking store {uri} ({where}): {cause}") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


class MlflowSink(GuardedSink):
    label = "mlflow"

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        mlflow = require_mlflow()
        self.dir = Path(run_dir).resolve()
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri(self.dir))
        self.run_id: str | None = None

    def _open(self, record: dict) -> None:
        config = record.get("config") or {}
        name = (config.get("sweep") or "bertmtl").split("/")[0]
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(name,
                                                       artifact_location=(self.dir.parent / "mlartifacts").as_uri())
            except Exception:  # noqa: BLE001 - another sweep worker made it a moment ago
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        if record.get("type") == "resume":
            found = self.client.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{self.dir}'", max_results=1)
            if found:
                self.run_id = found[0].info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                return
        run = self.client.create_run(exp_id, run_name=self.dir.name, tags={RUN_TAG: str(self.dir)})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v if isinstance(v, str) else json.dumps(v, default=str)[:6000])
                  for k, v in sorted(config.items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def _metrics(self, values: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if is_number(v)]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    def _write(self, record: dict) -> None:
        kind = record.get("type")
        if kind in ("start", "resume"):
            self._open(record)
        elif self.run_id is None:
            return
        elif kind == "train":
            self._metrics({k: v for k, v in flatten(record).items() if k not in NOT_SCALARS}, record["step"])
        elif kind == "eval":
            self._metrics({f"dev_{k}": v for k, v in flatten(record).items() if k not in NOT_SCALARS},
                          record["step"])
        elif kind == "end":
            from ..runs.rundir import BEST, is_checkpoint

            if is_checkpoint(self.dir / BEST):
                self.client.log_artifacts(self.run_id, str(self.dir / BEST), artifact_path=BEST)
            from ..runs.status import Status

            self.client.set_terminated(self.run_id, status=Status.of(record.get("status")).tracker_state)
            self.run_id = None

    def close(self) -> None:
        if self.run_id is not None and not self.broken:  # no end record: the run failed
            try:
                self.client.set_terminated(self.run_id, status="FAILED")
            except Exception:  # noqa: BLE001 - the store is gone: nothing to mark
                pass
        self.run_id = None
