"""The system Chromium the browser tests drive, and what every browser test needs around it.

Chromium is Debian's ``/usr/bin/chromium`` (CI installs it); the tests never download a browser.
``wait_idle`` is the dashboard benchmark's wait (``benchmarks/bench_dashboard.py``) with the
tests' polling; ``full_screenshot`` saves a whole Streamlit page, sidebar included.
"""
from __future__ import annotations

import functools
import socket
from pathlib import Path

from playwright.sync_api import Page

from benchmarks import bench_dashboard

REPO = Path(__file__).resolve().parents[2]
#: Screenshots and downloads of the browser tests (uploaded by CI).
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDTH, HEIGHT = 1400, 900
MAX_SHOT_HEIGHT = 9000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for ``streamlit run``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Wait until the script has finished: the app reports "notRunning", no "Running…" status widget,
#: no stale element and no spinner, for ``quiet_polls`` consecutive polls (the benchmark's check).
wait_idle = functools.partial(bench_dashboard.wait_idle, poll_ms=200, timeout_s=60)


def full_screenshot(page: Page, path: Path) -> None:
    """Screenshot of the whole page: the viewport is stretched to the main area's and the
    sidebar's scroll heights (Streamlit scrolls inside those containers, not the document)."""
    height = page.evaluate(
        """() => Math.max(document.documentElement.scrollHeight,
                          ...['stMain', 'stSidebarContent'].map(id => {
                              const el = document.querySelector(`[data-testid="${id}"]`);
                              return el ? el.scrollHeight : 0; }))"""
    )
    page.set_viewport_size({"width": WIDTH, "height": int(min(max(height, HEIGHT), MAX_SHOT_HEIGHT))})
    page.wait_for_timeout(600)  # let responsive charts re-layout
    wait_idle(page)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
