"""The blind baseline's classifier: logistic regression (the default) against gradient boosting.

Usage (from the repository root; the machine is shared, so run it niced):

    nice -n 5 python -m benchmarks.bench_blind                       # about 15-25 min on 2 cores
    nice -n 5 python -m benchmarks.bench_blind --quick               # about 4 min (estimated)
    nice -n 5 python -m benchmarks.bench_blind --demo-run RUN ...    # also: the blind stage's share

The blind classifier sees only the files, never the model, so the comparison needs no analysis:
the cases are built from the bundled demo images (``assets/demo``) exactly as the runs of the
tests and demos hold them (the first N files of each folder, sorted by name), their blind
features computed by :func:`ldminv_core.data.blind_features.blind_features`, and the out-of-fold
scores cross-fitted on the ``honest`` protocol's folds (5 stratified folds, seed 0):

- ``demo``: the membership demo's first 300 members and 300 held-out images (no shift: both are
  Fashion-MNIST training-split images, drawn alike);
- ``shift_demo``: ``analyze --demo shift``'s folders, first 150 + 150 (held-out footwear against
  held-out clothes: pure class shift);
- ``pure_shift``, ``no_shift``, ``format_shift``: the cases of ``tests/core/evaluation/test_shift_cases.py``, 40 + 40
  (the shift demo's folders; a random split of 80 held-out images; alternate held-out images,
  members PNG and held-out re-saved as JPEG quality 75).

For every case and classifier: the out-of-fold AUROC of each feature group and of all together,
with the 95% bootstrap interval of the ``honest`` protocol (stratified by split and fold, 1000
replicates; the classifier is not refitted), and the fit time of the cross-fitting (5 fits per
group).

``null``: false alarms of the blind verdict on one distribution. R random splits of the demo's
1000 held-out images into n + n (seeded draws, the same for both classifiers), so every
"supported" or "contradicted" verdict on them is a false alarm (nominal 2.5% each side). Per
draw, on the standard protocol's design (``resample_index(combine_strata(y), n_boot=1000,
seed=0)``) and the ``honest`` folds (``stratified_folds(y, folds=5, seed=0)``):

- ``plain``: the percentile interval of the bootstrap of fixed out-of-fold scores (the
  classifier is not refitted), for both classifiers;
- ``reported`` (logistic regression only): the interval the tool reports,
  ``evaluate_blind(...).group("all")`` (the bootstrap widened by the cross-fitting's own variance
  and extended by its bias under no signal, both from :func:`~ldminv_core.evaluation.blind.fitting_null`:
  the classifier refitted on 40 label permutations within folds). Gradient boosting gets no
  permutation null (40 refits per draw: too slow for what it would tell).

Every rate comes with its count, the number of draws and the exact (Clopper-Pearson) binomial
95% interval (``scipy.stats.binomtest``). With ``--demo-run`` the blind stage's seconds as a
share of that run's analysis (run.json ``timings``) are recorded, and beside them what the
stage costs now (features plus the permutation null on the default folds, timed here on the
demo case); the load averages at start and end are recorded too.

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
    from ldminv_core.data.blind_features import blind_features

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


def rate(count: int, draws: int) -> dict[str, Any]:
    """``count`` of ``draws`` as {"count", "draws", "rate", "ci"}: ``ci`` the exact (Clopper-Pearson)
    binomial 95% interval (:func:`scipy.stats.binomtest`)."""
    from scipy.stats import binomtest

    ci = binomtest(int(count), int(draws)).proportion_ci(confidence_level=0.95, method="exact")
    return {"count": int(count), "draws": int(draws), "rate": count / draws, "ci": [float(ci.low), float(ci.high)]}


def null_draw(features, labels: np.ndarray, classifier: str, *, n_boot: int = N_BOOT, seed: int = 0
              ) -> dict[str, Any]:
    """One draw of the null study: the "all" AUROC of ``classifier`` cross-fitted on the ``honest``
    folds (``stratified_folds(labels, folds=5, seed=0)``), its ``plain`` interval (percentile of the
    bootstrap of the fixed out-of-fold scores on the standard design
    ``resample_index(combine_strata(labels), n_boot=n_boot, seed=seed)``) and verdict, and for
    ``"logistic"`` the ``reported`` interval and verdict of
    :func:`~ldminv_core.evaluation.blind.evaluate_blind` on the same folds and design, with its
    permutation null's sd and bias. Seconds: ``fit_s`` the cross-fitting, ``report_s`` the whole
    ``evaluate_blind`` (its own cross-fitting and the 40-permutation null)."""
    from ldminv_core.evaluation import Protocol, combine_strata, convention_metrics, percentile_interval, resample_index
    from ldminv_core.evaluation.blind import evaluate_blind
    from ldminv_core.evaluation.evaluator import stratified_folds
    from ldminv_core.evaluation.protocols import convention_metrics_resampled, make_protocol
    from ldminv_core.evaluation.resampling import verdict

    y = np.asarray(labels).astype(np.int64)
    folds = stratified_folds(y, folds=5, seed=0)
    design = resample_index(combine_strata(y), n_boot=n_boot, seed=seed)
    t0 = time.perf_counter()
    scores, _ = cross_fit(features, y, folds, classifier)
    fit_s = time.perf_counter() - t0
    auroc = float(convention_metrics(scores["all"][None, :], y.astype(np.int8), Protocol())["auroc"][0])
    reps = convention_metrics_resampled(scores["all"], y.astype(np.int8), design, Protocol())["auroc"]
    lo, hi = percentile_interval(reps)
    out: dict[str, Any] = {"auroc": auroc, "plain_ci": [float(lo), float(hi)],
                           "plain_verdict": verdict((lo - 0.5, hi - 0.5)), "fit_s": fit_s}
    if classifier == "logistic":
        t0 = time.perf_counter()
        res = evaluate_blind(features, y, folds, make_protocol("standard"), design)
        out["report_s"] = time.perf_counter() - t0
        g = res.group("all")
        if abs(g.auroc - auroc) > 1e-9:  # the bench's cross-fitting is the tool's (tested): a guard
            raise RuntimeError(f"evaluate_blind's AUROC {g.auroc} differs from the bench's {auroc}")
        out.update(reported_ci=[float(g.ci["auroc"][0]), float(g.ci["auroc"][1])], reported_verdict=g.verdict,
                   fitting_sd=float(res.fitting_sd), fitting_bias=float(res.fitting_bias),
                   fitting_permutations=int(res.fitting_permutations))
    return out


def _summary(draws: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Counts of supported / contradicted / either among the draws' ``<key>_verdict``, with rates,
    exact intervals and the mean interval width."""
    verdicts = [d[f"{key}_verdict"] for d in draws]
    s, c = verdicts.count("supported"), verdicts.count("contradicted")
    return {"supported": rate(s, len(draws)), "contradicted": rate(c, len(draws)),
            "false_alarm": rate(s + c, len(draws)), "undefined": verdicts.count("undefined"),
            "mean_width": float(np.mean([d[f"{key}_ci"][1] - d[f"{key}_ci"][0] for d in draws]))}


