"""Loading the dashboard contacts only its own server (Chromium).

Every page is loaded afresh by its URL while Playwright records each request and WebSocket the
browser opens; every one must go to the server (127.0.0.1 / localhost): no font host, no CDN, no
favicon from elsewhere. A privacy audit tool works offline and tells no third party what it
audits. The favicon is set and drawn by the browser itself (a data: URL).
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect, sync_playwright

from benchmarks import bench_dashboard as bench
from support.chromium import CHROMIUM, CHROMIUM_ARGS, HEIGHT, WIDTH, free_port
from support.fixture_runs import build_fixture_run

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"127.0.0.1", "localhost"}
#: URL path of every page -> its title (the landing page is "/").
PAGES = {"": "Findings", "model_data": "Model & data", "distortion": "Distortion", "dimensions": "Dimensions",
         "masks_roc": "Masks & ROC", "latent_map": "Latent map", "export": "Export",
         "compare": "Compare"}


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory) -> Path:
    return build_fixture_run(tmp_path_factory.getbasetemp() / "ldminv-export-fixture")


def test_every_page_load_contacts_only_the_server(fixture_run, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    proc = bench.start_server(fixture_run, home, port, home / "streamlit.log")
    seen: list[tuple[str, str]] = []  # (page, url)
    icons: dict[str, list[str]] = {}  # page -> the hrefs of its favicon links
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
                current = {"page": ""}
                context.on("request", lambda r: seen.append((current["page"], r.url)))
                page = context.new_page()
                page.set_default_timeout(120_000)
                page.on("websocket", lambda ws: seen.append((current["page"], ws.url)))
                for path, title in PAGES.items():
                    current["page"] = title
                    page.goto(f"http://127.0.0.1:{port}/{path}")
                    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible(timeout=120_000)
                    bench.wait_idle(page, timeout_s=120)
                    page.wait_for_timeout(500)  # late requests (favicon, fonts, images)
                    icons[title] = page.evaluate("() => [...document.querySelectorAll('link[rel~=\"icon\"]')]"
                                                 ".map(l => l.href)")
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    network = [(p, u) for p, u in seen if urlparse(u).scheme in ("http", "https", "ws", "wss")]
    assert {p for p, _ in network} == set(PAGES.values())  # every page was recorded
    elsewhere = sorted({(p, u) for p, u in network if urlparse(u).hostname not in LOCAL_HOSTS})
    assert elsewhere == [], "requests to other hosts:\n" + "\n".join(f"{p}: {u}" for p, u in elsewhere)
    # nothing but the network schemes and in-page data/blob URLs
    assert {urlparse(u).scheme for _, u in seen} <= {"http", "https", "ws", "wss", "data", "blob"}
    # a favicon on every page, drawn by the browser (a data: URL)
    assert all(hrefs and all(h.startswith("data:") for h in hrefs) for hrefs in icons.values()), icons
