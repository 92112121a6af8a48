"""Real-browser test of the dashboard: ``streamlit run app.py`` driven by Debian's Chromium.

The server runs as a subprocess on 127.0.0.1 (a free port) with LDMINV_RUN pointing at the
small run of ``tests/app/test_export.py``. Every page is opened through the sidebar, must finish
running without an exception box, and is saved as a full-page screenshot under
``test-artifacts/``. The Findings landing page must show the core's masking finding (estimate,
interval, statement). On the Masks & ROC page the drop slider is moved with the keyboard and the
displayed "AUROC (masked)" must change to the value sklearn gives on the recomputed scores; the
Export page then builds and downloads the report.

Chromium is the system one (/usr/bin/chromium); a machine without it fails this test.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sklearn.metrics import roc_auc_score

from support.chromium import (ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, HEIGHT, REPO, WIDTH, free_port, full_screenshot,
                              wait_idle)
from support.fixture_runs import build_fixture_run, masked_scores

pytestmark = pytest.mark.browser

# (file name of the screenshot, sidebar / page title), in the order they are visited.
PAGES = [
    ("findings", "Findings"),
    ("distortion", "Distortion"),
    ("model_data", "Model & data"),
    ("dimensions", "Dimensions"),
    ("latent_map", "Latent map"),
    ("masks_roc", "Masks & ROC"),
    ("export", "Export"),
    ("compare", "Compare"),
]
SERVER_START_S = 60
RUN_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def fixture_run(tmp_path_factory) -> Path:
    return build_fixture_run(tmp_path_factory.getbasetemp() / "ldminv-export-fixture")


@pytest.fixture(scope="module")
def server(fixture_run, tmp_path_factory):
    """URL of a ``streamlit run app.py`` subprocess showing ``fixture_run``; always terminated."""
    home = tmp_path_factory.mktemp("browser-home")
    log_path = home / "streamlit.log"
    port = free_port()
    env = dict(os.environ, LDMINV_RUN=str(fixture_run), LDMINV_HOME=str(home), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited with code {proc.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200 and resp.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer {url}/_stcore/health within {SERVER_START_S} s:\n"
                            f"{log_path.read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def page(server):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium is required at {CHROMIUM} (Debian package 'chromium'; CI installs it). "
            "This test drives the system browser and never downloads one."
        )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}, accept_downloads=True)
            pg = context.new_page()
            pg.set_default_timeout(RUN_TIMEOUT_MS)
            expect.set_options(timeout=RUN_TIMEOUT_MS)
            yield pg
            context.close()
        finally:
            browser.close()


# --------------------------------------------------------------------------- helpers


def assert_no_exception(page: Page, where: str) -> None:
    boxes = page.get_by_test_id("stException")
    assert boxes.count() == 0, f"{where}: exception shown: {boxes.first.inner_text()[:2000]}"


def open_page(page: Page, title: str) -> None:
    """Click the sidebar link of ``title`` and wait for the page to finish running."""
    link = page.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True)
    expect(link).to_have_count(1)
    link.click()
    expect(page.get_by_role("heading", name=title, exact=True).first).to_be_visible()
    wait_idle(page)


def metric_value(page: Page, label: str):
    label_el = page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    return page.get_by_test_id("stMetric").filter(has=label_el).get_by_test_id("stMetricValue")


def slider_thumb(page: Page, label_start: str):
    return page.get_by_test_id("stSlider").filter(has_text=label_start)


# --------------------------------------------------------------------------- the test


def test_every_page_in_chromium(server, page, fixture_run):
    samples = pd.read_parquet(fixture_run / "samples.parquet")
    labels = (samples["split"].to_numpy() == "member").astype(int)
    terms = np.load(fixture_run / "residuals" / "sima.npy").astype(np.float64)
    influence = np.load(fixture_run / "influence.npy")
    timesteps = [0, 10, 20]

    page.goto(server + "/")
    expect(page.get_by_role("heading", name="Findings", exact=True).first).to_be_visible()
    wait_idle(page)

    shots = []
    for name, title in PAGES:
        if name != "findings":
            open_page(page, title)
        assert_no_exception(page, title)
        shot = ARTIFACTS / f"{name}.png"
        full_screenshot(page, shot)
        shots.append(shot)

        if name == "findings":
            # the landing page shows the core's findings: the masking estimate with its interval
            from ldminv_core.evaluation import Evaluation
            from ldminv_core.runs import Run

            finding = Evaluation(Run.open(fixture_run), "sima", "standard").result().finding(  # the default replicates
                "masking_vs_random")
            shown = page.get_by_test_id("stMarkdown").filter(has_text="AUROC masked − random:")
            expect(shown).to_have_count(1)
            assert (f"{finding.estimate:+.4f}, 95% CI [{finding.ci[0]:+.4f}, {finding.ci[1]:+.4f}]"
                    in shown.inner_text())
            expect(page.get_by_text(finding.statement, exact=True)).to_have_count(1)

        if name == "masks_roc":
            # the cards' t: the protocol's (the header names it, and the sidebar's t when they differ)
            header = page.get_by_test_id("stMarkdown").filter(has_text="(sidebar)")
            t = int(re.search(r"(?:all at|protocol's) t = (\d+)", header.first.inner_text()).group(1))
            ti = timesteps.index(t)
            value = metric_value(page, "AUROC (masked)")
            slider = slider_thumb(page, "Drop percentage")
            expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text("40")
            before = value.inner_text().strip()
            assert before == f"{roc_auc_score(labels, masked_scores(terms[:, ti], influence, 40)):.4f}"

            thumb = slider.get_by_role("slider")
            thumb.focus()
            thumb.press("End")
            expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text("90")
            expect(value).not_to_have_text(before)
            wait_idle(page)
            after = value.inner_text().strip()
            assert after != before
            assert after == f"{roc_auc_score(labels, masked_scores(terms[:, ti], influence, 90)):.4f}"
            assert_no_exception(page, "Masks & ROC after moving the drop slider")
            full_screenshot(page, ARTIFACTS / "masks_roc_drop90.png")

        if name == "export":
            # the drop percentage chosen on Masks & ROC carries over to the export
            export_slider = slider_thumb(page, "Drop percentage")
            expect(export_slider.get_by_test_id("stSliderThumbValue")).to_have_text("90")
            wait_idle(page)
            page.get_by_role("button", name=re.compile("Build report")).click()
            expect(page.get_by_test_id("stDownloadButton")).to_have_count(3)  # report, per-sample and dimension CSV
            wait_idle(page)
            assert_no_exception(page, "Export after Build report")
            full_screenshot(page, ARTIFACTS / "export_built.png")
            with page.expect_download() as info:
                page.get_by_test_id("stDownloadButton").filter(has_text="HTML report").get_by_role("button").click()
            download = info.value
            from ldminv_app.html_report.filenames import report_filename

            assert download.suggested_filename == report_filename(fixture_run, "sima")
            assert download.suggested_filename.endswith("-SimA.html")
            saved = ARTIFACTS / download.suggested_filename
            download.save_as(str(saved))
            text = saved.read_text(encoding="utf-8")
            assert text.count("plotly.js v") == 1 and 'id="report-json"' in text
            assert "drop percentage</td>" in text and "90 % per sample" in text
            assert text.index('id="findings"') < text.index('id="run-settings"')

    for shot in shots:
        assert shot.stat().st_size > 10_000, f"{shot} looks empty"
