"""Tests of ldminv_core.metrics against scikit-learn and a brute-force threshold scan."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score, roc_curve

from ldminv_core import metrics
from ldminv_core.errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError, UnknownNameError


def brute_force(scores: np.ndarray, labels: np.ndarray, max_fpr: float) -> tuple[float, float]:
    """(TPR at FPR <= max_fpr, ASR) by trying every threshold (call member if score >= thr)."""
    y = np.asarray(labels).astype(bool)
    n_pos, n_neg = y.sum(), (~y).sum()
    best_tpr, best_asr = 0.0, 0.0
    for thr in np.concatenate([[np.inf], np.unique(scores)]):
        pred = scores >= thr
        tpr = (pred & y).sum() / n_pos
        fpr = (pred & ~y).sum() / n_neg
        if fpr <= max_fpr:
            best_tpr = max(best_tpr, tpr)
        best_asr = max(best_asr, (tpr + 1.0 - fpr) / 2.0)
    return float(best_tpr), float(best_asr)


def make_case(kind: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]  # both classes
    if kind == "random":
        scores = rng.normal(size=n) + 0.7 * labels
    else:  # heavily tied
        scores = rng.integers(0, 3, n).astype(float) + (labels * rng.integers(0, 2, n))
        scores = np.minimum(scores, 2.0)
    return scores, labels


CASES = [(k, n, s) for k in ("random", "tied") for n, s in ((40, 0), (301, 1), (1200, 2))]


@pytest.mark.parametrize("kind,n,seed", CASES)
def test_scalar_metrics_match_sklearn_and_brute_force(kind: str, n: int, seed: int) -> None:
    scores, labels = make_case(kind, n, seed)
    assert metrics.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)

    curve = metrics.roc(scores, labels)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(curve.fpr, fpr)
    np.testing.assert_array_equal(curve.tpr, tpr)
    np.testing.assert_array_equal(curve.thresholds, thr)

    for max_fpr in (0.0, 0.001, 0.01, 0.1, 0.5, 1.0):
        expected_tpr, expected_asr = brute_force(scores, labels, max_fpr)
        assert metrics.tpr_at_fpr(scores, labels, max_fpr=max_fpr) == pytest.approx(expected_tpr, abs=1e-12)
    assert metrics.asr(scores, labels) == pytest.approx(expected_asr, abs=1e-12)

    m = metrics.evaluate(scores, labels)
    assert m.auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m.tpr_at_1fpr == pytest.approx(brute_force(scores, labels, 0.01)[0], abs=1e-12)
    assert m.tpr_at_01fpr == pytest.approx(brute_force(scores, labels, 0.001)[0], abs=1e-12)
    assert m.asr == pytest.approx(expected_asr, abs=1e-12)
    assert m.as_dict() == {
        "auroc": m.auroc,
        "tpr_at_1fpr": m.tpr_at_1fpr,
        "tpr_at_01fpr": m.tpr_at_01fpr,
        "asr": m.asr,
    }
    with pytest.raises(AttributeError):
        m.auroc = 0.0  # type: ignore[misc]


def test_tpr_at_fpr_counts_the_boundary_point() -> None:
    # 100 held-out at 0..99; 25 members at 98.5 and 25 far below: at threshold 98.5
    # exactly one held-out sample (99) is above, so FPR = 0.01 and TPR = 0.5 qualifies.
    scores = np.r_[np.arange(100.0), np.full(25, 98.5), np.full(25, -10.0)]
    labels = np.r_[np.zeros(100, int), np.ones(50, int)]
    expected = brute_force(scores, labels, 0.01)[0]
    assert expected == 0.5
    assert metrics.tpr_at_fpr(scores, labels, max_fpr=0.01) == expected
    assert metrics.evaluate(scores, labels).tpr_at_1fpr == expected
    assert metrics.evaluate_many(scores[None], labels)["tpr_at_1fpr"][0] == expected
    assert metrics.tpr_at_fpr(scores, labels, max_fpr=0.0099) == brute_force(scores, labels, 0.0099)[0] == 0.0


def test_all_equal_scores() -> None:
    labels = np.array([0, 1, 1, 0, 1, 0, 0])
    scores = np.full(labels.shape, 3.25)
    assert metrics.auroc(scores, labels) == roc_auc_score(labels, scores) == 0.5
    tpr, best_asr = brute_force(scores, labels, 0.01)
    assert metrics.tpr_at_fpr(scores, labels) == tpr == 0.0
    assert metrics.asr(scores, labels) == best_asr == 0.5
    many = metrics.evaluate_many(np.stack([scores, scores]), labels)
    np.testing.assert_array_equal(many["auroc"], [0.5, 0.5])
    np.testing.assert_array_equal(many["asr"], [0.5, 0.5])
    np.testing.assert_array_equal(many["tpr_at_1fpr"], [0.0, 0.0])
    np.testing.assert_array_equal(metrics.auroc_many(np.stack([scores, scores]), labels), [0.5, 0.5])


@pytest.mark.parametrize("labels", [np.ones(6, dtype=int), np.zeros(6, dtype=int)])
def test_single_class_warns_and_returns_nan(labels: np.ndarray) -> None:
    scores = np.arange(6.0)
    with pytest.warns(UndefinedMetricWarning, match="only one class"):
        assert np.isnan(metrics.auroc(scores, labels))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(metrics.tpr_at_fpr(scores, labels))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(metrics.asr(scores, labels))
    with pytest.warns(UndefinedMetricWarning):
        assert all(np.isnan(v) for v in metrics.evaluate(scores, labels).as_dict().values())
    with pytest.warns(UndefinedMetricWarning):
        out = metrics.auroc_many(np.stack([scores] * 3), labels)
    assert out.shape == (3,) and np.isnan(out).all()
    with pytest.warns(UndefinedMetricWarning):
        many = metrics.evaluate_many(np.stack([scores] * 3), labels)
    assert all(v.shape == (3,) and np.isnan(v).all() for v in many.values())
    with pytest.warns(UndefinedMetricWarning):
        lo, hi = metrics.bootstrap_ci(scores, labels, n_boot=10)
    assert np.isnan(lo) and np.isnan(hi)
    with pytest.warns(UndefinedMetricWarning):
        curve = metrics.roc(scores, labels)
    assert np.isnan(curve.tpr).all() or np.isnan(curve.fpr).all()


@pytest.mark.parametrize("kind", ["random", "tied"])
def test_auroc_many_matches_sklearn(kind: str) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 257)
    labels[:2] = [0, 1]
    if kind == "random":
        scores = rng.normal(size=(2, 3, 257)) + 0.3 * labels
    else:
        scores = rng.integers(0, 3, size=(2, 3, 257)).astype(np.float32)
    out = metrics.auroc_many(scores, labels)
    assert out.shape == (2, 3) and out.dtype == np.float64
    expected = np.array([[roc_auc_score(labels, scores[i, j]) for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,n,seed", CASES)
def test_evaluate_many_matches_scalar(kind: str, n: int, seed: int) -> None:
    rows = np.stack([make_case(kind, n, seed + 10 * k)[0] for k in range(5)])
    labels = make_case(kind, n, seed)[1]
    many = metrics.evaluate_many(rows, labels)
    assert set(many) == set(metrics.METRIC_NAMES)
    for k in range(rows.shape[0]):
        single = metrics.evaluate(rows[k], labels).as_dict()
        for name, value in single.items():
            assert many[name].shape == (5,)
            assert many[name][k] == pytest.approx(value, abs=1e-12), name
    np.testing.assert_allclose(metrics.auroc_many(rows, labels), many["auroc"], rtol=0, atol=1e-12)


def test_accepts_lists_tensors_and_bool_labels() -> None:
    scores, labels = make_case("random", 50, 3)
    expected = metrics.evaluate(scores, labels)
    assert metrics.evaluate(scores.tolist(), labels.tolist()) == expected
    assert metrics.evaluate(torch.tensor(scores), torch.tensor(labels)) == expected
    assert metrics.evaluate(scores, labels.astype(bool)) == expected
    assert metrics.evaluate(torch.tensor(scores, requires_grad=True), torch.tensor(labels).bool()) == expected


def test_input_errors() -> None:
    good_s, good_y = np.array([0.1, 0.5, 0.3]), np.array([0, 1, 1])
    with pytest.raises(ShapeError, match=r"3 scores and 4 labels"):
        metrics.auroc(good_s, [0, 1, 1, 0])
    with pytest.raises(ShapeError, match="scores"):
        metrics.auroc(good_s.reshape(1, 3), good_y)
    with pytest.raises(ShapeError, match="labels"):
        metrics.auroc(good_s, good_y.reshape(3, 1))
    with pytest.raises(LdminvError, match="labels must contain only 0"):
        metrics.auroc(good_s, [0, 2, 1])
    with pytest.raises(LdminvError, match="labels"):
        metrics.auroc(good_s, ["a", "b", "a"])
    with pytest.raises(NonFiniteError, match="scores"):
        metrics.auroc([0.1, np.nan, 0.3], good_y)
    with pytest.raises(NonFiniteError, match="scores"):
        metrics.evaluate_many([[0.1, np.inf, 0.3]], good_y)
    with pytest.raises(EmptyInputError):
        metrics.auroc([], [])
    with pytest.raises(ShapeError, match=r"3 scores and 2 labels"):
        metrics.auroc_many(np.zeros((4, 3)), [0, 1])
    with pytest.raises(LdminvError, match="max_fpr"):
        metrics.tpr_at_fpr(good_s, good_y, max_fpr=1.5)
    with pytest.raises(UnknownNameError, match="metric"):
        metrics.bootstrap_ci(good_s, good_y, metric="precision")
    with pytest.raises(LdminvError, match="level"):
        metrics.bootstrap_ci(good_s, good_y, level=1.0)
    with pytest.raises(LdminvError, match="n_boot"):
        metrics.bootstrap_ci(good_s, good_y, n_boot=0)
    for err in (LdminvError, ShapeError, NonFiniteError, EmptyInputError):
        assert issubclass(err, ValueError)


def _replicates_by_hand(scores: np.ndarray, labels: np.ndarray, n_boot: int, seed: int, metric: str) -> np.ndarray:
    """Stratified replicates drawn with the documented streams, scored by the scalar functions."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    rng_pos, rng_neg = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    idx_pos = rng_pos.integers(0, pos.size, size=(n_boot, pos.size))
    idx_neg = rng_neg.integers(0, neg.size, size=(n_boot, neg.size))
    y = np.r_[np.ones(pos.size), np.zeros(neg.size)]
    out = []
    for b in range(n_boot):
        rep = np.r_[pos[idx_pos[b]], neg[idx_neg[b]]]
        if metric == "auroc":
            out.append(roc_auc_score(y, rep))
        elif metric == "asr":
            out.append(brute_force(rep, y, 0.0)[1])
        else:
            out.append(brute_force(rep, y, 0.01 if metric == "tpr_at_1fpr" else 0.001)[0])
    return np.asarray(out)


