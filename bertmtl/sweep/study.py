"""A sweep's Optuna study: one trial per configuration, its seeds trained one after another as
ordinary runs, any number of workers on one storage.

The study lives in an Optuna storage (SQLite in the sweep directory by default; any SQLAlchemy
URL, so that workers on several machines share it). Each worker runs the same loop: fail the
trials whose worker stopped beating (Optuna's heartbeat; RetryHeartbeatStaleTrialCallback puts
a copy back in the queue with the same configuration), take a waiting trial or, in a search,
ask the sampler for a new configuration, and train it. A grid's points are queued (QUEUED_AHEAD
when the study is opened, the next ones as the queue runs low), never sampled.

A trial's runs are named by its configuration, not by its trial number: a retried trial finds
the runs of the trial it retries, skips the seeds that finished and resumes the one that was
killed from its last/. Running the command again continues the study; finished configurations
are never trained again.

A stop (sweep/run.py: one SIGINT or SIGTERM, or a worker's parent gone) ends the running seed at
the end of its step with last/ saved; its trial is failed and its configuration queued again
(`SweepStopped`), so the same command resumes that seed first and never records it as done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..errors import UserError
from ..numbers import finite_number
from ..runs.status import Status
from .spec import ROW, SweepSpec, config_key

RUNS = "runs"  # DIR/runs: the sweep's runs root (`bertmtl runs --runs-dir DIR/runs`)
GRID_ATTR = "grid_point"  # user attribute of a queued grid point (or row)


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise UserError("bertmtl sweep needs Optuna, a dependency of bertmtl: reinstall it (pip install -e . in "
                        "the clone), or pip install 'optuna>=4.9'") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # The heartbeat and its retry callback are marked experimental; they are what a killed worker needs.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # work() runs the heartbeat around ask and tell itself, as study.optimize does.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def default_storage(out: Path) -> str:
    return f"sqlite:///{(Path(out) / 'study.db').resolve()}"


def open_study(spec: SweepSpec, storage_url: str, heartbeat: int, retry_failed: bool = False):
    """The spec's study in `storage_url` (made on first use, its grid's next points queued; with
    `retry_failed`, as a sweep command opens it before its workers start, also the points whose
    trial failed in an earlier command)."""
    import warnings

    optuna = require_optuna()
    # A grid of mappings or lists (loss_weights, tasks) makes Optuna warn, wherever it reads the
    # study, that such choices may not persist; they do (a distribution is stored as JSON, a trial
    # as its choice's index), so a sweep over them prints no warning at every trial.
    warnings.filterwarnings("ignore", message="Choices for a categorical distribution", category=UserWarning)
    storage = _storage(storage_url, heartbeat)
    seed = spec.first_seed % 2**32  # the samplers take 32-bit seeds; runs take 63-bit ones
    sampler = (optuna.samplers.RandomSampler(seed=seed) if spec.sampler == "random"
               else optuna.samplers.TPESampler(seed=seed))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec.prune["startup_trials"],
                                          n_warmup_steps=spec.prune["warmup_steps"])
              if spec.prune else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=spec.name, storage=storage, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    if spec.fixed:
        queue_more(study, spec.grid_points(), study.get_trials(deepcopy=False), retry_failed=retry_failed)
    elif spec.baseline:
        enqueue_missing(study, [spec.baseline], {})
    return study


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def live_params(trials) -> set[str]:
    """The configurations (as _key) a trial has waiting, running or done; a failed one (an error in
    its training, a stop) is not, so running the command again retries it."""
    from optuna.trial import TrialState

    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    return {_key(params_of(t)) for t in trials if t.state in live}


# A grid's points queued when the study is opened, before workers race for them; the rest are
# queued as the queue runs low (each point is a database write: thousands up front take minutes).
QUEUED_AHEAD = 16


def enqueue_missing(study, points: list[dict], user_attrs: dict, most: int | None = None) -> None:
    """Queue the configurations (at most `most`) that no trial has waiting, running or done (the
    study's trials read once)."""
    have = live_params(study.get_trials(deepcopy=False))
    for params in points:
        if most is not None and most <= 0:
            return
        if _key(params) not in have:
            study.enqueue_trial(params, user_attrs=user_attrs)
            have.add(_key(params))
            most = None if most is None else most - 1


def queue_more(study, points: list[dict], trials, retry_failed: bool = False) -> bool:
    """Queue a grid's next points, so that QUEUED_AHEAD wait: the points no trial has had yet and,
    when the study is opened (`retry_failed`), those whose trial failed in an earlier command (the
    same command again retries them; the same command going on does not, or a configuration whose
    every seed diverges would be trained forever). False when there is nothing left to queue.
    Two workers may queue the same point at once; its second trial then waits for the first's runs
    (train_seed's claim) and reads their results."""
    from optuna.trial import TrialState

    live, ever = live_params(trials), {_key(params_of(t)) for t in trials}
    retry = [p for p in points if _key(p) in ever and _key(p) not in live] if retry_failed else []
    fresh = [p for p in points if _key(p) not in ever]
    if not retry and not fresh:
        return False
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    enqueue_missing(study, retry, {GRID_ATTR: True})
    enqueue_missing(study, fresh, {GRID_ATTR: True}, most=QUEUED_AHEAD - waiting - len(retry))
    return True


def enqueue_once(study, params: dict, user_attrs: dict) -> None:
    """Queue one configuration unless a trial has it waiting, running or done."""
    enqueue_missing(study, [params], user_attrs)


def params_of(trial) -> dict:
    """A trial's configuration: its parameters, or for a queued one not started yet its fixed ones."""
    return trial.params or dict(trial.system_attrs.get("fixed_params") or {})


def _storage(storage_url: str, heartbeat: int, tries: int = 6):
    """The RDB storage; workers starting together on a new database race to create its tables, so
    a failed first contact is retried a few times before it is an error."""
    import random

    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    sqlite = storage_url.startswith("sqlite")
    for attempt in range(tries):
        try:
            storage = RDBStorage(storage_url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
                                 # the driver's own transaction handling off: immediate_transactions' BEGINs
                                 engine_kwargs={"connect_args": {"timeout": 60, "isolation_level": None}}
                                 if sqlite else None)
            if sqlite:
                immediate_transactions(storage.engine)
            return storage
        except ImportError as e:  # no driver for this kind of database
            raise UserError(f"--storage {storage_url}: no database driver for it ({e}); for PostgreSQL: "
                            f"pip install 'psycopg[binary]'") from None
        except Exception as e:  # noqa: BLE001 - a race on the schema, a server not up yet, a bad URL
            if attempt == tries - 1:
                raise UserError(f"--storage {storage_url}: cannot open it ({type(e).__name__}: {e})") from None
            time.sleep(0.5 + random.random())


def immediate_transactions(engine) -> None:
    """Every SQLite transaction of `engine` begins IMMEDIATE (takes the database's write lock at
    its start). Optuna reads a waiting trial and marks it running in one transaction, relying on
    SELECT ... FOR UPDATE, which SQLite ignores: two worker processes could both take the same
    trial. With the lock taken at BEGIN the second waits and then sees it taken (SQLAlchemy's
    recipe for SQLite transactions)."""
    import sqlalchemy

    sqlalchemy.event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))


