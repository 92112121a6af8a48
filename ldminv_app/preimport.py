"""The modules the pages need, imported once per server in a background thread.

Two groups, in one thread:

1. :data:`PREIMPORT`, what every page needs (the evaluation layer, the views and their figures):
   started by the server's start-up (:func:`ldminv_app.startup.server_lifespan`) or by the first
   session, whichever comes first, so that no page waits for them; on a first start they overlap
   the preview's own process;
2. :data:`AFTER_FIRST_PAGE`, torch (the geometry and reconstruction views), then diffusers and
   its VAE (3 s: the model summary of the Model & data page, the reconstruction's model load):
   each only once a page has been drawn (:func:`first_page_drawn`, called by app.py after each
   page) and the pages have been quiet for :data:`QUIET_BEFORE_TORCH_S` seconds. Importing torch
   holds the interpreter lock for seconds (its C++ start-up), during which the server sends
   nothing to the browsers: measured on a first start, the preview's first number reached the
   screen 5 s after its page had been computed while torch was imported, against 1.5 s without.
"""
from __future__ import annotations

import gc
import importlib
import threading

from . import shutdown
from .activity import quiet_for

__all__ = ["PREIMPORT", "AFTER_FIRST_PAGE", "start_preimport", "first_page_drawn", "wait_first_page",
           "after_torch", "freeze_survivors"]

PREIMPORT = ("ldminv_core.evaluation", "ldminv_app.frame", "ldminv_app.findings_view", "ldminv_app.cards",
             "ldminv_app.agreement_view", "ldminv_app.exposure_view", "ldminv_app.lazy", "ldminv_app.figures",
             "plotly.graph_objects")
AFTER_FIRST_PAGE = ("ldminv_core.geometry", "diffusers", "diffusers.models.autoencoders.autoencoder_kl")

_lock = threading.Lock()
_thread: threading.Thread | None = None
#: Seconds without a page script running before torch is imported.
QUIET_BEFORE_TORCH_S = 3.0
_page_drawn = threading.Event()
_stopping = threading.Event()
_torch_done = False
_after: list = []


def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the page that needs it reports the error
            pass
    freeze_survivors()


def freeze_survivors() -> None:
    """Collect the garbage, then move every object left out of the collector's sight
    (``gc.freeze``): the modules imported and the models loaded live as long as the server. A full
    collection of the server's objects took 63 ms with the pages' modules, 94 ms with torch and
    202 ms with diffusers, a pause inside whichever page run triggered it. Collecting first keeps
    unreachable objects (arrays in reference cycles) from being frozen with them."""
    gc.collect()
    gc.freeze()


def _work() -> None:
    # at normal priority: a thread the OS has put aside while it holds the interpreter lock would
    # stall the page scripts waiting for that lock (the preview runs in its own process)
    _import_all(PREIMPORT)
    _page_drawn.wait()
    for name in AFTER_FIRST_PAGE:  # each after quiet pages: a page waits for one import at most
        while not _stopping.is_set() and quiet_for() < QUIET_BEFORE_TORCH_S:
            _stopping.wait(0.25)
        if _stopping.is_set():
            return
        _import_all((name,))
    _torch_imported()


def _torch_imported() -> None:
    global _torch_done
    with _lock:
        _torch_done = True
        waiting = list(_after)
        _after.clear()
    for fn in waiting:
        try:
            fn()
        except Exception:  # noqa: BLE001 - a hook's own page reports its errors
            pass


def _torch_in_process() -> bool:
    import sys

    return "torch" in sys.modules


def after_torch(fn) -> None:
    """Call ``fn()`` once this thread has imported :data:`AFTER_FIRST_PAGE` (at once when it has
    already, or when torch was imported by a page): for background work that needs torch and must
    not be the one to import it (the warm-up's model load)."""
    with _lock:
        ready = _torch_done or _torch_in_process()
        if not ready:
            _after.append(fn)
    if ready:
        fn()


def _stop() -> None:
    """The server is stopping: skip what is not imported yet."""
    _stopping.set()
    _page_drawn.set()


def start_preimport() -> threading.Thread:
    """The thread importing :data:`PREIMPORT`, then :data:`AFTER_FIRST_PAGE` once a page has
    been drawn (started on the first call of this process)."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_work, name="ldminv-preimport", daemon=True)
            _thread.start()
            # a stop mid-import must not abort the process; a server stopped before any page was
            # drawn ends the thread without importing torch
            shutdown.register_thread(_thread, "the import of torch", stop=_stop)
        return _thread


def first_page_drawn() -> None:
    """A page has been drawn: the imports it did not need may begin."""
    _page_drawn.set()


def wait_first_page(timeout: float) -> bool:
    """Block until a page has been drawn (True) or ``timeout`` seconds have passed (False)."""
    return _page_drawn.wait(timeout)
