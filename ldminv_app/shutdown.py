"""A clean exit of the dashboard's server: background work leaves torch before Python finalizes.

The dashboard runs torch in daemon threads: the background analysis (:class:`~ldminv_app.jobs.
AnalysisJob`) and the import of torch at start-up. CPython 3.11 ends a daemon thread that wants
the GIL back once interpreter finalization has begun with ``pthread_exit``, which unwinds the
thread's C++ frames; a torch operator (which runs with the GIL released) reaches a ``noexcept``
frame on the way and the C++ runtime aborts the whole process: "terminate called without an
active exception", exit by SIGABRT, whenever ``streamlit run`` is stopped (Ctrl-C, SIGTERM)
while an analysis computes.

The same holds for numpy's C++ code (``np.unique`` inside ``np.quantile``, say) in the
background warm-up. Every such thread is registered here with a way to ask it to stop; at
interpreter exit (``atexit`` handlers run before finalization) each is asked to stop and waited
for, as are the project's other threads (named "ldminv-..."), for at most :data:`WAIT_S` seconds
in all. An analysis stops after its current batch and stays resumable. This module never imports
Streamlit.
"""
from __future__ import annotations

import atexit
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["WAIT_S", "register", "register_thread", "stop_all"]

#: Longest wait (s) at exit for the registered background work, all of it together.
WAIT_S = 60.0

_lock = threading.Lock()
#: (what, stop or None, wait(timeout) -> True once ended)
_tasks: list[tuple[str, Callable[[], None] | None, Callable[[float], bool]]] = []


def register(what: str, *, wait: Callable[[float], bool], stop: Callable[[], None] | None = None) -> None:
    """Stop and wait for a background task at interpreter exit.

    Args:
        what: the task in a few words, for the line printed while waiting.
        wait: ``wait(timeout)`` blocks up to ``timeout`` seconds, True once the task has ended.
        stop: asks the task to end soon (None: it ends by itself, e.g. an import).
    """
    with _lock:
        _tasks[:] = [t for t in _tasks if not t[2](0)]  # forget the tasks that have ended
        _tasks.append((what, stop, wait))


def register_thread(thread: threading.Thread, what: str, *, stop: Callable[[], None] | None = None) -> None:
    """:func:`register` for a plain thread (waited for with ``join``)."""

    def wait(timeout: float) -> bool:
        thread.join(timeout)
        return not thread.is_alive()

    register(what, wait=wait, stop=stop)


def _named_threads() -> list[threading.Thread]:
    """Other running threads of this project (named "ldminv-..."), e.g. an evaluation's prefetch:
    they end by themselves after a few computations."""
    me = threading.current_thread()
    return [t for t in threading.enumerate() if t.name.startswith("ldminv-") and t.is_alive() and t is not me]


def stop_all(timeout: float = WAIT_S, *, quiet_s: float = 1.0) -> list[str]:
    """Ask every registered task to stop, then wait for them and for the other "ldminv-..."
    threads (``timeout`` seconds in all; a line on stderr after ``quiet_s``); returns what is
    still running after that."""
    with _lock:
        tasks = list(_tasks)
    running = [t for t in tasks if not t[2](0)]
    for _, stop, _ in running:
        if stop is not None:
            try:
                stop()
            except Exception:  # noqa: BLE001 - one task's failure must not keep the others running
                pass
    waits = [(what, wait) for what, _, wait in running]
    waits += [(f"the thread {t.name}", lambda timeout, t=t: (t.join(timeout), not t.is_alive())[1])
              for t in _named_threads()]
    start = time.monotonic()
    said = False
    left = []
    for what, wait in waits:
        if not said and not wait(max(0.0, quiet_s - (time.monotonic() - start))):
            names = [w for w, _, _ in running] or [w for w, _ in waits]
            print(f"ldminv: waiting for {', '.join(names)} to stop (at most {timeout:g} s; an analysis stops "
                  "after its current batch and can be resumed)", file=sys.stderr, flush=True)
            said = True
        if not wait(max(0.0, timeout - (time.monotonic() - start))):
            left.append(what)
    if left:
        print(f"ldminv: still running after {timeout:g} s: {', '.join(left)}", file=sys.stderr, flush=True)
    return left


atexit.register(stop_all)
