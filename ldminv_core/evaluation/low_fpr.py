"""What a TPR at a low false-positive rate rests on (METHOD.md section 6, low-FPR honesty).

A TPR@1%FPR read off 300 held-out images rests on 3 of them: the bootstrap interval beside it
is rough, and the count behind it should be said. This module gives, for one scored arm:

- :func:`threshold_at_1fpr`: the score threshold of the largest-TPR ROC point with FPR <= 1%
  (the decision rule the ``honest`` protocol transfers between folds);
- :func:`clopper_pearson`: the exact binomial interval of a count (``scipy.stats.binomtest``);
- :func:`low_fpr_count`: :class:`LowFprCount`: positives flagged at the threshold, false
  positives, how many negatives the 1% rests on, and the exact interval of the TPR at that fixed
  threshold, under a protocol's ROC convention (``paper``: held-out images are the positives,
  strict FPR < 1%).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from .._validation import check_real
from ..errors import LdminvError

if TYPE_CHECKING:
    from .protocols import Protocol

__all__ = ["LOW_FPR", "LowFprCount", "threshold_at_1fpr", "thresholds_at_1fpr_rows", "clopper_pearson",
           "low_fpr_count"]

#: The low false-positive rate of the headline TPR.
LOW_FPR = 0.01


def threshold_at_1fpr(scores: np.ndarray, labels: np.ndarray, *, strict: bool = False) -> float:
    """Score threshold of the largest-TPR ROC point with FPR <= 1% (``strict``: < 1%), members
    (label 1) positive; a sample is called positive when its score is >= the threshold; +inf =
    nobody.

    The points of sklearn's ``roc_curve(labels, scores, drop_intermediate=False)`` (one per
    distinct score, in decreasing order, after the (0, 0) point at +inf), from one sort.

    Args:
        scores: (N,) scores, higher = positive. labels: (N,) 1 = positive.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.size - n_pos)
    if n_pos in (0, y.size):
        return float("inf")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])  # end of every tie group
    tps = np.cumsum(y[order], dtype=np.int64)[last]
    fps = (last + 1) - tps
    fpr = np.r_[0.0, fps / fps[-1]] if n_neg else np.r_[0.0, np.zeros(last.size)]
    tpr = np.r_[0.0, tps / tps[-1]]
    thr = np.r_[np.inf, s_sorted[last]]
    ok = np.flatnonzero(fpr < LOW_FPR if strict else fpr <= LOW_FPR)
    return float(thr[ok[np.argmax(tpr[ok])]])


def thresholds_at_1fpr_rows(scores: np.ndarray, labels: np.ndarray, *, strict: bool = False,
                            chunk: int = 256) -> np.ndarray:
    """:func:`threshold_at_1fpr` of every row of ``scores`` (B, N) with the same ``labels`` (N,):
    (B,) thresholds, the same values as the function row by row, from one sort per block of
    ``chunk`` rows (the bootstrap replicates' thresholds without a Python loop).

    The ROC points with FPR <= 1% (``strict``: < 1%) form a prefix of the tie groups in
    decreasing score order (FPR never decreases along it), so the largest TPR among them is
    the one at the prefix's last group, and the first group reaching that TPR gives the
    threshold (as ``argmax`` picks the first maximum); a largest TPR of 0 is the (0, 0)
    point at +inf.
    """
    s_all = np.asarray(scores, dtype=np.float64)
    if s_all.ndim != 2:
        raise LdminvError(f"scores: expected a (B, N) array, got shape {s_all.shape}")
    y = np.asarray(labels).astype(bool)
    n = y.size
    n_pos = int(np.count_nonzero(y))
    n_neg = n - n_pos
    out = np.full(s_all.shape[0], np.inf)
    if n_pos in (0, n):
        return out
    steps = np.arange(1, n + 1, dtype=np.int64)
    for start in range(0, s_all.shape[0], max(1, int(chunk))):
        s = s_all[start:start + chunk]
        order = np.argsort(-s, axis=1, kind="stable")
        s_sorted = np.take_along_axis(s, order, axis=1)
        tps = np.cumsum(y[order], axis=1, dtype=np.int64)
        fps = steps - tps
        end = np.ones(s.shape, dtype=bool)  # the last position of every tie group
        end[:, :-1] = s_sorted[:, 1:] != s_sorted[:, :-1]
        fpr = fps / n_neg
        ok = end & ((fpr < LOW_FPR) if strict else (fpr <= LOW_FPR))
        cand = np.where(ok, tps, -1)
        best = cand.max(axis=1)
        first = np.argmax(cand == best[:, None], axis=1)
        thr = s_sorted[np.arange(s.shape[0]), first]
        out[start:start + chunk] = np.where(best > 0, thr, np.inf)
    return out


