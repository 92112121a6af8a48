"""Stable-Diffusion-size run in the dashboard: first open and every control's latency, peak memory.

Generates (or reuses, ``--run``) a synthetic run (``scripts/make_synthetic_run.py``; default
N = 5000, latent 4x64x64 so d = 16384, T = 20, float16 residuals: 3.3 GB) under a temporary
folder (deleted afterwards unless ``--keep``), then

1. core level, the way the app calls it (one cached ``Evaluation`` per protocol): the first open
   (baseline, grids, the Findings / Masks & ROC parts) and each control change (drop, t,
   protocol, global mask, manual mask), with the process's peak resident memory (VmRSS, and
   RssAnon: without the memory-mapped file pages);
2. browser level: ``streamlit run app.py`` on the run, Debian's Chromium through Playwright
   (``benchmarks/bench_dashboard.py`` helpers), the time from each control change until the page
   is idle again (and until the "AUROC (masked)" text changed, when it does), and the server's
   peak memory;
3. every control of every page (``benchmarks/bench_controls.py``, a fresh server): the time until
   the number under it changed and until the page was idle, merged under ``"controls"``
   (``large_run``) as well.

Prints a table and merges a ``"large_run"`` key into ``benchmarks/results.json``.

Usage (from the repository root; run it niced)::

    nice -n 5 python benchmarks/bench_large_run.py [--quick] [--run FOLDER] [--keep] [--no-browser]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FULL = {"n": 5000, "latent": (4, 64, 64), "timesteps": 20}
QUICK = {"n": 1000, "latent": (4, 32, 32), "timesteps": 10}
TARGET_MS = 1000.0


def _mem(pid: int | str = "self") -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key = line.split(":")[0]
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[key] = int(line.split()[1]) // 1024
    except OSError:
        pass
    return out


class PeakMemory:
    """Samples VmRSS and RssAnon (MB) of a process every 0.2 s in a thread; ``.peak``."""

    def __init__(self, pid: int | str = "self") -> None:
        self.pid = pid
        self.peak = {"rss_mb": 0, "anon_mb": 0}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            m = _mem(self.pid)
            self.peak["rss_mb"] = max(self.peak["rss_mb"], m.get("VmRSS", 0))
            self.peak["anon_mb"] = max(self.peak["anon_mb"], m.get("RssAnon", 0))
            time.sleep(0.2)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._t.join(1)
        return dict(self.peak)


def make_run(folder: Path, cfg: dict) -> float:
    """Write the synthetic run; returns the seconds it took."""
    from scripts.make_synthetic_run import write_synthetic_run

    t0 = time.perf_counter()
    write_synthetic_run(folder, n=cfg["n"], latent_shape=cfg["latent"], timesteps=cfg["timesteps"], dtype="float16")
    return time.perf_counter() - t0


def core_timings(run_dir: Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Core-level first open and control changes (seconds) with peak memory of this process."""
    from ldminv_core import masks
    from ldminv_core.evaluation import Evaluation
    from ldminv_core.runs import Run

    peak = PeakMemory()
    rows: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        rows[name] = round(time.perf_counter() - t0, 3)
        log(f"  core {name}: {rows[name]:.2f} s  ({_mem()})")
        return out

    run = timed("open_run", lambda: Run.open(run_dir))
    ev = Evaluation(run, "sima", "standard", n_boot=200)

    def masks_page(e: Evaluation, drop: float, ti: int) -> None:
        e.arms(drop)
        e.findings(drop)
        for arm in ("baseline", "masked", "random"):
            e.scores(arm, drop)
        e.masked_per_t(drop)
        e.drop_curves(ti, extra=(drop,))

    timed("first_open_baseline", ev.baseline)
    ti = ev.headline_t_index()
    timed("first_open_grids", ev.grids)
    rows["first_open_grids_source"] = "disk copy" if ev.grids().from_disk else "built"  # type: ignore[assignment]
    if not ev.grids().from_disk:
        # a second server (a new Run object) memory-maps the copy the build saved next to the run
        timed("first_open_grids_from_disk",
              lambda: Evaluation(Run.open(run_dir), "sima", "standard", n_boot=200).grids())
    timed("first_open_findings_page", lambda: (ev.result(), ev.drop_curves(ti)))
    timed("first_open_masks_page", lambda: masks_page(ev, 40.0, ti))
    for p in (41.0, 42.0, 43.0):
        timed(f"drop_{p:g}", lambda p=p: masks_page(ev, p, ti))
    t_count = len(ev.timesteps)
    for k in (1, 2):
        timed(f"t_index_{(ti + k) % t_count}", lambda k=k: masks_page(ev, 43.0, (ti + k) % t_count))
    for proto in ("paper", "honest", "standard"):
        e2 = ev if proto == "standard" else Evaluation(run, "sima", proto, n_boot=200)
        timed(f"protocol_{proto}", lambda e2=e2: (e2.result(43.0), masks_page(e2, 43.0, ti)))
    timed("global_mask_on", lambda: ev.custom_arm("global", ev.global_stat(43.0)))
    for chans in ([0], [0, 1, 2]):
        keep = masks.manual_mask(run.latent_shape, channels=chans)
        timed(f"manual_mask_channels_{''.join(map(str, chans))}",
              lambda keep=keep: ev.custom_arm("manual", ev.manual_stat(keep)))
    keep = masks.manual_mask(run.latent_shape, coords=list(range(0, 400, 7)))
    timed("manual_mask_57_coords", lambda: ev.custom_arm("manual", ev.manual_stat(keep)))
    keep = masks.manual_mask(run.latent_shape, channels=[1], positions=[(r, c) for r in range(8) for c in range(8)])
    timed("manual_mask_channel1_64_positions", lambda: ev.custom_arm("manual", ev.manual_stat(keep)))
    from ldminv_core.evaluation import tables

    timed("first_open_dimensions_table", lambda: tables.dimension_table(
        run.influence, masks.read_timestep(run.terms("sima"), ti), run.labels))
    secs = {k: v for k, v in rows.items() if isinstance(v, (int, float))}
    out = {"seconds": secs, "grids_source": rows.get("first_open_grids_source"),
           "grid_mb": round(ev.grids().nbytes / 2**20, 1), "peak": peak.stop()}
    return out


