"""Keeping a long night's processes small: fewer glibc malloc arenas, and freed heap handed back.

A night's main process runs many threads (Prefect's event loop and workers, the shard tasks). glibc gives
busy threads malloc arenas of their own (up to 8 per core), and memory freed in an arena is kept for
reuse, so the resident size of a process that staged a million rows stays near its peak for the rest of
the night. ``limit_arenas`` caps the arenas (as ``MALLOC_ARENA_MAX`` would), ``trim`` returns free heap
pages to the system after a step that allocated a lot. Both are no-ops off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

__all__ = ["limit_arenas", "trim"]

_M_ARENA_MAX = -8  # mallopt parameter number (malloc.h)


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.mallopt  # noqa: B018 - glibc only
        lib.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return lib


def limit_arenas(arenas: int = 2) -> bool:
    """Cap malloc arenas for threads started from now on; True where it took effect (glibc)."""
    lib = _libc()
    return bool(lib is not None and lib.mallopt(_M_ARENA_MAX, arenas) == 1)


def trim() -> bool:
    """Give free heap pages back to the system; True when some were released (glibc)."""
    lib = _libc()
    return bool(lib is not None and lib.malloc_trim(0) == 1)
