"""Run every ldminv benchmark, print the Performance table and write benchmarks/results.json.

Usage (from the repository root; the machine is shared, so run it niced):

    nice -n 5 python benchmarks/run_all.py            # full run
    nice -n 5 python benchmarks/run_all.py --quick    # a few minutes on 2 CPU cores
    nice -n 5 python benchmarks/run_all.py --only scoring   # one section, merged into results.json

Sections: geometry (ldminv vs the reference algorithm on the demo VAE, and the matrix-free
scaling on an SD-layout VAE), scoring (dashboard recomputation after one control change),
attacks (attack time vs bare UNet forward passes), large_run (a synthetic SD-size run, N = 5000,
d = 16384, T = 20, in the core and the real dashboard; --quick: N = 1000, d = 4096, T = 10).
See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

SECTIONS = ("geometry", "scoring", "attacks", "large_run")

#: Targets of the issue: (section, key, comparison, threshold).
TARGETS = {
    ("geometry", "speedup_vs_reference"): (">=", 20.0),
    ("scoring", "single_change_ms_demo"): ("<=", 50.0),
    ("scoring", "single_change_ms_sd"): ("<=", 300.0),
    ("scoring", "all_drops_ms_sd"): ("<=", 1000.0),
    ("attacks", "overhead_ratio"): ("<=", 1.3),
}

SETTINGS = {
    "quick": {
        "geometry_samples": 2,
        "scaling_sizes": [8, 16],
        "scaling_budget_s": 300.0,
        "attack_n": 64,
        "attack_timesteps": [0, 100, 10],
        "attack_repeats": 1,
    },
    "full": {
        "geometry_samples": 8,
        "scaling_sizes": [8, 16, 32, 64],
        "scaling_budget_s": 900.0,
        "attack_n": 128,
        "attack_timesteps": [0, 300, 10],
        "attack_repeats": 3,
    },
}


def _met(value: float | None, target: tuple[str, float]) -> bool | None:
    if value is None or value != value:
        return None
    op, thr = target
    return value >= thr if op == ">=" else value <= thr


def _target_text(target: tuple[str, float] | None) -> str:
    return "" if target is None else f"{target[0]} {common.fmt(target[1])}"


def performance_rows(results: dict[str, Any]) -> list[list[Any]]:
    """Rows (section, measure, value, unit, target, met) of the Performance table."""
    rows: list[list[Any]] = []

    def add(section: str, measure: str, value: Any, unit: str = "", key: str | None = None, target=None):
        tgt = TARGETS.get((section, key)) if key else target
        met = _met(value, tgt) if tgt else None
        rows.append([section, measure, value, unit, _target_text(tgt), "" if met is None else ("yes" if met else "NO")])

    g = results.get("geometry")
    if g:
        demo = g["demo"]
        add("geometry", f"speedup vs reference (wall, {demo['n_samples']} samples)", demo["speedup_vs_reference"], "x",
            key="speedup_vs_reference")
        add("geometry", "speedup vs reference (process CPU time)", demo["speedup_vs_reference_cpu_time"], "x")
        add("geometry", "ldminv exact geometry, per sample", demo["ours_s_per_sample"], "s")
        add("geometry", "reference algorithm, per sample", demo["reference_s_per_sample"], "s")
        add("geometry", "influence max abs err: ldminv / reference",
            f"{common.fmt(demo['max_abs_err_influence'])} / {common.fmt(demo['reference_max_abs_err_influence'])}")
        add("geometry", "log-volume rel err: ldminv / reference",
            f"{common.fmt(demo['rel_err_log_volume'])} / {common.fmt(demo['reference_rel_err_log_volume'])}")
        sc = g.get("scaling", {})
        for r in sc.get("sizes", []):
            if "s_per_sample" in r:
                add("geometry", f"matrix-free k=20 + Hutchinson 16, d={r['d']} ({r['pixels']} px)",
                    f"{common.fmt(r['s_per_sample'])} s, peak {common.fmt(r['peak_rss_mb'])} MB "
                    f"(+{common.fmt(r['extra_rss_mb'])})")
            else:
                add("geometry", f"matrix-free, d={r['d']}", r.get("skipped") or r.get("error"))
        if sc:
            add("geometry", "growth exponent: time / extra memory vs d",
                f"{common.fmt(sc['time_exponent'])} / {common.fmt(sc['memory_exponent'])}")
    s = results.get("scoring")
    if s:
        add("scoring", "drop change, demo (N=2000, d=256, T=30)", s["single_change_ms_demo"], "ms", key="single_change_ms_demo")
        add("scoring", "drop change, SD (N=5000, d=16384, T=1)", s["single_change_ms_sd"], "ms", key="single_change_ms_sd")
        add("scoring", "AUROC-vs-drop curve (19 drops x 2), SD", s["all_drops_ms_sd"], "ms", key="all_drops_ms_sd")
        add("scoring", "AUROC-vs-drop curve (19 drops x 2), demo", s["all_drops_ms_demo"], "ms")
        add("scoring", "manual mask, all T from memmap: demo", s["manual_mask_ms_demo"], "ms", target=("<=", 50.0))
        add("scoring", "manual mask, displayed t from memmap: demo", s["manual_mask_one_t_ms_demo"], "ms", target=("<=", 50.0))
        add("scoring", "manual mask, memmap: SD", s["manual_mask_ms_sd"], "ms", target=("<=", 300.0))
        add("scoring", "manual mask, cached float64 terms at t: SD", s["manual_mask_cached_ms_sd"], "ms", target=("<=", 300.0))
        add("scoring", "metrics table with bootstrap CIs (3 x 4 x 1000): demo / SD",
            f"{common.fmt(1000 * s['demo']['bootstrap_table']['median_s'])} / "
            f"{common.fmt(1000 * s['sd']['bootstrap_table']['median_s'])}", "ms")
        add("scoring", "DropSweep build (2 sweeps, one-off): demo / SD",
            f"{common.fmt(s['build_s_demo'])} / {common.fmt(s['build_s_sd'])}", "s")
    lr = results.get("large_run")
    if lr and "core" in lr:
        secs = lr["core"]["seconds"]
        run = lr.get("run", {})
        where = f"N={run.get('n')}, d={run.get('d')}, T={run.get('t')}"
        add("large_run", f"first open: grids ({where})", secs.get("first_open_grids"), "s")
        controls = {k: v for k, v in secs.items() if not k.startswith(("first_open", "open_run"))}
        if controls:
            worst = max(controls, key=controls.get)
            add("large_run", f"slowest control change, core ({worst})", 1000 * controls[worst], "ms",
                target=("<=", 1000.0))
        add("large_run", "peak memory, core (RSS / anonymous)",
            f"{lr['core']['peak']['rss_mb']} / {lr['core']['peak']['anon_mb']}", "MB")
        b = lr.get("browser")
        if b and b.get("summary"):
            worst = max(b["summary"], key=lambda k: b["summary"][k]["max_ms"] or 0)
            add("large_run", f"slowest control, browser ({worst}, max)", b["summary"][worst]["max_ms"], "ms",
                target=("<=", 1000.0))
            add("large_run", "server peak memory (RSS / anonymous)",
                f"{b['server_peak']['rss_mb']} / {b['server_peak']['anon_mb']}", "MB")
    a = results.get("attacks")
    if a:
        add("attacks", f"worst overhead ratio ({a['overhead_ratio_worst_attack']})", a["overhead_ratio"], "x",
            key="overhead_ratio")
        for name, r in a["per_attack"].items():
            add("attacks", f"{name}: attack / bare s, ratio, in-run ratio, samples/s",
                f"{common.fmt(r['attack_s'])} / {common.fmt(r['bare_s'])}, {common.fmt(r['overhead_ratio'])}, "
                f"{common.fmt(r['overhead_ratio_in_run'])}, {common.fmt(r['samples_per_s'])}")
    return rows


def _modes(results: dict[str, Any]) -> str:
    modes = {sec: results[sec].get("mode", results["mode"]) for sec in SECTIONS if sec in results}
    if len(set(modes.values())) <= 1:
        return f"{results['mode']} mode"
    return "modes: " + ", ".join(f"{sec} {m} ({results[sec].get('run_at', '?')})" for sec, m in modes.items())


def render(results: dict[str, Any]) -> str:
    """The Performance table (markdown) with the machine line above it."""
    m = results["machine"]
    head = (
        f"Machine: {m['cpu_model']}, {m['usable_cores']} cores, torch threads {m['torch_threads']}, "
        f"{m['memory_gb']} GB RAM, torch {m['versions']['torch']}, diffusers {m['versions']['diffusers']}; "
        f"load average {m['load_average_at_start']} at start, {results.get('load_average_at_end')} at end; "
        f"{results['date']} ({_modes(results)})"
    )
    table = common.markdown_table(["section", "measure", "value", "unit", "target", "met"], performance_rows(results))
    return head + "\n\n" + table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short version (a few minutes on 2 cores)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of sections among {SECTIONS}")
    ap.add_argument("--out", type=Path, default=common.REPO / "benchmarks" / "results.json")
    ap.add_argument("--wait-demo", type=float, default=0.0, metavar="SECONDS",
                    help="poll up to this long for the trained demo model before falling back to a random one")
    ap.add_argument("--geometry-samples", type=int, default=None)
    ap.add_argument("--threads", type=int, default=common.TORCH_THREADS)
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {bad}; expected names among {SECTIONS}")
    mode = "quick" if args.quick else "full"
    cfg = dict(SETTINGS[mode])
    if args.geometry_samples is not None:
        cfg["geometry_samples"] = args.geometry_samples

    common.set_threads(args.threads)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    from benchmarks import bench_attacks, bench_geometry, bench_scoring

    results: dict[str, Any] = {}
    if set(only) != set(SECTIONS) and args.out.is_file():
        results = json.loads(args.out.read_text())  # keep the sections not rerun
    results.update({"date": common.now_iso(), "mode": mode, "settings": cfg, "machine": common.machine_info()})
    results["machine"]["omp_num_threads_env"] = os.environ.get("OMP_NUM_THREADS")
    t_start = time.perf_counter()
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    model = None
    if {"geometry", "attacks"} & set(only):
        if args.wait_demo > 0 and not common.demo_model_ready():
            log(f"waiting up to {args.wait_demo:.0f} s for the trained demo model ...")
            common.wait_for_demo(args.wait_demo)
        model = common.load_demo_model()
        log(f"demo model: {model.source} {model.note}".rstrip())
        results["demo_model"] = {"source": model.source, "note": model.note, "vae": model.vae_config,
                                 "unet": model.unet_config}

    if "geometry" in only:
        log("geometry ...")
        t0 = time.perf_counter()
        demo = bench_geometry.run_demo_geometry(model, n_samples=cfg["geometry_samples"], log=log)
        scaling = bench_geometry.run_scaling(cfg["scaling_sizes"], budget_s=cfg["scaling_budget_s"], log=log)
        results["geometry"] = {
            "speedup_vs_reference": demo["speedup_vs_reference"],
            "max_abs_err_influence": demo["max_abs_err_influence"],
            "rel_err_log_volume": demo["rel_err_log_volume"],
            "reference_max_abs_err_influence": demo["reference_max_abs_err_influence"],
            "reference_rel_err_log_volume": demo["reference_rel_err_log_volume"],
            "demo": demo,
            "scaling": scaling,
            "section_s": time.perf_counter() - t0,
            "run_at": common.now_iso(),
        }
    if "scoring" in only:
        log("scoring ...")
        t0 = time.perf_counter()
        results["scoring"] = bench_scoring.run_scoring(quick=args.quick, log=log)
        results["scoring"].update({"section_s": time.perf_counter() - t0, "run_at": common.now_iso()})
    if "attacks" in only:
        log("attacks ...")
        t0 = time.perf_counter()
        start, stop, step = cfg["attack_timesteps"]
        results["attacks"] = bench_attacks.run_attacks(
            model, n=cfg["attack_n"], timesteps=list(range(start, stop, step)), batch_size=64,
            repeats=cfg["attack_repeats"], log=log,
        )
        results["attacks"].update({"section_s": time.perf_counter() - t0, "run_at": common.now_iso()})

    if "large_run" in only:
        from benchmarks import bench_large_run

        log("large_run ...")
        t0 = time.perf_counter()
        results["large_run"] = bench_large_run.run_large(quick=args.quick, log=log)
        results["large_run"].update({"section_s": time.perf_counter() - t0, "run_at": common.now_iso()})

    for section in only:
        results[section]["mode"] = mode
    results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["total_s"] = time.perf_counter() - t_start
    results["targets"] = {f"{s}.{k}": f"{op} {thr}" for (s, k), (op, thr) in TARGETS.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, args.out)
    print()
    print(render(results))
    print(f"\nwrote {args.out} ({results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
