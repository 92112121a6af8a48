"""geometry.heap.retained_heap: freed blocks stay in the heap inside, go back to the system after.

Observed through glibc's own accounting (``mallinfo2``) in a fresh interpreter, so the test
process's allocator settings are not touched.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from ldminv_core.geometry import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="glibc's malloc settings only (a no-op elsewhere)")

SCRIPT = textwrap.dedent(
    """
    import ctypes, json
    import numpy as np
    from ldminv_core.geometry.heap import retained_heap, _glibc

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    lib = _glibc()
    lib.mallinfo2.restype = Info
    MB = 1 << 20

    def block(nbytes):
        a = np.ones(nbytes // 8)  # written, so its pages are touched
        info = lib.mallinfo2()
        return info.hblkhd, info.arena

    out = {}
    out["outside_mapped"], _ = block(8 * MB)  # glibc's default: a block this size is its own mapping
    with retained_heap():
        with retained_heap():  # re-entrant: the inner exit changes nothing
            mapped, arena = block(8 * MB)
        out["inside_mapped"] = mapped
        # freed, the 8 MiB stays in the heap (not trimmed) while inside
        out["inside_free_kept"] = lib.mallinfo2().fordblks
    out["after_free"] = lib.mallinfo2().fordblks
    print(json.dumps(out))
    """
)


def test_blocks_come_from_the_heap_inside_and_the_heap_is_trimmed_after():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    mb = 1 << 20
    assert out["outside_mapped"] >= 8 * mb  # the control: outside, the block is a mapping
    assert out["inside_mapped"] < 8 * mb  # inside, it comes from the heap
    assert out["inside_free_kept"] >= 8 * mb  # freed, it is kept for the next block
    assert out["after_free"] < 8 * mb  # after the outermost exit, malloc_trim gave it back


def test_nested_blocks_in_threads_leave_the_depth_at_zero():
    import threading

    def work():
        for _ in range(50):
            with heap.retained_heap():
                with heap.retained_heap():
                    pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert heap._depth == 0
