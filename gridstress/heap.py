"""Heap settings for the processes that evaluate blocks on the CPU.

A NumPy block evaluation allocates and frees thousands of temporaries of a
few megabytes each.  glibc serves allocations that large with ``mmap`` and
gives them back on ``free``, so every temporary costs fresh page faults
(evaluating seed-dense's blocks on 2 cores: 0.60 s of system time against
1.93 s of user time; with these settings 0.06-0.10 s, and the blocks take
about 30% less wall time).
:func:`keep_freed_memory` raises glibc's mmap and trim thresholds so that
freed temporaries stay in the heap and are reused; the process's resident
memory then stays near its peak until it exits.

The CLI calls it (a process gridstress owns); a library user's process is
left as it is unless it calls it too.  The workers of a local Dask cluster
get the same thresholds as environment variables
(``gridstress.distributed.WORKER_MALLOC_ENV``); docs/cluster.md gives them
for the workers of a batch job.  Where the C library is not glibc, or
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` are set in the
environment (the user's own choice, or Dask's), nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Allocations below this come from the heap (glibc caps the value at 32 MiB
#: on 64-bit systems; blocks of the default size have 4.5 MB arrays).
MMAP_THRESHOLD_BYTES = 32 * 2**20
#: Free memory at the top of the heap up to this is kept for reuse.
TRIM_THRESHOLD_BYTES = 2**30
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Keep freed block temporaries in the heap (once per process).

    Returns whether the settings are in effect.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    _applied = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )
    return _applied


__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_THRESHOLD_BYTES", "keep_freed_memory"]
