"""Where a command writes: an output checked against the command's inputs, and one owner at a time.

Every command that writes (train's run directory, pretrain, augment, export) goes through here
before it spends any compute:

- `check_output` refuses an output that equals, contains or sits inside one of the command's
  inputs (outputs are swapped in whole, so `augment --data-dir D --out D` would delete D's task
  files), and an output that is the current directory or one of its parents.
- `OwnerLock` is an exclusive advisory lock (flock) held for as long as the command writes. The
  kernel drops it when the process dies, however it dies, so kill -9 never leaves a stale lock;
  the lock file names the holder's host and pid, for the refusal message and `bertmtl runs`.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

# The lock a training run holds inside its directory (runs.WriterLock).
WRITER_LOCK = ".writer.lock"


class OwnerLock:
    """An exclusive lock on `path` (a lock file), or UserError naming the process that holds it.

    `what` completes the refusal: "<what> is being written by process N on HOST". With `wait`,
    the lock is waited for instead (e.g. parallel processes fetching the same weights: one
    fetches, the others then find them). POSIX systems only (fcntl): README, Set up.
    """

    def __init__(self, path: Path, what: str, wait: bool = False):
        import fcntl

        self.path = Path(path)
        self._fh = None
        if wait:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fh = _open_lock_file(self.path)
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError:
                owner = _owner(self.path)
                fh.close()
                raise UserError(f"{what} is being written by {owner}; wait for it to finish or stop it first "
                                f"(or choose another output)") from None
            # A holder that just released unlinks the file: we may hold a lock on a file nobody
            # else can see. Only the file at the path counts, so try again on the new one.
            try:
                same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fh = fh
                break
            fh.close()
        else:
            raise UserError(f"{what}: could not take its lock file {self.path}")
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        fh.flush()

    @property
    def held(self) -> bool:
        return self._fh is not None and not self._fh.closed

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order: see the inode check above)."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self._fh.close()  # closing drops the lock


def _open_lock_file(path: Path):
    """Open (creating) a lock file, never through a symlink: a planted link would have us
    truncate and overwrite the file it points to."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as e:
        raise UserError(f"{path}: cannot open this lock file ({e.strerror or e}; a symlink or a directory "
                        f"is refused); remove it if no bertmtl process is running") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, a device
        os.close(fd)
        raise UserError(f"{path}: the lock file is not a regular file; remove it if no bertmtl process is running")
    return os.fdopen(fd, "a+", encoding="utf-8")


def lock_owner(path: Path) -> dict:
    """{"host", "pid"} from a lock file; {} when it is missing, empty (written just after the lock
    is taken) or unreadable."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _owner(path: Path) -> str:
    """'process PID on HOST' from a lock file."""
    d = lock_owner(path)
    try:
        return f"process {int(d['pid'])} on {d['host']}"
    except (KeyError, TypeError, ValueError):
        return "another process"


def is_locked(path: Path) -> bool | None:
    """Whether a process holds the lock file `path` now (None where locks cannot be seen here)."""
    try:
        import fcntl
    except ImportError:
        return None
    if not Path(path).is_file():
        return False
    with open(path, "a", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


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
        if _holds_run(parent):
            raise UserError(f"{option} {out}: is inside {parent}, a bertmtl run or checkpoint, which only its own "
                            f"training writes; write the output somewhere else")
    return resolved


def _holds_run(path: Path) -> bool:
    """Whether `path` is a training run (metrics.jsonl, or a .writer.lock: a run still starting) or
    a checkpoint (bertmtl.json)."""
    return any(os.path.lexists(path / name) for name in ("metrics.jsonl", WRITER_LOCK, "bertmtl.json"))


def _runs_inside(path: Path) -> Path | None:
    """A run or checkpoint at `path` or up to two levels below it (a runs root, a run), or None."""
    if not path.is_dir():
        return None
    for cand in (path, *path.glob("*"), *path.glob("*/*")):
        if cand.is_dir() and _holds_run(cand):
            return cand
    return None


def check_output_dir(out: Path, overwrite: bool, inputs: dict[str, str | Path | None], option: str = "--out") -> None:
    """Fail before any work when `out` overlaps an input, cannot be written, or holds files (without --overwrite)."""
    check_output(out, inputs, option)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{option} {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{option} {out}: already holds files; choose another directory or pass --overwrite")
    if found := _runs_inside(out):  # --overwrite replaces the directory whole
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
def owned_output(out: str | Path, overwrite: bool, inputs: dict[str, str | Path | None], option: str = "--out"):
    """Check `out` (check_output_dir) and hold its lock (OUT's parent/.NAME.lock) while the block writes it.

    The lock sits beside the output because the output itself is swapped in whole when done.
    """
    out = Path(out)
    check_output_dir(out, overwrite, inputs, option)
    out = resolve(out, option)  # one lock whatever symlink or relative path names the output
    lock = OwnerLock(out.parent / lock_name(out), f"{option} {out}")
    try:
        check_output_dir(out, overwrite, inputs, option)  # again, now that nobody else can write it
        yield out
    finally:
        lock.release()