NULL_REPEATS = {40: 80, 150: 80, 300: 40}


def null_rate(*, sizes: tuple[int, ...], repeats: dict[int, int], classifiers: tuple[str, ...] = CLASSIFIERS,
              pool=None, log: Callable[[str], None]) -> dict[str, Any]:
    """False alarms of the blind verdict on one distribution: ``repeats[n]`` random disjoint n + n
    draws (draw r: the first 2n of ``numpy.random.default_rng(1000 + r).permutation(pool size)``,
    members the first n) from ``pool`` (BlindFeatures; default the demo's 1000 held-out images),
    the same draws for every classifier; per size and classifier :func:`null_draw` summarised:
    the ``plain`` (and for logistic the ``reported``) supported / contradicted counts with exact
    binomial intervals, and the spread of the AUROC."""
    from ldminv_core.data.blind_features import BlindFeatures, blind_features

    if pool is None:
        from ldminv_core import demo

        rows = _rows(demo.DEMO_HELDOUT_DIR)
        pool = blind_features([demo.DEMO_HELDOUT_DIR / r["file_name"] for r in rows],
                              captions=[r["text"] for r in rows])
    size = next(iter(pool.groups.values())).shape[0]
    caps = None if pool.captions is None else np.asarray(pool.captions, dtype=object)
    out: dict[str, Any] = {"pool": size, "n_boot": N_BOOT, "design": "standard: resample_index(combine_strata(y), "
                           "n_boot=1000, seed=0); folds: stratified_folds(y, folds=5, seed=0)", "sizes": {}}
    for n in sizes:
        per: dict[str, Any] = {}
        picks = [np.random.default_rng(1000 + r).permutation(size)[: 2 * n] for r in range(repeats[n])]
        labels = np.r_[np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)]
        for clf in classifiers:
            draws = []
            for pick in picks:
                sub = BlindFeatures(groups={g: x[pick] for g, x in pool.groups.items()}, names=pool.names,
                                    captions=None if caps is None else tuple(caps[pick]))
                draws.append(null_draw(sub, labels, clf))
            aurocs = np.array([d["auroc"] for d in draws])
            entry: dict[str, Any] = {
                "draws": len(draws), "plain": _summary(draws, "plain"), "auroc_mean": float(aurocs.mean()),
                "auroc_sd": float(aurocs.std(ddof=1)) if aurocs.size > 1 else float("nan"),
                "auroc_min": float(aurocs.min()), "auroc_max": float(aurocs.max()),
                "fit_seconds": float(sum(d["fit_s"] for d in draws))}
            if clf == "logistic":
                entry["reported"] = _summary(draws, "reported")
                entry["reported_contains_plain"] = all(
                    d["reported_ci"][0] <= d["plain_ci"][0] + 1e-12 and d["reported_ci"][1] >= d["plain_ci"][1] - 1e-12
                    for d in draws)
                entry["fitting_sd_mean"] = float(np.mean([d["fitting_sd"] for d in draws]))
                entry["fitting_bias_mean"] = float(np.mean([d["fitting_bias"] for d in draws]))
                entry["report_seconds"] = float(sum(d["report_s"] for d in draws))
            entry["per_draw"] = [{k: v for k, v in d.items() if not k.endswith("_s")} for d in draws]
            per[clf] = entry
            msg = (f"  null n={n} {clf} ({len(draws)} draws): plain {entry['plain']['supported']['count']} supported, "
                   f"{entry['plain']['contradicted']['count']} contradicted")
            if "reported" in entry:
                msg += (f"; reported {entry['reported']['supported']['count']} supported, "
                        f"{entry['reported']['contradicted']['count']} contradicted")
            log(msg + f"; AUROC mean {entry['auroc_mean']:.3f} sd {entry['auroc_sd']:.3f}")
        out["sizes"][str(n)] = per
    return out