# ----------------------------------------------------------------------------- browser

_ACTION_JS = """
([timeoutMs]) => new Promise(resolve => {
    const t0 = performance.now();
    let sawRun = false;
    const tick = () => {
        const now = performance.now();
        const app = document.querySelector('[data-testid="stApp"]');
        const running = app !== null && app.getAttribute('data-test-script-state') === 'running';
        const busy = running || document.querySelector('[data-testid="stStatusWidget"]') !== null
                     || document.querySelector('[data-testid="stSpinner"]') !== null;
        if (busy) sawRun = true;
        if (sawRun && !busy) { resolve({total_ms: now - t0, timeout: false}); return; }
        if (now - t0 > timeoutMs) { resolve({total_ms: now - t0, timeout: true, saw_run: sawRun}); return; }
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
})
"""


def _timed_action(page, action: Callable[[], None], *, timeout_ms: float) -> dict:
    page.evaluate(f"() => {{ window.__ldminvA = ({_ACTION_JS})([{float(timeout_ms)}]); return true; }}")
    action()
    return page.evaluate("() => window.__ldminvA")


def browser_timings(run_dir: Path, *, steps: int, timeout_ms: float, log: Callable[[str], None] = print) -> dict:
    """Per-control latency in the real dashboard (ms) and the server's peak memory."""
    from playwright.sync_api import sync_playwright

    from benchmarks import bench_dashboard as bd

    home = Path(tempfile.mkdtemp(prefix="ldminv-large-home-"))
    port = bd._free_port()
    proc = bd.start_server(run_dir, home, port, home / "streamlit.log")
    peak = PeakMemory(proc.pid)
    url = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"controls": {}}

    def record(name: str, res: dict) -> None:
        out["controls"].setdefault(name, []).append(res)
        log(f"  browser {name}: {res.get('total_ms', float('nan')):.0f} ms"
            + (f" (text {res['text_ms']:.0f} ms)" if res.get("text_ms") else "") + (" TIMEOUT" if res.get("timeout") else ""))

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=bd.CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page, open_s = bd.open_page(browser, url, "Findings", timeout_s=900)
                out["first_open_findings_s"] = round(open_s, 2)
                log(f"  browser first open (Findings): {out['first_open_findings_s']} s")
                t0 = time.perf_counter()
                page.get_by_test_id("stSidebarNav").get_by_text("Masks & ROC", exact=True).click()
                page.get_by_role("heading", name="Masks & ROC", exact=True).first.wait_for()
                bd.wait_idle(page, timeout_s=900)
                out["first_open_masks_s"] = round(time.perf_counter() - t0, 2)
                slider = page.get_by_test_id("stSlider").filter(has_text=bd.SLIDER_LABEL)
                thumb = slider.get_by_role("slider")
                for _ in range(steps):
                    before = bd.metric_text(page)
                    record("drop_slider_step", bd.slider_step(page, thumb, before=before, timeout_ms=timeout_ms))
                    bd.wait_idle(page, quiet_polls=3, poll_ms=100)
                    page.wait_for_timeout(300)
                t_thumb = page.get_by_test_id("stSidebar").get_by_test_id("stSlider").filter(
                    has_text="Timestep t").get_by_role("slider")
                for key in ("ArrowRight", "ArrowLeft"):
                    t_thumb.focus()
                    record("t_select", _timed_action(page, lambda key=key: t_thumb.press(key), timeout_ms=timeout_ms))
                    bd.wait_idle(page, quiet_polls=3, poll_ms=100)
                toggle = page.get_by_test_id("stCheckbox").filter(has_text="Global ranking mask")
                for _ in range(2):
                    record("global_mask_toggle", _timed_action(page, lambda: toggle.click(), timeout_ms=timeout_ms))
                    bd.wait_idle(page, quiet_polls=3, poll_ms=100)
                sb = page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has_text="Evaluation protocol")
                for proto in ("paper", "honest (cross-fitted)", "standard"):
                    sb.click()
                    opt = page.get_by_role("option", name=proto, exact=True)
                    record(f"protocol_{proto.split()[0]}", _timed_action(page, lambda opt=opt: opt.click(),
                                                                        timeout_ms=timeout_ms * 60))
                    bd.wait_idle(page, quiet_polls=3, poll_ms=100, timeout_s=900)
                nav = page.get_by_test_id("stSidebarNav")
                for name in ("Findings", "Distortion", "Dimensions", "Masks & ROC", "Dimensions", "Findings"):
                    link = nav.get_by_text(name, exact=True)
                    record(f"page_{name.split()[0].lower()}", _timed_action(page, lambda link=link: link.click(),
                                                                          timeout_ms=timeout_ms * 60))
                    bd.wait_idle(page, quiet_polls=3, poll_ms=100, timeout_s=900)
            finally:
                browser.close()
    finally:
        out["server_peak"] = peak.stop()
        out["server_vmhwm_mb"] = _mem(proc.pid).get("VmHWM")
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)
    summary = {}
    for name, rs in out["controls"].items():
        ok = [r["total_ms"] for r in rs if not r.get("timeout")]
        summary[name] = {"median_ms": round(statistics.median(ok), 1) if ok else None,
                         "max_ms": round(max(ok), 1) if ok else None, "n": len(ok), "timeouts": len(rs) - len(ok)}
    out["summary"] = summary
    return out


