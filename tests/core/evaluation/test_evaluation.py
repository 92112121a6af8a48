"""Tests of the evaluation layer (``ldminv_core.evaluation``) against independent oracles.

What is checked (METHOD.md section 4):

1. ``paper`` protocol: every arm's and every quartile's AUROC / TPR@1%FPR / ASR and per-metric
   best t equal a recomputation written here with numpy + sklearn that follows the released
   code literally (held-out positive, score = statistic, ``idx = (fpr < 0.01).sum() - 1``,
   per-metric max over t, ``contrib > np.percentile(contrib, p)`` drop rule, pooled
   ``np.percentile(log_volume, [25, 50, 75])`` quartiles, ``int(d * p / 100)`` random count),
   on synthetic runs full of ties (quantised terms, repeated influence values, repeated
   log-volumes at the cut points). Also the building blocks ``masks.threshold_drop_counts``
   + ``DropSweep.statistic_at_counts`` and ``metrics.evaluate_many(strict_fpr=True)``.
2. ``honest`` protocol: stratified folds, every fold's choices (t, drop %, threshold)
   recomputed from the other folds, invariance of a fold's choices to its own labels, and the
   K = 2 calibration / test split recomputed by hand (size-weighted AUROC / ASR, pooled
   realised TPR and held-out-only realised FPR).
3. Findings: identical arms, planted masking and distortion effects, the verdict rule, the
   pairing of the bootstrap, the stratified resampling design and the within-class finding.
4. Input errors name the argument at fault.

Every expected value is computed in this module from the synthetic arrays themselves, never
copied from an output of the code under test.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import interp1d
from sklearn.metrics import roc_auc_score, roc_curve

from ldminv_core import masks, metrics
from ldminv_core.errors import LdminvError
from ldminv_core.evaluation import Evaluation, make_protocol
from ldminv_core.evaluation.calibration import heldout_calibration
from ldminv_core.evaluation.resampling import resample_index, verdict
from synthetic_runs import write_run

LATENT = (2, 3, 3)
D = 18
METRICS3 = ("auroc", "tpr_at_1fpr", "asr")
HONEST_DROPS = tuple(range(0, 95, 5))
TOL = 1e-9


# =========================================================================== oracles


def direct_stat(terms: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """(N, T) float64 sum of the kept terms; ``keep`` (N, d) or (N, C, h, w) bool, None = all."""
    x = np.asarray(terms, dtype=np.float64).reshape(terms.shape[0], terms.shape[1], -1)
    if keep is None:
        return x.sum(axis=2)
    k = np.asarray(keep, dtype=np.float64).reshape(terms.shape[0], 1, -1)
    return (x * k).sum(axis=2)


def paper_keep(influence: np.ndarray, p: float) -> np.ndarray:
    """The released code's drop rule: keep contrib > np.percentile(contrib, p) per sample (p = 0 keeps all)."""
    flat = np.asarray(influence).reshape(influence.shape[0], -1)
    if p == 0:
        return np.ones(flat.shape, dtype=bool)
    thr = np.percentile(flat, p, axis=1, keepdims=True)
    return flat > thr


def round_keep(influence: np.ndarray, p: float) -> np.ndarray:
    """``standard`` / ``honest`` rule: drop the round(d*p/100) lowest-influence coordinates (ties: flat index)."""
    flat = np.asarray(influence).reshape(influence.shape[0], -1)
    n_drop = int(round(flat.shape[1] * p / 100))
    keep = np.ones(flat.shape, dtype=bool)
    order = np.argsort(flat, axis=1, kind="stable")
    keep[np.arange(flat.shape[0])[:, None], order[:, :n_drop]] = False
    return keep


