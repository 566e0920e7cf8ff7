"""Process-wide heap settings that keep a training run's resident memory near its live tensors.

PyTorch's CPU tensors come from glibc malloc. glibc serves a block of at least
M_MMAP_THRESHOLD bytes with its own mmap, returned to the system on free; smaller blocks come
from the heap and stay with the process after free. By default the threshold is dynamic: every
time an mmap-served block is freed, the threshold rises to that block's size (up to 32 MiB).
After the first training step almost every activation tensor (a few MiB to tens of MiB) is
therefore served from the heap, and as batch shapes change from step to step (length buckets,
three tasks, evaluation batches) the freed blocks do not fit the next request exactly: the heap
keeps growing with freed, fragmented memory that is never given back. A fixed threshold (setting
it turns the dynamic adjustment off) sends every large tensor to mmap, so resident memory follows
the tensors that are alive; the small blocks below it cannot fragment much memory.

Set once by the command-line entry point (`bertmtl ...`, `python -m bertmtl`, torchrun), before
training allocates; importing bertmtl as a library leaves the host process's allocator alone.
The settings change where memory comes from, never a computed value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
M_MMAP_THRESHOLD = -3
# Blocks of at least this size (tensors of a few hundred thousand floats and up) are mmapped.
MMAP_THRESHOLD = 1 << 20
# Give free memory at the top of the heap back once this much has gathered there.
TRIM_THRESHOLD = 4 << 20

_configured: bool | None = None


def configure_allocator() -> bool:
    """Fix glibc's mmap and trim thresholds for this process; True when they were set.

    A no-op (False) where the C library is not glibc (macOS, musl) or mallopt refuses.
    Idempotent: the first call decides.
    """
    global _configured
    if _configured is not None:
        return _configured
    _configured = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    _configured = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _configured
