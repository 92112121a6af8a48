"""Cold start of the dashboard, step by step: ``streamlit run app.py`` on an empty LDMINV_HOME to the
first number on screen, in a real browser, with where the seconds go.

Two parts, in one run:

1. **Imports**, each in a fresh interpreter (wall time of ``python -c "import ..."``, the median of
   ``--repeats``): streamlit; what the first-start screen needs (``ldminv_app.startup``); what the
   pages need (the evaluation layer and the views); torch; torch + diffusers' UNet and VAE (what
   the preview's process needs before it computes anything).
2. **The first start** (``--starts`` times, each on a fresh LDMINV_HOME): the server is started, Debian's
   Chromium opens the app, and a poller records when each stage of the preview and of the demo lands
   in its run.json. Marks: server healthy, "Preparing the demo" drawn, the preview's stages, the first
   "SimA AUROC" on screen (the preview's), the demo's stages, the page switched to the demo (its
   "Partial run" banner). The preview's own stage timings (run.json "timings": load, encode, sima,
   geometry) are kept beside them.

Prints a table and writes ``benchmarks/cold_start.json`` (with the load average at the start and the
end of each part). Usage (from the repository root)::

    python benchmarks/bench_cold_start.py [--starts 3] [--repeats 3] [--out PATH] [--first-number-only]

Chromium must be at /usr/bin/chromium (never downloaded).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench_dashboard import CHROMIUM, HEIGHT, WIDTH, start_server, stop_server  # noqa: E402

OUT = REPO / "benchmarks" / "cold_start.json"

#: What each import step loads, in a fresh interpreter.
IMPORTS: dict[str, str] = {
    "streamlit": "import streamlit",
    "first-start screen (ldminv_app.startup)": "import streamlit, ldminv_app.startup",
    "pages (evaluation layer, views)": "import ldminv_core.evaluation, ldminv_app.frame, ldminv_app.findings_view",
    "torch": "import torch",
    "torch + diffusers UNet/VAE": "import torch; from diffusers import UNet2DModel, AutoencoderKL",
}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def time_imports(repeats: int) -> dict:
    """Median wall seconds of each :data:`IMPORTS` step in a fresh interpreter."""
    out = {}
    for name, code in IMPORTS.items():
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)
            runs.append(time.perf_counter() - t0)
        out[name] = {"median_s": round(statistics.median(runs), 2), "runs_s": [round(r, 2) for r in runs]}
    return out


class StagePoller:
    """Records (seconds since ``t0``, "run:stage") when a stage first shows done in a run.json under ``home``."""

    def __init__(self, home: Path, t0: float) -> None:
        self.home, self.t0, self.marks = home, t0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            for log in self.home.glob("runs/*.log"):  # a first-start process writes its log from its start
                key = f"{log.stem}: process started"
                if key not in self.marks:
                    self.marks[key] = round(time.perf_counter() - self.t0, 2)
            for rj in self.home.glob("runs/*/run.json"):
                try:
                    data = json.loads(rj.read_text())
                except (OSError, ValueError):
                    continue
                for stage, done in (data.get("stages") or {}).items():
                    key = f"{rj.parent.name}:{stage}"
                    if done and key not in self.marks:
                        self.marks[key] = round(time.perf_counter() - self.t0, 2)
            time.sleep(0.05)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        return dict(sorted(self.marks.items(), key=lambda kv: kv[1]))


def one_start(timeout_s: float, *, first_number_only: bool = False) -> dict:
    """One first start on a fresh LDMINV_HOME; the marks in seconds from ``streamlit run``."""
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="ldminv-cold-"))
    port = _free_port()
    record: dict = {"load_average_at_start": loadavg()}
    t0 = time.perf_counter()
    poller = StagePoller(home, t0)
    proc = start_server(None, home, port, home / "streamlit.log")
    marks = {"server healthy": round(time.perf_counter() - t0, 2)}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT}).new_page()
            t_goto = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/")
            marks["browser opened"] = round(t_goto - t0, 2)
            page.get_by_text("Preparing the demo").first.wait_for(timeout=timeout_s * 1000)
            marks["'Preparing the demo' drawn"] = round(time.perf_counter() - t0, 2)
            label = page.get_by_test_id("stMetricLabel").get_by_text("SimA AUROC", exact=True)
            page.get_by_test_id("stMetric").filter(has=label).first.wait_for(timeout=timeout_s * 1000)
            marks["first number on screen (preview)"] = round(time.perf_counter() - t0, 2)
            record["first_number_from_browser_open_s"] = round(time.perf_counter() - t_goto, 2)
            record["load_average_at_first_number"] = loadavg()
            if not first_number_only:
                page.get_by_test_id("stAlert").filter(has_text="Partial run").first.wait_for(timeout=timeout_s * 1000)
                marks["page switched to the demo run"] = round(time.perf_counter() - t0, 2)
            browser.close()
    finally:
        stop_server(proc)  # and the demo's process, if left behind
    record["marks_s"] = marks
    record["stages_landed_s"] = poller.stop()
    preview = home / "runs" / "demo-preview" / "run.json"
    if preview.is_file():
        record["preview_timings_s"] = json.loads(preview.read_text()).get("timings")
    record["load_average_at_end"] = loadavg()
    return record


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def table(result: dict) -> str:
    lines = ["| import (fresh interpreter) | median s |", "|---|---|"]
    lines += [f"| {k} | {v['median_s']:.2f} |" for k, v in result["imports"].items()]
    for i, start in enumerate(result["starts"], 1):
        lines += ["", f"start {i} (load {start['load_average_at_start']} -> {start.get('load_average_at_first_number')})",
                  "| seconds from `streamlit run` | step |", "|---|---|"]
        events = {**start["marks_s"], **start["stages_landed_s"]}
        lines += [f"| {s:.2f} | {k} |" for k, s in sorted(events.items(), key=lambda kv: kv[1])]
        if start.get("preview_timings_s"):
            lines.append(f"preview run.json timings: {start['preview_timings_s']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--first-number-only", action="store_true",
                    help="stop each start at the first number (do not wait for the demo run)")
    args = ap.parse_args(argv)
    result: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpu_count": os.cpu_count(),
                    "load_average_before_imports": loadavg()}
    result["imports"] = time_imports(args.repeats)
    result["starts"] = [one_start(args.timeout, first_number_only=args.first_number_only)
                        for _ in range(args.starts)]
    firsts = [s["marks_s"]["first number on screen (preview)"] for s in result["starts"]]
    result["first_number_s"] = {"median": round(statistics.median(firsts), 2), "all": firsts,
                                "counted_from": "streamlit run (server start)"}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"first number on screen, from `streamlit run`: median {result['first_number_s']['median']} s of {firsts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