def suggest(trial, spec: SweepSpec) -> dict:
    """The trial's configuration: its queued values, or the sampler's draw from the distributions."""
    if spec.rows:
        return {ROW: trial.suggest_categorical(ROW, list(spec.rows))}
    if spec.grid:
        return {name: trial.suggest_categorical(name, values) for name, values in spec.grid.items()}
    params = {}
    for name, d in spec.search.items():
        kind, args = next(iter(d.items()))
        if kind == "log_uniform":
            params[name] = trial.suggest_float(name, args[0], args[1], log=True)
        elif kind == "uniform":
            params[name] = trial.suggest_float(name, args[0], args[1])
        elif kind == "int":
            params[name] = trial.suggest_int(name, args[0], args[1])
        else:
            params[name] = trial.suggest_categorical(name, args)
    return params


def run_dir_of(out: Path, params: dict, seed: int) -> Path:
    return Path(out) / RUNS / f"{config_key(params)}-s{seed}"


class SweepStopped(Exception):
    """The sweep was asked to stop (a signal, or a worker's parent gone) before the trial ended."""

    def __init__(self, at_once: bool = False, run: Path | None = None):
        super().__init__("the sweep was stopped")
        self.at_once = at_once  # a second signal: the run stopped without saving
        self.run = run  # the run it stopped (None: between two runs)


class TrialFailed(Exception):
    """A configuration that cannot give a result (every seed diverged): failed, and the sweep goes on."""


