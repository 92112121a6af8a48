"""ldminv_app.lazy.Results.fill, the warm-up's way into the sections' store: it computes a key
once, in the calling thread, never beside the page's own job for that key, and keeps a job's
exception for the page to raise."""
from __future__ import annotations

import json
import threading

import pytest

from ldminv_app.lazy import Results


def test_fill_computes_once_and_a_later_submit_finds_it_done():
    store, calls = Results(), []
    store.fill("k", lambda: calls.append(1) or 42)
    store.fill("k", lambda: calls.append(2) or 0)
    assert store.ready("k") and store.get("k") == 42 and calls == [1]
    store.submit([("k", lambda: calls.append(3))])
    assert calls == [1] and store.pending() == 0


def test_fill_skips_a_key_the_page_has_queued_and_the_page_gets_its_own_value():
    store, started, release = Results(), threading.Event(), threading.Event()

    def page_job():
        started.set()
        release.wait(10)
        return "page"

    store.submit([("k", page_job)])
    assert started.wait(10)
    store.fill("k", lambda: "warm")  # the page's job is running: nothing computed twice
    release.set()
    for _ in range(200):
        if store.ready("k"):
            break
        threading.Event().wait(0.05)
    assert store.get("k") == "page"


def test_fill_keeps_the_exception_for_the_page():
    store = Results()

    def boom():
        raise ValueError("run.json: bad arrays")

    store.fill("k", boom)
    with pytest.raises(ValueError, match="bad arrays"):
        store.get("k")


def test_the_browser_benchmarks_wait_for_the_apps_pending_line():
    from benchmarks import bench_controls, bench_dashboard
    from ldminv_app import lazy

    assert lazy.PENDING_WORDS in bench_controls._WATCH_JS

    class Page:  # records the in-page test wait_idle runs; an idle page
        scripts: list[str] = []

        def evaluate(self, script):
            self.scripts.append(script)
            return False

        def wait_for_timeout(self, ms):
            pass

    page = Page()
    bench_dashboard.wait_idle(page, quiet_polls=1, poll_ms=0)
    assert page.scripts and json.dumps(lazy.PENDING_WORDS) in page.scripts[0]
