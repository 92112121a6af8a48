"""Page activity (:mod:`ldminv_app.activity`) and what waits for it: the warm-up starts no task while
a page script runs, and the server imports torch only after a page has been drawn and the pages
have been quiet a while."""
from __future__ import annotations

import threading
import time

from ldminv_app import activity
from ldminv_app.warm import Warmer


def test_page_running_counts_nested_runs_and_the_quiet_time_starts_at_the_last_end():
    assert not activity.pages_running()
    with activity.page_running():
        assert activity.pages_running() and activity.quiet_for() == 0.0
        with activity.page_running():
            assert activity.pages_running()
        assert activity.pages_running()  # one run still going
    assert not activity.pages_running()
    time.sleep(0.05)
    assert 0.04 <= activity.quiet_for() < 5.0


def test_the_warm_up_starts_no_task_while_a_page_runs():
    ran = threading.Event()
    w = Warmer()
    with activity.page_running():
        w.submit([(("probe",), ran.set)])
        assert not ran.wait(Warmer.QUIET_S + 0.5)  # held back for the whole page run
    assert ran.wait(5.0)  # and run once the pages are quiet
    assert w.idle(5.0)


def test_torch_waits_for_a_drawn_page_and_quiet_pages(monkeypatch):
    from ldminv_app import preimport

    imported: list[tuple[str, ...]] = []
    monkeypatch.setattr(preimport, "_import_all", lambda names: imported.append(tuple(names)))
    monkeypatch.setattr(preimport, "QUIET_BEFORE_TORCH_S", 0.3)
    monkeypatch.setattr(preimport, "_page_drawn", threading.Event())
    monkeypatch.setattr(preimport, "_stopping", threading.Event())
    t = threading.Thread(target=preimport._work, daemon=True)
    with activity.page_running():
        t.start()
        time.sleep(0.3)
        assert imported == [preimport.PREIMPORT]  # the pages' modules at once; torch waits for a page
        preimport.first_page_drawn()
        time.sleep(0.5)
        assert imported == [preimport.PREIMPORT]  # a page is still running
    t.join(5.0)
    assert imported == [preimport.PREIMPORT, *((name,) for name in preimport.AFTER_FIRST_PAGE)]


def test_a_fragment_body_counts_as_a_page_run_and_keeps_its_name():
    seen = []

    @activity.counts_as_page
    def body(x, *, y):
        """doc"""
        seen.append(activity.pages_running())
        return x + y

    assert body(1, y=2) == 3 and seen == [True] and not activity.pages_running()
    assert body.__name__ == "body" and body.__doc__ == "doc"


def test_the_imported_modules_leave_the_collectors_sight_and_garbage_does_not():
    import gc
    import weakref

    from ldminv_app import preimport

    class Node:
        pass

    cycle = Node()
    cycle.me = cycle  # unreachable once dropped: garbage, not to be frozen
    gone = weakref.ref(cycle)
    del cycle
    before = gc.get_freeze_count()
    try:
        preimport._import_all(("json", "no_such_module_for_ldminv"))  # a failed import is skipped
        assert gc.get_freeze_count() > before
        assert gone() is None  # collected before the freeze
    finally:
        gc.unfreeze()
