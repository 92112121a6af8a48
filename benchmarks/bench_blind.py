"""The blind baseline's classifier: logistic regression (the default) against gradient boosting.

Usage (from the repository root; the machine is shared, so run it niced):

    nice -n 5 python -m benchmarks.bench_blind                       # about 5-10 min on 2 cores
    nice -n 5 python -m benchmarks.bench_blind --quick               # about 1-2 min
    nice -n 5 python -m benchmarks.bench_blind --demo-run RUN ...    # also: the blind stage's share

The blind classifier sees only the files, never the model, so the comparison needs no analysis:
the cases are built from the bundled demo images (``assets/demo``) exactly as the runs of the
tests and demos hold them (the first N files of each folder, sorted by name), their blind
features computed by :func:`ldminv_core.blind_features.blind_features`, and the out-of-fold
scores cross-fitted on the ``honest`` protocol's folds (5 stratified folds, seed 0):

- ``demo``: the membership demo's first 300 members and 300 held-out images (no shift: both are
  Fashion-MNIST training-split images, drawn alike);
- ``shift_demo``: ``analyze --demo shift``'s folders, first 150 + 150 (held-out footwear against
  held-out clothes: pure class shift);
- ``pure_shift``, ``no_shift``, ``format_shift``: the cases of ``tests/test_shift_cases.py``, 40 + 40
  (the shift demo's folders; a random split of 80 held-out images; alternate held-out images,
  members PNG and held-out re-saved as JPEG quality 75).

For every case and classifier: the out-of-fold AUROC of each feature group and of all together,
with the 95% bootstrap interval of the ``honest`` protocol (stratified by split and fold, 1000
replicates; the classifier is not refitted), and the fit time of the cross-fitting (5 fits per
group). ``null``: the false-alarm rate of the blind verdict: R random splits of the demo's 1000
held-out images into n + n (one distribution, so every "supported" verdict is a false alarm),
the fraction whose interval lies above 0.5 (and below), per classifier. With ``--demo-run`` the
blind stage's seconds as a share of that run's analysis (run.json ``timings``) are recorded too.

Gradient boosting is scikit-learn's ``HistGradientBoostingClassifier`` (default settings,
``random_state`` 0) on the same design (standardised groups, TF-IDF of the captions, densified).
Writes ``benchmarks/blind.json`` and prints markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

OUT = common.REPO / "benchmarks" / "blind.json"
CLASSIFIERS = ("logistic", "hist_gradient_boosting")
N_BOOT = 1000


def _fit_logistic(x_tr, y_tr, x_te, seed: int) -> np.ndarray:
    from ldminv_core.evaluation.blind import _fit_predict  # the classifier the evaluation layer fits

    return _fit_predict(x_tr, y_tr, x_te, seed)


def _fit_hgb(x_tr, y_tr, x_te, seed: int) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingClassifier

    dense = lambda x: x.toarray() if hasattr(x, "toarray") else np.asarray(x)  # noqa: E731
    model = HistGradientBoostingClassifier(random_state=seed).fit(dense(x_tr), y_tr)
    return model.predict_proba(dense(x_te))[:, 1]


FITS: dict[str, Callable] = {"logistic": _fit_logistic, "hist_gradient_boosting": _fit_hgb}


def cross_fit(features, labels: np.ndarray, folds: np.ndarray, classifier: str, *, seed: int = 0
              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Out-of-fold scores {group: (N,)} (every group alone, then "all") and fit seconds per group,
    with the evaluation layer's design (:func:`ldminv_core.evaluation.blind._design`). For
    ``"logistic"`` this is :func:`~ldminv_core.evaluation.blind.cross_fitted_blind_scores`."""
    from ldminv_core.evaluation.blind import ALL_GROUPS, _design

    fit = FITS[classifier]
    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, members in [*((g, (g,)) for g in features.groups), (ALL_GROUPS, tuple(features.groups))]:
        out = np.empty(labels.size, dtype=np.float64)
        t = 0.0
        for f in np.unique(folds):
            test = folds == f
            x_tr, x_te = _design(features, members, ~test, test)
            t0 = time.perf_counter()
            out[test] = fit(x_tr, labels[~test], x_te, seed)
            t += time.perf_counter() - t0
        scores[name], seconds[name] = out, t
    return scores, seconds


def auroc_interval(score: np.ndarray, labels: np.ndarray, folds: np.ndarray, *, n_boot: int = N_BOOT,
                   seed: int = 0) -> tuple[float, float, float]:
    """(AUROC, lo, hi): members positive, the 95% percentile interval of the ``honest`` design
    (stratified by split and fold), as :func:`ldminv_core.evaluation.blind.evaluate_blind` reports."""
    from ldminv_core.evaluation import Protocol, combine_strata, convention_metrics, percentile_interval, resample_index
    from ldminv_core.evaluation.protocols import convention_metrics_resampled

    y = labels.astype(np.int8)
    point = float(convention_metrics(score[None, :], y, Protocol())["auroc"][0])
    design = resample_index(combine_strata(labels.astype(np.int64), folds), n_boot=n_boot, seed=seed)
    lo, hi = percentile_interval(convention_metrics_resampled(score, y, design, Protocol())["auroc"])
    return point, float(lo), float(hi)


