"""The Findings page's shift check in a real browser (Debian's Chromium): ``streamlit run app.py``
on a run whose held-out images are brighter files than the members (tests/pages/test_shift_pages.py's
shifted run). The page must open with the shift check card, show its verdict, the chart of blind
AUROC per feature group and what to do, without an exception box; the card and the whole page are
saved as screenshots under ``test-artifacts/`` (shift_check_card.png, findings_shift.png).

Chromium is the system one (/usr/bin/chromium); a machine without it fails this test.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from benchmarks.bench_dashboard import start_server, wait_idle
from support.apptest import build_model
from support.chromium import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, HEIGHT, WIDTH, free_port, full_screenshot
from support.shift_runs import SHIFT_BRIGHTNESS, analyze

pytestmark = pytest.mark.browser

TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("shift_browser")
    return analyze(base / "shifted", build_model(base / "model"), brightness=SHIFT_BRIGHTNESS)


def test_findings_page_opens_with_the_shift_check_card(shifted_run, tmp_path):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium is required at {CHROMIUM} (Debian package 'chromium'); this test never downloads one.")
    port = free_port()
    proc = start_server(shifted_run, tmp_path / "home", port, tmp_path / "streamlit.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"http://127.0.0.1:{port}/")
                expect(page.get_by_role("heading", name="Findings", exact=True).first).to_be_visible(timeout=TIMEOUT_MS)
                wait_idle(page, timeout_s=120)
                boxes = page.get_by_test_id("stException")
                assert boxes.count() == 0, boxes.first.inner_text()
                card = page.locator(".st-key-shift_check")
                expect(card).to_be_visible()
                expect(card).to_contain_text("Shift check: membership or distribution shift?")
                expect(card).to_contain_text("Distribution shift: the files alone, without the model, tell members")
                expect(card).to_contain_text("What to do.")
                expect(card).to_contain_text("Blind AUROC (all groups)")
                expect(card.locator(".js-plotly-plot")).to_have_count(1)
                expect(card.locator(".js-plotly-plot .xtick")).to_have_count(3)  # meta, pixels, all groups
                # the card comes first: above the attack's headline numbers
                headline = page.get_by_test_id("stMetricLabel").get_by_text("SimA AUROC", exact=True)
                assert card.bounding_box()["y"] < headline.bounding_box()["y"]
                page.wait_for_timeout(500)  # the chart's responsive re-layout
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                card.screenshot(path=str(ARTIFACTS / "shift_check_card.png"))
                full_screenshot(page, ARTIFACTS / "findings_shift.png")
                assert (ARTIFACTS / "shift_check_card.png").stat().st_size > 10_000
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