def run_large(*, quick: bool = False, run_dir: Path | None = None, keep: bool = False, browser: bool = True,
              steps: int = 5, controls: Path | None = None, core: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole benchmark; returns the ``large_run`` results (``controls``: also time every
    control of every page and merge that table into this JSON file under "controls"; ``core``:
    the core-level timings)."""
    cfg = QUICK if quick else FULL
    tmp = None
    res: dict[str, Any] = {"mode": "quick" if quick else "full", "target_ms": TARGET_MS}
    try:
        if run_dir is None:
            tmp = Path(tempfile.mkdtemp(prefix="ldminv-large-"))
            run_dir = tmp / "run"
            log(f"  writing the synthetic run N={cfg['n']}, latent {cfg['latent']}, T={cfg['timesteps']} ...")
            res["generate_s"] = round(make_run(run_dir, cfg), 1)
        import numpy as np

        terms = np.load(run_dir / "residuals" / "sima.npy", mmap_mode="r")
        res["run"] = {"n": int(terms.shape[0]), "t": int(terms.shape[1]), "latent": list(terms.shape[2:]),
                      "d": int(np.prod(terms.shape[2:])), "dtype": str(terms.dtype),
                      "terms_gb": round(terms.nbytes / 2**30, 2)}
        del terms
        if core:
            res["core"] = core_timings(run_dir, log=log)
        if browser:
            res["browser"] = browser_timings(run_dir, steps=steps, timeout_ms=15_000, log=log)
        if controls is not None:
            # every control of every page (benchmarks/bench_controls.py), merged under "controls"
            from benchmarks import bench_controls

            rows = bench_controls.run_on(run_dir, label="large_run", rounds=1, out=controls, log=log)
            res["controls"] = bench_controls.summarise(rows)
    finally:
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            log(f"  kept {run_dir}")
    res["load_average"] = [round(x, 2) for x in os.getloadavg()]
    res["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return res


def render(res: dict[str, Any]) -> str:
    lines = [f"run {res.get('run')}; load {res.get('load_average')}", "",
             "| level | control | latency | within 1 s |", "|---|---|---|---|"]
    for name, s in res.get("core", {}).get("seconds", {}).items():
        ok = "" if name.startswith(("first_open", "open_run")) else ("yes" if s * 1000 <= TARGET_MS else "NO")
        lines.append(f"| core | {name} | {s:.2f} s | {ok} |")
    if "core" in res:
        lines.append(f"| core | peak memory | {res['core']['peak']['rss_mb']} MB RSS, {res['core']['peak']['anon_mb']} "
                     f"MB anonymous; grids {res['core']['grid_mb']} MB | |")
    b = res.get("browser")
    if b:
        lines.append(f"| browser | first open (Findings / then Masks & ROC) | {b.get('first_open_findings_s')} s / "
                     f"{b.get('first_open_masks_s')} s | |")
        for name, s in b["summary"].items():
            ok = "yes" if s["max_ms"] is not None and s["max_ms"] <= TARGET_MS else "NO"
            lines.append(f"| browser | {name} | median {s['median_ms']} ms, max {s['max_ms']} ms (n={s['n']}, "
                         f"timeouts {s['timeouts']}) | {ok} |")
        lines.append(f"| browser | server peak memory | {b['server_peak']['rss_mb']} MB RSS, "
                     f"{b['server_peak']['anon_mb']} MB anonymous | |")
    if res.get("controls"):
        from benchmarks import bench_controls

        lines += ["", bench_controls.render({"large run": res["controls"]})]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"a smaller run ({QUICK})")
    ap.add_argument("--run", type=Path, default=None, help="reuse this run folder instead of generating one")
    ap.add_argument("--keep", action="store_true", help="keep the generated run folder")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-controls", action="store_true", help="skip every control of every page (bench_controls)")
    ap.add_argument("--no-core", action="store_true", help="skip the core-level timings")
    ap.add_argument("--label", default="current", help="name of this measurement (large_run.label)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    args = ap.parse_args(argv)
    res = run_large(quick=args.quick, run_dir=args.run, keep=args.keep, browser=not args.no_browser,
                    steps=args.steps, controls=None if args.no_controls else args.out, core=not args.no_core)
    print()
    print(render(res))
    data = json.loads(args.out.read_text()) if args.out.is_file() else {}
    res["label"] = args.label
    data["large_run"] = res  # the layout run_all.py writes (its Performance table reads it)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out} (large_run, {args.label})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
