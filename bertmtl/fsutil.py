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
import shutil
from contextlib import contextmanager
from pathlib import Path


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
    if target.exists() and _exchange(staging, target):
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


@contextmanager
def staged_dir(target: Path):
    """Yield an empty directory beside `target`; when the block ends, swap it in as `target`.

    The staging directory is fsync'd and exchanged atomically with the old `target` (renamed
    where the kernel cannot exchange); if the block raises, it is removed and `target` is left
    as it was. Staging leftovers of a writer killed mid-write are removed first: incomplete by
    construction, they are never read.
    """
    target = Path(target)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    staging.mkdir(parents=True)
    try:
        yield staging
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()  # an empty placeholder (e.g. a fresh --out) is simply replaced
        replace_dir(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
