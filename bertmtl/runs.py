"""Run directories: the runs root, naming a new run, finding the latest, a run's best/, and what
`bertmtl runs` shows about each run (read from metrics.jsonl and summary.json, no torch).

Status of a run:
  finished / stopped / early-stopped / nonfinite   its end record (and summary.json) says so;
  running    no end record, and a training process holds RUN/.writer.lock (an advisory lock the
             kernel drops when the process dies, however it dies; a run that ends, even with an
             error, removes it); where locks cannot be seen (no fcntl, or a lock file naming
             another host: a shared disk), metrics.jsonl written in the last RECENT_S seconds;
  crashed    no end record and nobody writing: killed, or an error other than a clean stop.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .outputs import WRITER_LOCK, OwnerLock, is_locked, lock_owner
from .train_config import upgrade_config

RUNS_ROOT = Path("checkpoints")
RUNS_ENV = "BERTMTL_RUNS"
# A run logs at least every --log-every steps and fsyncs every evaluation; silence this long
# on a run whose lock we cannot check means its writer is gone.
RECENT_S = 600


def encoder_of(config: dict) -> str:
    """The encoder a run's configuration names (older runs' "pretrained", where None meant the default)."""
    return upgrade_config(config).get("encoder") or "minilm"


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
    return [p for p in root.iterdir() if p.is_dir() and (p / "metrics.jsonl").is_file()]


def latest_run(root: Path | None = None) -> Path | None:
    """The most recently modified run directory under the runs root."""
    runs = run_dirs(root)
    return max(runs, key=lambda p: (p / "metrics.jsonl").stat().st_mtime) if runs else None


@dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint a command loads, and a note when it is not what one would assume (a run's
    last/, never evaluated on dev, instead of its best/)."""

    path: Path
    note: str | None = None


def _is_ckpt(path: Path) -> bool:
    return (path / "bertmtl.json").is_file()


def choose_checkpoint(path: str | Path | None, root: Path | None = None) -> CheckpointChoice:
    """A checkpoint from an option: itself, a run's best/ (else its last/, with a note), or, with
    no option, the best/ of the most recent run that has one (else the latest run's last/, noted).

    A stopped or still-early run's last/ was never scored on dev, so it answers only when no run
    under the root has a best/ checkpoint.
    """
    if path is None:
        runs = sorted(run_dirs(root), key=lambda p: (p / "metrics.jsonl").stat().st_mtime, reverse=True)
        if not runs:
            raise UserError(f"no trained model found under {runs_root(root)}/; train one first with `bertmtl train`, "
                            f"or name a checkpoint or run directory (runs elsewhere: --runs-dir DIR or $BERTMTL_RUNS)")
        best = next((r for r in runs if _is_ckpt(r / "best")), None)
        if best is not None:
            return CheckpointChoice(best / "best")
        last = next((r for r in runs if _is_ckpt(r / "last")), None)
        if last is None:
            raise UserError(f"no run under {runs_root(root)}/ has saved a checkpoint yet (best/ or last/); wait for "
                            f"its first evaluation, or name a checkpoint directory")
        return CheckpointChoice(last / "last", f"no run under {runs_root(root)}/ has a best/ checkpoint (none was "
                                               f"evaluated on dev yet): using {last / 'last'}")
    path = Path(path)
    if _is_ckpt(path):
        return CheckpointChoice(path)
    if _is_ckpt(path / "best"):
        return CheckpointChoice(path / "best")
    if _is_ckpt(path / "last"):
        return CheckpointChoice(path / "last", f"{path} has no best/ checkpoint (it was not evaluated on dev yet): "
                                               f"using {path / 'last'}")
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    raise UserError(f"{path}: not a bertmtl checkpoint or run directory (no bertmtl.json in it, best/ or last/)")


def resolve_checkpoint(path: str | Path | None, root: Path | None = None) -> Path:
    """The directory `choose_checkpoint` picks."""
    return choose_checkpoint(path, root).path


def find_run(name: str | Path, root: Path | None = None) -> Path:
    """A run directory given as a path or as a name under the runs root."""
    for cand in (Path(name), runs_root(root) / str(name)):
        if (cand / "metrics.jsonl").is_file():
            return cand
    raise UserError(f"{name}: no run there or under {runs_root(root)}/ (a run directory has metrics.jsonl)")


# -- the writer lock ------------------------------------------------------------------------

class WriterLock(OwnerLock):
    """RUN/.writer.lock, held by the process that trains the run from before its first write to its end.

    A second `bertmtl train` on the same run (a shared --out, a --resume of a run still training)
    is refused with the holder's pid and host.
    """

    def __init__(self, run_dir: Path):
        super().__init__(Path(run_dir) / WRITER_LOCK, f"run {run_dir}")