def blind_stage_now(feats, labels: np.ndarray, feature_s: float) -> dict[str, Any]:
    """What analyze's blind stage costs now on this case: the features' seconds (measured when the
    case was built) plus :func:`~ldminv_core.evaluation.blind.fitting_null` on the default folds
    (what the stage adds since the intervals account for cross-fitting)."""
    from ldminv_core.evaluation.blind import fitting_null
    from ldminv_core.evaluation.evaluator import stratified_folds

    folds = stratified_folds(labels, folds=5, seed=0)
    t0 = time.perf_counter()
    null = fitting_null(feats, labels, folds)
    null_s = time.perf_counter() - t0
    return {"images": int(labels.size), "feature_s": feature_s, "null_s": null_s, "permutations": null.permutations,
            "blind_s": feature_s + null_s}


def blind_share(run: Path, now: dict[str, Any] | None = None) -> dict[str, Any]:
    """The blind stage's seconds against the run's total analysis time (run.json ``timings``);
    with ``now`` (:func:`blind_stage_now` of the same images) also the share the stage would have
    with its current cost in place of the recorded one."""
    timings = json.loads((run / "run.json").read_text(encoding="utf-8")).get("timings", {})
    total = timings.get("total") or sum(v for k, v in timings.items() if k != "total")
    out = {"run": str(run), "blind_s": timings.get("blind"), "total_s": total,
           "share": (timings.get("blind") or 0.0) / total if total else None, "timings": timings}
    if now is not None and total:
        total_now = total - (timings.get("blind") or 0.0) + now["blind_s"]
        out.update(blind_s_now=now["blind_s"], total_s_now=total_now, share_now=now["blind_s"] / total_now)
    return out


