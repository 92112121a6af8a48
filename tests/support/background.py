"""The dashboard's background threads, stopped between tests.

A page test's server-wide background work (the warm-up's tasks, the page sections computing,
``ldminv_app.warm`` / ``ldminv_app.lazy``) must not run on into the next test: a model loaded there
holds accelerate's process-wide patch of ``register_parameter`` while the next test builds its tiny
models on the main thread. Nor may an analysis a page started: a page test whose app finds no run
starts the first start's preview and the bundled demo's analysis (``ldminv_app.startup``), which
would otherwise go on for a minute on the machine's cores under the tests that follow; it is stopped
as the server stops it (``ldminv_app.shutdown.stop_all``: the run stays resumable).
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
    if "ldminv_app.shutdown" in sys.modules:
        from ldminv_app import shutdown

        left = shutdown.stop_all(timeout, quiet_s=timeout)
        assert not left, f"still running {timeout:g} s after the test: {', '.join(left)}"
