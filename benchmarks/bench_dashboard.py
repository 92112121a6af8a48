"""Dashboard latency in a real browser: one step of the Masks & ROC drop slider.

Starts ``streamlit run app.py`` (headless, a free port, ``LDMINV_RUN=<run folder>``), opens the
Masks & ROC page in Debian's Chromium through Playwright, waits until the page is idle, then
moves the drop-percentage slider one step at a time with the keyboard (focus the thumb,
ArrowRight) and measures, for every step, the time from the key press until the displayed
"AUROC (masked)" text has changed and Streamlit's running indicator
(``[data-testid="stStatusWidget"]``) is gone. Prints a table (median, max, n) and merges a
``"dashboard"`` key into ``benchmarks/results.json`` (the other keys are kept).

Usage (from the repository root):

    python benchmarks/bench_dashboard.py [RUN_FOLDER] [--steps 8] [--label after] [--out PATH]

RUN_FOLDER defaults to ``~/.cache/ldminv/runs/demo``. Chromium must be at /usr/bin/chromium
(never downloaded). Timing is done inside the page (``performance.now()`` in a
``requestAnimationFrame`` poll), so the Playwright round trip does not count.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# the line of a page section still computing in the background: a page showing it is not idle, its
# section will fill in by itself
from ldminv_app.lazy import PENDING_WORDS  # noqa: E402
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1400, 900
SERVER_START_S = 90
METRIC_LABEL = "AUROC (masked)"
SLIDER_LABEL = "Drop percentage"

#: In-page watcher: resolves with the ms from its start until the metric's text differs from
#: ``before`` and no status widget / stale element is left (or a timeout).
_WATCH_JS = """
([label, before, timeoutMs]) => new Promise(resolve => {
    const t0 = performance.now();
    let changedAt = null;
    const read = () => {
        for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
            const l = m.querySelector('[data-testid="stMetricLabel"]');
            if (l && l.innerText.trim() === label) {
                const v = m.querySelector('[data-testid="stMetricValue"]');
                return v ? v.innerText.trim() : null;
            }
        }
        return null;
    };
    let sawRun = false;
    const tick = () => {
        const now = performance.now();
        const text = read();
        if (changedAt === null && text !== null && text !== before) changedAt = now - t0;
        const app = document.querySelector('[data-testid="stApp"]');
        const running = app !== null && app.getAttribute('data-test-script-state') === 'running';
        const busy = running || document.querySelector('[data-testid="stStatusWidget"]') !== null;
        if (busy) sawRun = true;
        // done: the AUROC text changed, or the rerun the key press started has finished (the
        // value can round to the same text), and nothing is running any more
        if ((changedAt !== null || sawRun) && !busy) {
            resolve({total_ms: now - t0, text_ms: changedAt, text: text, timeout: false, saw_run: sawRun});
            return;
        }
        if (now - t0 > timeoutMs) {
            resolve({total_ms: now - t0, text_ms: changedAt, text: text, timeout: true, saw_run: sawRun});
            return;
        }
        requestAnimationFrame(tick);
    };
    window.__ldminvWatch = {t0};
    requestAnimationFrame(tick);
})
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run_dir: Path | None, home: Path, port: int, log_path: Path) -> subprocess.Popen:
    """``streamlit run app.py`` on 127.0.0.1:``port`` showing ``run_dir`` (None: no LDMINV_RUN, so a
    first start on ``home``); returns once the server answers its health check."""
    env = {k: v for k, v in os.environ.items() if k != "LDMINV_RUN"}
    env["LDMINV_HOME"] = str(home)
    if run_dir is not None:
        env["LDMINV_RUN"] = str(run_dir)
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise RuntimeError(f"streamlit did not answer within {SERVER_START_S} s:\n{log_path.read_text()}")
        time.sleep(0.25)


def stop_server(proc: subprocess.Popen, *, wait_s: float = 30) -> None:
    """Stop a server from :func:`start_server` (SIGTERM, then SIGKILL after ``wait_s``) and anything
    still running in its session: the first start's preview or demo process, if it outlived it."""
    proc.terminate()
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=wait_s)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_server made the server a session leader
    except OSError:
        pass  # nothing left in its session


def open_page(browser, url: str, heading: str, *, timeout_s: float = 180) -> tuple[Any, float]:
    """A new page of ``browser`` (WIDTH x HEIGHT) at ``url``, once its ``heading`` is drawn and the
    page is idle; returns (page, seconds it took)."""
    page = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}).new_page()
    page.set_default_timeout(timeout_s * 1000)
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name=heading, exact=True).first.wait_for()
    wait_idle(page, timeout_s=timeout_s)
    return page, time.perf_counter() - t0


