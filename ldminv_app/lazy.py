"""Page sections computed in the background: a section whose numbers are not ready yet shows a
one-line "computing" note at once and fills in by itself when they are, so a control change
never waits for the heaviest parts of a page (on the Findings page: every attack's findings and
baselines, the agreement of the attacks, the exposure list).

A section is a set of jobs, each (key, callable); :func:`section` looks every key up in the
server-wide :class:`Results` store. All ready: the section is drawn from them in this run. Some
missing: they are queued in front of the store's own worker thread (normal priority, unlike the
low-priority prefetcher of :mod:`ldminv_app.warm`: what it computes is wanted on screen now), the
note is shown, and a fragment polls every :data:`POLL_S` seconds; when the jobs are done it reruns
the page, which then draws the section from the store (and polls no more). A job's exception is
kept and raised where the section is drawn (the page's guard shows it).
"""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import streamlit as st

from . import shutdown

__all__ = ["POLL_S", "PENDING_WORDS", "Results", "results", "section", "wait"]

#: Seconds between two looks of a waiting section at the store.
POLL_S = 0.6
#: The note of a section still computing (tests look for it).
PENDING_WORDS = "computing in the background"


class Results:
    """Thread-safe store of the background jobs' results (key -> value or exception), the newest
    ``capacity`` kept, and of the jobs queued but not finished."""

    def __init__(self, capacity: int = 96) -> None:
        self._lock = threading.Lock()
        self._done: OrderedDict[Hashable, tuple[bool, Any]] = OrderedDict()
        self._queued: dict[Hashable, int] = {}
        self._tokens = itertools.count()
        self._todo: list[tuple[Hashable, Callable[[], Any]]] = []
        self._thread: threading.Thread | None = None
        self.capacity = int(capacity)

    def ready(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._done

    def get(self, key: Hashable) -> Any:
        """The job's value (its exception raised); KeyError when it has not finished."""
        with self._lock:
            ok, value = self._done[key]
            self._done.move_to_end(key)
        if not ok:
            raise value
        return value

    def _finish(self, key: Hashable, ok: bool, value: Any) -> None:
        with self._lock:
            self._done[key] = (ok, value)
            self._done.move_to_end(key)
            self._queued.pop(key, None)
            while len(self._done) > self.capacity:
                self._done.popitem(last=False)

    def submit(self, jobs: Sequence[tuple[Hashable, Callable[[], Any]]]) -> None:
        """Queue the jobs not finished nor queued yet, in front of those queued before (the page
        asking now is the one shown)."""
        with self._lock:
            fresh = []
            for key, fn in jobs:
                if key in self._done or key in self._queued:
                    continue
                self._queued[key] = next(self._tokens)
                fresh.append((key, fn))
            self._todo = fresh + self._todo
            if self._todo and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._loop, name="ldminv-sections", daemon=True)
                self._thread.start()
                # a job still inside numpy's C++ code at interpreter exit aborts the process
                shutdown.register_thread(self._thread, "the page sections computing", stop=self.stop)

    def fill(self, key: Hashable, fn: Callable[[], Any]) -> None:
        """Compute ``fn`` for ``key`` in the calling thread unless it is done or queued: the
        warm-up's way in (:mod:`ldminv_app.findings_warm`), so that a section a control change will
        ask for is ready when it does. A page asking for ``key`` meanwhile waits for this result."""
        with self._lock:
            if key in self._done or key in self._queued:
                return
            self._queued[key] = next(self._tokens)
        self._run(key, fn)

    def stop(self) -> None:
        """Drop the jobs not started yet: the thread ends after its current job."""
        with self._lock:
            for key, _ in self._todo:
                self._queued.pop(key, None)
            self._todo = []

    def _loop(self) -> None:
        # normal priority (unlike the prefetcher's): what it computes is shown on the page now
        while True:
            with self._lock:
                if not self._todo:
                    self._thread = None
                    return
                key, fn = self._todo.pop(0)
            self._run(key, fn)

    def _run(self, key: Hashable, fn: Callable[[], Any]) -> None:
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - raised where the section is drawn
            self._finish(key, False, exc)
        else:
            self._finish(key, True, value)

    def pending(self) -> int:
        """How many jobs are queued or running."""
        with self._lock:
            return len(self._queued)


@st.cache_resource(show_spinner=False)
def results() -> Results:
    """The server-wide :class:`Results`."""
    return Results()


def wait(timeout: float = 300.0) -> bool:
    """Block until no job of the store is queued or running (True), or ``timeout`` s (False)."""
    import time

    store = results()
    deadline = time.monotonic() + timeout
    while store.pending():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def section(name: str, jobs: Sequence[tuple[Hashable, Callable[[], Any]]], draw: Callable[[dict], None], *,
            what: str) -> None:
    """Draw ``draw({key: value})`` when every job's result is ready; else queue the missing ones,
    say that ``what`` is being computed and fill in by itself when it is (``name``: the
    fragment's key, unique on the page)."""
    store = results()
    keys = [k for k, _ in jobs]
    if all(store.ready(k) for k in keys):
        draw({k: store.get(k) for k in keys})
        return
    store.submit(jobs)

    def waiting() -> None:
        if all(store.ready(k) for k in keys):
            st.rerun(scope="app")  # drawn by the page itself, which then stops polling
        st.caption(f":material/hourglass_top: {what}: {PENDING_WORDS}; it appears here by itself.")

    st.fragment(waiting, run_every=POLL_S, key=f"lazy_{name}")()
