"""Where a command writes: an output checked against the command's inputs, and one owner at a time.

Every command that writes (train's run directory, pretrain, augment, export, ablate) goes through
here before it spends any compute:

- `check_output` refuses an output that equals, contains or sits inside one of the command's
  inputs (outputs are swapped in whole, so `augment --data-dir D --out D` would delete D's task
  files), an output that is the current directory or one of its parents, and one inside a run.
- `owned_output` holds the output's lock (locks.OwnerLock) while the command writes it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError
from .locks import OwnerLock
from .rundir import holds_run, is_derived


def resolve(path: str | Path, option: str) -> Path:
    """The absolute path with symlinks resolved; a symlink loop is the user's error, not a traceback."""
    try:
        return Path(path).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # RuntimeError: "Symlink loop from ..." (Python < 3.13)
        raise UserError(f"{option} {path}: {e}") from None


def _overlap(out: Path, inp: Path) -> str | None:
    """How `out` overlaps input `inp` (both resolved), or None."""
    if out == inp:
        return "is"
    if out in inp.parents:
        return "contains"
    if inp in out.parents:
        return "is inside"
    return None


def check_output(out: str | Path, inputs: dict[str, str | Path | None], option: str = "--out") -> Path:
    """`out`, resolved, after refusing one that overlaps an input or holds the current directory.

    `inputs` maps a description ("--data-dir", "the sst train file") to a path it reads; None and
    paths that do not exist are skipped (a built-in encoder name is not a path).
    """
    if str(out).strip() == "":
        raise UserError(f"{option}: empty path")
    resolved = resolve(out, option)
    link = Path(out).expanduser()
    if link.is_symlink() and not link.exists() and not resolved.parent.is_dir():
        # A link to where the output is to be made is fine; one into a directory that does not exist
        # would otherwise fail on the lock file beside its target, a file the user never named.
        raise UserError(f"{option} {out}: is a symbolic link to {os.readlink(link)}, in a directory that does not "
                        f"exist ({resolved.parent}); create it, or give another directory")
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise UserError(f"{option} {out}: is the current directory or holds it; the output is replaced whole, "
                        f"so give it a directory of its own (e.g. {option} {Path(out) / 'output'})")
    for what, path in inputs.items():
        if path is None or not Path(path).exists():
            continue
        how = _overlap(resolved, resolve(path, what))
        if how:
            raise UserError(f"{option} {out}: {how} {what} ({path}), which this command reads; "
                            f"write the output somewhere else")
    for parent in resolved.parents:  # a run swaps its best/ and last/ whole: anything inside them is lost
        if holds_run(parent):
            raise UserError(f"{option} {out}: is inside {parent}, a bertmtl run or checkpoint, which only its own "
                            f"training writes; write the output somewhere else")
    return resolved


def _runs_inside(path: Path) -> Path | None:
    """A run or checkpoint at `path` or up to two levels below it (a runs root, a run), or None."""
    if not path.is_dir():
        return None
    for cand in (path, *path.glob("*"), *path.glob("*/*")):
        if cand.is_dir() and holds_run(cand):
            return cand
    return None


def check_output_dir(out: Path, overwrite: bool, inputs: dict[str, str | Path | None], option: str = "--out",
                     derived: bool = False) -> None:
    """Fail before any work when `out` overlaps an input, cannot be written, or holds files (without --overwrite).
    With `derived`, --overwrite may replace an ensemble or soup (`out` itself: made from other checkpoints,
    and made again from them at any time)."""
    check_output(out, inputs, option)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{option} {out}: already holds files; choose another directory or pass --overwrite")
    if (found := _runs_inside(out)) and not (derived and found == out and is_derived(out)):  # replaced whole
        raise UserError(f"{option} {out}: holds the bertmtl run or checkpoint {found}, which --overwrite would "
                        f"delete; choose another directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{option} {out}: cannot create its parent ({e.strerror or e})") from None
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"{option} {out}: cannot write in {out.parent}")


def lock_name(out: Path) -> str:
    return f".{Path(out).name}.lock"


@contextmanager
def owned_output(out: str | Path, overwrite: bool, inputs: dict[str, str | Path | None], option: str = "--out",
                 derived: bool = False):
    """Check `out` (check_output_dir) and hold its lock (OUT's parent/.NAME.lock) while the block writes it.

    The lock sits beside the output because the output itself is swapped in whole when done.
    """
    out = Path(out)
    check_output_dir(out, overwrite, inputs, option, derived)
    out = resolve(out, option)  # one lock whatever symlink or relative path names the output
    lock = None
    try:  # (the lock taken inside: a signal just after it is taken still releases it)
        lock = OwnerLock(out.parent / lock_name(out), f"{option} {out}")
        check_output_dir(out, overwrite, inputs, option, derived)  # again, now that nobody else can write it
        yield out
    finally:
        if lock is not None:
            lock.release()