def writer_alive(run_dir: Path) -> bool:
    """Whether a process is training the run now (see the module docstring for how it is told)."""
    path = Path(run_dir) / WRITER_LOCK
    log = Path(run_dir) / "metrics.jsonl"
    recent = log.is_file() and time.time() - log.stat().st_mtime < RECENT_S
    if lock_owner(path).get("host") not in (None, socket.gethostname()):
        return recent  # another machine's lock is invisible here
    # No lock file (released: a clean end or an error) is no writer; without fcntl, the log's age.
    locked = is_locked(path)
    return recent if locked is None else locked


# -- what `bertmtl runs` shows ----------------------------------------------------------------

# Keys of an eval record that are not dev metrics.
_EVAL_META = {"type", "split", "step", "epoch", "best", "best_overall", "time"}


def run_info(run_dir: Path) -> dict:
    """A run's name, start time, progress, status, encoder, configuration and best dev metrics.

    `best` holds the dev metrics of the evaluation with the best overall score: those of RUN/best.
    """
    from .metrics_log import read_records

    run_dir = Path(run_dir)
    records, _ = read_records(run_dir / "metrics.jsonl")
    starts = [r for r in records if r.get("type") in ("start", "resume")]
    evals = [r for r in records if r.get("type") == "eval"]
    config = upgrade_config(starts[-1].get("config", {})) if starts else {}
    last_start = max((i for i, r in enumerate(records) if r.get("type") in ("start", "resume")), default=-1)
    end = next((r for r in reversed(records[last_start + 1:]) if r.get("type") == "end"), None)
    summary = run_dir / "summary.json"
    if end is not None:
        status = end.get("status", "finished")
    elif summary.is_file() and summary.stat().st_mtime >= (run_dir / "metrics.jsonl").stat().st_mtime:
        status = _read_status(summary)  # written right after the end record, which was lost
    else:
        status = "running" if writer_alive(run_dir) else "crashed"
    started = next((r["time"] for r in records if isinstance(r.get("time"), (int, float))), None)
    if started is None:
        started = (run_dir / "metrics.jsonl").stat().st_mtime if not records else None
    # Evaluations without an overall score (None: a metric undefined because of the model), and
    # NaN ones logged by older versions, never count as best.
    scored = [e for e in evals if isinstance(e.get("overall"), (int, float)) and math.isfinite(e["overall"])]
    best = max(scored, key=lambda e: e["overall"]) if scored else None
    steps = max((r.get("step", 0) for r in records if isinstance(r.get("step"), int)), default=0)
    return {
        "name": run_dir.name,
        "path": str(run_dir),
        "started": started,
        "status": status,
        "step": steps,
        "total_steps": starts[-1].get("total_steps") if starts else None,
        "encoder": encoder_of(config),
        "tasks": config.get("tasks"),
        "best_step": best["step"] if best else None,
        "best": {k: v for k, v in best.items() if k not in _EVAL_META} if best else {},
        "config": config,
    }


def _read_status(summary: Path) -> str:
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("status", "finished")
    except (OSError, ValueError, AttributeError):
        return "crashed"


def list_runs(root: Path | None = None) -> list[dict]:
    """run_info of every run under the runs root, oldest first."""
    infos = [run_info(p) for p in run_dirs(root)]
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

# Runs whose last/ nobody needs: they are done, and best/ holds what they are for.
DONE = ("finished", "early-stopped")


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
    """A directory a clean-up removes, what it is, and the space that frees."""

    run: Path
    path: Path
    what: str  # "run" or "last/"
    bytes: int


def plan_delete(run_dir: Path) -> Removal:
    """Deleting a whole run (UserError while a process trains it)."""
    if writer_alive(run_dir):
        raise UserError(f"{run_dir} is running; stop it first (a run is deleted only when nobody writes it)")
    return Removal(run_dir, run_dir, "run", disk_bytes(run_dir))


def plan_drop_last(run_dir: Path) -> tuple[Removal | None, str | None]:
    """Dropping a finished run's resumable last/ (weights and optimizer moments), keeping best/;
    (None, why) when the run keeps it."""
    info = run_info(run_dir)
    last = run_dir / "last"
    if not last.exists():
        return None, "has no last/"
    if info["status"] not in DONE:
        return None, f"is {info['status']}: its last/ is what resumes it"
    if not (run_dir / "best" / "bertmtl.json").is_file():
        return None, "has no best/ checkpoint: its last/ is its only model"
    return Removal(run_dir, last, "last/", disk_bytes(last)), None


def remove(r: Removal) -> None:
    """Carry out a removal, holding the run's writer lock (so no `--resume` starts meanwhile)."""
    import shutil

    lock = WriterLock(r.run)  # refuses, naming the holder, when a training process has started since
    try:
        shutil.rmtree(r.path)
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
