"""Keep freed memory in the process's heap while decoder products run (glibc only).

The products allocate and free activation-sized tensors (megabytes each) hundreds of times
per sample. glibc's malloc hands such blocks back to the kernel (as separate mappings, or by
trimming the heap), so each new block costs page faults as it is first written: 7-11 % of
the demo decoder's JVP time at 1 thread. Inside :func:`retained_heap`, blocks up to 32 MiB
come from the heap and the heap is not trimmed. On leaving the outermost one, the thresholds
are set to the values glibc's own adjustment would reach (mappings above 32 MiB, trimming
above 64 MiB free) and the heap is trimmed once, so the memory goes back to the system.

A no-op where the C library is not glibc (macOS, musl) or cannot be loaded.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["retained_heap"]

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks up to this size come from the heap inside :func:`retained_heap` (glibc's largest
#: threshold on 64-bit) and after it (the value its dynamic adjustment reaches).
_MMAP_MAX = 32 << 20
#: Free heap kept untrimmed inside :func:`retained_heap`.
_TRIM_INSIDE = 1 << 30
#: ... and after it (glibc's dynamic rule: twice the mapping threshold).
_TRIM_AFTER = 2 * _MMAP_MAX

_lock = threading.Lock()
_depth = 0
_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def _glibc() -> ctypes.CDLL | None:
    """glibc with ``mallopt`` and ``malloc_trim``, or None."""
    global _libc
    if _libc is False:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc = lib if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim") and hasattr(lib, "gnu_get_libc_version") else None
        except OSError:
            _libc = None
    return _libc


@contextmanager
def retained_heap() -> Iterator[None]:
    """Within the block, freed blocks up to 32 MiB stay in the heap for reuse (module docstring).

    Re-entrant and thread-safe: only the outermost block (across threads) changes the settings.
    """
    global _depth
    lib = _glibc()
    if lib is None:
        yield
        return
    with _lock:
        if _depth == 0:
            lib.mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX)
            lib.mallopt(_M_TRIM_THRESHOLD, _TRIM_INSIDE)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                lib.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
                lib.malloc_trim(0)
