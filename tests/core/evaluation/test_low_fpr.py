"""What a TPR at 1% FPR rests on (METHOD.md section 6): the exact Clopper-Pearson interval
against ``scipy.stats.binomtest``, the 1%-FPR threshold against sklearn's ``roc_curve``, the
counts behind the TPR against a brute-force count at that threshold (``standard``: members
positive, FPR <= 1%; ``paper``: held-out images positive, FPR < 1% strict), and on an
``Evaluation`` the counts equal the arm's TPR and the decisions of its fold thresholds."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_curve

from ldminv_core.errors import LdminvError
from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.low_fpr import clopper_pearson, low_fpr_count, threshold_at_1fpr
from ldminv_core.evaluation.protocols import make_protocol
from synthetic_runs import write_run


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (10, 10), (3, 300), (0, 300), (300, 300), (57, 120),
                                 (1, 7)])
@pytest.mark.parametrize("level", [0.95, 0.9])
def test_clopper_pearson_is_scipys_exact_interval(k, n, level):
    want = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    lo, hi = clopper_pearson(k, n, level=level)
    assert lo == pytest.approx(want.low, abs=1e-12) and hi == pytest.approx(want.high, abs=1e-12)
    assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)  # the exact bounds at the ends
    # the exact definition: at the bounds the binomial tails equal (1 - level) / 2
    a = (1 - level) / 2
    if k > 0:
        assert stats.binom.sf(k - 1, n, lo) == pytest.approx(a, rel=1e-6)
    if k < n:
        assert stats.binom.cdf(k, n, hi) == pytest.approx(a, rel=1e-6)


def test_clopper_pearson_refuses_bad_input():
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))
    with pytest.raises(LdminvError, match="k"):
        clopper_pearson(5, 4)
    with pytest.raises(LdminvError, match="level"):
        clopper_pearson(1, 4, level=1.0)


def _roc_threshold(scores: np.ndarray, positive: np.ndarray, *, strict: bool = False) -> float:
    """The oracle: on sklearn's ROC points (every distinct score), the largest TPR with FPR <= 1%
    (strict: < 1%), the highest threshold among equals."""
    fpr, tpr, thr = roc_curve(positive.astype(int), scores, drop_intermediate=False)
    ok = fpr < 0.01 if strict else fpr <= 0.01
    best = tpr[ok].max()
    return float(thr[ok][tpr[ok] == best].max())


def _cases():
    rng = np.random.default_rng(0)
    for n_pos, n_neg, ties in [(300, 300, False), (120, 250, False), (60, 50, False), (200, 400, True),
                               (40, 100, True), (500, 150, False)]:
        pos = rng.normal(0.6, 1, n_pos)
        neg = rng.normal(0.0, 1, n_neg)
        s = np.r_[pos, neg]
        if ties:
            s = np.round(s * 3) / 3  # many equal scores
        yield s, np.r_[np.ones(n_pos, dtype=np.int64), np.zeros(n_neg, dtype=np.int64)]


@pytest.mark.parametrize("strict", [False, True])
def test_threshold_at_1fpr_is_the_roc_curves(strict):
    for s, y in _cases():
        got = threshold_at_1fpr(s, y, strict=strict)
        want = _roc_threshold(s, y.astype(bool), strict=strict)
        if np.isinf(want):
            assert np.isinf(got)
        else:
            assert got == want
        # and the brute force: the decisions at that threshold keep the FPR bound
        fp = int(((s >= got) & (y == 0)).sum())
        assert (fp < 0.01 * (y == 0).sum()) if strict else (fp <= 0.01 * (y == 0).sum() + 1e-9)


def test_threshold_at_1fpr_without_both_classes_is_nobody():
    assert threshold_at_1fpr(np.arange(5.0), np.ones(5)) == np.inf
    assert threshold_at_1fpr(np.arange(5.0), np.zeros(5)) == np.inf


@pytest.mark.parametrize("protocol", ["standard", "paper"])
def test_low_fpr_counts_are_a_brute_force_count(protocol):
    paper = protocol == "paper"
    for s, y in _cases():
        got = low_fpr_count(s, y, make_protocol(protocol))
        pos = (y == 0) if paper else (y == 1)
        key = -s if paper else s
        thr = _roc_threshold(key, pos, strict=paper)
        flagged = key >= thr
        tp, fp = int((flagged & pos).sum()), int((flagged & ~pos).sum())
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        assert (got.true_positives, got.false_positives, got.n_positives, got.n_negatives) == (tp, fp, n_pos, n_neg)
        assert got.positive_class == ("heldout" if paper else "member") and not got.threshold_fixed
        # the negatives the 1% rests on: the most false positives the bound admits
        allowed = max(k for k in range(n_neg + 1) if (k < 0.01 * n_neg if paper else k <= 0.01 * n_neg))
        assert got.allowed_false_positives == allowed and fp <= allowed
        assert got.exact_ci == pytest.approx(clopper_pearson(tp, n_pos))
        assert got.tpr == tp / n_pos
    got = low_fpr_count(*next(_cases()), make_protocol("standard"))
    assert got.rests_on() == "1% FPR = 3 of 300 held-out images"
    assert "Clopper-Pearson" in got.text() and f"{got.true_positives} of 300 members" in got.text()


def test_given_decisions_are_counted_as_they_are():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(50, dtype=np.int64), np.zeros(70, dtype=np.int64)]
    decisions = rng.random(120) < 0.3
    got = low_fpr_count(rng.normal(size=120), y, make_protocol("honest"), decisions=decisions, level=0.9)
    assert got.true_positives == int(decisions[:50].sum()) and got.false_positives == int(decisions[50:].sum())
    assert got.threshold_fixed and got.exact_ci == pytest.approx(clopper_pearson(got.true_positives, 50, level=0.9))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rng = np.random.default_rng(7)
    n = 160
    labels = np.r_[np.ones(80, dtype=np.int64), np.zeros(80, dtype=np.int64)]
    terms = rng.exponential(1.0, size=(n, 3, 2, 3, 3)).astype(np.float32)
    terms[labels == 1] *= rng.uniform(0.5, 1.0, size=(80, 1, 1, 1, 1)).astype(np.float32)
    return write_run(tmp_path_factory.mktemp("low_fpr") / "run", terms=terms,
                     influence=rng.normal(size=(n, 2, 3, 3)).astype(np.float32),
                     log_volume=rng.normal(size=n), labels=labels, timesteps=[0, 10, 20])


def test_honest_counts_are_the_decisions_of_the_fold_thresholds(run):
    ev = Evaluation(run, "sima", "honest", n_boot=0)
    labels = ev.labels
    stat = ev.baseline_stat()  # (N, T); the membership score is -stat
    timesteps = [0, 10, 20]
    arm = ev.baseline()
    assert len(arm.folds) == 5
    decisions = np.zeros(ev.n, dtype=bool)
    seen = np.zeros(ev.n, dtype=int)
    for choice in arm.folds:
        rows = np.asarray(choice.sample_ids)
        seen[rows] += 1
        thr = np.inf if choice.threshold is None else choice.threshold
        decisions[rows] = -stat[rows, timesteps.index(choice.t)] >= thr
    assert (seen == 1).all()  # every sample decided by exactly one fold's threshold
    low = arm.low_fpr
    assert low.threshold_fixed and low.positive_class == "member"
    assert low.true_positives == int((decisions & (labels == 1)).sum())
    assert low.false_positives == int((decisions & (labels == 0)).sum())
    assert low.true_positives / low.n_positives == arm.tpr_at_1fpr
    assert arm.realised_fpr_at_1fpr == low.false_positives / low.n_negatives
    assert low.true_positives > 0  # the planted signal is found at 1% FPR: the check has something to count
    assert low.rests_on() == "1% FPR = 0 of 80 held-out images"


@pytest.mark.parametrize("protocol", ["standard", "paper"])
def test_the_arms_tpr_is_its_count(run, protocol):
    ev = Evaluation(run, "sima", protocol, n_boot=0)
    arm = ev.baseline()
    assert arm.low_fpr.true_positives / arm.low_fpr.n_positives == pytest.approx(arm.tpr_at_1fpr, abs=1e-12)
    assert arm.low_fpr.n_positives == 80 and arm.low_fpr.n_negatives == 80
