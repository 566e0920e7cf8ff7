"""The runs root: naming a new run, finding runs and the checkpoint a command loads, what `bertmtl
runs` shows about each (the fold of runs/state.py RunState, no torch), and cleaning up.

Status of a run:
  finished / stopped / paused / early-stopped / pruned / nonfinite / interrupted   its end record (and
             summary.json) says so (paused: at --stop-at-step, before the end of its schedule; interrupted:
             a second signal, resumable from the last/ it had); status.Status says what each means;
  running    no end record, and a training process holds RUN/.writer.lock (rundir.writer_alive);
  crashed    no end record and nobody writing: killed, or an error other than a clean stop.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .status import Status
from .rundir import BEST, LAST, METRICS_LOG, SUMMARY, WriterLock, is_checkpoint, is_run, writer_alive
from .state import RunState, conflict_summary
from ..configuration.train_config import upgrade_config

RUNS_ROOT = Path("checkpoints")
RUNS_ENV = "BERTMTL_RUNS"


def encoder_of(config: dict) -> str:
    """The encoder a run's configuration names (older runs' "pretrained", where None meant the default)."""
    return upgrade_config(config).get("encoder") or "minilm"


def resume_command(run_dir: Path, config: dict | None = None) -> str:
    """How to go on with a run: its own command's --resume (pretrain's or train's), from its saved
    options (`config`, or its log's start record)."""
    from ..configuration.train_config import TrainConfig

    try:
        return TrainConfig.from_dict(RunState.of(run_dir).config if config is None else config,
                                     check=False).resume_command(run_dir)
    except (TypeError, ValueError, OSError):  # no log, or another version's options
        return f"bertmtl train --resume {run_dir}"


def runs_root(option: str | Path | None = None) -> Path:
    """--runs-dir, else $BERTMTL_RUNS, else ./checkpoints."""
    return Path(option or os.environ.get(RUNS_ENV) or RUNS_ROOT)


def new_run_dir(root: Path | None = None) -> Path:
    """Create and return ROOT/YYYYmmdd-HHMMSS (-2, -3, ... when taken).

    The directory is made here, with mkdir's all-or-nothing creation, so two runs started in the
    same second get two directories instead of sharing one.
    """
    base = runs_root(root) / time.strftime("%Y%m%d-%H%M%S")
    base.parent.mkdir(parents=True, exist_ok=True)
    cand, n = base, 1
    while True:
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            n += 1
            cand = base.with_name(f"{base.name}-{n}")


def run_dirs(root: Path | None = None) -> list[Path]:
    """Run directories (those with metrics.jsonl) directly under the runs root."""
    root = runs_root(root)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and is_run(p)]


def latest_run(root: Path | None = None) -> Path | None:
    """The most recently modified run directory under the runs root."""
    runs = run_dirs(root)
    return max(runs, key=lambda p: (p / METRICS_LOG).stat().st_mtime) if runs else None


@dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint a command loads, and a note when it is not what one would assume (a run's
    last/, never evaluated on dev, instead of its best/)."""

    path: Path
    note: str | None = None


def choose_checkpoint(path: str | Path | None, root: Path | None = None) -> CheckpointChoice:
    """A checkpoint from an option: itself, a run's best/ (else its last/, with a note), or, with
    no option, the best/ of the most recent run that has one (else the latest run's last/, noted).

    A stopped or still-early run's last/ was never scored on dev, so it answers only when no run
    under the root has a best/ checkpoint.
    """
    if path is None:
        runs = sorted(run_dirs(root), key=lambda p: (p / METRICS_LOG).stat().st_mtime, reverse=True)
        if not runs:
            raise UserError(f"no trained model found under {runs_root(root)}/; train one first with `bertmtl train`, "
                            f"or name a checkpoint or run directory (runs elsewhere: --runs-dir DIR or $BERTMTL_RUNS)")
        best = next((r for r in runs if is_checkpoint(r / BEST)), None)
        if best is not None:
            return CheckpointChoice(best / BEST)
        last = next((r for r in runs if is_checkpoint(r / LAST)), None)
        if last is None:
            raise UserError(f"no run under {runs_root(root)}/ has saved a checkpoint yet (best/ or last/); wait for "
                            f"its first evaluation, or name a checkpoint directory")
        return CheckpointChoice(last / LAST, f"no run under {runs_root(root)}/ has a best/ checkpoint (none was "
                                               f"evaluated on dev yet): using {last / LAST}")
    path = Path(path)
    if is_checkpoint(path):
        return CheckpointChoice(path)
    if is_checkpoint(path / BEST):
        return CheckpointChoice(path / BEST)
    if is_checkpoint(path / LAST):
        return CheckpointChoice(path / LAST, f"{path} has no best/ checkpoint (it was not evaluated on dev yet): "
                                             f"using {path / LAST}")
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    raise UserError(f"{path}: not a bertmtl checkpoint or run directory (none in it, its best/ or its last/)")


def resolve_checkpoint(path: str | Path | None, root: Path | None = None) -> Path:
    """The directory `choose_checkpoint` picks."""
    return choose_checkpoint(path, root).path


def find_run(name: str | Path, root: Path | None = None) -> Path:
    """A run directory given as a path or as a name under the runs root."""
    for cand in (Path(name), runs_root(root) / str(name)):
        if is_run(cand):
            return cand
    raise UserError(f"{name}: no run there or under {runs_root(root)}/ (a run directory has metrics.jsonl)")


# -- what `bertmtl runs` shows ----------------------------------------------------------------

def run_info(run_dir: Path) -> dict:
    """A run's name, start time, progress, status, encoder, configuration and best dev metrics.

    `best` holds the dev metrics of the evaluation with the best overall score: those of RUN/best.
    """
    run_dir = Path(run_dir)
    state = RunState.of(run_dir)
    summary = run_dir / SUMMARY
    if not Status.of(state.status).live:
        status = state.status  # the end record of the last start or resume
    elif summary.is_file() and summary.stat().st_mtime >= (run_dir / METRICS_LOG).stat().st_mtime:
        status = _read_status(summary)  # written right after the end record, which was lost
    else:
        status = str(Status.RUNNING if writer_alive(run_dir) else Status.CRASHED)
    started = state.started if state.started is not None else (
        (run_dir / METRICS_LOG).stat().st_mtime if not state.records else None)
    config = upgrade_config(state.config)
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "started": started,
        "status": status,
        "step": state.step,
        "total_steps": state.total_steps,
        "encoder": encoder_of(config),
        "tasks": config.get("tasks"),
        "best_step": state.best_step,
        "best": state.best,
        "conflicts": conflict_summary(state.telemetry),  # per task pair, where the run logged telemetry
        "config": config,
    }


def _read_status(summary: Path) -> str:
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("status", str(Status.FINISHED))
    except (OSError, ValueError, AttributeError):
        return str(Status.CRASHED)


def list_runs(root: Path | None = None) -> list[dict]:
    """run_info of every run under the runs root, oldest first; a run and the symbolic links to it
    are one run, listed under its own name and place."""
    runs: dict[Path, Path] = {}
    for p in sorted(run_dirs(root), key=lambda p: p.is_symlink()):  # the run itself before any link to it
        runs.setdefault(p.resolve(), p.resolve() if p.is_symlink() else p)
    infos = [run_info(p) for p in runs.values()]
    return sorted(infos, key=lambda i: (i["started"] or 0, i["name"]))


def compare_runs(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """(key, value in a, value in b) for each configuration option, best dev metric or summary
    field that differs between two run_info results; config keys as `config.NAME`."""
    rows = []
    for key in ("status", "step", "total_steps", "encoder", "best_step"):
        if a.get(key) != b.get(key):
            rows.append((key, a.get(key), b.get(key)))
    for group in ("best", "config"):
        keys = list(dict.fromkeys([*a[group], *b[group]]))
        for k in keys:
            va, vb = a[group].get(k), b[group].get(k)
            if va != vb:
                rows.append((f"{group}.{k}", va, vb))
    return rows


# -- cleaning up: `bertmtl runs --delete / --drop-last` ---------------------------------------

def disk_bytes(path: Path) -> int:
    """Bytes of the files under `path` (symlinks not followed)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


@dataclass(frozen=True)
class Removal:
    """A directory a clean-up removes, what it is, and the space that frees; `links`: symbolic links
    to the run, named in its place, that go with it."""

    run: Path
    path: Path
    what: str  # "run" or "last/"
    bytes: int
    links: tuple[Path, ...] = ()


def in_root(run_dir: Path, root: Path | None = None) -> Path:
    """`run_dir` with `..` and symbolic links resolved, which must lie strictly inside the runs root
    (resolved too); else a UserError naming both. A clean-up acts only there: a name such as
    ../elsewhere/run, an absolute path or a link must not reach a directory outside it."""
    real, real_root = Path(run_dir).resolve(), runs_root(root).resolve()
    if real_root in real.parents:
        return real
    shown = f"{_link_place(run_dir)} is a link to {real}, which" if Path(run_dir).is_symlink() else str(real)
    raise UserError(f"{shown} is outside the runs root {real_root}/; --delete and --drop-last act only on runs "
                    f"inside it (--runs-dir, else $BERTMTL_RUNS, else ./checkpoints); nothing was removed")


def _link_place(link: Path) -> Path:
    """Where a symbolic link itself is (its directory resolved, not the link)."""
    return Path(link).parent.resolve() / Path(link).name


def plan_clean(root: Path, named: list[Path], delete: bool) -> tuple[list[Removal], list[tuple[Path, str]]]:
    """`bertmtl runs --delete / --drop-last`: every removal, planned before any is carried out (so
    a refusal removes nothing), and the runs that keep their last/ with why.

    Runs are taken at their resolved place, which must be inside the runs root; a run named twice
    (by itself and by a link to it) is removed once. Deleting a run named by a link inside the root
    removes the link too. Dropping every finished run's last/ (nothing named) passes over the runs
    not asked for, but says so of a link in the root to a run outside it.
    """
    plans: dict[Path, Removal] = {}
    kept: list[tuple[Path, str]] = []
    real_root = runs_root(root).resolve()
    for given in named or sorted(run_dirs(root)):
        if not named and real_root not in given.resolve().parents:  # a link out of the root, met while listing it
            kept.append((_link_place(given), f"is a link to {given.resolve()}, outside the runs root"))
            continue
        real = in_root(given, root)
        if delete:
            link = _link_place(given) if given.is_symlink() else None
            links = (link,) if link is not None and real_root in link.parents else ()
            plan = plans.get(real) or plan_delete(real)
            plans[real] = Removal(plan.run, plan.path, plan.what, plan.bytes, tuple(dict.fromkeys(plan.links + links)))
        elif real not in plans:
            plan, why = plan_drop_last(real)
            if plan is not None:
                plans[real] = plan
            elif named:  # runs asked for by name say why they keep last/; the others are passed over
                kept.append((real, why))
    return list(plans.values()), kept


def plan_delete(run_dir: Path) -> Removal:
    """Deleting a whole run (UserError while a process trains it)."""
    if writer_alive(run_dir):
        raise UserError(f"{run_dir} is running; stop it first (a run is deleted only when nobody writes it)")
    return Removal(run_dir, run_dir, "run", disk_bytes(run_dir))


def plan_drop_last(run_dir: Path) -> tuple[Removal | None, str | None]:
    """Dropping a finished run's resumable last/ (weights and optimizer moments), keeping best/;
    (None, why) when the run keeps it."""
    info = run_info(run_dir)
    last = run_dir / LAST
    if not last.exists():
        return None, "has no last/"
    if Status.of(info["status"]).needs_last:
        return None, f"is {info['status']}: its last/ is what resumes it"
    if not is_checkpoint(run_dir / BEST):
        return None, "has no best/ checkpoint: its last/ is its only model"
    return Removal(run_dir, last, "last/", disk_bytes(last)), None


def remove(r: Removal) -> None:
    """Carry out a removal, holding the run's writer lock (so no `--resume` starts meanwhile)."""
    import shutil

    lock = WriterLock(r.run)  # refuses, naming the holder, when a training process has started since
    try:
        shutil.rmtree(r.path)
        for link in r.links:
            link.unlink(missing_ok=True)
    finally:
        lock.release()


def human_bytes(n: int) -> str:
    """1234567 -> '1.2 MB' (decimal units, as `du -h --si` and file managers show)."""
    if n < 1000:
        return f"{n} B"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} TB"
