"""Whether a page script is running, and since when the pages have been quiet.

app.py wraps every page's run in :func:`page_running`, and the pages' interactive fragments their
bodies (:func:`counts_as_page`); background work that would share the
interpreter lock with a page (the warm-up's tasks, :mod:`ldminv_app.warm`; the server's import of
torch, :mod:`ldminv_app.preimport`) asks :func:`pages_running` / :func:`quiet_for` before it
starts. The periodic fragments (progress, the lazy sections' polls) are not
counted. This module never imports Streamlit.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

__all__ = ["page_running", "counts_as_page", "pages_running", "quiet_for"]

_F = TypeVar("_F", bound=Callable)

_lock = threading.Lock()
_running = 0
_last_end = time.monotonic()


@contextlib.contextmanager
def page_running() -> Iterator[None]:
    """Around a page script's run (app.py)."""
    global _running, _last_end
    with _lock:
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            _last_end = time.monotonic()


def counts_as_page(fn: _F) -> _F:
    """A fragment's body (``st.fragment`` reruns it alone when its control moves), counted as a page
    run while it runs: ``@st.fragment`` above ``@counts_as_page``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with page_running():
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def pages_running() -> bool:
    """True while a page script runs."""
    return _running > 0


def quiet_for() -> float:
    """Seconds since the last page script ended (0 while one runs)."""
    with _lock:
        return 0.0 if _running else time.monotonic() - _last_end
