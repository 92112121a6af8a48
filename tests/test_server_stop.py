"""Stopping ``streamlit run app.py`` while the background analysis computes exits cleanly.

The server starts on an empty LDMINV_HOME, so opening the app starts the demo analysis in a
background thread (torch). As soon as the page shows the analysis' progress, the server gets
SIGTERM (what a service manager or ``kill`` sends; Ctrl-C's SIGINT goes to the same Streamlit
handler). The process must wait for the analysis to stop after its batch and exit with code 0,
without "terminate called without an active exception" (the C++ runtime aborting when a daemon
thread is still inside torch at interpreter exit) and without a traceback.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from test_browser import CHROMIUM, CHROMIUM_ARGS, HEIGHT, WIDTH, _free_port

REPO = Path(__file__).resolve().parents[1]
SERVER_START_S = 90
EXIT_S = 120


def test_sigterm_during_the_demo_analysis_exits_cleanly(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "LDMINV_RUN"}
    env["LDMINV_HOME"] = str(tmp_path / "home")
    out_path, err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert proc.poll() is None, f"streamlit exited with code {proc.returncode}:\n{err_path.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no answer from {url} within {SERVER_START_S} s"
            time.sleep(0.25)

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
                page.goto(url + "/")
                # the analysis is computing: its progress bar names a stage and the samples done
                progress = page.get_by_test_id("stProgress").filter(has_text=re.compile(r"Stage \d+/\d+.*samples"))
                expect(progress.first).to_be_visible(timeout=SERVER_START_S * 1000)
                proc.send_signal(signal.SIGTERM)
                rc = proc.wait(EXIT_S)
            finally:
                browser.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    stderr = err_path.read_text()
    assert "terminate called" not in stderr, stderr
    assert "Traceback" not in stderr, stderr
    assert rc == 0, f"exit code {rc}:\n{stderr}"
    # the analysis was running when the server stopped, and the exit waited for it
    assert "ldminv: waiting for the analysis 'demo' to stop" in stderr, stderr
    assert "still running after" not in stderr, stderr
