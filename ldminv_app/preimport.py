"""The modules every page needs, imported once per server in a background thread.

The evaluation layer, the views and their figures, then torch (the geometry and reconstruction
views): started by the server's start-up (:func:`ldminv_app.startup.server_lifespan`) or by the
first session, whichever comes first, so that no page waits for them. On a first start they
overlap the preview's own process.
"""
from __future__ import annotations

import importlib
import threading

from . import shutdown

__all__ = ["PREIMPORT", "start_preimport"]

PREIMPORT = ("ldminv_core.evaluation", "ldminv_app.frame", "ldminv_app.findings_view", "ldminv_app.cards",
             "ldminv_app.agreement_view", "ldminv_app.exposure_view", "ldminv_app.lazy", "ldminv_app.figures",
             "plotly.graph_objects",
             "ldminv_core.geometry")

_lock = threading.Lock()
_thread: threading.Thread | None = None


def start_preimport() -> threading.Thread:
    """The thread importing :data:`PREIMPORT` (started on the first call of this process)."""
    global _thread
    with _lock:
        if _thread is not None:
            return _thread

        def work() -> None:
            # at normal priority: a thread the OS has put aside while it holds the interpreter lock
            # would stall the page scripts waiting for that lock (the preview runs in its own process)
            for name in PREIMPORT:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - the page that needs it reports the error
                    pass

        _thread = threading.Thread(target=work, name="ldminv-preimport", daemon=True)
        _thread.start()
        shutdown.register_thread(_thread, "the import of torch")  # a stop mid-import must not abort the process
        return _thread