def _rate_cell(r: dict[str, Any]) -> str:
    return f"{r['count']}/{r['draws']} = {r['rate']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"


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
        lines.append(f"False alarms on one distribution (random n + n splits of the demo's {null['pool']} held-out "
                     "images; 'all' interval; count/draws = rate [exact 95% CI]; nominal 0.025 each side):")
        rows = []
        for n, per in null["sizes"].items():
            for c, v in per.items():
                kinds = [("plain bootstrap", v["plain"])] + ([("reported", v["reported"])] if "reported" in v else [])
                for kind, summ in kinds:
                    rows.append([n, c, kind, _rate_cell(summ["supported"]), _rate_cell(summ["contradicted"]),
                                 _rate_cell(summ["false_alarm"]), f"{summ['mean_width']:.3f}"])
        lines.append(common.markdown_table(["n per folder", "classifier", "interval", "supported", "contradicted",
                                            "either", "mean width"], rows))
        lines.append("")
        rows = []
        for n, per in null["sizes"].items():
            for c, v in per.items():
                extra = (f"{v['fitting_sd_mean']:.3f}", f"{v['fitting_bias_mean']:+.3f}",
                         f"{v['report_seconds']:.1f}") if "reported" in v else ("-", "-", "-")
                rows.append([n, c, v["draws"], f"{v['auroc_mean']:.3f} ± {v['auroc_sd']:.3f}",
                             f"[{v['auroc_min']:.3f}, {v['auroc_max']:.3f}]", *extra, f"{v['fit_seconds']:.1f}"])
        lines.append(common.markdown_table(["n per folder", "classifier", "draws", "AUROC mean ± sd", "range",
                                            "permutation sd (mean)", "permutation bias (mean)",
                                            "evaluate_blind s", "cross-fit s"], rows))
    now = results.get("blind_stage_now")
    if now:
        lines.append(f"\nblind stage now on {now['images']} images: features {now['feature_s']:.2f} s + permutation "
                     f"null ({now['permutations']} x 5 fits) {now['null_s']:.2f} s = {now['blind_s']:.2f} s")
    for s in results.get("blind_share", []):
        line = (f"\nblind stage of {s['run']}: {s['blind_s']} s of {s['total_s']} s = "
                f"{100 * s['share']:.2f} % of the analysis")
        if "share_now" in s:
            line += f"; at its current cost {s['blind_s_now']:.2f} s = {100 * s['share_now']:.2f} %"
        lines.append(line)
    load = results.get("load_average")
    if load:
        lines.append(f"\nload average (1, 5, 15 min): start {load['start']}, end {load['end']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer null repeats and sizes")
    ap.add_argument("--demo-run", type=Path, action="append", default=[],
                    help="a finished run folder of the demo (300 + 300) whose blind stage's share of the analysis "
                    "time is recorded (repeatable)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    common.set_threads(1)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    results: dict[str, Any] = {"date": common.now_iso(), "machine": common.machine_info(),
                               "mode": "quick" if args.quick else "full",
                               "load_average": {"start": [round(v, 2) for v in os.getloadavg()]}}
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ldminv-bench-blind-"))
    try:
        log("cases ...")
        cases = build_cases(tmp)
        results["cases"] = compare(cases, log=log)
        feats, labels, feature_s = cases["demo"]
        results["blind_stage_now"] = blind_stage_now(feats, labels, feature_s)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log("null ...")
    sizes = (40, 150) if args.quick else (40, 150, 300)
    repeats = {n: 10 for n in sizes} if args.quick else NULL_REPEATS
    results["null"] = null_rate(sizes=sizes, repeats=repeats, log=log)
    results["blind_share"] = [blind_share(r, results["blind_stage_now"]) for r in args.demo_run]
    results["load_average"]["end"] = [round(v, 2) for v in os.getloadavg()]
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
