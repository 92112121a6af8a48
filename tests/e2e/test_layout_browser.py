"""Layout in a real browser (Debian's Chromium): long paths in the sidebar wrap only after a path
separator, and plotly's toolbar, shown while the pointer is over a chart, never covers the chart's
title (the Distortion page's quartile chart sits in a half-width column with a long title).

The server is ``streamlit run app.py`` on 127.0.0.1 (a free port) with LDMINV_RUN pointing at a
synthetic run whose recorded model and image folders have long paths. Chromium is the system one
(/usr/bin/chromium); a machine without it fails this test.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from benchmarks.bench_dashboard import start_server, wait_idle
from support.chromium import CHROMIUM, CHROMIUM_ARGS, free_port
from synthetic_runs import write_run

pytestmark = pytest.mark.browser

LONG_PATHS = {
    "model": "/home/researcher/models/stable-diffusion/checkpoints/sd15-pokemon-finetune-lora-r16-step-12000",
    "members": "/home/researcher/datasets/pokemon-blip-captions/train-split-members-833-images",
    "heldout": "/home/researcher/datasets/pokemon-blip-captions/heldout-split-never-seen-833-images",
}
SEPARATORS = "/\\-_."

# the pairs of characters (last of a line, first of the next) where a code element wraps
_LINE_BREAKS_JS = """
(el) => {
    const chars = [];
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let node;
    while ((node = walker.nextNode())) {
        for (let i = 0; i < node.length; i++) {
            const r = document.createRange();
            r.setStart(node, i);
            r.setEnd(node, i + 1);
            const rect = r.getClientRects()[0];
            if (rect) chars.push([node.data[i], rect.top]);
        }
    }
    const breaks = [];
    for (let i = 1; i < chars.length; i++) {
        if (chars[i][1] > chars[i - 1][1] + 2) breaks.push(chars[i - 1][0] + chars[i][0]);
    }
    return breaks;
}
"""


@pytest.fixture(scope="module")
def long_path_run(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    n, shape = 80, (2, 4, 4)
    labels = np.r_[np.ones(40, dtype=np.int8), np.zeros(40, dtype=np.int8)]
    terms = rng.gamma(2.0, 1.0, size=(n, 3, *shape)).astype(np.float32)
    terms[labels == 1] *= 0.8
    folder = tmp_path_factory.mktemp("layout") / "runs" / "audit-sd15-pokemon-finetune-lora-r16-members-vs-heldout"
    run = write_run(folder, terms=terms, influence=rng.normal(size=(n, *shape)).astype(np.float32),
                    log_volume=rng.normal(size=n), labels=labels, timesteps=[0, 10, 20])
    settings = json.loads((Path(run.path) / "run.json").read_text())
    settings.update(LONG_PATHS)
    (Path(run.path) / "run.json").write_text(json.dumps(settings))
    return Path(run.path)


@pytest.fixture(scope="module")
def page(long_path_run, tmp_path_factory):
    """A Chromium page on a ``streamlit run app.py`` subprocess showing ``long_path_run``."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium is required at {CHROMIUM} (Debian package 'chromium'); this test never downloads one.")
    home = tmp_path_factory.mktemp("layout-home")
    port = free_port()
    try:
        proc = start_server(long_path_run, home, port, home / "streamlit.log")
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                pg = browser.new_page(viewport={"width": 1400, "height": 900})
                pg.set_default_timeout(90_000)
                pg.goto(f"http://127.0.0.1:{port}/")
                pg.get_by_test_id("stSidebar").get_by_text("held-out:").wait_for()
                wait_idle(pg)
                yield pg
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def test_sidebar_paths_wrap_after_separators_and_keep_the_full_path(page):
    codes = page.get_by_test_id("stSidebar").locator("code[title]")
    assert codes.count() == 3
    assert sorted(codes.nth(i).get_attribute("title") for i in range(3)) == sorted(LONG_PATHS.values())
    wrapped = 0
    for i in range(3):
        code = codes.nth(i)
        full = code.get_attribute("title")
        shown = code.inner_text().replace("\n", "")
        assert shown.startswith("…/") and full.endswith(shown[2:])  # the end of the path, shortened
        breaks = code.evaluate(_LINE_BREAKS_JS)
        wrapped += len(breaks)
        assert all(pair[0] in SEPARATORS for pair in breaks), (full, breaks)  # never inside a name
    assert wrapped >= 3  # the sidebar is narrower than these paths: they did wrap


def test_plotly_toolbar_does_not_cover_a_chart_title(page):
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Distortion", exact=True).click()
    page.get_by_role("heading", name="Distortion", exact=True).first.wait_for()
    wait_idle(page)
    chart = page.locator(".js-plotly-plot").filter(has=page.locator(".gtitle", has_text="AUROC by distortion quartile"))
    assert chart.count() == 1
    chart.scroll_into_view_if_needed()
    box = chart.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(600)
    bar = chart.locator(".modebar")
    assert float(bar.evaluate("el => getComputedStyle(el).opacity")) > 0.5  # the toolbar is showing
    title_box = chart.locator(".gtitle").bounding_box()
    bar_box = bar.bounding_box()
    overlap_x = min(title_box["x"] + title_box["width"], bar_box["x"] + bar_box["width"]) - max(title_box["x"], bar_box["x"])
    overlap_y = min(title_box["y"] + title_box["height"], bar_box["y"] + bar_box["height"]) - max(title_box["y"], bar_box["y"])
    assert overlap_x > 0  # the long title reaches under the toolbar's columns...
    assert overlap_y <= 0, (title_box, bar_box)  # ...but sits below it
