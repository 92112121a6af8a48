"""Masks & ROC survives fast input: 60 key presses on the drop slider, 30 ms apart, in Chromium.

On a demo-sized run (300 members / 300 held-out, latent 4x8x8, 11 timesteps) with one CPU burner
running beside the server (the failure showed on a loaded 2-core machine), the drop slider gets
30 ArrowRight then 30 ArrowLeft presses. Afterwards the page must be live and consistent: no
connection-error dialog or "Cached ForwardMsg MISS", every "drop N %" on the page equals the
slider, a further slider move reruns the page and its masked AUROC card equals the evaluation's
at the new drop. Streamlit's forward-message cache must be off (``.streamlit/config.toml``): with
it, the browser can drop a cached element after it told the server that it holds it, and the
server's next rerun then refers to it, which kills the session; so no element may arrive as a
reference to a cached one (``ref_hash``).
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from benchmarks import bench_dashboard as bench
from support.chromium import CHROMIUM, CHROMIUM_ARGS, HEIGHT, WIDTH, free_port
from synthetic_runs import write_run

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 120_000
START_DROP = 40
PRESS_GAP_MS = 30
FURTHER_STEPS = 3


@pytest.fixture(scope="module")
def demo_sized_run(tmp_path_factory):
    """SimA terms (600, 11, 4, 8, 8): members' terms smaller on high-influence coordinates, so the
    masked AUROC moves with the drop percentage."""
    rng = np.random.default_rng(21)
    n, shape, timesteps = 600, (4, 8, 8), list(range(0, 110, 10))
    labels = np.repeat([1, 0], n // 2)
    terms = rng.gamma(2.0, 1.0, size=(n, len(timesteps), *shape)).astype(np.float32)
    influence = rng.normal(size=(n, *shape)).astype(np.float32)
    signal = (influence > 0) & (labels[:, None, None, None] == 1)
    terms *= np.where(signal, 0.97, 1.0)[:, None].astype(np.float32)
    return write_run(tmp_path_factory.mktemp("fast-input") / "run", terms=terms, influence=influence,
                     log_volume=rng.normal(size=n), labels=labels, timesteps=timesteps)


@contextmanager
def cpu_burner():
    """One busy process beside the server while the block runs (load + 1 on this machine)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        proc.kill()
        proc.wait(10)


def settle(page, timeout_s: float = 180) -> None:
    """Wait until the page has finished running; fail at once with the dialog's text when the
    session died (the connection-error dialog), instead of waiting out the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        dead = page.get_by_text(re.compile("Connection error|ForwardMsg MISS"))
        if dead.count():
            pytest.fail(f"the session died: {page.get_by_role('dialog').first.inner_text()[:500]}"
                        if page.get_by_role("dialog").count() else f"the session died: {dead.first.inner_text()}")
        try:
            bench.wait_idle(page, timeout_s=5)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise


def _drops_shown(page) -> set[str]:
    """Every "drop N %" in the main area's text (cards, findings, chart titles)."""
    return set(re.findall(r"drop (\d+(?:\.\d+)?) %", page.get_by_test_id("stMain").inner_text()))


def _metric(page, label: str):
    el = page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    return page.get_by_test_id("stMetric").filter(has=el).get_by_test_id("stMetricValue")


def test_sixty_fast_slider_presses_leave_the_page_live_and_consistent(demo_sized_run, tmp_path):
    from ldminv_app.cache import PAGE_N_BOOT
    from ldminv_core.evaluation import Evaluation

    home = tmp_path / "home"
    home.mkdir()
    proc = bench.start_server(Path(demo_sized_run.path), home, free_port(), home / "streamlit.log")
    url = proc.args[proc.args.index("--server.port") + 1]
    refs, console_errors = [], []

    def on_frame(payload) -> None:
        if isinstance(payload, (bytes, bytearray)):
            msg = ForwardMsg.FromString(bytes(payload))
            if msg.WhichOneof("type") == "ref_hash":
                refs.append(msg.ref_hash)

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                page.set_default_timeout(RUN_TIMEOUT_MS)
                page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
                page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
                page.goto(f"http://127.0.0.1:{url}/masks_roc")
                expect(page.get_by_role("heading", name="Masks & ROC", exact=True).first).to_be_visible(
                    timeout=RUN_TIMEOUT_MS)
                settle(page)
                slider = page.get_by_test_id("stSlider").filter(has_text="Drop percentage")
                value = slider.get_by_test_id("stSliderThumbValue")
                expect(value).to_have_text(str(START_DROP))
                thumb = slider.get_by_role("slider")

                with cpu_burner():
                    thumb.focus()
                    for key in ["ArrowRight"] * 30 + ["ArrowLeft"] * 30:
                        page.keyboard.press(key)
                        page.wait_for_timeout(PRESS_GAP_MS)
                    settle(page)
                    shown = value.inner_text().strip()
                    assert shown == str(START_DROP)
                    assert _drops_shown(page) == {shown}

                    # a further interaction reruns the page, and its numbers follow the slider
                    thumb.focus()
                    for _ in range(FURTHER_STEPS):
                        page.keyboard.press("ArrowRight")
                    target = START_DROP + FURTHER_STEPS
                    expect(value).to_have_text(str(target))
                    expected = Evaluation(demo_sized_run, "sima", "standard", n_boot=PAGE_N_BOOT).arms(
                        float(target))["masked"].auroc
                    expect(_metric(page, "AUROC (masked)")).to_have_text(f"{expected:.4f}", timeout=RUN_TIMEOUT_MS)
                    settle(page)
                assert _drops_shown(page) == {str(target)}
                assert page.get_by_test_id("stException").count() == 0
                assert page.get_by_text(re.compile("Connection error")).count() == 0
            finally:
                browser.close()
    finally:
        proc.terminate()
        proc.wait(30)
    assert not [e for e in console_errors if "Websocket" in e or "ForwardMsg" in e], console_errors
    # the browser held no element the server could refer to: nothing arrived as a cached reference
    assert refs == [], f"{len(refs)} elements arrived as references to the browser's message cache"