def clopper_pearson(k: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion ``k / n``, from
    ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``; (NaN, NaN) when ``n`` is 0.

    Raises:
        LdminvError: ``k`` outside 0..n or a level outside (0, 1).
    """
    check_real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True,
               what="a number strictly between 0 and 1")
    if n == 0:
        return (float("nan"), float("nan"))
    if not 0 <= int(k) <= int(n):
        raise LdminvError(f"k: expected a count in 0..{n}, got {k!r}")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=float(level), method="exact")
    return (float(ci.low), float(ci.high))


@dataclass(frozen=True)
class LowFprCount:
    """The counts behind a TPR at 1% FPR.

    Attributes:
        positive_class: "member" (``standard`` / ``honest``) or "heldout" (``paper``).
        n_positives, n_negatives: images of each class behind the number.
        true_positives: positives at or above the threshold (the TPR's numerator).
        false_positives: negatives at or above the threshold.
        allowed_false_positives: false positives the 1% bound admits on these negatives
            (``floor(0.01 n)``; strict ``< 1%`` under ``paper``): "1% of 300 is 3 images".
        exact_ci: Clopper-Pearson interval of ``true_positives / n_positives`` (the TPR at this
            fixed threshold; a threshold chosen on the same data makes it conditional on that
            choice, see ``threshold_fixed``).
        threshold_fixed: True when the threshold was not chosen on these samples (``honest``'s
            transferred thresholds).
        level: the interval's level.
    """

    positive_class: str
    n_positives: int
    n_negatives: int
    true_positives: int
    false_positives: int
    allowed_false_positives: int
    exact_ci: tuple[float, float]
    threshold_fixed: bool
    level: float = 0.95

    @property
    def tpr(self) -> float:
        return self.true_positives / self.n_positives if self.n_positives else float("nan")

    def rests_on(self) -> str:
        """"1% FPR = 3 of 300 held-out images" (how many negatives the rate rests on)."""
        neg = "members" if self.positive_class == "heldout" else "held-out images"
        return f"1% FPR = {self.allowed_false_positives} of {self.n_negatives} {neg}"

    def text(self) -> str:
        """One line: what the rate rests on, the count and the exact interval."""
        pos = "held-out images" if self.positive_class == "heldout" else "members"
        lo, hi = self.exact_ci
        ci = "n/a" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.3f}, {hi:.3f}]"
        when = "at the transferred thresholds" if self.threshold_fixed else "at the threshold chosen on these samples"
        return (f"{self.rests_on()} ({self.false_positives} flagged); {self.true_positives} of {self.n_positives} "
                f"{pos} flagged {when}, exact {self.level:.0%} CI {ci} (Clopper-Pearson)")

    def as_dict(self) -> dict:
        return {"positive_class": self.positive_class, "n_positives": self.n_positives,
                "n_negatives": self.n_negatives, "true_positives": self.true_positives,
                "false_positives": self.false_positives, "allowed_false_positives": self.allowed_false_positives,
                "exact_ci": list(self.exact_ci), "threshold_fixed": self.threshold_fixed, "level": self.level,
                "text": self.text()}


def low_fpr_count(scores: np.ndarray, labels: np.ndarray, protocol: Protocol, *,
                  decisions: np.ndarray | None = None, level: float = 0.95) -> LowFprCount:
    """The counts behind the TPR@1%FPR of membership scores under ``protocol``.

    Args:
        scores: (N,) membership scores (higher = member).
        labels: (N,) 1 = member.
        protocol: its ROC convention (``paper``: the statistic with held-out images positive and
            FPR < 1% strict).
        decisions: (N,) bool, the samples called members by thresholds fixed elsewhere
            (``honest``'s transferred thresholds); None: the threshold is the data's own
            :func:`threshold_at_1fpr` under the convention.
        level: the exact interval's level.

    Returns:
        :class:`LowFprCount`.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    flip, strict = protocol.heldout_positive, protocol.strict_fpr  # the protocol's ROC convention
    pos = ~y if flip else y
    if decisions is not None:
        flagged = np.asarray(decisions, dtype=bool)
    else:
        key = -s if flip else s
        flagged = key >= threshold_at_1fpr(key, pos, strict=strict)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    tp, fp = int((flagged & pos).sum()), int((flagged & ~pos).sum())
    allowed = math.ceil(LOW_FPR * n_neg - 1e-9) - 1 if strict else math.floor(LOW_FPR * n_neg + 1e-9)
    return LowFprCount(positive_class=protocol.positive_class, n_positives=n_pos, n_negatives=n_neg,
                       true_positives=tp, false_positives=fp, allowed_false_positives=max(int(allowed), 0),
                       exact_ci=clopper_pearson(tp, n_pos, level=level), threshold_fixed=decisions is not None,
                       level=float(level))