def train_seed(spec: SweepSpec, out: Path, params: dict, seed: int, label: str, poll: float = 2.0,
               judge=None, stop=None) -> tuple[float | None, bool]:
    """One seed of a configuration, trained to its end (resumed where an earlier worker left it):
    its last evaluation's `metric`, and whether the pruner (`judge`, loop.train's) stopped it.
    SweepStopped when `stop` (stopping.StopRequest) ends it first: then it has saved last/, and
    its result is never taken for a finished one.

    A claim (a lock file beside the run) is held throughout: two workers given the same
    configuration (a grid point two of them queued at one instant) train it once, the second
    waiting for the first and then reading its result."""
    from ..training.loop import train
    from ..runs.locks import OwnerLock
    from ..runs.rundir import LAST, SUMMARY, holds_run
    from ..runs.catalog import run_info
    from ..runs.progress import default_reporter

    run = run_dir_of(out, params, seed)
    run.parent.mkdir(parents=True, exist_ok=True)
    while True:
        if stop is not None and stop.requested:
            raise SweepStopped()
        try:
            claim = OwnerLock(run.parent / f".{run.name}.claim", f"run {run}")
            break
        except UserError:  # another worker has it
            time.sleep(poll)
    try:
        resume = None
        if holds_run(run):
            status = Status.of(run_info(run)["status"])
            if status.final and (run / SUMMARY).is_file():
                return last_metric(run, spec.metric), status == Status.PRUNED
            if (run / LAST).exists():
                resume = run
        if resume is None and run.exists():  # killed before its first checkpoint: nothing to keep
            shutil.rmtree(run)
        cfg = spec.config(params, seed, run)
        cfg.sweep = label
        try:
            summary = train(cfg, resume=resume, judge=judge, reporter=default_reporter())  # the command's console
        except KeyboardInterrupt:  # a second signal, or a signal while the run was set up
            raise SweepStopped(at_once=True, run=run) from None
        except UserError:
            if holds_run(run) and Status.of(run_info(run)["status"]) == Status.NONFINITE:
                return None, False  # diverged: this seed has no score, the others still count
            raise
        status = Status.of(summary.get("status"))
        if not status.final:  # stopped by the signal (last/ saved): resumed by the next command
            raise SweepStopped(run=run)
        return last_metric(run, spec.metric), status == Status.PRUNED
    finally:
        claim.release()


def last_eval(run: Path) -> dict:
    """A run's last dev evaluation record (metrics.jsonl); {} before its first."""
    from ..runs.rundir import METRICS_LOG
    from ..sinks.metrics_log import read_records

    evals = [r for r in read_records(Path(run) / METRICS_LOG)[0] if r.get("type") == "eval"]
    return evals[-1] if evals else {}


def last_metric(run: Path, metric: str) -> float | None:
    """`metric` of a run's last dev evaluation."""
    return finite_number(last_eval(run).get(metric))


# The seeds of a trial train one after another; the i-th one reports its evaluations at steps
# i * SEED_STEPS + step, so that every trial's k-th seed is compared with the others' k-th.
SEED_STEPS = 1_000_000


def make_judge(trial, metric: str, offset: int):
    """loop.train's judge: report each dev evaluation to the trial, stop when the pruner says so."""
    def judge(step: int, metrics: dict) -> bool:
        v = finite_number((metrics or {}).get(metric))
        if v is None:
            return False
        trial.report(v, offset + step)
        return trial.should_prune()
    return judge


def objective(spec: SweepSpec, out: Path, stop=None):
    optuna = require_optuna()

    def run_trial(trial) -> float:
        if spec.fixed and not trial.user_attrs.get(GRID_ATTR):
            # A worker that saw a point waiting and asked a moment after another took it: the
            # sampler's point would repeat one of the grid (the loop queues the grid's next ones).
            raise optuna.TrialPruned("the grid has no point left")
        params = suggest(trial, spec)
        trial.set_user_attr("config", config_key(params))
        values = []
        for i, seed in enumerate(spec.seed_list()):
            judge = make_judge(trial, spec.metric, offset=i * SEED_STEPS) if spec.prune else None
            v, pruned = train_seed(spec, out, params, seed, f"{spec.name}/{config_key(params)}", judge=judge,
                                   stop=stop)
            values.append(v)
            trial.set_user_attr(f"seed_{seed}", v)
            if pruned:
                raise optuna.TrialPruned(f"pruned in seed {seed}")
        finite = [v for v in values if v is not None]
        if not finite:
            raise TrialFailed(f"the configuration {params} has no {spec.metric} on dev in any seed (see its runs in "
                              f"{out / RUNS})")
        return sum(finite) / len(finite)

    return run_trial