def wait_idle(page, *, quiet_polls: int = 4, poll_ms: int = 150, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < quiet_polls:
        busy = page.evaluate(
            """() => {
                const app = document.querySelector('[data-testid="stApp"]');
                const state = app ? app.getAttribute('data-test-script-state') : 'initial';
                return state !== 'notRunning'
                    || document.querySelector('[data-testid="stStatusWidget"]') !== null
                    || document.querySelector('[data-stale="true"]') !== null
                    || document.querySelector('[data-testid="stSpinner"]') !== null
                    || (app !== null && app.textContent.includes(PENDING));
            }""".replace("PENDING", json.dumps(PENDING_WORDS))
        )
        quiet = 0 if busy else quiet + 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app was still running after {timeout_s} s")
        page.wait_for_timeout(poll_ms)


def metric_text(page) -> str:
    label = page.get_by_test_id("stMetricLabel").get_by_text(METRIC_LABEL, exact=True)
    return page.get_by_test_id("stMetric").filter(has=label).get_by_test_id("stMetricValue").inner_text().strip()


def slider_step(page, thumb, *, before: str, label: str = METRIC_LABEL, timeout_ms: float = 15_000) -> dict:
    """Press ArrowRight on the focused slider ``thumb`` and time, inside the page, until the metric
    ``label`` no longer reads ``before`` and the rerun has finished (see ``_WATCH_JS``): returns
    {"total_ms", "text_ms" (None when the text did not change), "text", "timeout", "saw_run"}."""
    thumb.focus()
    # arm the in-page watcher, then press: the watcher's clock starts first
    page.evaluate(f"() => {{ window.__ldminvP = ({_WATCH_JS})"
                  f"([{json.dumps(label)}, {json.dumps(before)}, {float(timeout_ms)}]); return true; }}")
    thumb.press("ArrowRight")
    return page.evaluate("() => window.__ldminvP")


def measure(run_dir: Path, *, steps: int, shots: Path | None, timeout_ms: float) -> dict:
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="ldminv-bench-home-"))
    log_path = home / "streamlit.log"
    port = _free_port()
    t_server = time.perf_counter()
    proc = start_server(run_dir, home, port, log_path)
    server_s = time.perf_counter() - t_server
    url = f"http://127.0.0.1:{port}"
    out: dict = {"run": str(run_dir), "server_start_s": round(server_s, 2)}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page, open_s = open_page(browser, f"{url}/masks_roc", "Masks & ROC")
                out["page_open_s"] = round(open_s, 2)
                slider = page.get_by_test_id("stSlider").filter(has_text=SLIDER_LABEL)
                thumb = slider.get_by_role("slider")
                start_value = int(slider.get_by_test_id("stSliderThumbValue").inner_text().strip())
                if shots is not None:
                    shots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shots / "bench_open.png"), full_page=True)
                rows = []
                for i in range(steps):
                    before = metric_text(page)
                    wall0 = time.perf_counter()
                    res = slider_step(page, thumb, before=before, timeout_ms=timeout_ms)
                    res["wall_ms"] = (time.perf_counter() - wall0) * 1000.0
                    res["step"] = i + 1
                    res["drop"] = start_value + i + 1
                    res["before"] = before
                    rows.append(res)
                    wait_idle(page, quiet_polls=3, poll_ms=100)
                    page.wait_for_timeout(300)  # a user pauses between steps
                if shots is not None:
                    page.screenshot(path=str(shots / "bench_after.png"), full_page=True)
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    ok = [r for r in rows if not r["timeout"]]
    totals = [r["total_ms"] for r in ok]
    texts = [r["text_ms"] for r in ok if r["text_ms"] is not None]
    out.update(
        steps=rows,
        n=len(ok),
        timeouts=len(rows) - len(ok),
        median_ms=round(statistics.median(totals), 1) if totals else None,
        max_ms=round(max(totals), 1) if totals else None,
        first_step_ms=round(rows[0]["total_ms"], 1) if rows else None,
        text_median_ms=round(statistics.median(texts), 1) if texts else None,
        text_max_ms=round(max(texts), 1) if texts else None,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?", default=str(Path.home() / ".cache" / "ldminv" / "runs" / "demo"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--label", default="current", help="name of this measurement in the JSON")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results.json"))
    ap.add_argument("--shots", default=None, help="folder for screenshots of the page (optional)")
    ap.add_argument("--timeout-ms", type=float, default=15_000)
    args = ap.parse_args(argv)
    run_dir = Path(args.run).expanduser().resolve()
    if not (run_dir / "run.json").is_file():
        print(f"{run_dir} is not a run folder (no run.json)", file=sys.stderr)
        return 2
    res = measure(run_dir, steps=args.steps, shots=Path(args.shots) if args.shots else None,
                  timeout_ms=args.timeout_ms)
    res["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(f"run {res['run']}; page open {res.get('page_open_s')} s; load {res['load_average']}")
    print("| step | drop % | AUROC before -> after | text changed (ms) | idle (ms) | wall (ms) |")
    print("|------|--------|------------------------|-------------------|-----------|-----------|")
    for r in res["steps"]:
        text_ms = "-" if r["text_ms"] is None else f"{r['text_ms']:.0f}"
        flag = " (timeout)" if r["timeout"] else ""
        print(f"| {r['step']} | {r['drop']} | {r['before']} -> {r['text']} | {text_ms} | "
              f"{r['total_ms']:.0f}{flag} | {r['wall_ms']:.0f} |")
    print()
    print("| measure | median (ms) | max (ms) | n |")
    print("|---------|-------------|----------|---|")
    print(f"| key press -> AUROC changed and idle | {res['median_ms']} | {res['max_ms']} | {res['n']} |")
    print(f"| key press -> AUROC text changed | {res['text_median_ms']} | {res['text_max_ms']} | {res['n']} |")
    if res["timeouts"]:
        print(f"{res['timeouts']} step(s) did not change the AUROC within {args.timeout_ms:g} ms")
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.is_file() else {}
    dash = data.get("dashboard") if isinstance(data.get("dashboard"), dict) else {}
    dash[args.label] = res
    dash["target_ms"] = 300
    data["dashboard"] = dash
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out} (dashboard.{args.label})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