def paper_metrics(stat: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The released code's metrics block on one statistic vector: held-out = 1, score = statistic."""
    y = 1 - np.asarray(labels)
    fpr, tpr, _ = roc_curve(y, stat, drop_intermediate=False)
    idx = int((fpr < 0.01).sum()) - 1
    return {
        "auroc": float(roc_auc_score(y, stat)),
        "tpr_at_1fpr": float(tpr[max(idx, 0)]),
        "asr": float(((tpr + 1 - fpr) / 2).max()),
    }


def paper_over_t(stat: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """metric -> (T,) paper metrics of every column of ``stat`` (N, T)."""
    per = [paper_metrics(stat[:, t], labels) for t in range(stat.shape[1])]
    return {m: np.array([p[m] for p in per]) for m in METRICS3}


def member_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Members-positive metrics of membership scores: AUROC, max TPR at FPR <= 1%, ASR."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "tpr_at_1fpr": float(tpr[fpr <= 0.01].max()),
        "asr": float(((tpr + 1 - fpr) / 2).max()),
    }


def threshold_at_1fpr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Threshold of the largest-TPR roc_curve point with FPR <= 1% (members positive; inf = nobody)."""
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    ok = np.flatnonzero(fpr <= 0.01)
    return float(thr[ok[np.argmax(tpr[ok])]])


def argmax_smallest(values: np.ndarray, keys: list[float]) -> int:
    """Index of the largest value (1e-12 ties), the one of smallest key among ties."""
    v = np.asarray(values, dtype=np.float64)
    cand = np.flatnonzero(v >= v.max() - 1e-12)
    return int(cand[np.argmin(np.asarray(keys, dtype=np.float64)[cand])])


def paper_quartiles(log_volume: np.ndarray) -> np.ndarray:
    """Quartile 0..3 of every sample from pooled np.percentile cut points (Q1 <= q25 < Q2 <= q50 ...)."""
    q25, q50, q75 = np.percentile(log_volume, [25, 50, 75])
    v = log_volume
    out = np.full(v.shape, -1)
    out[v <= q25] = 0
    out[(q25 < v) & (v <= q50)] = 1
    out[(q50 < v) & (v <= q75)] = 2
    out[v > q75] = 3
    return out


def split_quartiles(log_volume: np.ndarray) -> list[np.ndarray]:
    """Row indices of the four quartiles by stable sort + np.array_split (``standard``)."""
    return np.array_split(np.argsort(log_volume, kind="stable"), 4)


def balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    labels = np.zeros(n, dtype=np.int64)
    labels[: n // 2] = 1
    rng.shuffle(labels)
    return labels


# =========================================================================== 1. paper protocol


@pytest.fixture(scope="module")
def tied_data() -> dict[str, np.ndarray]:
    """N = 200 (100 members, so a member FPR of exactly 1% is reachable), T = 4, d = 18: quantised terms (0..2), influence in {0, 1, 2, 3} (heavy ties at every
    percentile threshold), log-volume in {0..5} (ties at the quartile cut points); members have
    smaller terms on high-influence coordinates with a strength that varies over t."""
    rng = np.random.default_rng(7)
    n, t = 200, 4
    labels = balanced_labels(rng, n)
    influence = rng.integers(0, 4, size=(n, *LATENT)).astype(np.float32)
    terms = rng.integers(0, 3, size=(n, t, *LATENT)).astype(np.float64)
    strength = np.array([0.1, 0.35, 0.6, 0.25])
    high = (influence >= 2)[:, None]
    cut = rng.random(terms.shape) < strength[None, :, None, None, None]
    member = labels.astype(bool)[:, None, None, None, None]
    terms = np.where(member & high & cut, np.maximum(terms - 1, 0), terms).astype(np.float32)
    log_volume = rng.integers(0, 6, size=n).astype(np.float64)
    return {"terms": terms, "influence": influence, "labels": labels, "log_volume": log_volume,
            "timesteps": [10, 20, 30, 40]}


@pytest.fixture(scope="module")
def tied_run(tmp_path_factory, tied_data):
    return write_run(tmp_path_factory.mktemp("tied"), terms=tied_data["terms"], influence=tied_data["influence"],
                     log_volume=tied_data["log_volume"], labels=tied_data["labels"],
                     timesteps=tied_data["timesteps"])


def check_paper_arm(arm, stat: np.ndarray, labels: np.ndarray, timesteps: list[int]) -> None:
    """The arm's metrics = each metric's own max over t; its best_t attains that max."""
    over_t = paper_over_t(stat, labels)
    for m in METRICS3:
        assert arm.value(m) == pytest.approx(over_t[m].max(), abs=TOL), (arm.arm, m)
        t_index = timesteps.index(arm.best_t[m])
        assert over_t[m][t_index] == pytest.approx(over_t[m].max(), abs=TOL), (arm.arm, m, arm.best_t[m])


def test_paper_fixture_has_ties_at_every_cut(tied_data):
    """Precondition of the paper tests: ties sit exactly at the thresholds they are meant to test, so
    each paper convention gives other numbers than its ``standard`` counterpart on this data."""
    labels = tied_data["labels"]
    flat = tied_data["influence"].reshape(len(labels), -1)
    thr = np.percentile(flat, 25, axis=1, keepdims=True)
    assert ((flat == thr).sum(axis=1) > 0).any()  # ties at the percentile threshold
    assert ((~paper_keep(tied_data["influence"], 25)).sum(axis=1) != round(D * 25 / 100)).any()
    lv = tied_data["log_volume"]
    cuts = np.percentile(lv, [25, 50, 75])
    assert all((lv == c).sum() > 1 for c in cuts)
    q = paper_quartiles(lv)
    for g in range(4):  # every quartile holds both classes
        assert 0 < labels[q == g].sum() < (q == g).sum()
    assert sorted(np.bincount(q)) != sorted(len(part) for part in split_quartiles(lv))
    stat = direct_stat(tied_data["terms"])
    assert np.unique(stat[:, 0]).size < len(labels) // 4  # statistics tie across samples
    # strict FPR < 1% differs from FPR <= 1% at some t (a member FPR of exactly 0.01 is hit)
    strict = paper_over_t(stat, labels)["tpr_at_1fpr"]
    loose = []
    for t in range(stat.shape[1]):
        fpr, tpr, _ = roc_curve(1 - labels, stat[:, t], drop_intermediate=False)
        loose.append(tpr[fpr <= 0.01].max())
    assert (np.asarray(loose) != strict).any()


@pytest.mark.parametrize("drop", [0, 15, 25, 40])
def test_paper_arms_and_quartiles_match_released_code(tied_run, tied_data, drop):
    labels, ts = tied_data["labels"], tied_data["timesteps"]
    res = Evaluation(tied_run, "sima", "paper", n_boot=0).result(drop=drop)

    base = direct_stat(tied_data["terms"])
    check_paper_arm(res.baseline, base, labels, ts)
    masked = direct_stat(tied_data["terms"], paper_keep(tied_data["influence"], drop))
    check_paper_arm(res.masked, masked, labels, ts)
    assert res.masked.drop_percent == drop

    groups = paper_quartiles(tied_data["log_volume"])
    assert [q.q for q in res.quartiles] == [1, 2, 3, 4]
    for qr in res.quartiles:
        rows = groups == qr.q - 1
        assert qr.n == rows.sum() and qr.n_members == labels[rows].sum()
        over_t = paper_over_t(base[rows], labels[rows])
        for m in METRICS3:
            assert getattr(qr, m) == pytest.approx(over_t[m].max(), abs=TOL), (qr.q, m)
            t_index = ts.index(qr.best_t[m])
            assert over_t[m][t_index] == pytest.approx(over_t[m].max(), abs=TOL), (qr.q, m)


def test_paper_random_arm_drops_int_count(tied_run, tied_data):
    """d = 18, p = 15: the random control drops int(2.7) = 2 coordinates per sample (round would give 3)."""
    p, d = 15, D
    assert masks.paper_drop_count(d, p) == int(d * p / 100) == 2 != round(d * p / 100)
    ev = Evaluation(tied_run, "sima", "paper", n_boot=0)
    shape = tied_data["influence"].shape
    labels = tied_data["labels"]
    res = ev.result(drop=p)
    for k, s in enumerate(ev.seeds):
        keep = masks.random_drop_mask(shape, p, seed=s, n_drop=masks.paper_drop_count(d, p))
        assert (keep.reshape(shape[0], -1).sum(axis=1) == d - int(d * p / 100)).all()
        expected = direct_stat(tied_data["terms"], keep)
        np.testing.assert_allclose(ev.random_stat(p, s), expected, rtol=0, atol=1e-9)
        over_t = paper_over_t(expected, labels)
        for m in METRICS3:
            assert res.random.per_seed[m][k] == pytest.approx(over_t[m].max(), abs=TOL)
    for m in METRICS3:
        assert res.random.value(m) == pytest.approx(np.mean(res.random.per_seed[m]), abs=TOL)


@pytest.mark.parametrize("protocol,count", [("paper", int(18 * 15 / 100)), ("standard", round(18 * 15 / 100))])
def test_random_and_masked_counts_on_unit_terms(tmp_path, tied_data, protocol, count):
    """With every term equal to 1 the statistic counts the kept coordinates: random arm d - count;
    paper masked arm = #(influence > np.percentile(influence, p))."""
    n = 40
    infl = tied_data["influence"][:n]
    run = write_run(tmp_path / "ones", terms=np.ones((n, 3, *LATENT), dtype=np.float32), influence=infl,
                    log_volume=np.arange(n, dtype=float), labels=tied_data["labels"][:n], timesteps=[1, 2, 3])
    ev = Evaluation(run, "sima", protocol, n_boot=0)
    for s in (0, 3):
        np.testing.assert_array_equal(ev.random_stat(15, s), np.full((n, 3), D - count))
    kept = paper_keep(infl, 15).sum(axis=1) if protocol == "paper" else np.full(n, D - count)
    np.testing.assert_array_equal(ev.masked_stat(15), np.repeat(kept[:, None], 3, axis=1))


@pytest.mark.parametrize("p", [0, 5, 15, 25, 33.3, 50, 90])
def test_threshold_counts_and_sweep_match_percentile_rule(tied_data, p):
    infl, terms = tied_data["influence"], tied_data["terms"]
    flat = infl.reshape(infl.shape[0], -1)
    expected_counts = np.zeros(flat.shape[0], dtype=np.int64) if p == 0 else \
        (~(flat > np.percentile(flat, p, axis=1, keepdims=True))).sum(axis=1)
    counts = masks.threshold_drop_counts(infl, p)
    np.testing.assert_array_equal(counts, expected_counts)
    expected = direct_stat(terms, paper_keep(infl, p))
    np.testing.assert_array_equal(masks.percentile_threshold_mask(infl, p).reshape(flat.shape), paper_keep(infl, p))
    np.testing.assert_allclose(masks.masked_statistic(terms, masks.percentile_threshold_mask(infl, p)), expected,
                               atol=1e-9, rtol=0)
    sweep = masks.DropSweep.by_influence(terms, infl)
    np.testing.assert_allclose(sweep.statistic_at_counts(counts), expected, atol=1e-9, rtol=0)
    both = sweep.statistic_at_counts(np.stack([counts, np.zeros_like(counts)]))
    np.testing.assert_allclose(both[0], expected, atol=1e-9, rtol=0)
    np.testing.assert_allclose(both[1], direct_stat(terms), atol=1e-9, rtol=0)


def test_evaluate_many_strict_fpr_matches_direct_loop():
    """100 held-out images, so FPR = 0.01 exactly is reachable and strict / non-strict differ."""
    rng = np.random.default_rng(3)
    y = np.repeat([1, 0], 100)
    rows = [rng.integers(0, 12, 200) + y * rng.integers(0, 4, 200) for _ in range(5)]
    # one hand-made row: 50 members above every held-out image, then one held-out image, then 50 members
    hand = np.concatenate([np.full(50, 200.0), np.full(50, 98.5), np.arange(100.0)])
    rows.append(hand)
    scores = np.stack(rows).astype(np.float64)
    strict = metrics.evaluate_many(scores, y, strict_fpr=True)
    loose = metrics.evaluate_many(scores, y)
    for k, s in enumerate(scores):
        fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
        for name, limit in (("tpr_at_1fpr", 0.01), ("tpr_at_01fpr", 0.001)):
            assert strict[name][k] == pytest.approx(tpr[max(int((fpr < limit).sum()) - 1, 0)], abs=TOL)
            assert loose[name][k] == pytest.approx(tpr[fpr <= limit].max(), abs=TOL)
        for res in (strict, loose):
            assert res["auroc"][k] == pytest.approx(roc_auc_score(y, s), abs=TOL)
            assert res["asr"][k] == pytest.approx(((tpr + 1 - fpr) / 2).max(), abs=TOL)
    assert strict["tpr_at_1fpr"][-1] == pytest.approx(0.5) and loose["tpr_at_1fpr"][-1] == pytest.approx(1.0)


# =========================================================================== 2. honest protocol


@pytest.fixture(scope="module")
def honest_data() -> dict[str, np.ndarray]:
    """N = 90 (45 / 45), integer-valued terms (exact sums), influence in 0..5 (ties by flat index),
    timesteps [30, 10, 20] whose first two slices are identical (an AUROC tie: smallest t = 10)."""
    rng = np.random.default_rng(11)
    n = 90
    labels = balanced_labels(rng, n)
    influence = rng.integers(0, 6, size=(n, *LATENT)).astype(np.float32)
    member = labels.astype(bool)[:, None, None, None]
    high = influence >= 3
    slices = []
    for lam_member in (2.0, 2.4):
        lam = np.where(member & high, lam_member, 3.0)
        slices.append(rng.poisson(lam).astype(np.float32))
    terms = np.stack([slices[0], slices[0], slices[1]], axis=1)
    return {"terms": terms, "influence": influence, "labels": labels,
            "log_volume": rng.normal(size=n), "timesteps": [30, 10, 20]}


def write_honest_run(folder: Path, data: dict) -> object:
    return write_run(folder, terms=data["terms"], influence=data["influence"], log_volume=data["log_volume"],
                     labels=data["labels"], timesteps=data["timesteps"])


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory, honest_data):
    return write_honest_run(tmp_path_factory.mktemp("honest"), honest_data)