def work(spec: SweepSpec, out: Path, storage_url: str, heartbeat: int, poll: float = 1.0, say=print,
         stop=None) -> None:
    """One worker's loop, until the study has nothing left to train (Optuna's ask and tell, so that
    a stopped trial is queued again rather than recorded). SweepStopped when `stop` ends it."""
    optuna = require_optuna()
    from optuna.storages import fail_stale_trials
    # The heartbeat study.optimize runs around each trial; ask/tell has none of its own.
    from optuna.storages._heartbeat import get_heartbeat_thread
    from optuna.trial import TrialState

    study = open_study(spec, storage_url, heartbeat)
    run_trial = objective(spec, out, stop)
    points = spec.grid_points() if spec.fixed else []
    while True:
        if stop is not None and stop.requested:
            raise SweepStopped()
        fail_stale_trials(study)  # a killed worker's trial goes back in the queue
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        waiting, running = states.count(TrialState.WAITING), states.count(TrialState.RUNNING)
        started = sum(s in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED) for s in states)
        # Refilled at half, not when empty: workers that find it empty together would queue the same
        # points, and a worker asking a moment after another took the last one gets no point.
        if waiting <= QUEUED_AHEAD // 2 and spec.fixed and queue_more(study, points, trials):
            continue
        if waiting or (spec.search and started < spec.trials):
            trial = study.ask()
            with get_heartbeat_thread(trial._trial_id, study._storage):
                try:
                    value = run_trial(trial)
                except optuna.TrialPruned:
                    study.tell(trial, state=TrialState.PRUNED)
                    continue
                except (SweepStopped, KeyboardInterrupt):
                    # Queued again, then failed: the same command takes it up again, and its finished
                    # seeds are not retrained. (A kill -9 between the two steps queues it twice at
                    # worst, when its heartbeat goes stale: the second copy finds its runs done.)
                    study.enqueue_trial(trial.params, user_attrs={k: v for k, v in trial.user_attrs.items()
                                                                  if k == GRID_ATTR})
                    study.tell(trial, state=TrialState.FAIL)
                    raise
                except TrialFailed as e:
                    study.tell(trial, state=TrialState.FAIL)
                    say(f"warning: {e}")
                    continue
                except BaseException:
                    study.tell(trial, state=TrialState.FAIL)
                    raise
            study.tell(trial, value)
            continue
        if running:  # another worker's trial: it may finish, or die and come back to the queue
            if stop is not None:
                for _ in range(int(poll / 0.1)):  # a stop is noticed within a tenth of a second
                    if stop.requested:
                        raise SweepStopped()
                    time.sleep(0.1)
            else:
                time.sleep(poll)
            continue
        break
    failed = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.FAIL
              and not _retried(study, t)]
    if failed:
        say(f"{len(failed)} trial(s) failed and were not retried: {[t.params for t in failed]}")


def _retried(study, trial) -> bool:
    """Whether a failed trial was put back in the queue (a stale heartbeat) as a later trial, or
    queued again with its configuration (enqueue_once)."""
    return any(trial.number in t.system_attrs.get("retry_history", []) or
               (t.number > trial.number and params_of(t) == trial.params) for t in study.get_trials(deepcopy=False))


# A worker started by a sweep's parent process (spawn_workers) watches that process: set to its pid.
PARENT_ENV = "BERTMTL_SWEEP_PARENT"


def spawn_workers(spec_path: Path, out: Path, storage_url: str, workers: int, heartbeat: int) -> list:
    """`workers` processes of `bertmtl sweep --worker`, the CPU threads divided between them and,
    where there are several GPUs, one each.

    Each gets a session of its own, so that a Ctrl-C at the terminal reaches the parent alone,
    which passes the stop on in the workers' own signals (sweep/run.py). Each watches the parent
    (PARENT_ENV) and stops, saving its run, when the parent is gone."""
    import subprocess
    import sys

    threads = max(1, (os.cpu_count() or 1) // workers)
    gpus = _gpu_count()
    # The GPUs this process may use, as the parent's CUDA_VISIBLE_DEVICES names them (or 0..n-1).
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()][:gpus] \
        or [str(i) for i in range(gpus)]
    procs = []
    for i in range(workers):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), PARENT_ENV: str(os.getpid())}
        if gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = visible[i % len(visible)]
        procs.append(subprocess.Popen([sys.executable, "-m", "bertmtl", "sweep", str(spec_path), "--out", str(out),
                                       "--storage", storage_url, "--heartbeat", str(heartbeat), "--worker"], env=env,
                                      start_new_session=True))
    return procs


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU workers
        return 0
