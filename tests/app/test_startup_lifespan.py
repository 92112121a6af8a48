"""The server's start-up (``ldminv_app.startup.server_lifespan``, the ``st.App`` of app.py).

- ``streamlit run app.py`` finds the ``st.App`` in app.py (Streamlit's own discovery), and a
  session's script run (``__name__ == "__main__"``) draws the pages, not the app object;
- on a first start the lifespan starts the preview job before any session exists; the preview
  lands and the demo job follows; leaving the lifespan (the server stopping) stops that job and
  leaves the demo's folder resumable;
- with LDMINV_RUN set, or with the preview already complete, the lifespan starts nothing.

The first start's runs are computed in this process on a stand-in demo (the fixture's tiny model
and images), as tests/pages/test_app_pages.py does; tests/app/test_server_stop.py stops a real
server (signal, processes).
"""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from ldminv_core.runs import run_status

REPO = Path(__file__).resolve().parents[2]


def test_streamlit_run_finds_the_app_object_in_app_py():
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(REPO / "app.py")
    assert found.is_asgi_app and found.import_string == "app:app"


@pytest.fixture
def stand_in_demo(tiny_uncond_model, tiny_image_dirs, monkeypatch, tmp_path):
    """The demo replaced by the fixture's model and images; the first start's runs in this process."""
    from ldminv_core import demo, first_start

    from ldminv_app import startup

    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", Path(tiny_uncond_model))
    monkeypatch.setattr(demo, "DEMO_MEMBERS_DIR", Path(tiny_image_dirs[0]))
    monkeypatch.setattr(demo, "DEMO_HELDOUT_DIR", Path(tiny_image_dirs[1]))
    monkeypatch.setattr(demo, "DEMO_ANALYZE_DEFAULTS", {"attacks": ("sima", "pia"), "timesteps": "0:110:10",
                                                        "topk": 2, "batch_size": 4, "limit": 4})
    monkeypatch.setattr(startup, "_run", lambda what, out, *, progress, should_stop: first_start.RUNS[what](
        out, progress=progress, should_stop=should_stop))
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LDMINV_RUN", raising=False)
    return tmp_path / "home" / "runs"


def _wait(predicate, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_the_lifespan_starts_the_preview_before_any_session_and_stops_the_demo_on_exit(stand_in_demo):
    from ldminv_app import startup
    from ldminv_app.job_registry import registry

    runs = stand_in_demo
    assert startup.first_start_pending()

    async def serve() -> None:
        async with startup.server_lifespan(None):
            job = registry().for_run(runs / "demo-preview")
            assert job is not None, "no preview job after the server's start-up"
            assert await asyncio.to_thread(_wait, lambda: run_status(runs / "demo-preview") == "complete")
            assert await asyncio.to_thread(_wait, lambda: registry().for_run(runs / "demo") is not None)
            assert not startup.first_start_pending()
        # leaving the lifespan stopped the demo's job (after a batch): its folder is resumable or complete
        demo_job = registry().for_run(runs / "demo")
        assert demo_job.state().status in ("cancelled", "done")
        assert run_status(runs / "demo") in (None, "unfinished", "complete")

    asyncio.run(serve())


@pytest.mark.parametrize("why", ["LDMINV_RUN", "preview complete"])
def test_the_lifespan_starts_nothing_when_no_first_start_is_due(stand_in_demo, monkeypatch, why):
    from ldminv_core import first_start

    from ldminv_app import startup
    from ldminv_app.job_registry import registry

    if why == "LDMINV_RUN":
        monkeypatch.setenv("LDMINV_RUN", str(stand_in_demo / "elsewhere"))
    else:
        first_start.run_demo_preview()
    assert not startup.first_start_pending()
    before = registry().get(f"{startup.PREVIEW_JOB_ID}:{(stand_in_demo / 'demo-preview').resolve()}")

    async def serve() -> None:
        async with startup.server_lifespan(None):
            assert registry().get(f"{startup.PREVIEW_JOB_ID}:{(stand_in_demo / 'demo-preview').resolve()}") is before
            assert registry().for_run(stand_in_demo / "demo") is None

    asyncio.run(serve())
