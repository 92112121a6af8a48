"""The whole demo analysis, end to end: ``python -m ldminv_core analyze --demo`` wall time.

Usage (from the repository root):

    python -m benchmarks.bench_demo_time                      # workers 1 vs auto, about 4-6 min on 2 cores
    python -m benchmarks.bench_demo_time --baseline REF       # also the code of git commit REF
    python -m benchmarks.bench_demo_time --repeats 2 --limit 100

Each variant is one fresh process of the command line, exactly as a user starts it, into its own
empty ``LDMINV_HOME`` (a temporary folder), so every run does all the work: imports, the cost
estimate, the model stages (the demo's shipped decoder geometry is reused, as by default), and the
report printed at the end. The variants run one after another, alternating their order on each
repeat, so that a change in the machine's load falls on both:

- ``workers=1``: the attack stages one batch at a time (``--workers 1``);
- ``workers=auto``: the default (one worker thread per usable core, at most 4);
- ``baseline`` (with ``--baseline REF``): the package as committed at REF (``git archive``),
  with this checkout's demo assets, under its own defaults.

Per run: wall seconds (from the start of the process to its exit), the process' CPU seconds
(user + system, from ``resource.getrusage`` of the child), run.json ``timings`` (seconds per
stage), the seconds outside the stages (imports, model load, the cost estimate, the report:
wall minus ``timings.total``), the seconds from the end of the analysis to the exit (the report,
from the command's own output timestamps), the workers recorded in run.json's session, and the
1-minute load average before and after. The machine may be shared: the load average stands next
to every timing, and ratios are of runs made side by side.

Writes ``benchmarks/demo_time.json`` (``--json`` another path) and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT_JSON = REPO / "benchmarks" / "demo_time.json"
STAGES = ("load", "encode", "blind", "geometry", "sima", "pia", "loss", "secmi", "pfami")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _baseline_tree(ref: str, root: Path) -> Path:
    """The package of commit ``ref`` under ``root`` (``git archive``), beside a link to this
    checkout's assets (the demo model and images)."""
    tree = root / f"baseline-{ref.replace('/', '_')}"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref, "ldminv_core"], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / "assets").symlink_to(REPO / "assets")
    return tree


def run_demo(label: str, *, code_root: Path, extra: list[str], limit: int | None, home: Path) -> dict[str, Any]:
    """One ``analyze --demo`` process into a fresh LDMINV_HOME; its timings (see the module doc)."""
    env = dict(os.environ, LDMINV_HOME=str(home), PYTHONPATH=str(code_root))
    cmd = [sys.executable, "-m", "ldminv_core", "analyze", "--demo", *extra]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = _load()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=code_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    complete_at = None
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:  # the report follows "run complete: ..." on stdout
        if line.startswith("run complete:") and complete_at is None:
            complete_at = time.perf_counter() - t0
        lines.append(line)
    err = proc.stderr.read() if proc.stderr is not None else ""
    code = proc.wait()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise RuntimeError(f"{label}: exit status {code}\n{err[-3000:]}")
    run_dir = home / "runs" / "demo"
    data = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    timings = {k: float(v) for k, v in data.get("timings", {}).items()}
    session = (data.get("sessions") or [{}])[-1]
    return {
        "variant": label,
        "command": " ".join(cmd[1:]),
        "wall_s": round(wall, 2),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
        "stages_total_s": timings.get("total"),
        "outside_stages_s": round(wall - timings.get("total", 0.0), 2),
        "report_s": None if complete_at is None else round(wall - complete_at, 2),
        "timings": timings,
        "workers": session.get("workers"),
        "cpu_threads": session.get("cpu_threads"),
        "load_average_before": load0,
        "load_average_after": _load(),
        "report_lines": len(lines),
    }


def _table(rows: list[dict]) -> str:
    cols = ["variant", "wall_s", "cpu_s", "stages_total_s", "outside_stages_s", "report_s", *STAGES, "load"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["variant"], r["wall_s"], r["cpu_s"], r["stages_total_s"], r["outside_stages_s"], r["report_s"],
                 *[r["timings"].get(s, "") for s in STAGES],
                 f"{r['load_average_before']}->{r['load_average_after']}"]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def _summary(rows: list[dict]) -> dict[str, Any]:
    """Per variant: the fastest run's wall time (the one least disturbed), the median, and the
    ratio of each variant's best to workers=1's best."""
    best: dict[str, dict] = {}
    for r in rows:
        walls = best.setdefault(r["variant"], {"walls": []})["walls"]
        walls.append(r["wall_s"])
    for v in best.values():
        w = sorted(v["walls"])
        v.update(best_wall_s=w[0], median_wall_s=w[len(w) // 2])
    ref = best.get("workers=1", {}).get("best_wall_s")
    for v in best.values():
        v["speedup_vs_workers_1"] = None if not ref else round(ref / v["best_wall_s"], 3)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each variant (alternating order)")
    parser.add_argument("--limit", type=int, help="images per folder (default: the demo's 300)")
    parser.add_argument("--baseline", metavar="REF", help="also time the package of git commit REF")
    parser.add_argument("--only", choices=("workers=1", "workers=auto"), help="run one variant (and --baseline)")
    parser.add_argument("--json", type=Path, default=OUT_JSON, help="where to write the results")
    args = parser.parse_args(argv)

    import torch

    root = Path(tempfile.mkdtemp(prefix="ldminv-bench-demo-"))
    variants: list[tuple[str, Path, list[str]]] = []
    if args.only != "workers=auto":
        variants.append(("workers=1", REPO, ["--workers", "1"]))
    if args.only != "workers=1":
        variants.append(("workers=auto", REPO, []))
    if args.baseline:
        variants.append((f"baseline {args.baseline}", _baseline_tree(args.baseline, root), []))
    rows: list[dict] = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        for rep in range(args.repeats):
            order = variants if rep % 2 == 0 else list(reversed(variants))
            for label, code_root, extra in order:
                home = root / f"home-{len(rows)}"
                row = run_demo(label, code_root=code_root, extra=extra, limit=args.limit, home=home)
                row["repeat"] = rep
                rows.append(row)
                print(f"{label}: {row['wall_s']} s wall, stages {row['stages_total_s']} s, load "
                      f"{row['load_average_before']}->{row['load_average_after']}", file=sys.stderr, flush=True)
                shutil.rmtree(home, ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "benchmark": "bench_demo_time",
        "started": started,
        "command": "python -m ldminv_core analyze --demo" + (f" --limit {args.limit}" if args.limit else ""),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "runs": rows,
        "summary": _summary(rows),
    }
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(_table(rows))
    for label, s in result["summary"].items():
        print(f"{label}: best {s['best_wall_s']} s, median {s['median_wall_s']} s, "
              f"speed-up vs workers=1 {s['speedup_vs_workers_1']}")
    print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
