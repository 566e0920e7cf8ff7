"""Run directories: naming a new one, finding the latest under checkpoints/, a run's best/."""

from __future__ import annotations

import time
from pathlib import Path

from .errors import UserError

RUNS_ROOT = Path("checkpoints")


def new_run_dir(root: Path = RUNS_ROOT) -> Path:
    """checkpoints/YYYYmmdd-HHMMSS (with a suffix if that exists)."""
    base = root / time.strftime("%Y%m%d-%H%M%S")
    cand, n = base, 1
    while cand.exists():
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    return cand


def latest_run(root: Path = RUNS_ROOT) -> Path | None:
    """The most recently modified run directory (one with metrics.jsonl) under `root`."""
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if p.is_dir() and (p / "metrics.jsonl").is_file()]
    return max(runs, key=lambda p: (p / "metrics.jsonl").stat().st_mtime) if runs else None


def resolve_checkpoint(path: str | Path | None, root: Path = RUNS_ROOT) -> Path:
    """A checkpoint directory from an option: itself, a run's best/ (or last/), or the latest run's."""
    if path is None:
        run = latest_run(root)
        if run is None:
            raise UserError(f"no trained model found under {root}/; train one first with `bertmtl train` "
                            f"(or pass --checkpoint PATH)")
        path = run
    path = Path(path)
    if (path / "bertmtl.json").is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / "bertmtl.json").is_file():
            return path / sub
    if not path.exists():
        raise UserError(f"{path}: no such checkpoint")
    raise UserError(f"{path}: not a bertmtl checkpoint or run directory (no bertmtl.json in it, best/ or last/)")
