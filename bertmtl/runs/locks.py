"""One owner at a time: an exclusive advisory lock (flock) held for as long as a process writes.

The kernel drops the lock when the process dies, however it dies, so kill -9 never leaves a stale
lock; the lock file names the holder's host and pid, for refusals and `bertmtl runs`. POSIX only
(docs/getting-started.md; the CLI refuses other systems at start).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import threading
from pathlib import Path

from ..errors import UserError


class OwnerLock:
    """An exclusive lock on `path` (a lock file), or UserError naming the process that holds it.

    `what` completes the refusal: "<what> is being written by process N on HOST". With `wait`,
    the lock is waited for instead (e.g. parallel processes fetching the same weights: one
    fetches, the others then find them). POSIX systems only (fcntl): docs/getting-started.md.
    """

    def __init__(self, path: Path, what: str, wait: bool = False):
        self.path = Path(path)
        self._fh = None
        try:
            with _signals_deferred(wait):  # taken whole, then a signal that came meanwhile is handled
                self._take(what, wait)
        except BaseException:  # that signal's KeyboardInterrupt, or a refusal: no lock file left behind
            self.release()
            raise

    def _take(self, what: str, wait: bool) -> None:
        import fcntl

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
            with _signals_deferred():
                self.path.unlink(missing_ok=True)
                self._fh.close()  # closing drops the lock


@contextlib.contextmanager
def _signals_deferred(waiting: bool = False):
    """SIGINT and SIGTERM held back until the block ends (then handled as they would have been), so
    that a Ctrl-C raised as KeyboardInterrupt cannot fall between creating a lock file and owning it,
    or between removing it and letting go. Not while waiting for another holder (that may take long),
    nor off the main thread, where Python runs no handlers."""
    import signal

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    # (None: a handler set outside Python, which Python could not put back)
    if waiting or threading.current_thread() is not threading.main_thread() or None in before.values():
        yield
        return
    pending: list[int] = []
    for s in before:
        signal.signal(s, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for signum in pending[:1]:  # the first: its handler (or default action) now
            handler = before[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


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
