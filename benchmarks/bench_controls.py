"""Every control of every dashboard page, timed in a real browser: the time until the number under
the control changes (where there is one) and until the page is idle again.

"Idle" (``idle_ms``): the rerun the move started has ended: the app reports ``notRunning``, and
there is no status widget, no stale element and no spinner (first met after the move; the page
answers the next control). "Complete" (``complete_ms``, later or equal): idle and no section still
"computing in the background" (``ldminv_app.lazy``: such a section fills in by itself with another
run), :func:`benchmarks.bench_dashboard.wait_idle`'s test. ``settled_ms`` is later or equal to
both: the last change of the page's DOM (charts drawn by the browser, elements replaced) before it
stayed unchanged for :data:`QUIET_MS`. The clock
runs inside the page (``performance.now()``, a ``requestAnimationFrame`` poll plus a
``MutationObserver`` on the whole app): it starts before the control is touched. A rerun too short to
show a busy frame is taken as idle at the page's last change.

:func:`measure_controls` walks the pages through the sidebar and moves each control of
:data:`PLAN` (sidebar: protocol, folds, attack, timestep; Masks & ROC; Dimensions; Distortion;
Latent map; Export; Compare; page switches), returning one row per move with the load average.
``tests/e2e/test_controls_browser.py`` runs it on the demo run, ``benchmarks/bench_large_run.py`` on the
large synthetic run; both merge :func:`summarise`'s table into ``benchmarks/results.json`` under
``"controls"`` (:func:`merge_results`, the other keys kept).

Usage (a run folder, a server is started on it)::

    python benchmarks/bench_controls.py RUN_FOLDER [--label demo] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import bench_dashboard as bd  # noqa: E402

#: The target: every control to an idle page within this many milliseconds.
TARGET_MS = 500.0
#: A page has settled once nothing on it has changed for this long (no rerun, no DOM mutation).
QUIET_MS = 200.0

#: In-page reader of an ``st.metric``'s value by its label (or label prefix, ending in "*"), or null.
_READ_JS = """
(probe) => {
    const prefix = probe.endsWith('*') ? probe.slice(0, -1) : null;
    for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
        const l = m.querySelector('[data-testid="stMetricLabel"]');
        const t = l ? l.innerText.trim() : '';
        if (prefix !== null ? t.startsWith(prefix) : t === probe) {
            const v = m.querySelector('[data-testid="stMetricValue"]');
            return v ? v.innerText.trim() : null;
        }
    }
    return null;
}
"""

#: In-page watcher: resolves with {idle_ms, complete_ms, settled_ms, text_ms, text, timeout, saw_run};
#: ``probe`` is the label (or label prefix, ending in "*") of an ``st.metric`` whose value is watched,
#: or null.
_WATCH_JS = """
([probe, before, timeoutMs, quietMs]) => new Promise(resolve => {
    const t0 = performance.now();
    let changedAt = null, sawBusy = false, idleAt = null, completeAt = null, lastChange = null;
    const app = () => document.querySelector('[data-testid="stApp"]');
    const running = () => { const a = app(); return a !== null && a.getAttribute('data-test-script-state') === 'running'; };
    const busyNow = () => running() || document.querySelector('[data-testid="stStatusWidget"]') !== null
        || document.querySelector('[data-stale="true"]') !== null
        || document.querySelector('[data-testid="stSpinner"]') !== null;
    // a section still computing in the background (it fills in by itself with another run)
    const pendingNow = () => app() !== null && app().textContent.includes(__PENDING__);
    // every change of the page (a rerun's elements, a chart drawn); a rerun shorter than a frame too
    const obs = new MutationObserver(() => { lastChange = performance.now() - t0; if (busyNow()) sawBusy = true; });
    if (app()) obs.observe(app(), {attributes: true, childList: true, subtree: true, characterData: true});
    const readMetric = __READ_JS__;
    const read = () => probe === null ? null : readMetric(probe);
    const done = (timeout) => {
        obs.disconnect();
        resolve({idle_ms: idleAt, complete_ms: completeAt, settled_ms: lastChange, text_ms: changedAt, text: read(),
                 timeout, saw_run: sawBusy});
    };
    const tick = () => {
        const now = performance.now() - t0;
        const text = read();
        if (changedAt === null && text !== null && text !== before) changedAt = now;  // shown or changed
        const busy = busyNow();
        if (busy) { sawBusy = true; completeAt = null; lastChange = now; }
        // idle: the rerun the move started has ended (the first time; a later run does not move it)
        if (sawBusy && !busy && idleAt === null) idleAt = now;
        // complete: no run and no section computing (a section's own rerun included)
        if (idleAt !== null && !busy) {
            if (pendingNow()) completeAt = null; else if (completeAt === null) completeAt = now;
        }
        // then wait until nothing on the page has changed for quietMs (charts drawn): settled_ms
        const quiet = lastChange === null || now - lastChange >= quietMs;
        if (completeAt !== null && quiet) { done(false); return; }
        // no busy frame seen at all (a rerun faster than a frame): idle when the page stopped changing
        if (!sawBusy && lastChange !== null && now > 3000 && quiet && !pendingNow()) {
            idleAt = lastChange; completeAt = lastChange; done(false); return;
        }
        if (now > timeoutMs) { if (idleAt === null) idleAt = now; if (completeAt === null) completeAt = now; done(true); return; }
        requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
})
""".replace("__READ_JS__", _READ_JS.strip()).replace("__PENDING__", json.dumps(bd.PENDING_WORDS))


_ERRORS_JS = """() => Array.from(document.querySelectorAll(
    '[data-testid="stException"], [data-testid="stAlertContentError"]')).map(e => e.innerText.slice(0, 300))"""


def metric_value(page, probe: str) -> str | None:
    """The displayed value of the ``st.metric`` labelled ``probe`` (a trailing "*": label prefix)."""
    return page.evaluate(_READ_JS, probe)


def error_boxes(page) -> list[str]:
    """The text of every exception or error box on the page."""
    return page.evaluate(_ERRORS_JS)


def timed(page, action: Callable[[], None], *, probe: str | None = None, timeout_ms: float = 60_000) -> dict:
    """Arm the in-page watcher, run ``action`` (a click, a key press) and wait for idle."""
    before = metric_value(page, probe) if probe else None
    page.evaluate(f"() => {{ window.__ldminvC = ({_WATCH_JS})"
                  f"([{json.dumps(probe)}, {json.dumps(before)}, {float(timeout_ms)}, {float(QUIET_MS)}]); "
                  "return true; }")
    action()
    res = page.evaluate("() => window.__ldminvC")
    res["before"] = before
    return res


# ----------------------------------------------------------------------------- widget moves


def _sidebar(page):
    return page.get_by_test_id("stSidebar")


def _main(page):
    return page.get_by_test_id("stMain")


def _slider_key(scope, label: str, key: str) -> Callable[[], None]:
    thumb = scope.get_by_test_id("stSlider").filter(has_text=label).get_by_role("slider").first

    def act() -> None:
        thumb.press(key)
    thumb.focus()
    return act


def _select(page, scope, label: str, option: str) -> Callable[[], None]:
    box = scope.get_by_test_id("stSelectbox").filter(has_text=label).first
    box.click()
    opt = page.get_by_role("option", name=option, exact=True)
    opt.wait_for()
    return lambda: opt.click()


def _click(locator) -> Callable[[], None]:
    locator.wait_for()
    return lambda: locator.click()


def _step_up(scope, label: str) -> Callable[[], None]:
    box = scope.get_by_test_id("stNumberInput").filter(has_text=label).first
    return _click(box.get_by_test_id("stNumberInputStepUp"))


def _step_down(scope, label: str) -> Callable[[], None]:
    box = scope.get_by_test_id("stNumberInput").filter(has_text=label).first
    return _click(box.get_by_test_id("stNumberInputStepDown"))


def _tab(scope, label: str) -> Callable[[], None] | None:
    """A click on the tab ``label`` (None when the run has no such tab)."""
    tab = scope.get_by_role("tab", name=label, exact=True).first
    return _click(tab) if _exists(tab) else None


def _checkbox(scope, label: str) -> Callable[[], None]:
    return _click(scope.get_by_test_id("stCheckbox").filter(has_text=label).first.locator("label").first)


def _nav(page, name: str) -> Callable[[], None]:
    return _click(page.get_by_test_id("stSidebarNav").get_by_text(name, exact=True))


def _exists(scope) -> bool:
    try:
        return scope.count() > 0
    except Exception:  # noqa: BLE001 - a missing element is simply skipped
        return False


#: (page title in the sidebar or None = stay, control name, the move, the metric watched or None).
#: A move is fn(page) -> action or None (the control does not exist on this run: skipped).
Move = Callable[[Any], Callable[[], None] | None]


def _plan(attacks: list[str]) -> list[tuple[str, str, Move, str | None]]:
    """The controls moved, page by page (``attacks``: the attacks' labels in the sidebar)."""
    other = attacks[1] if len(attacks) > 1 else attacks[0]
    first = attacks[0]
    side = _sidebar

    def drop_step(key: str) -> Move:
        return lambda p: _slider_key(_main(p), "Drop percentage", key)

    plan: list[tuple[str, str, Move, str | None]] = [
        # Findings: the sidebar's controls rerun the page
        ("Findings", "protocol: paper", lambda p: _select(p, side(p), "Evaluation protocol", "paper"), f"{first} AUROC"),
        ("Findings", "protocol: honest", lambda p: _select(p, side(p), "Evaluation protocol", "honest (cross-fitted)"),
         f"{first} AUROC"),
        ("Findings", "folds +1", lambda p: _step_up(side(p), "Folds"), f"{first} AUROC"),
        ("Findings", "folds -1", lambda p: _step_down(side(p), "Folds"), f"{first} AUROC"),
        ("Findings", "protocol: standard", lambda p: _select(p, side(p), "Evaluation protocol", "standard"),
         f"{first} AUROC"),
        ("Findings", "attack", lambda p: _select(p, side(p), "Attack", other), f"{other} AUROC"),
        ("Findings", "attack back", lambda p: _select(p, side(p), "Attack", first), f"{first} AUROC"),
        ("Findings", "tab: Agreement", lambda p: _tab(_main(p), "Agreement"), None),
        ("Findings", "tab: Members most at risk", lambda p: _tab(_main(p), "Members most at risk"), None),
        ("Findings", "tab: Every attack", lambda p: _tab(_main(p), "Every attack"), None),
        ("Findings", "timestep", lambda p: _slider_key(side(p), "Timestep t", "ArrowRight"), None),
        ("Findings", "timestep back", lambda p: _slider_key(side(p), "Timestep t", "ArrowLeft"), None),
        # Masks & ROC
        ("Masks & ROC", "drop slider +1", drop_step("ArrowRight"), "AUROC (masked)"),
        ("Masks & ROC", "drop slider +1", drop_step("ArrowRight"), "AUROC (masked)"),
        ("Masks & ROC", "drop slider -1", drop_step("ArrowLeft"), "AUROC (masked)"),
        ("Masks & ROC", "global mask on", lambda p: _checkbox(_main(p), "Global ranking mask"), None),
        ("Masks & ROC", "global mask off", lambda p: _checkbox(_main(p), "Global ranking mask"), None),
        ("Masks & ROC", "bootstrap replicates", lambda p: _slider_key(_main(p), "Bootstrap replicates", "ArrowLeft"),
         None),
        ("Masks & ROC", "bootstrap replicates back",
         lambda p: _slider_key(_main(p), "Bootstrap replicates", "ArrowRight"), None),
        ("Masks & ROC", "manual mask on", lambda p: _open_manual(p), None),
        ("Masks & ROC", "manual mask off", lambda p: _checkbox(_main(p), "Use the manual mask"), None),
        ("Masks & ROC", "timestep", lambda p: _slider_key(side(p), "Timestep t", "ArrowRight"), "AUROC (masked)"),
        ("Masks & ROC", "timestep back", lambda p: _slider_key(side(p), "Timestep t", "ArrowLeft"), "AUROC (masked)"),
        ("Masks & ROC", "protocol: paper", lambda p: _select(p, side(p), "Evaluation protocol", "paper"),
         "AUROC (masked)"),
        ("Masks & ROC", "protocol: standard", lambda p: _select(p, side(p), "Evaluation protocol", "standard"),
         "AUROC (masked)"),
        ("Masks & ROC", "tab: against the drop %", lambda p: _tab(_main(p), "Against the drop %"), None),
        ("Masks & ROC", "drop slider +1 (drop % tab)", drop_step("ArrowRight"), "AUROC (masked)"),
        ("Masks & ROC", "drop slider -1 (drop % tab)", drop_step("ArrowLeft"), "AUROC (masked)"),
        ("Masks & ROC", "tab: against the timestep", lambda p: _tab(_main(p), "Against the timestep"), None),
        ("Masks & ROC", "tab: ROC curves", lambda p: _tab(_main(p), "ROC curves"), None),
        # Dimensions
        ("Dimensions", "min influence", lambda p: _slider_key(_main(p), "influence", "ArrowRight"), None),
        ("Dimensions", "min influence back", lambda p: _slider_key(_main(p), "influence", "ArrowLeft"), None),
        ("Dimensions", "show at most", lambda p: _step_down(_main(p), "Show at most"), None),
        ("Dimensions", "timestep", lambda p: _slider_key(side(p), "Timestep t", "ArrowRight"), None),
        ("Dimensions", "tab: AUROC of each coordinate", lambda p: _tab(_main(p), "AUROC of each coordinate"), None),
        ("Dimensions", "tab: influence against AUROC", lambda p: _tab(_main(p), "Influence against AUROC"), None),
        ("Dimensions", "timestep back (scatter tab)", lambda p: _slider_key(side(p), "Timestep t", "ArrowLeft"), None),
        ("Dimensions", "tab: mean influence", lambda p: _tab(_main(p), "Mean influence"), None),
        # Distortion
        ("Distortion", "tab: least and most distorted", lambda p: _tab(_main(p), "Least and most distorted"), None),
        ("Distortion", "gallery size", lambda p: _slider_key(_main(p), "Images per gallery", "ArrowRight"), None),
        ("Distortion", "tab: sample viewer", lambda p: _tab(_main(p), "Sample viewer"), None),
        ("Distortion", "rank +1", lambda p: _step_up(_main(p), "Rank"), "Log-volume"),
        ("Distortion", "channel aggregate", lambda p: _select(p, _main(p), "Aggregate channels by", "max"), None),
        ("Distortion", "heatmap opacity", lambda p: _slider_key(_main(p), "Heatmap opacity", "ArrowRight"), None),
        ("Distortion", "select by sample id", lambda p: _click(_main(p).get_by_test_id("stRadio").get_by_text(
            "sample id", exact=True)), "Log-volume"),
        ("Distortion", "sample id +1", lambda p: _step_up(_main(p), "Sample id"), "Log-volume"),
        ("Distortion", "timestep", lambda p: _slider_key(side(p), "Timestep t", "ArrowRight"), "Score (*"),
        ("Distortion", "tab: distribution and quartiles", lambda p: _tab(_main(p), "Distribution and quartiles"),
         None),
        ("Distortion", "timestep (quartiles tab)", lambda p: _slider_key(side(p), "Timestep t", "ArrowLeft"), None),
        # Latent map (the UMAP itself is an analysis job; its controls before and after)
        ("Latent map", "UMAP neighbours", lambda p: _step_up(_main(p), "UMAP neighbours"), None),
        ("Latent map", "colour by", lambda p: _select_next(p, _main(p), "Colour"), None),
        # Export (building the report is a job, not a control)
        ("Export", "drop slider", lambda p: _slider_key(_main(p), "Drop", "ArrowRight"), None),
        ("Export", "random seed", lambda p: _step_up(_main(p), "Random seed"), None),
        ("Export", "include global mask", lambda p: _checkbox(_main(p), "global ranking mask"), None),
        # Compare
        ("Compare", "pick a run", lambda p: _pick_run(p), None),
        # page switches
        (None, "page: Findings", lambda p: _nav(p, "Findings"), f"{first} AUROC"),
        (None, "page: Masks & ROC", lambda p: _nav(p, "Masks & ROC"), "AUROC (masked)"),
        (None, "page: Distortion", lambda p: _nav(p, "Distortion"), None),
        (None, "page: Dimensions", lambda p: _nav(p, "Dimensions"), None),
        (None, "page: Latent map", lambda p: _nav(p, "Latent map"), None),
        (None, "page: Export", lambda p: _nav(p, "Export"), None),
        (None, "page: Model & data", lambda p: _nav(p, "Model & data"), None),
        (None, "page: Findings", lambda p: _nav(p, "Findings"), f"{first} AUROC"),
    ]
    return plan


def _open_manual(page) -> Callable[[], None] | None:
    main = _main(page)
    exp = main.get_by_test_id("stExpander").filter(has_text="Manual mask").first
    if not _exists(exp):
        return None
    toggle = exp.get_by_test_id("stCheckbox").filter(has_text="Use the manual mask").first
    if not toggle.is_visible():
        exp.locator("summary").first.click()
        toggle.wait_for()
    return lambda: toggle.locator("label").first.click()


def _select_next(page, scope, label: str) -> Callable[[], None] | None:
    box = scope.get_by_test_id("stSelectbox").filter(has_text=label).first
    if not _exists(box):
        return None
    current = box.inner_text().split("\n")[-1].strip()
    box.click()
    options = page.get_by_role("option")
    options.first.wait_for()
    names = [o.strip() for o in options.all_inner_texts()]
    pick = next((n for n in names if n and n != current), None)
    if pick is None:
        page.keyboard.press("Escape")
        return None
    opt = page.get_by_role("option", name=pick, exact=True)
    return lambda: opt.click()


def _pick_run(page) -> Callable[[], None] | None:
    box = _main(page).get_by_test_id("stMultiSelect").first
    if not _exists(box):
        return None
    box.click()
    opts = page.get_by_role("option")
    try:
        opts.first.wait_for(timeout=3000)
    except Exception:  # noqa: BLE001 - no run to pick
        page.keyboard.press("Escape")
        return None
    first = opts.first
    return lambda: first.click()


def _goto(page, title: str) -> None:
    nav = page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True)
    nav.click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for()
    bd.wait_idle(page, quiet_polls=3, poll_ms=100, timeout_s=900)


def measure_controls(page, *, attacks: list[str], rounds: int = 1, timeout_ms: float = 60_000,
                     pages: list[str] | None = None, log: Callable[[str], None] = print) -> list[dict]:
    """Move every control of :func:`_plan` (``rounds`` times; only those of ``pages``, page titles
    or "sidebar nav", when given) on an app already open and idle at ``page``; one row per move:
    {page, control, probe, text, before, text_ms, idle_ms, timeout, errors, load_average}. A control
    missing on this run (another layout, a one-attack run) is skipped with a row saying so."""
    rows: list[dict] = []
    plan = [step for step in _plan(attacks) if pages is None or (step[0] or "sidebar nav") in pages]
    for _ in range(rounds):
        current = None
        for where, name, move, probe in plan:
            if where is not None and where != current:
                _goto(page, where)
                current = where
            try:
                act = move(page)
            except Exception as exc:  # noqa: BLE001 - recorded, the plan goes on
                act = None
                log(f"  {where or ''} {name}: not found ({type(exc).__name__})")
            if act is None:
                rows.append({"page": where or "sidebar nav", "control": name, "skipped": True})
                continue
            res = timed(page, act, probe=probe, timeout_ms=timeout_ms)
            bd.wait_idle(page, quiet_polls=3, poll_ms=100, timeout_s=900)
            res.update(page=where or "sidebar nav", control=name, probe=probe, errors=error_boxes(page),
                       load_average=[round(x, 2) for x in os.getloadavg()], skipped=False)
            if where is None:
                current = name.removeprefix("page: ")
            rows.append(res)
            log(f"  {res['page']:<12} {name:<26} idle {res['idle_ms']:7.0f} ms"
                + (f"  complete {res['complete_ms']:6.0f} ms" if res.get("complete_ms") is not None else "")
                + (f"  settled {res['settled_ms']:6.0f} ms" if res.get("settled_ms") is not None else "")
                + (f"  number {res['text_ms']:5.0f} ms" if res.get("text_ms") is not None else "")
                + ("  TIMEOUT" if res["timeout"] else "") + (f"  ERRORS {res['errors']}" if res["errors"] else ""))
            page.wait_for_timeout(250)  # a user pauses between moves
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (page, control): median / max idle and number times (ms), n, the load averages seen."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if not r.get("skipped"):
            groups.setdefault((r["page"], r["control"]), []).append(r)
    out = []
    for (pg, name), rs in groups.items():
        idle = [r["idle_ms"] for r in rs if not r["timeout"]]
        complete = [r["complete_ms"] for r in rs if not r["timeout"] and r.get("complete_ms") is not None]
        settled = [r["settled_ms"] for r in rs if not r["timeout"] and r.get("settled_ms") is not None]
        text = [r["text_ms"] for r in rs if r.get("text_ms") is not None]
        out.append({"page": pg, "control": name, "n": len(rs), "timeouts": sum(r["timeout"] for r in rs),
                    "idle_median_ms": round(statistics.median(idle), 1) if idle else None,
                    "idle_max_ms": round(max(idle), 1) if idle else None,
                    "complete_median_ms": round(statistics.median(complete), 1) if complete else None,
                    "complete_max_ms": round(max(complete), 1) if complete else None,
                    "number_median_ms": round(statistics.median(text), 1) if text else None,
                    "settled_median_ms": round(statistics.median(settled), 1) if settled else None,
                    "load_1min": [r["load_average"][0] for r in rs]})
    return out


def render(tables: dict[str, list[dict]]) -> str:
    """Markdown: one row per control, one column per measured run: idle median ms (number changed
    ms; complete ms when a section filled in later)."""
    labels = list(tables)
    keys: list[tuple[str, str]] = []
    for t in tables.values():
        for s in t:
            if (s["page"], s["control"]) not in keys:
                keys.append((s["page"], s["control"]))
    head = ("| control | page | " + " | ".join(f"{lab}: idle ms (number; complete)" for lab in labels)
            + " | load (1 min) |")
    lines = [head, "|" + "---|" * (3 + len(labels))]
    for pg, name in keys:
        cells, loads = [], []
        for lab in labels:
            s = next((x for x in tables[lab] if (x["page"], x["control"]) == (pg, name)), None)
            if s is None:
                cells.append("-")
                continue
            num = "-" if s["number_median_ms"] is None else f"{s['number_median_ms']:.0f}"
            complete = "-" if s.get("complete_median_ms") is None else f"{s['complete_median_ms']:.0f}"
            cells.append(("-" if s["idle_median_ms"] is None else f"{s['idle_median_ms']:.0f}") + f" ({num}; {complete})"
                         + (" TIMEOUT" if s["timeouts"] else ""))
            loads += s["load_1min"]
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
        lines.append(f"| {name} | {pg} | " + " | ".join(cells) + f" | {load} |")
    return "\n".join(lines)


def merge_results(path: Path, label: str, rows: list[dict], *, extra: dict | None = None) -> None:
    """Read-modify-write ``path``: ``"controls"[label]`` = the rows, their summary, the date and
    the load average (the other keys are kept)."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.is_file() else {}
    controls = data.get("controls") if isinstance(data.get("controls"), dict) else {}
    controls["target_ms"] = TARGET_MS
    controls[label] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "load_average": [round(x, 2) for x in os.getloadavg()],
                       "summary": summarise(rows), "moves": rows, **(extra or {})}
    data["controls"] = controls
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_on(run_dir: Path, *, label: str, rounds: int, out: Path | None, pages: list[str] | None = None,
           log: Callable[[str], None] = print) -> list[dict]:
    """Start a server on ``run_dir``, open Findings, measure every control; merge into ``out``."""
    from playwright.sync_api import sync_playwright

    from ldminv_core.choices import attack_label
    from ldminv_core.runs import Run

    attacks = [attack_label(a) for a in Run.open(run_dir).attacks]
    home = Path(tempfile.mkdtemp(prefix="ldminv-controls-home-"))
    port = bd._free_port()
    proc = bd.start_server(run_dir, home, port, home / "streamlit.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=bd.CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page, open_s = bd.open_page(browser, f"http://127.0.0.1:{port}", "Findings", timeout_s=900)
                log(f"  first open (Findings): {open_s:.1f} s")
                rows = measure_controls(page, attacks=attacks, rounds=rounds, pages=pages, log=log)
            finally:
                browser.close()
    finally:
        bd.stop_server(proc)
        shutil.rmtree(home, ignore_errors=True)
    if out is not None:
        merge_results(out, label, rows, extra={"run": str(run_dir)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--label", default="demo")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    ap.add_argument("--pages", nargs="+", default=None, metavar="PAGE",
                    help='only the controls of these pages (titles, e.g. "Masks & ROC", or "sidebar nav")')
    args = ap.parse_args(argv)
    rows = run_on(args.run.expanduser().resolve(), label=args.label, rounds=args.rounds, out=args.out,
                  pages=args.pages)
    print(render({args.label: summarise(rows)}))
    print(f"wrote {args.out} (controls.{args.label})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