@pytest.mark.parametrize("metric", metrics.METRIC_NAMES)
def test_bootstrap_equals_resampling_by_hand(metric: str) -> None:
    scores, labels = make_case("tied" if metric == "asr" else "random", 120, 7)
    lo, hi = metrics.bootstrap_ci(scores, labels, metric=metric, n_boot=60, level=0.9, seed=11)
    values = _replicates_by_hand(scores, labels, 60, 11, metric)
    exp_lo, exp_hi = np.quantile(values, [0.05, 0.95])
    assert lo == pytest.approx(exp_lo, abs=1e-12)
    assert hi == pytest.approx(exp_hi, abs=1e-12)


def test_bootstrap_properties() -> None:
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.r_[np.ones(n // 2, dtype=int), np.zeros(n - n // 2, dtype=int)]
        return rng.normal(size=n) + 1.0 * y, y

    scores, labels = sample(2000)
    for metric in metrics.METRIC_NAMES:
        point = getattr(metrics.evaluate(scores, labels), metric)
        lo, hi = metrics.bootstrap_ci(scores, labels, metric=metric, n_boot=400)
        assert lo <= point <= hi, metric
        assert lo < hi, metric
    first = metrics.bootstrap_ci(scores, labels, n_boot=200, seed=3)
    assert metrics.bootstrap_ci(scores, labels, n_boot=200, seed=3) == first
    assert metrics.bootstrap_ci(scores, labels, n_boot=200, seed=4) != first
    wide = metrics.bootstrap_ci(scores, labels, n_boot=400, level=0.99)
    narrow = metrics.bootstrap_ci(scores, labels, n_boot=400, level=0.5)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]

    small_s, small_y = sample(200)
    big_s, big_y = sample(8000)
    lo_s, hi_s = metrics.bootstrap_ci(small_s, small_y, n_boot=400)
    lo_b, hi_b = metrics.bootstrap_ci(big_s, big_y, n_boot=400)
    assert hi_b - lo_b < 0.5 * (hi_s - lo_s)


def test_best_t_index() -> None:
    aurocs = np.array([0.6, np.nan, 0.8, 0.7, 0.8])
    assert metrics.best_t_index(aurocs) == 2
    finite = np.where(np.isnan(aurocs), -np.inf, aurocs)
    assert metrics.best_t_index(aurocs) == int(np.argmax(finite))
    assert metrics.best_t_index([0.5]) == 0
    with pytest.raises(LdminvError, match="NaN"):
        metrics.best_t_index([np.nan, np.nan])
    with pytest.raises(EmptyInputError):
        metrics.best_t_index([])
    with pytest.raises(ShapeError):
        metrics.best_t_index(np.zeros((2, 2)))
