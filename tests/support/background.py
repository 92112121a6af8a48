"""The dashboard's background threads, stopped between tests.

A page test's server-wide background work (the warm-up's tasks, the page sections computing,
``ldminv_app.warm`` / ``ldminv_app.lazy``) must not run on into the next test: a model loaded there
holds accelerate's process-wide patch of ``register_parameter`` while the next test builds its tiny
models on the main thread.
"""
from __future__ import annotations

import sys

__all__ = ["stop_background_work"]


def stop_background_work(timeout: float = 120.0) -> None:
    """Drop the queued background tasks and wait for the running ones (only when the app was
    imported by this test process)."""
    if "ldminv_app.warm" in sys.modules:
        from ldminv_app import warm

        w = warm.warmer()
        w.stop()
        w.idle(timeout)
    if "ldminv_app.lazy" in sys.modules:
        from ldminv_app import lazy

        store = lazy.results()
        store.stop()
        thread = store._thread
        if thread is not None:
            thread.join(timeout)
