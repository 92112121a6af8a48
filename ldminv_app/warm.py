"""The one background prefetcher of the app: computes what the next interaction will ask for.

A single low-priority thread (:class:`Warmer`, shared by the server through :func:`warmer`) runs
(key, callable) tasks: other protocols at the current drop, neighbouring timesteps and drops,
the Dimensions table. Every task only calls the public, memoised methods of a
:class:`~ldminv_core.evaluation.Evaluation` (or another cached function), so when the page asks
for the same part it is a lookup. The compute core itself runs no threads.
"""
from __future__ import annotations

import numbers
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import streamlit as st

from . import shutdown
from .activity import pages_running

if TYPE_CHECKING:
    from ldminv_core.evaluation import Evaluation

__all__ = ["Warmer", "warmer", "lower_thread_priority", "prefetch_drops"]


def lower_thread_priority(niceness: int = 19) -> None:
    """Give the calling (background) thread the lowest CPU priority, so the foreground (the page
    being drawn, the browser on the same machine) goes first. Linux applies ``setpriority`` to
    one thread; elsewhere, or without permission, nothing happens."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


class Warmer:
    """One low-priority background thread computing what the next interaction will ask for
    (other protocols at the current drop, neighbouring timesteps and drops, the Dimensions table),
    so a control change is a lookup. Tasks are (key, callable); a key is done at most once, the
    newest request runs first; errors are left for the foreground call to raise. Tasks submitted
    with a ``group`` replace that group's tasks not started yet (the neighbours of the previous
    slider position are no longer wanted)."""

    #: Seconds without a foreground request before the next task starts (it yields to the pages).
    QUIET_S = 0.3

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._todo: list[tuple[object, Callable[[], object]]] = []
        self._groups: dict[object, object] = {}  # task key -> its group
        self._done: set = set()
        self._thread: threading.Thread | None = None
        self._last_foreground = 0.0

    def foreground(self) -> None:
        """A page is computing: the next task waits until the pages have been quiet a while."""
        self._last_foreground = time.monotonic()

    def _wait_quiet(self) -> None:
        while True:
            if pages_running():  # a page script is running: it has the interpreter lock first
                self._last_foreground = time.monotonic()
            left = self.QUIET_S - (time.monotonic() - self._last_foreground)
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def submit(self, tasks: Iterable[tuple[object, Callable[[], object]]], *, front: bool = True,
               group: object | None = None) -> None:
        """Queue (key, callable) tasks (keys already done or queued are skipped): first in line
        (``front``) or last; ``group``: drop this group's queued tasks first."""
        with self._lock:
            if group is not None:
                dropped = {k for k, _ in self._todo if self._groups.get(k) == group}
                self._todo = [(k, f) for k, f in self._todo if k not in dropped]
                for k in dropped:
                    self._groups.pop(k, None)
            fresh = [(k, f) for k, f in tasks if k not in self._done and all(k != q for q, _ in self._todo)]
            if group is not None:
                self._groups.update({k: group for k, _ in fresh})
            self._todo = fresh + self._todo if front else self._todo + fresh
            if self._todo and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="ldminv-warm", daemon=True)
                self._thread.start()
                # a task still inside numpy's C++ code at interpreter exit aborts the process
                shutdown.register_thread(self._thread, "the background warm-up", stop=self.stop)

    def stop(self) -> None:
        """Drop the tasks not started yet: the thread ends after its current task."""
        with self._lock:
            self._todo = []

    def _loop(self) -> None:
        lower_thread_priority()
        while True:
            self._wait_quiet()
            with self._lock:
                if not self._todo:
                    self._thread = None
                    return
                key, fn = self._todo.pop(0)
                self._done.add(key)
                self._groups.pop(key, None)
            try:
                fn()
            except Exception:  # noqa: BLE001 - the foreground call shows it
                pass

    def idle(self, timeout: float | None = None) -> bool:
        """Wait until every queued task is done (True) or ``timeout`` s passed (False)."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True


@st.cache_resource(show_spinner=False)
def warmer() -> Warmer:
    """The server-wide :class:`Warmer`."""
    return Warmer()


def _drop_parts(ev: Evaluation, drop: float, t_index: int | None) -> None:
    """What a change of the drop to ``drop`` asks the evaluation for (all memoised)."""
    ev.arms(drop)
    ev.findings(drop)
    ev.masked_per_t(drop)
    if t_index is not None:
        ev.drop_curves(t_index, extra=(drop,))


def prefetch_drops(ev: Evaluation, drops: Sequence[float], *, t_index: int | None = None,
                   into: Warmer | None = None) -> None:
    """Compute in the background what a change of the drop to one of ``drops`` needs (the arms,
    findings, per-t masked curve and, with ``t_index``, the drop curves' point at that drop), so
    that the change is a lookup. Returns at once; a newer call for the same evaluation replaces
    the drops not started yet; a drop outside [0, 100) is skipped.

    Args:
        ev: the (cached) evaluation the page reads.
        drops: drop percentages, nearest first.
        t_index: the timestep index of the drop curves, None: no curve point.
        into: the :class:`Warmer` to use (default: the server's :func:`warmer`).
    """
    if not ev.maskable:
        return
    w = warmer() if into is None else into
    ti = None if t_index is None else int(t_index)
    tasks = []
    for d in drops:
        if isinstance(d, bool) or not isinstance(d, numbers.Real) or not 0 <= float(d) < 100:
            continue
        tasks.append((("drop", id(ev), float(d), ti), lambda d=float(d): _drop_parts(ev, d, ti)))
    w.submit(tasks, group=("drops", id(ev)))
