"""One thread at a time in ``ast.parse``: a guard against a CPython 3.11/3.12 bug.

Before 3.13, CPython's AST builder keeps its recursion counter in per-interpreter state, not per
thread (python/cpython#106905 and its follow-ups). When two threads build an AST at once and one
is switched out in the middle (a garbage collection running Python code is enough), the other
overwrites the counter and ``ast.parse`` fails with ``SystemError: AST constructor recursion
depth mismatch``.

ldminv's processes build ASTs on several threads without asking for it:

* numpy parses every ``.npy`` header with ``ast.literal_eval`` (the dashboard's warm-up, its
  background sections and the page scripts all open run arrays);
* torch compiles its forward-mode decompositions with ``torch.jit.script`` on the first
  ``torch.func.jvp`` of a process, which reads their source through ``inspect`` and ``ast``;
* Streamlit parses each page script once to add its "magic".

:func:`install` wraps ``ast.parse`` (which ``ast.literal_eval``, ``inspect``, torch and
Streamlit all call by name) in one re-entrant lock. Parsing is short and rare, so the lock
costs nothing measurable; it is installed when :mod:`ldminv_core` is imported and is a no-op
on interpreters that do not have the bug.
"""
from __future__ import annotations

import ast
import functools
import sys
import threading
from typing import Any, Callable

__all__ = ["install", "installed", "AFFECTED"]

#: Interpreters whose AST builder shares its recursion counter between threads.
AFFECTED = sys.version_info < (3, 13)

_LOCK = threading.RLock()
_MARK = "_ldminv_one_thread_at_a_time"


def _guarded(parse: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(parse)
    def parse_one_thread_at_a_time(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return parse(*args, **kwargs)

    setattr(parse_one_thread_at_a_time, _MARK, True)
    return parse_one_thread_at_a_time


def installed() -> bool:
    """Whether ``ast.parse`` is the guarded one."""
    return bool(getattr(ast.parse, _MARK, False))


def install(*, force: bool = False) -> bool:
    """Guard ``ast.parse`` with one lock for the whole process (idempotent).

    Does nothing on an interpreter without the bug unless ``force``. Returns whether the guard
    is in place afterwards.
    """
    if (AFFECTED or force) and not installed():
        ast.parse = _guarded(ast.parse)
    return installed()
