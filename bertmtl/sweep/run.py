"""Running a sweep: its plan said first, its trials on one or more workers, a stop on one signal,
and its report. `bertmtl sweep` and `bertmtl ablate` call `run_sweep`.

One SIGINT or SIGTERM stops the sweep as a whole: the running trials end their step, save last/
and are queued again; worker processes are told by the parent (stopping.WORKER_STOP, and stop by
themselves when the parent is killed outright); the command then exits 130, says what was saved
and to run it again, which resumes those seeds first and trains every configuration x seed
exactly once. A second signal stops everything at once, without saving.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..errors import UserError
from ..training.stopping import Interrupted, stop_on_signals, watch_parent


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def check_storage(url: str) -> None:
    """Refuse a storage URL that is not one, or one that forgets the study when the command ends
    (SQLite in memory): the same command could never skip finished work, and every worker would
    have a study of its own."""
    from urllib.parse import parse_qs, urlsplit

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except (ArgumentError, ValueError) as e:
        raise UserError(f"--storage {url}: not a database URL ({e}); e.g. sqlite:///PATH/study.db or "
                        f"postgresql://user@host/db") from None
    parts = urlsplit(url)
    if not parts.scheme.lower().startswith("sqlite"):
        return
    path = parts.path[1:] if parts.path.startswith("/") else parts.path  # sqlite:///x: the file x
    if path == "" or ":memory:" in path or "memory" in parse_qs(parts.query).get("mode", []):
        raise UserError(f"--storage {url}: an SQLite database in memory is gone when the command ends, and the "
                        f"sweep could not continue or skip finished work; give a file (sqlite:///PATH/study.db) "
                        f"or leave --storage out (a file in --out)")


def run_sweep(cfg, say=print) -> dict | None:
    """Run the sweep of `cfg` (configs.SweepConfig) to its report; None for a worker or --dry-run.

    Interrupted (exit 130) when a signal stopped it; running the same command again continues it."""
    from ..fsutil import read_json, write_json
    from .plan import SweepPlan
    from .report import SPEC_FILE, build_report, incomplete_lines
    from .spec import SweepSpec, read_spec
    from .study import PARENT_ENV, SweepStopped, default_storage, open_study, spawn_workers, work

    out = Path(cfg.report or cfg.out)

    def report(spec: SweepSpec) -> dict:
        if cfg.ensemble or cfg.soup:
            from .combined import build_combined
            from .report import collect

            build_combined(out, collect(out, spec), cfg.ensemble, cfg.soup, say)
        built = build_report(out, spec, cfg.bootstrap)
        n = len(built["configurations"])
        say(f"wrote {out}/report.md, report.json and report.svg ({n} configuration{'s' * (n != 1)})")
        for line in incomplete_lines(built):
            say(f"incomplete: {line}")
        return built

    if cfg.report:  # from the runs alone, with the spec the sweep saved
        if cfg.spec is not None or cfg.dry_run or cfg.worker:
            raise UserError("--report DIR rebuilds a report from the runs alone: give it without SPEC, --dry-run or "
                            "--worker")
        if not (out / SPEC_FILE).is_file():
            raise UserError(f"{out}: not a sweep directory (no {SPEC_FILE})")
        return report(SweepSpec.from_dict(read_json(out / SPEC_FILE, "missing")))
    if cfg.spec is None:
        raise UserError("give the sweep's SPEC file (or --report DIR to rebuild a report)")
    if cfg.storage:
        check_storage(cfg.storage)
    spec = read_spec(cfg.spec)
    saved = out / SPEC_FILE
    if saved.is_file() and SweepSpec.from_dict(read_json(saved, "missing")).training_dict() != spec.training_dict():
        raise UserError(f"{out} holds another sweep (its {SPEC_FILE} differs from {cfg.spec}); use another --out")
    if not cfg.worker:
        plan = SweepPlan(spec, out)
        plan.check_data()
        say(plan.summary())
        if cfg.dry_run:
            for line in plan.listing():
                say(line)
            return None
    out.mkdir(parents=True, exist_ok=True)
    storage = cfg.storage or default_storage(out)
    if not cfg.worker:
        # The storage opened (made, its grid's first points queued) before anything is written or
        # trained, and once, before workers race for it.
        open_study(spec, storage, cfg.heartbeat, retry_failed=True)
        write_json(saved, spec.to_dict())  # the same runs; its report section may be new
    again = cfg.command or f"bertmtl sweep {cfg.spec} --out {out}"
    workers = _workers(cfg.workers, SweepPlan(spec, out).configurations, say) if not cfg.worker else 1
    what = ("stopping the sweep: the running trial ends its step and saves its run" if workers == 1
            else "stopping the sweep: each worker ends its step and saves its run")
    started = time.time()
    # A worker the parent started is told by the parent, which says what happened: it stays quiet.
    spawned = cfg.worker and os.environ.get(PARENT_ENV, "").isdigit()
    with stop_on_signals(None if spawned else _stderr, what, worker=cfg.worker) as stop:
        try:
            if cfg.worker or workers == 1:
                if spawned:
                    watch_parent(int(os.environ[PARENT_ENV]), stop)
                work(spec, out, storage, cfg.heartbeat, say=say, stop=stop)
            else:
                if stop.requested:
                    raise SweepStopped()
                _supervise(spawn_workers(Path(cfg.spec), out, storage, workers, cfg.heartbeat), stop, again)
        except (SweepStopped, KeyboardInterrupt) as e:  # (KeyboardInterrupt: a second signal between two runs)
            if cfg.worker:
                run = getattr(e, "run", None)
                what = "between two runs" if run is None else \
                    f"{run.name} {'stopped at once' if getattr(e, 'at_once', True) else 'saved'}"
                raise Interrupted(f"worker stopped ({stop.reason}): {what}") from None
            raise Interrupted(_stopped_message(stop.reason or "Ctrl-C", out, started, again)) from None
        if cfg.worker:  # one of several: the command that started them reports
            return None
        try:
            with stop.immediate():  # every run is done: a signal now only leaves the report unwritten
                return report(spec)
        except KeyboardInterrupt:
            raise Interrupted(f"stopped while writing the report; every run is done, and `bertmtl sweep --report "
                              f"{out}` writes it") from None


def _workers(asked: int, configurations: int, say) -> int:
    """--workers, at most one per CPU core and per configuration (each worker trains a configuration
    at a time, and loads torch and a model: more would only wait, or exhaust the memory)."""
    cores = os.cpu_count() or 1
    most = min(cores, configurations)
    if asked > most:
        why = f"the sweep has {configurations} configuration{'s' * (configurations != 1)}" if most == configurations \
            else f"this machine has {cores} CPU cores"
        say(f"--workers {asked}: using {most} ({why})")
        return most
    return asked


def _stopped_message(reason: str, out: Path, since: float, again: str) -> str:
    """What a stop left, from the runs this command touched (their end records: a worker's run is
    another process's, and the stop may have come between two runs)."""
    from ..runs.rundir import METRICS_LOG
    from ..runs.catalog import run_info
    from ..runs.status import Status
    from .study import RUNS

    counts = {Status.STOPPED: 0, Status.INTERRUPTED: 0}
    for log in (Path(out) / RUNS).glob(f"*/{METRICS_LOG}"):
        if log.stat().st_mtime >= since:
            status = Status.of(run_info(log.parent)["status"])
            counts[status] = counts.get(status, 0) + 1
    saved, at_once = counts[Status.STOPPED], counts[Status.INTERRUPTED]
    parts = [f"{saved} run{'s' * (saved != 1)} saved at the end of {'their' if saved != 1 else 'its'} step (last/)"
             if saved else "", f"{at_once} stopped at once, to go on from {'their' if at_once != 1 else 'its'} last "
                               f"checkpoint" if at_once else ""]
    left = "; ".join(p for p in parts if p) or "no run was training"
    return (f"sweep stopped ({reason}): {left}. Run the same command again to continue: it resumes those runs from "
            f"their last/ and trains each configuration and seed once:\n  {again}")


def _supervise(procs: list, stop, again: str) -> None:
    """Wait for the worker processes; pass a stop on to them in the signals that say what to do
    (stopping.WORKER_STOP: end the step and save; WORKER_NOW: at once, for a second signal here),
    whatever else reached them (a scheduler signals every process of a job), so that none is left
    training when this command ends."""
    from ..training.stopping import WORKER_NOW, WORKER_STOP
    from .study import SweepStopped

    forwarded = False
    try:
        while any(p.poll() is None for p in procs):
            if stop.requested and not forwarded:
                _signal_all(procs, WORKER_STOP)
                forwarded = True
            time.sleep(0.1)
    except KeyboardInterrupt:  # a second signal: the workers stop at once too; wait for them briefly
        _signal_all(procs, WORKER_NOW)
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - still alive after being told to stop at once: end it
                p.kill()
        raise SweepStopped(at_once=True) from None
    codes = [p.returncode for p in procs]
    if forwarded:
        raise SweepStopped()
    if any(codes):
        raise UserError(f"{sum(c != 0 for c in codes)} of {len(procs)} workers failed (exit codes {codes}); "
                        f"run the same command again to continue the study:\n  {again}")


def _signal_all(procs: list, signum: int) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                p.send_signal(signum)
            except ProcessLookupError:
                pass
