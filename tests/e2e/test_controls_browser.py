"""Every control of every dashboard page, in a real browser, on the complete demo run.

The demo is analysed once for the module (``python -m ldminv_core analyze --demo``, LDMINV_HOME in a
temporary folder: 1-2 minutes on two cores), ``streamlit run app.py`` serves it, and Debian's
Chromium visits every page and moves every control of ``benchmarks/bench_controls.py``'s plan
(sidebar: protocol, folds, attack, timestep; Masks & ROC; Dimensions; Distortion; Latent map;
Export; Compare; page switches). For each move the time until the number under the control
changed (where there is one) and until the page was idle is recorded with the load average in
``benchmarks/results.json`` under ``"controls"`` (the other keys kept). The test asserts what the
page shows, never how fast: no exception or error box after any move, every move's rerun ends,
and the numbers shown equal the core's (the Findings headline AUROC, the masked AUROC at the drop
the slider shows).

Chromium is the system one (/usr/bin/chromium); a machine without it fails this test.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from benchmarks import bench_controls as bc
from benchmarks import bench_dashboard as bd
from support.chromium import CHROMIUM, CHROMIUM_ARGS, HEIGHT, REPO, WIDTH, free_port, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Moves that need something this run does not have (another run to compare, a computed UMAP).
MAY_SKIP = {("Compare", "pick a run"), ("Latent map", "colour by")}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """The complete demo run (all five attacks, 300 + 300 images), analysed once for the module."""
    base = tmp_path_factory.mktemp("controls-demo")
    out = base / "demo"
    env = dict(os.environ, LDMINV_HOME=str(base / "home"))
    proc = subprocess.run([sys.executable, "-m", "ldminv_core", "analyze", "--demo", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "run.json").is_file()
    return out


def _core_values(run_dir: Path) -> tuple[str, str, object]:
    """(default attack, its label, a function drop -> the masked AUROC text) from the core."""
    from ldminv_app.cache import PAGE_N_BOOT
    from ldminv_app.state import default_attack
    from ldminv_core.choices import attack_label
    from ldminv_core.evaluation import Evaluation
    from ldminv_core.runs import Run

    run = Run.open(run_dir)
    attack = default_attack(run)
    ev = Evaluation(run, attack, "standard", n_boot=PAGE_N_BOOT)
    return attack, attack_label(attack), ev


def test_every_control_of_every_page(demo_run, tmp_path):
    from ldminv_core.choices import attack_label
    from ldminv_core.runs import Run

    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"Chromium is required at {CHROMIUM} (Debian package 'chromium'); never downloaded.")
    attack, label, ev = _core_values(demo_run)
    labels = [label] + [attack_label(a) for a in Run.open(demo_run).attacks if attack_label(a) != label]
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    proc = bd.start_server(demo_run, home, port, tmp_path / "streamlit.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}).new_page()
                page.set_default_timeout(180_000)
                page.goto(f"http://127.0.0.1:{port}")
                page.get_by_role("heading", name="Findings", exact=True).first.wait_for()
                wait_idle(page, timeout_s=600)
                # the headline number is the core's
                assert bc.metric_value(page, f"{label} AUROC") == f"{ev.baseline().auroc:.4f}"
                rows = bc.measure_controls(page, attacks=labels, rounds=1)
                # after the plan (standard protocol, the default attack): Masks & ROC shows the core's
                # masked AUROC at the drop its slider shows
                page.get_by_test_id("stSidebarNav").get_by_text("Masks & ROC", exact=True).click()
                page.get_by_role("heading", name="Masks & ROC", exact=True).first.wait_for()
                wait_idle(page, timeout_s=600)
                slider = page.get_by_test_id("stSlider").filter(has_text="Drop percentage")
                drop = float(slider.get_by_test_id("stSliderThumbValue").inner_text().strip())
                shown = bc.metric_value(page, "AUROC (masked)")
                assert bc.error_boxes(page) == []
            finally:
                browser.close()
    finally:
        bd.stop_server(proc)
    assert shown == f"{ev.arms(drop)['masked'].auroc:.4f}"
    bc.merge_results(REPO / "benchmarks" / "results.json", "demo", rows, extra={"run": "analyze --demo (300 + 300)"})
    print()
    print(bc.render({"demo": bc.summarise(rows)}))
    moved = [r for r in rows if not r["skipped"]]
    skipped = {(r["page"], r["control"]) for r in rows if r["skipped"]}
    assert skipped <= MAY_SKIP, skipped
    assert len(moved) >= 40
    for r in moved:
        assert r["errors"] == [], (r["page"], r["control"], r["errors"])
        assert not r["timeout"], (r["page"], r["control"])
        # the move reran something: a busy frame, a changed number, or (a rerun shorter than a
        # frame: the Findings timestep's fragment) a change of the page
        assert r["saw_run"] or r["text_ms"] is not None or r["settled_ms"] is not None, (r["page"], r["control"])
    # every move whose number is watched changed it (a different drop, t, protocol or attack)
    changed = {(r["page"], r["control"]) for r in moved if r["text_ms"] is not None}
    assert ("Masks & ROC", "drop slider +1") in changed
    assert ("Findings", "attack") in changed