def honest_oracle(data: dict, folds: np.ndarray) -> dict:
    """Every fold's choices from the other folds, and the pooled cross-fitted metrics of both arms."""
    labels, ts = data["labels"], data["timesteps"]
    base = direct_stat(data["terms"])
    masked_by_p = {p: direct_stat(data["terms"], round_keep(data["influence"], p)) for p in HONEST_DROPS}
    choices: dict[int, dict] = {}
    for f in np.unique(folds):
        cal = folds != f
        t_i = argmax_smallest([roc_auc_score(labels[cal], -base[cal, i]) for i in range(len(ts))], ts)
        aurocs = [roc_auc_score(labels[cal], -masked_by_p[p][cal, t_i]) for p in HONEST_DROPS]
        p = HONEST_DROPS[argmax_smallest(aurocs, list(HONEST_DROPS))]
        choices[int(f)] = {
            "t_index": t_i, "t": ts[t_i], "drop": p,
            "baseline_thr": threshold_at_1fpr(-base[cal, t_i], labels[cal]),
            "masked_thr": threshold_at_1fpr(-masked_by_p[p][cal, t_i], labels[cal]),
        }
    pooled = {}
    for arm in ("baseline", "masked"):
        raw = np.empty(len(labels))
        calibrated = np.empty(len(labels))
        thr = np.empty(len(labels))
        for f, c in choices.items():
            own = folds == f
            stat = base if arm == "baseline" else masked_by_p[c["drop"]]
            s = -stat[:, c["t_index"]]
            raw[own] = s[own]
            calibrated[own] = calibration_oracle(s[own], s[~own & (labels == 0)])
            thr[own] = c[f"{arm}_thr"]
        m = member_metrics(calibrated, labels)  # one pooled set of out-of-fold scores
        called = raw >= thr
        pooled[arm] = {"auroc": m["auroc"], "asr": m["asr"], "calibrated": calibrated,
                       "tpr_at_1fpr": called[labels == 1].mean(),
                       "realised_fpr": called[labels == 0].mean()}  # held-out rows only
    return {"choices": choices, "pooled": pooled}


