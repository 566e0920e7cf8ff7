"""Durable file and directory writes: fsync'd files, and directories built beside their target and swapped in whole.

Checkpoints, `bertmtl pretrain` and `bertmtl augment` outputs are written through `staged_dir`,
so a reader (or a run resumed after a crash) sees the complete old directory or the complete
new one, never a mix.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


class WriteError(UserError):
    """An output could not be written (disk full, permission lost); the previous version is intact."""


def check_writable(directory: Path, need_bytes: int = 0, what: str = "") -> None:
    """Fail before any work when `directory` cannot be created and written, or has less than
    `need_bytes` free (`what` says what needs them). The probe file is removed whatever happens."""
    directory = Path(directory)
    probe = directory / f".write-test-{os.getpid()}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
    except OSError as e:
        raise UserError(f"{directory}: cannot write there ({e.strerror or e})") from None
    finally:
        probe.unlink(missing_ok=True)
    free = shutil.disk_usage(directory).free
    if free < need_bytes:
        raise UserError(f"{directory}: {free / 2**20:.0f} MiB free, but about {need_bytes / 2**20:.0f} MiB are "
                        f"needed for {what or 'the output'}; free some space or choose another directory")


# -- crash points ---------------------------------------------------------------------------

CRASH_ENV = "BERTMTL_CRASH_AT"
_crash_hits: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Fault injection for the crash tests: with BERTMTL_CRASH_AT=NAME[:N] set, the Nth time this
    process reaches point NAME it kills itself with SIGKILL (no handler, no cleanup: kill -9).

    The points sit where a crash is hardest on the files: inside a step, an evaluation, the
    writing and the swap of last/ and best/, between the log and the checkpoints. Unset, this is
    one dictionary lookup.
    """
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.rpartition(":")
    if not nth.isdigit():  # no count: the first time
        point, nth = spec, "1"
    if point != name:
        return
    _crash_hits[name] = _crash_hits.get(name, 0) + 1
    if _crash_hits[name] >= int(nth):
        _die()


def _die() -> None:
    """kill -9 of this process (a test that crashes a run in-process replaces it with a raise)."""
    os.kill(os.getpid(), signal.SIGKILL)


# -- library write errors ---------------------------------------------------------------------

_OS_ERROR = re.compile(r"os error (\d+)")


@contextmanager
def os_errors(path: Path):
    """Turn a library's failed write into the OSError it is.

    safetensors and tokenizers (Rust) report a full disk or a missing permission as their own
    exception types (SafetensorError, Exception) with "(os error N)" in the message; callers
    then handle one type, OSError, with its errno.
    """
    try:
        yield
    except OSError:
        raise
    except Exception as e:
        m = _OS_ERROR.search(str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), str(path)) from e


def save_safetensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    """Write tensors as a safetensors file and fsync it; a failed write raises OSError.

    safetensors creates its files with mode 0600; ours get the mode of every other file we write
    (0666 less the umask), so an export or checkpoint is readable as a whole or not at all.
    """
    from safetensors.torch import save_file

    with os_errors(path):
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path),
                  metadata={"format": "pt", **(metadata or {})})
    os.chmod(path, 0o666 & ~_umask())
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable read is a set and reset
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(staging: Path, target: Path) -> None:
    """Make `staging` become `target` so that readers always see a complete old or new one."""
    _fsync_dir(staging)
    crash_point(f"staged:{target.name}")
    if target.exists() and _exchange(staging, target):
        crash_point(f"swapped:{target.name}")
        shutil.rmtree(staging, ignore_errors=True)  # staging now holds the previous version
    else:
        old = target.with_name(target.name + ".old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)  # recover_dir() restores it if we die right here
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)


def recover_dir(target: Path) -> None:
    """Undo an interrupted non-atomic replace (only on systems without renameat2)."""
    old = target.with_name(target.name + ".old")
    if not target.exists() and old.is_dir():
        os.replace(old, target)


def write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_json(path: Path, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path, missing: str, damaged: str = "not valid JSON") -> dict:
    """The JSON object in `path`, or a UserError naming the file: `missing` says why a file that is
    not there matters, `damaged` what one that does not parse is."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: {missing}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: {damaged} ({e})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path}: expected a JSON object")
    return d


def _pid_alive(pid: str) -> bool:
    """Whether process `pid` (of this machine) exists; a name that is no pid counts as dead."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return int(pid) != os.getpid()  # our own leftovers are stale by definition


@contextmanager
def staged_dir(target: Path):
    """Yield an empty directory beside `target`; when the block ends, swap it in as `target`.

    The staging directory is fsync'd and exchanged atomically with the old `target` (renamed
    where the kernel cannot exchange); if the block raises, it is removed and `target` is left
    as it was. Staging leftovers of writers killed mid-write are removed first: incomplete by
    construction, they are never read. (Those of a live writer are left alone; the output's
    owner lock, runs/locks.py, keeps a second writer away in the first place.)
    """
    target = Path(target).absolute()  # `--out .` has no name to put a staging directory beside
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        staging.mkdir(parents=True)
        yield staging
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # an empty placeholder (e.g. a fresh --out) is simply replaced
        replace_dir(staging, target)
    except OSError as e:  # a full disk, a lost permission: say so; the old target is untouched
        shutil.rmtree(staging, ignore_errors=True)
        raise WriteError(f"could not write {target} ({e.strerror or e}); what was there before is intact") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