# ----------------------------------------------------------------------------- cases


def _rows(folder: Path) -> list[dict]:
    lines = (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((json.loads(x) for x in lines if x.strip()), key=lambda r: r["file_name"])


def _case(paths_m: list[Path], caps_m: list[str], paths_h: list[Path], caps_h: list[str]):
    from ldminv_core.blind_features import blind_features

    paths = [*paths_m, *paths_h]
    labels = np.r_[np.ones(len(paths_m), dtype=np.int64), np.zeros(len(paths_h), dtype=np.int64)]
    t0 = time.perf_counter()
    feats = blind_features(paths, captions=[*caps_m, *caps_h])
    return feats, labels, time.perf_counter() - t0


def build_cases(tmp: Path, *, small: int = 40) -> dict[str, tuple]:
    """{case: (BlindFeatures, labels (N,), feature seconds)} (see the module docstring)."""
    from PIL import Image

    from ldminv_core import demo

    cases: dict[str, tuple] = {}
    mem, held = _rows(demo.DEMO_MEMBERS_DIR)[:300], _rows(demo.DEMO_HELDOUT_DIR)[:300]
    cases["demo"] = _case([demo.DEMO_MEMBERS_DIR / r["file_name"] for r in mem], [r["text"] for r in mem],
                          [demo.DEMO_HELDOUT_DIR / r["file_name"] for r in held], [r["text"] for r in held])
    m_dir, h_dir = demo.build_shift_demo_data(tmp / "shift-data")
    sm, sh = _rows(m_dir), _rows(h_dir)
    for name, n in (("shift_demo", 150), ("pure_shift", small)):
        cases[name] = _case([m_dir / r["file_name"] for r in sm[:n]], [r["text"] for r in sm[:n]],
                            [h_dir / r["file_name"] for r in sh[:n]], [r["text"] for r in sh[:n]])
    rows = _rows(demo.DEMO_HELDOUT_DIR)
    first = rows[: 2 * small]
    perm = np.random.default_rng(0).permutation(len(first))
    a, b = [first[i] for i in sorted(perm[:small])], [first[i] for i in sorted(perm[small:])]
    cases["no_shift"] = _case([demo.DEMO_HELDOUT_DIR / r["file_name"] for r in a], [r["text"] for r in a],
                              [demo.DEMO_HELDOUT_DIR / r["file_name"] for r in b], [r["text"] for r in b])
    fmt = rows[2 * small: 4 * small]
    jpg_dir = tmp / "jpeg75"
    jpg_dir.mkdir()
    jpgs = []
    for r in fmt[1::2]:
        with Image.open(demo.DEMO_HELDOUT_DIR / r["file_name"]) as im:
            path = jpg_dir / Path(r["file_name"]).with_suffix(".jpg").name
            im.convert("L").save(path, format="JPEG", quality=75)
            jpgs.append(path)
    cases["format_shift"] = _case([demo.DEMO_HELDOUT_DIR / r["file_name"] for r in fmt[0::2]],
                                  [r["text"] for r in fmt[0::2]], jpgs, [r["text"] for r in fmt[1::2]])
    return cases


def compare(cases: dict[str, tuple], *, log: Callable[[str], None]) -> dict[str, Any]:
    """Per case and classifier: AUROC [lo, hi] of each group and the fit seconds."""
    from ldminv_core.evaluation.evaluator import stratified_folds

    out: dict[str, Any] = {}
    for case, (feats, labels, feat_s) in cases.items():
        folds = stratified_folds(labels, folds=5, seed=0)
        entry: dict[str, Any] = {"n_members": int(labels.sum()), "n_heldout": int((1 - labels).sum()),
                                 "feature_s": feat_s, "classifiers": {}}
        for clf in CLASSIFIERS:
            scores, seconds = cross_fit(feats, labels, folds, clf)
            groups = {}
            for g, s in scores.items():
                a, lo, hi = auroc_interval(s, labels, folds)
                groups[g] = {"auroc": a, "ci": [lo, hi], "fit_s": seconds[g]}
            entry["classifiers"][clf] = {"groups": groups, "fit_s_total": sum(seconds.values())}
            log(f"  {case} {clf}: " + ", ".join(f"{g} {v['auroc']:.3f}" for g, v in groups.items())
                + f" ({sum(seconds.values()):.2f} s)")
        out[case] = entry
    return out


def null_rate(*, sizes: tuple[int, ...], repeats: int, classifiers: tuple[str, ...] = CLASSIFIERS,
              log: Callable[[str], None]) -> dict[str, Any]:
    """False alarms of the blind verdict on one distribution: ``repeats`` random disjoint n + n
    draws from the demo's 1000 held-out images per n; the fraction whose "all" interval lies above
    0.5 (``above``), below 0.5 (``below``), and the spread of the AUROC."""
    from ldminv_core import demo
    from ldminv_core.blind_features import BlindFeatures, blind_features
    from ldminv_core.evaluation.evaluator import stratified_folds

    rows = _rows(demo.DEMO_HELDOUT_DIR)
    feats = blind_features([demo.DEMO_HELDOUT_DIR / r["file_name"] for r in rows], captions=[r["text"] for r in rows])
    out: dict[str, Any] = {"pool": len(rows), "repeats": repeats, "sizes": {}}
    for n in sizes:
        per: dict[str, Any] = {}
        for clf in classifiers:
            aurocs, above, below, secs = [], 0, 0, 0.0
            for r in range(repeats):
                pick = np.random.default_rng(1000 + r).permutation(len(rows))[: 2 * n]
                sub = BlindFeatures(groups={g: x[pick] for g, x in feats.groups.items()}, names=feats.names,
                                    captions=tuple(np.asarray(feats.captions, dtype=object)[pick]))
                labels = np.r_[np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]
                folds = stratified_folds(labels, folds=5, seed=0)
                t0 = time.perf_counter()
                scores, _ = cross_fit(sub, labels, folds, clf)
                secs += time.perf_counter() - t0
                a, lo, hi = auroc_interval(scores["all"], labels, folds, n_boot=500)
                aurocs.append(a)
                above += lo > 0.5
                below += hi < 0.5
            per[clf] = {"above": above / repeats, "below": below / repeats, "auroc_mean": float(np.mean(aurocs)),
                        "auroc_sd": float(np.std(aurocs, ddof=1)), "auroc_min": float(np.min(aurocs)),
                        "auroc_max": float(np.max(aurocs)), "seconds": secs}
            log(f"  null n={n} {clf}: above {above}/{repeats}, below {below}/{repeats}, AUROC mean "
                f"{np.mean(aurocs):.3f} sd {np.std(aurocs, ddof=1):.3f}")
        out["sizes"][str(n)] = per
    return out


def blind_share(run: Path) -> dict[str, Any]:
    """The blind stage's seconds against the run's total analysis time (run.json ``timings``)."""
    timings = json.loads((run / "run.json").read_text(encoding="utf-8")).get("timings", {})
    total = timings.get("total") or sum(v for k, v in timings.items() if k != "total")
    return {"run": str(run), "blind_s": timings.get("blind"), "total_s": total,
            "share": (timings.get("blind") or 0.0) / total if total else None, "timings": timings}


def render(results: dict[str, Any]) -> str:
    lines = []
    header = ["case", "group", *(f"{c} AUROC [95% CI]" for c in CLASSIFIERS), *(f"{c} fit s" for c in CLASSIFIERS)]
    rows = []
    for case, entry in results["cases"].items():
        for g in entry["classifiers"][CLASSIFIERS[0]]["groups"]:
            cells = [entry["classifiers"][c]["groups"][g] for c in CLASSIFIERS]
            rows.append([case, g, *(f"{v['auroc']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]" for v in cells),
                         *(f"{v['fit_s']:.3f}" for v in cells)])
    lines.append(common.markdown_table(header, rows))
    null = results.get("null")
    if null:
        lines.append("")
        lines.append(f"False alarms on one distribution ({null['repeats']} random n + n splits of the demo's "
                     f"{null['pool']} held-out images; 'all' interval above / below 0.5):")
        rows = [[n, c, f"{v['above']:.2f}", f"{v['below']:.2f}", f"{v['auroc_mean']:.3f} ± {v['auroc_sd']:.3f}",
                 f"[{v['auroc_min']:.3f}, {v['auroc_max']:.3f}]", f"{v['seconds']:.1f}"]
                for n, per in null["sizes"].items() for c, v in per.items()]
        lines.append(common.markdown_table(["n per folder", "classifier", "above", "below", "AUROC mean ± sd",
                                            "range", "seconds"], rows))
    for s in results.get("blind_share", []):
        lines.append(f"\nblind stage of {s['run']}: {s['blind_s']} s of {s['total_s']} s = "
                     f"{100 * s['share']:.2f} % of the analysis")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer null repeats and sizes")
    ap.add_argument("--demo-run", type=Path, action="append", default=[],
                    help="a finished run folder whose blind stage's share of the analysis time is recorded "
                    "(repeatable)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    common.set_threads(1)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    results: dict[str, Any] = {"date": common.now_iso(), "machine": common.machine_info(),
                               "mode": "quick" if args.quick else "full"}
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ldminv-bench-blind-"))
    try:
        log("cases ...")
        results["cases"] = compare(build_cases(tmp), log=log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log("null ...")
    results["null"] = null_rate(sizes=(40, 150) if args.quick else (40, 150, 300),
                                repeats=10 if args.quick else 40, log=log)
    results["blind_share"] = [blind_share(r) for r in args.demo_run]
    results["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    results["total_s"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    part = args.out.with_suffix(".json.tmp")
    part.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(part, args.out)
    print()
    print(render(results))
    print(f"\nwrote {args.out} ({results['total_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