def calibration_oracle(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """METHOD.md section 4's calibration, written independently: scipy's linear interpolant through
    (distinct held-out score, share of held-out scores strictly below it), extrapolated linearly."""
    ref = np.sort(reference)
    knots = np.unique(ref)
    share = np.searchsorted(ref, knots, side="left") / ref.size
    return interp1d(knots, share, kind="linear", fill_value="extrapolate", assume_sorted=True)(scores)


def as_threshold(x: float | None) -> float:
    return np.inf if x is None else float(x)


def check_fold_choices(res, oracle: dict, fold: int) -> None:
    c = oracle["choices"][fold]
    fb = next(x for x in res.baseline.folds if x.fold == fold)
    fm = next(x for x in res.masked.folds if x.fold == fold)
    assert fb.t == c["t"] and fm.t == c["t"]
    assert fb.drop_percent is None and fm.drop_percent == c["drop"]
    assert as_threshold(fb.threshold) == pytest.approx(c["baseline_thr"], rel=1e-12, abs=1e-12)
    assert as_threshold(fm.threshold) == pytest.approx(c["masked_thr"], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("k,seed", [(3, 1), (5, 0), (2, 5)])
def test_honest_folds_are_stratified_and_reported(honest_run, honest_data, k, seed):
    ev = Evaluation(honest_run, "sima", make_protocol("honest", folds=k, seed=seed), n_boot=0)
    folds = ev.folds()
    labels = honest_data["labels"]
    assert folds.shape == labels.shape and set(np.unique(folds)) == set(range(k))
    n_mem = [int(labels[folds == f].sum()) for f in range(k)]
    n_held = [int((1 - labels[folds == f]).sum()) for f in range(k)]
    assert max(n_mem) - min(n_mem) <= 1 and max(n_held) - min(n_held) <= 1
    res = ev.result()
    for arm in (res.baseline, res.masked, res.random):
        assert sorted(x.fold for x in arm.folds) == list(range(k))
        for x in arm.folds:
            assert x.sample_ids == tuple(np.flatnonzero(folds == x.fold).tolist())


def test_honest_choices_are_made_on_the_other_folds(honest_run, honest_data):
    ev = Evaluation(honest_run, "sima", make_protocol("honest", folds=3, seed=1), n_boot=0)
    res = ev.result()
    oracle = honest_oracle(honest_data, ev.folds())
    for f in range(3):
        check_fold_choices(res, oracle, f)
    # precondition: the identical slices t = 30 (index 0) and t = 10 (index 1) tie and win on some fold,
    # so the check above exercised "ties: smallest t" (the first index would have given 30)
    assert any(c["t_index"] == 1 for c in oracle["choices"].values())
    assert len({c["drop"] for c in oracle["choices"].values()}) > 1  # the drop choice really varies
    assert res.masked.drop_percent is None


def test_honest_fold_choices_ignore_the_folds_own_labels(tmp_path, honest_run, honest_data):
    """Swap the data of the members and held-out images of fold 0 (= shuffle fold 0's labels while the
    label vector, hence the fold assignment, stays the same): fold 0's choices must not move."""
    proto = make_protocol("honest", folds=3, seed=1)
    ev = Evaluation(honest_run, "sima", proto, n_boot=0)
    folds = ev.folds()
    own = np.flatnonzero(folds == 0)
    mem, held = own[honest_data["labels"][own] == 1], own[honest_data["labels"][own] == 0]
    n_swap = min(mem.size, held.size)
    perm = np.arange(len(folds))
    perm[mem[:n_swap]], perm[held[:n_swap]] = held[:n_swap], mem[:n_swap]
    shuffled = dict(honest_data, terms=honest_data["terms"][perm], influence=honest_data["influence"][perm],
                    log_volume=honest_data["log_volume"][perm])
    ev2 = Evaluation(write_honest_run(tmp_path / "shuffled", shuffled), "sima", proto, n_boot=0)
    np.testing.assert_array_equal(ev2.folds(), folds)
    r1, r2 = ev.result(), ev2.result()
    for arm in ("baseline", "masked"):
        a = next(x for x in getattr(r1, arm).folds if x.fold == 0)
        b = next(x for x in getattr(r2, arm).folds if x.fold == 0)
        assert (a.t, a.drop_percent, a.threshold, a.sample_ids) == (b.t, b.drop_percent, b.threshold, b.sample_ids)
    assert r1.baseline.auroc != pytest.approx(r2.baseline.auroc, abs=1e-6)  # the swap did change the data
    check_fold_choices(r2, honest_oracle(shuffled, folds), 0)


def test_honest_two_folds_equal_a_calibration_test_split(honest_run, honest_data):
    ev = Evaluation(honest_run, "sima", make_protocol("honest", folds=2, seed=5), n_boot=0)
    res = ev.result()
    oracle = honest_oracle(honest_data, ev.folds())
    for f in (0, 1):
        check_fold_choices(res, oracle, f)
    for arm in ("baseline", "masked"):
        got, want = getattr(res, arm), oracle["pooled"][arm]
        for m in METRICS3:
            assert got.value(m) == pytest.approx(want[m], abs=TOL), (arm, m)
        assert got.realised_fpr_at_1fpr == pytest.approx(want["realised_fpr"], abs=TOL), arm
        assert got.best_t == {m: None for m in METRICS3}
    assert res.best_t is None


def test_honest_realised_fpr_uses_heldout_rows_only(tmp_path, honest_data):
    """Shift every member's terms (member scores move, held-out scores do not): the realised FPR still
    equals the oracle share of HELD-OUT images called members, the TPR the share of members."""
    data = dict(honest_data)
    terms = data["terms"].copy()
    terms[data["labels"] == 1] += 1.0  # members only: their scores move, held-out scores do not
    data["terms"] = terms
    ev = Evaluation(write_honest_run(tmp_path / "moved", data), "sima", make_protocol("honest", folds=2, seed=5),
                    n_boot=0)
    res = ev.result()
    oracle = honest_oracle(data, ev.folds())
    for arm in ("baseline", "masked"):
        assert getattr(res, arm).realised_fpr_at_1fpr == pytest.approx(oracle["pooled"][arm]["realised_fpr"],
                                                                       abs=TOL)
        assert getattr(res, arm).tpr_at_1fpr == pytest.approx(oracle["pooled"][arm]["tpr_at_1fpr"], abs=TOL)


def test_calibration_map_matches_its_definition():
    """The calibration of METHOD.md section 4 against an independent scipy oracle, and its properties:
    share of the reference strictly below at every knot, linear continuation beyond the ends, strictly
    increasing (no collisions of a fold's different scores, no tie of the top members at 1.0)."""
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 12, size=40).astype(np.float64)  # ties among the held-out scores
    scores = np.r_[rng.normal(6.0, 6.0, size=200), reference, -30.0, 50.0, 51.0, np.nan]
    got = heldout_calibration(scores, reference=reference)
    want = calibration_oracle(scores[:-1], reference)
    np.testing.assert_allclose(got[:-1], want, rtol=0, atol=1e-12)
    assert np.isnan(got[-1])
    knots = np.unique(reference)
    np.testing.assert_allclose(heldout_calibration(knots, reference=reference),
                               [(reference < u).mean() for u in knots], atol=1e-15)
    order = np.argsort(scores[:-1])
    s_sorted, c_sorted = scores[:-1][order], got[:-1][order]
    distinct = np.diff(s_sorted) > 0
    assert (np.diff(c_sorted)[distinct] > 0).all() and (np.diff(c_sorted)[~distinct] == 0).all()
    assert got[-3] > 1.0 - 1e-12 and got[-2] > got[-3]  # two members beyond every held-out score differ
    # one distinct reference value: still strictly increasing, anchored at share 0
    one = heldout_calibration(np.array([1.0, 2.0, 3.0]), reference=np.full(4, 2.0))
    assert one[1] == 0.0 and one[0] < one[1] < one[2]
    with pytest.raises(LdminvError, match="reference"):
        heldout_calibration(scores, reference=np.array([]))


def test_honest_scores_are_pooled_calibrated_out_of_fold_scores(honest_run, honest_data):
    """ev.scores() under honest = each fold's raw scores at its own t, calibrated on the other folds'
    held-out scores; AUROC / ASR of every arm and every quartile = sklearn on those pooled scores."""
    ev = Evaluation(honest_run, "sima", make_protocol("honest", folds=3, seed=1), n_boot=0)
    oracle = honest_oracle(honest_data, ev.folds())
    labels = honest_data["labels"]
    res = ev.result()
    for arm in ("baseline", "masked"):
        calibrated = oracle["pooled"][arm]["calibrated"]
        np.testing.assert_allclose(ev.scores(arm), calibrated, atol=1e-12)
        assert getattr(res, arm).auroc == pytest.approx(roc_auc_score(labels, calibrated), abs=TOL)
        assert getattr(res, arm).asr == pytest.approx(member_metrics(calibrated, labels)["asr"], abs=TOL)
    calibrated = oracle["pooled"]["baseline"]["calibrated"]
    groups = ev.quartile_groups()
    for q in res.quartiles:
        rows = groups == q.q - 1
        assert q.auroc == pytest.approx(roc_auc_score(labels[rows], calibrated[rows]), abs=TOL)
    f = res.finding("distortion_quartiles")
    assert f.estimate == pytest.approx(res.quartiles[3].auroc - res.quartiles[0].auroc, abs=TOL)
    rows = np.flatnonzero(honest_data["log_volume"] > 0.3)  # a selection cutting across folds
    sel = ev.selection(rows)
    assert sel["auroc"] == pytest.approx(roc_auc_score(labels[rows], calibrated[rows]), abs=TOL)
    raw_called = np.empty(len(labels), dtype=bool)
    for c in res.baseline.folds:
        own = np.isin(np.arange(len(labels)), c.sample_ids)
        raw_called[own] = -direct_stat(honest_data["terms"])[own, ev.timesteps.index(c.t)] >= as_threshold(c.threshold)
    sub = labels[rows]
    assert sel["tpr_at_1fpr"] == pytest.approx(raw_called[rows][sub == 1].mean(), abs=TOL)
    assert sel["realised_fpr_at_1fpr"] == pytest.approx(raw_called[rows][sub == 0].mean(), abs=TOL)


def test_honest_subgroup_intervals_are_not_narrower_than_standard(tmp_path):
    """On data without any effect (members and held-out drawn alike), the honest protocol's quartile
    intervals and distortion-quartile finding are as wide as the standard protocol's: over 8 runs of
    60 + 60 images, the mean width ratio is at least 0.95 and no quartile interval is below 0.75x.
    (Averaging per-fold AUROCs over split x fold x quartile cells of ~3 images, or resampling within
    such cells, gave ratios near 0.8: intervals that overclaim.)"""
    widths = {"standard": [], "honest": []}
    finding_widths = {"standard": [], "honest": []}
    verdicts = []
    for seed in range(8):
        run = continuous_run(tmp_path / f"null{seed}", np.random.default_rng(100 + seed), 120)
        for proto in ("standard", "honest"):
            ev = Evaluation(run, "sima", proto, n_boot=400)
            widths[proto].append([q.auroc_ci[1] - q.auroc_ci[0] for q in ev.quartiles()])
            f = ev.findings(40.0)[0]
            finding_widths[proto].append(f.ci[1] - f.ci[0])
            verdicts.append((proto, f.verdict))
    w_std, w_hon = np.array(widths["standard"]), np.array(widths["honest"])
    assert w_hon.mean() >= 0.95 * w_std.mean(), (w_hon.mean(), w_std.mean())
    assert (w_hon / w_std).min() >= 0.75
    assert np.mean(finding_widths["honest"]) >= 0.95 * np.mean(finding_widths["standard"])


# =========================================================================== 3. findings


def continuous_run(folder: Path, rng: np.random.Generator, n: int, *, member_scale: float = 1.0,
                   captions: list[str] | None = None, t: int = 3):
    """A run with Exp(1) terms (members Exp(member_scale)) on every coordinate."""
    labels = balanced_labels(rng, n)
    scale = np.where(labels == 1, member_scale, 1.0)[:, None, None, None, None]
    terms = (rng.exponential(1.0, size=(n, t, *LATENT)) * scale).astype(np.float32)
    return write_run(folder, terms=terms, influence=rng.normal(size=(n, *LATENT)).astype(np.float32),
                     log_volume=rng.normal(size=n), labels=labels, timesteps=list(range(10, 10 * t + 1, 10)),
                     captions=captions)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    return continuous_run(tmp_path_factory.mktemp("plain"), np.random.default_rng(5), 60, member_scale=0.8)


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
def test_identical_arms_give_a_null_finding(plain_run, protocol):
    f = Evaluation(plain_run, "sima", protocol, n_boot=100).result(drop=0).finding("masking_vs_baseline")
    assert f.estimate == pytest.approx(0.0, abs=1e-12)
    assert f.ci[0] <= 0.0 <= f.ci[1]
    assert f.verdict == "inconclusive"
    assert f.secondary[0]["estimate"] == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def masking_run(tmp_path_factory):
    """Members have smaller terms only on each sample's 9 highest-influence coordinates; the other 9 are
    Exp(3) noise for both splits, which dilutes the signal of the unmasked statistic."""
    rng = np.random.default_rng(21)
    n, t = 300, 3
    labels = balanced_labels(rng, n)
    influence = rng.normal(size=(n, *LATENT)).astype(np.float32)
    flat = influence.reshape(n, -1)
    high = (np.argsort(np.argsort(flat, axis=1), axis=1) >= 9).reshape(n, *LATENT)[:, None]
    member_scale = np.where(labels == 1, 0.4, 1.0)[:, None, None, None, None]
    signal = rng.exponential(1.0, size=(n, t, *LATENT)) * member_scale
    noise = rng.exponential(3.0, size=(n, t, *LATENT))
    terms = np.where(high, signal, noise).astype(np.float32)
    return write_run(tmp_path_factory.mktemp("masking"), terms=terms, influence=influence,
                     log_volume=rng.normal(size=n), labels=labels, timesteps=[10, 20, 30])


@pytest.mark.parametrize("protocol,drop", [("standard", 40), ("standard", 50), ("standard", 60),
                                           ("paper", 50), ("honest", 50)])
def test_planted_masking_effect_is_supported(masking_run, protocol, drop):
    ev = Evaluation(masking_run, "sima", protocol, n_boot=200)
    for fid in ("masking_vs_baseline", "masking_vs_random"):
        f = next(x for x in ev.findings(drop) if x.id == fid)
        assert f.estimate > 0 and f.ci[0] > 0, (fid, f.estimate, f.ci)
        assert f.verdict == "supported"


def distortion_run(folder: Path, rng: np.random.Generator, *, high: bool):
    """Membership signal only in the samples of the top (``high``) or bottom log-volume quartile."""
    n, t = 300, 3
    labels = balanced_labels(rng, n)
    lv = rng.uniform(0, 1, size=n)
    where = lv > 0.75 if high else lv < 0.25
    scale = np.where((labels == 1) & where, 0.6, 1.0)[:, None, None, None, None]
    terms = (rng.exponential(1.0, size=(n, t, *LATENT)) * scale).astype(np.float32)
    return write_run(folder, terms=terms, influence=rng.normal(size=(n, *LATENT)).astype(np.float32),
                     log_volume=lv, labels=labels, timesteps=[10, 20, 30])


@pytest.fixture(scope="module")
def distortion_runs(tmp_path_factory):
    return {h: distortion_run(tmp_path_factory.mktemp(f"dist{h}"), np.random.default_rng(31 + h), high=h)
            for h in (True, False)}


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
@pytest.mark.parametrize("high,expected", [(True, "supported"), (False, "contradicted")])
def test_planted_distortion_effect(distortion_runs, protocol, high, expected):
    f = Evaluation(distortion_runs[high], "sima", protocol, n_boot=200).result(drop=40).finding("distortion_quartiles")
    assert f.verdict == expected, (f.estimate, f.ci)
    assert (f.estimate > 0) == high


@pytest.mark.parametrize("interval,expected", [
    ((0.01, 0.2), "supported"), ((-0.3, -1e-9), "contradicted"), ((-0.1, 0.1), "inconclusive"),
    ((0.0, 0.1), "inconclusive"), ((-0.1, 0.0), "inconclusive"), ((0.0, 0.0), "inconclusive"),
    ((float("nan"), 0.1), "undefined"), ((float("nan"), float("nan")), "undefined"),
])
def test_verdict_rule(interval, expected):
    assert verdict(interval) == expected


def test_paired_bootstrap_is_paired(tmp_path):
    """Masked at 5 % drops one coordinate (d = 18) whose term is nearly constant: the two arms almost
    coincide, so their paired difference varies far less than either arm across replicates."""
    rng = np.random.default_rng(41)
    n = 200
    labels = balanced_labels(rng, n)
    scale = np.where(labels == 1, 0.85, 1.0)[:, None, None, None, None]
    terms = rng.exponential(1.0, size=(n, 2, *LATENT)) * scale
    terms[:, :, 0, 0, 0] = 1.0 + 1e-4 * rng.normal(size=(n, 2))
    influence = rng.normal(size=(n, *LATENT))
    influence[:, 0, 0, 0] = -10.0  # always the lowest-influence coordinate
    assert masks.drop_count(D, 5) == 1
    run = write_run(tmp_path / "paired", terms=terms.astype(np.float32), influence=influence.astype(np.float32),
                    log_volume=rng.normal(size=n), labels=labels, timesteps=[10, 20])
    ev = Evaluation(run, "sima", "standard", n_boot=300)
    res = ev.result(drop=5)
    f = res.finding("masking_vs_baseline")
    paired = f.ci[1] - f.ci[0]
    separate = min(np.diff(res.masked.ci["auroc"])[0], np.diff(res.baseline.ci["auroc"])[0])
    assert separate > 0.05
    assert paired < 0.1 * separate, (paired, separate)


def test_resample_index_stays_in_strata_and_is_seeded():
    rng = np.random.default_rng(0)
    strata = rng.integers(0, 5, size=57)
    idx = resample_index(strata, n_boot=300, seed=3)
    assert idx.shape == (300, 57)
    assert (strata[idx] == strata[None, :]).all()
    for s in np.unique(strata):  # draws cover the whole stratum
        assert set(np.unique(idx[:, strata == s])) == set(np.flatnonzero(strata == s))
    np.testing.assert_array_equal(idx, resample_index(strata, n_boot=300, seed=3))
    assert not np.array_equal(idx, resample_index(strata, n_boot=300, seed=4))


def class_run(folder: Path, captions: list[str], labels: np.ndarray, seed: int):
    """Signal only among high-log-volume samples; log-volumes quantised (ties inside each class)."""
    rng = np.random.default_rng(seed)
    n = len(captions)
    lv = rng.integers(0, 10, size=n).astype(np.float64)
    scale = np.where((labels == 1) & (lv >= 5), 0.7, 1.0)[:, None, None, None, None]
    terms = (rng.exponential(1.0, size=(n, 3, *LATENT)) * scale).astype(np.float32)
    run = write_run(folder, terms=terms, influence=rng.normal(size=(n, *LATENT)).astype(np.float32),
                    log_volume=lv, labels=labels, timesteps=[10, 20, 30], captions=captions)
    return run, terms, lv


def test_within_class_finding_matches_oracle(tmp_path):
    rng = np.random.default_rng(51)
    captions = ["cat"] * 60 + ["dog"] * 50 + ["bird"] * 10  # bird: fewer than 16 samples, left out
    labels = balanced_labels(rng, len(captions))
    run, terms, lv = class_run(tmp_path / "cls", captions, labels, 52)
    res = Evaluation(run, "sima", "standard", n_boot=0).result()
    stat = direct_stat(terms)
    aurocs = [roc_auc_score(labels, -stat[:, t]) for t in range(3)]
    t_best = int(np.argmax(aurocs))
    assert res.best_t == [10, 20, 30][t_best]
    caps = np.array(captions)
    num = den = 0.0
    for name in ("cat", "dog"):
        rows = np.flatnonzero(caps == name)
        q = [rows[part] for part in split_quartiles(lv[rows])]
        diff = roc_auc_score(labels[q[3]], -stat[q[3], t_best]) - roc_auc_score(labels[q[0]], -stat[q[0], t_best])
        num += diff * rows.size
        den += rows.size
    f = res.finding("distortion_quartiles_within_class")
    assert f is not None
    assert f.estimate == pytest.approx(num / den, abs=TOL)
    assert sorted(c.label for c in res.classes) == ["cat", "dog"]


@pytest.mark.parametrize("case", ["no captions", "one class", "second class too small", "second class one split"])
def test_within_class_finding_needs_two_usable_classes(tmp_path, case):
    n = 80
    labels = np.tile([1, 0], n // 2)
    captions = {
        "no captions": [""] * n,
        "one class": ["cat"] * n,
        "second class too small": ["cat"] * 68 + ["dog"] * 12,
        "second class one split": ["cat"] * 60 + ["dog"] * 20,
    }[case]
    if case == "second class one split":
        labels = np.concatenate([np.tile([1, 0], 30), np.ones(20, dtype=np.int64)])
    run, _, _ = class_run(tmp_path / "cls", captions, labels, 53)
    res = Evaluation(run, "sima", "standard", n_boot=0).result()
    assert res.finding("distortion_quartiles_within_class") is None, case


# =========================================================================== 4. errors


def test_errors_name_the_argument(plain_run):
    with pytest.raises(ValueError, match="protocol"):
        make_protocol("optimistic")
    with pytest.raises(ValueError, match="protocol"):
        Evaluation(plain_run, "sima", "optimistic")
    with pytest.raises(ValueError, match="folds"):
        make_protocol("honest", folds=1)
    with pytest.raises(ValueError, match="folds"):
        Evaluation(plain_run, "sima", make_protocol("honest", folds=plain_run.n_members + 1), n_boot=0).result()
    with pytest.raises(ValueError, match="attack"):
        Evaluation(plain_run, "pia")
    ev = Evaluation(plain_run, "sima", "standard", n_boot=0)
    for bad in (100, 100.5, -1, -0.01, float("nan")):
        with pytest.raises(ValueError, match="drop"):
            ev.result(drop=bad)
        with pytest.raises(ValueError, match="drop"):
            ev.masked_stat(bad)


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
def test_convention_roc_and_cheap_best_t(tied_run, tied_data, protocol):
    """ROC curves follow the protocol's convention (sklearn oracle), and ``best_t`` (no intervals)
    names the t the arms are reported at."""
    from ldminv_core.evaluation import convention_roc

    ev = Evaluation(tied_run, "sima", protocol, n_boot=0)
    labels = tied_data["labels"]
    scores = ev.scores("baseline")
    curve = convention_roc(scores, labels, ev.protocol)
    if protocol == "paper":
        fpr, tpr, _ = roc_curve(1 - labels, -scores, drop_intermediate=False)
    else:
        fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr)
    np.testing.assert_allclose(curve.tpr, tpr)
    for arm in ("baseline", "masked"):
        assert ev.best_t(arm, 40) == ev.arms(None if protocol == "honest" else 40)[arm].best_t


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_custom_arm_has_no_empty_drop_text(plain_run, protocol):
    """A manual or global mask has no drop percentage: its drop text is empty, never a bare
    "per fold:"; the masked arm's is its percentage (or the folds' under honest)."""
    ev = Evaluation(plain_run, "sima", protocol, n_boot=0)
    keep = np.ones(LATENT, dtype=bool)
    keep[0] = False
    arm = ev.custom_arm("manual", ev.manual_stat(keep))
    assert arm.drop_text == ""
    masked = ev.arms()["masked"]
    if protocol == "honest":
        assert masked.drop_text.startswith("per fold: ") and masked.drop_text != "per fold: "
    else:
        assert masked.drop_text == "40 %"
