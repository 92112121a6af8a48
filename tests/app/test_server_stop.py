"""Stopping ``streamlit run app.py`` while the background analysis computes exits cleanly.

The server starts on an empty LDMINV_HOME, so opening the app starts the demo analysis in a
background thread (torch). As soon as the page shows the analysis' progress, the server gets
SIGTERM (what a service manager or ``kill`` sends). The server (``st.App`` under uvicorn, see
app.py) shuts down gracefully: its start-up's exit stops the background work, which must stop after
its batch; uvicorn then re-raises the signal, so the process ends "terminated by SIGTERM" (what a
service manager counts as a clean stop; Ctrl-C ends it with code 0), without "terminate called without an active exception" (the C++ runtime aborting when a daemon
thread is still inside torch at interpreter exit) and without a traceback; the run folder is left
unfinished (resumable), not locked.
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

import pytest
from playwright.sync_api import expect, sync_playwright

from ldminv_core.runs import run_status

from support.chromium import CHROMIUM, CHROMIUM_ARGS, HEIGHT, REPO, WIDTH, free_port

SERVER_START_S = 90
EXIT_S = 120


@pytest.mark.browser
def test_sigterm_during_the_demo_analysis_exits_cleanly(tmp_path):
    port = free_port()
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
    assert rc in (0, -signal.SIGTERM), f"exit code {rc}:\n{stderr}"
    assert "still running after" not in stderr, stderr
    # the first start's analysis (the preview, in a process of its own) was stopped with the server:
    # its folder is resumable (or complete, had it just landed), no writer is left, and no process of
    # the server's session is still running
    runs = Path(env["LDMINV_HOME"]) / "runs"
    assert run_status(runs / "demo-preview") in ("unfinished", "complete")
    assert run_status(runs / "demo") in (None, "unfinished")
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)


_BUSY_AT_EXIT = """
import time
import numpy as np
from ldminv_app.cache import JobRegistry
from ldminv_app.warm import Warmer
from ldminv_app.jobs import AnalysisJob

values = np.random.default_rng(0).integers(0, 1000, size=2_000_000)

def busy(*_, should_stop=lambda: False, **__):
    end = time.monotonic() + 1.5
    while time.monotonic() < end and not should_stop():
        np.unique(values)  # numpy's C++ hash unique, run with the GIL released

warmer = Warmer()
warmer.QUIET_S = 0
warmer.submit([(("busy", i), busy) for i in range(3)])
JobRegistry().start("busy", AnalysisJob(label="busy", config=None, target=busy))
time.sleep(0.5)
print("main thread done", flush=True)
"""


@pytest.mark.slow
def test_numpy_work_of_the_warm_up_and_a_job_at_exit_does_not_abort():
    """The background warm-up and an analysis job, both inside numpy's C++ code when the interpreter
    exits: the exit waits for them (a daemon thread re-entering Python during finalization would
    abort the process). Two runs, as the abort depends on timing."""
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", _BUSY_AT_EXIT], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
        assert "main thread done" in out.stdout, out.stderr
        assert "terminate called" not in out.stderr, out.stderr
        assert out.returncode == 0, (out.returncode, out.stderr)
