"""``thresholds_at_1fpr_rows`` (the bootstrap replicates' 1%-FPR thresholds at once) against
``threshold_at_1fpr`` row by row: ties, strict and non-strict FPR, no negatives / positives."""
from __future__ import annotations

import numpy as np
import pytest

from ldminv_core.evaluation.low_fpr import threshold_at_1fpr, thresholds_at_1fpr_rows


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("n, levels", [(300, None), (300, 7), (40, 3), (1000, 50)])
def test_rows_equal_the_row_by_row_threshold(strict, n, levels):
    rng = np.random.default_rng(n + (levels or 0))
    labels = rng.random(n) < 0.5
    scores = rng.normal(size=(57, n)) + labels
    if levels is not None:  # many ties
        scores = np.round(scores * levels / 4) / levels
    got = thresholds_at_1fpr_rows(scores, labels, strict=strict, chunk=16)
    want = np.array([threshold_at_1fpr(row, labels, strict=strict) for row in scores])
    np.testing.assert_array_equal(got, want)


def test_no_positive_or_no_negative_flags_nobody():
    scores = np.arange(12.0).reshape(3, 4)
    assert np.isinf(thresholds_at_1fpr_rows(scores, np.zeros(4, bool))).all()
    assert np.isinf(thresholds_at_1fpr_rows(scores, np.ones(4, bool))).all()


def test_strong_separation_flags_every_positive():
    labels = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    scores = np.tile(np.r_[np.linspace(10, 11, 200), np.linspace(0, 1, 200)], (3, 1))
    thr = thresholds_at_1fpr_rows(scores, labels)
    assert np.all((scores >= thr[:, None]) == labels)
