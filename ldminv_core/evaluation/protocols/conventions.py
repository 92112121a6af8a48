"""The protocols' ROC conventions: metrics, resampled metrics, ROC curves and FPR support.

``standard`` and ``honest`` evaluate membership scores with members positive and TPR at FPR <= 1%;
``paper`` evaluates the statistic (= -scores) with held-out images positive and TPR at FPR < 1%
(its :attr:`~.base.Protocol.heldout_positive` and :attr:`~.base.Protocol.strict_fpr` rules).
AUROC and ASR are the same under both conventions (they do not depend on which class is called
positive); TPR@1%FPR is not.
"""
from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning

from ... import metrics
from ...errors import LdminvError
from ..._validation import check_int
from ...cores import usable_cores
from .base import REPORTED_METRICS, Protocol

__all__ = [
    "convention_metrics",
    "convention_metrics_resampled",
    "convention_roc",
    "fpr_support",
    "FprSupport",
]

#: Values (replicates x 2 classes x distinct scores) of one block's counts in
#: :func:`convention_metrics_resampled`: about 2 MiB of int64, a core's cache, where the cumulative
#: sums run several times faster than on all replicates at once.
RESAMPLE_BLOCK_VALUES = 1 << 18
#: Most threads :func:`convention_metrics_resampled` uses (never more than the usable cores).
RESAMPLE_THREADS = 4
#: Fewest gathered values (replicates x samples) worth a thread pool (below it: one thread).
RESAMPLE_THREAD_MIN = 1 << 20


def convention_metrics(scores: np.ndarray, labels: np.ndarray, protocol: Protocol) -> dict[str, np.ndarray]:
    """AUROC, TPR@1%FPR and ASR of membership scores under a protocol's ROC convention.

    Args:
        scores: (..., n) membership scores (higher = member), e.g. -statistic.
        labels: (n,) 1 = member.
        protocol: ``paper`` evaluates the statistic (= -scores) with held-out images as the
            positive class and a strict FPR limit; ``standard`` and ``honest`` evaluate the
            scores with members positive (``honest`` TPR is realised elsewhere, with
            transferred thresholds; the value here is the in-sample one).

    Returns:
        {"auroc", "tpr_at_1fpr", "asr"} -> float64 arrays of the leading shape. NaN without a
        warning when the labels hold a single class (a group with one class is a defined,
        degenerate case here).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(np.int8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        if protocol.heldout_positive:
            res = metrics.evaluate_many(-s, 1 - y, strict_fpr=protocol.strict_fpr)
        else:
            res = metrics.evaluate_many(s, y)
    return {m: res[m] for m in REPORTED_METRICS}


def convention_metrics_resampled(scores: np.ndarray, labels: np.ndarray, index: np.ndarray,
                                 protocol: Protocol) -> dict[str, np.ndarray]:
    """``convention_metrics(scores[index], labels, protocol)`` without sorting every replicate.

    Args:
        scores: (N,) membership scores (higher = member), finite.
        labels: (n,) 1 = member: the label of each column of ``index``.
        index: int (B, n) indices into ``scores`` (e.g. a bootstrap design's columns).
        protocol: whose ROC convention.

    Returns:
        {"auroc", "tpr_at_1fpr", "asr"} -> (B,) float64, equal to :func:`convention_metrics` on
        the gathered (B, n) matrix: the metrics depend only on the order and ties of the scores,
        so every replicate's ROC points are read off cumulative counts per distinct score of
        ``scores`` (``numpy.bincount``), O(B * N) instead of B sorts. NaN for a single class.

    The replicates are taken in blocks whose counts fit a core's cache (:data:`RESAMPLE_BLOCK_VALUES`),
    on up to :data:`RESAMPLE_THREADS` threads when there are many (numpy releases the interpreter
    lock): 1000 replicates of 5000 scores take about 0.05 s instead of 0.14 s (2 cores), with the
    same numbers (each replicate is computed alone).
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    idx = np.asarray(index)
    if s.ndim != 1 or idx.ndim != 2 or y.shape != (idx.shape[1],) or not np.isfinite(s).all():
        return convention_metrics(s[idx], labels, protocol)
    strict = protocol.strict_fpr
    if protocol.heldout_positive:
        s, y = -s, ~y
    b, n = idx.shape
    n_pos = int(np.count_nonzero(y))
    if n_pos in (0, n):
        return {m: np.full(b, np.nan) for m in REPORTED_METRICS}
    uniq, inv = np.unique(s, return_inverse=True)
    g_count = int(uniq.size)
    key = g_count - 1 - inv.reshape(-1).astype(np.int64)
    cls = g_count * y.astype(np.int64)[None, :]

    def block(rows: np.ndarray) -> dict[str, np.ndarray]:
        # one count per (replicate, class, distinct score in decreasing order): a single bincount
        m = rows.shape[0]
        code = np.take(key, rows)
        code += (2 * g_count) * np.arange(m, dtype=np.int64)[:, None]
        code += cls
        counts = np.bincount(code.ravel(), minlength=2 * m * g_count).reshape(m, 2, g_count)
        return _resampled_curve_metrics(counts, n_pos, n - n_pos, strict)

    step = max(1, RESAMPLE_BLOCK_VALUES // (2 * g_count))
    blocks = [idx[i : i + step] for i in range(0, b, step)]
    workers = min(RESAMPLE_THREADS, usable_cores(), len(blocks)) if b * n >= RESAMPLE_THREAD_MIN else 1
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ldminv-resample") as pool:
            parts = list(pool.map(block, blocks))
    else:
        parts = [block(rows) for rows in blocks]
    return {m: np.concatenate([part[m] for part in parts]) for m in REPORTED_METRICS}


def _resampled_curve_metrics(counts: np.ndarray, n_pos: int, n_neg: int, strict: bool) -> dict[str, np.ndarray]:
    """AUROC, TPR@1%FPR and ASR of every replicate from its counts per distinct score.

    ``counts`` int64 (B, 2, G): negatives ([:, 0]) and positives ([:, 1]) scoring at each of
    G distinct scores, in decreasing order. The same numbers as ``metrics._curve_metrics`` on
    the cumulative counts (the ROC points): AUROC from the same integer trapezoid sum; the TPR
    at the last point within the FPR bound (the curve is monotone); ASR's maximum located in
    integers (``tp * n_neg - fp * n_pos``) and evaluated, at the tied maxima, by the same float
    expression. It avoids the float (B, G) arrays of the general routine.
    """
    b = counts.shape[0]
    cum = np.cumsum(counts, axis=2)
    fpc, tpc = counts[:, 0], counts[:, 1]
    fp, tp = cum[:, 0], cum[:, 1]
    # AUROC: sum over points of (fp_k - fp_{k-1}) * (tp_k + tp_{k-1}) = fpc * (2 tp - tpc)
    num = 2 * np.einsum("ij,ij->i", fpc, tp) - np.einsum("ij,ij->i", fpc, tpc)
    out: dict[str, np.ndarray] = {"auroc": num / (2.0 * n_pos * n_neg)}
    # TPR at FPR <= 1% (< 1% when strict): largest fp count f with f / n_neg within the bound
    f_all = np.arange(n_neg + 1) / n_neg
    within = f_all < 0.01 if strict else f_all <= 0.01
    f_max = int(np.flatnonzero(within)[-1])
    exceed = fp > f_max
    k = np.where(exceed.any(axis=1), np.argmax(exceed, axis=1), fp.shape[1])  # points within: [0, k)
    rows = np.arange(b)
    out["tpr_at_1fpr"] = np.where(k > 0, tp[rows, np.maximum(k - 1, 0)] / n_pos, 0.0)
    # ASR: max over points of (tpr + 1 - fpr) / 2, at least 0.5
    score = tp * n_neg - fp * n_pos
    r, c = np.nonzero(score == score.max(axis=1)[:, None])
    vals = (tp[r, c] / n_pos + 1.0 - fp[r, c] / n_neg) / 2.0
    best = np.full(b, -np.inf)
    np.maximum.at(best, r, vals)
    out["asr"] = np.maximum(best, 0.5)
    return {m: np.asarray(out[m], dtype=np.float64) for m in REPORTED_METRICS}


def convention_roc(scores: np.ndarray, labels: np.ndarray, protocol: Protocol) -> metrics.RocCurve:
    """The ROC curve of membership scores (N,) under a protocol's convention: ``paper`` draws the
    statistic (= -scores) with held-out images as the positive class (its TPR at FPR < 1% is the
    paper's TPR@1%FPR); the others draw the scores with members positive. Labels (N,) 1 = member."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(np.int8)
    if protocol.heldout_positive:
        return metrics.roc(-s, 1 - y)
    return metrics.roc(s, y)


@dataclass(frozen=True)
class FprSupport:
    """How many negatives back a TPR read at a false-positive rate.

    Attributes:
        fpr: the FPR bound (e.g. 0.01).
        n_negatives: images of the negative class (held-out under ``standard`` / ``honest``,
            members under ``paper``).
        negative_class: "member" or "heldout".
        step: the smallest FPR step these negatives allow, ``1 / n_negatives``.
        sufficient: the bound admits at least one false positive (``n * fpr >= 1``; ``> 1``
            under ``paper``'s strict ``FPR < fpr``); below that the TPR rests on "no false
            positive at all" and is unstable.
    """

    fpr: float
    n_negatives: int
    negative_class: str
    step: float
    sufficient: bool

    @property
    def needed(self) -> int:
        """Negatives needed for one false positive within the bound: ``ceil(1 / fpr)``."""
        return int(np.ceil(1.0 / self.fpr - 1e-9))

    def warning(self) -> str | None:
        """A one-line caution when the negatives are too few, else None."""
        if self.sufficient:
            return None
        who = "held-out images" if self.negative_class == "heldout" else "members"
        if self.n_negatives == 0:
            return f"TPR at {self.fpr:.1%} FPR is undefined: no {who} (the negative class) in this selection."
        return (f"TPR at {self.fpr:.1%} FPR rests on {self.n_negatives} {who} (the negative class): the "
                f"smallest FPR step is {self.step:.2%}, so the bound admits no false positive at all; "
                f"{self.needed} or more {who} are needed for a stable estimate.")


def fpr_support(protocol: Protocol, *, n_members: int, n_heldout: int, fpr: float) -> FprSupport:
    """Whether a TPR at ``fpr`` is backed by enough negatives under ``protocol``'s convention.

    Args:
        protocol: the protocol (``paper`` takes held-out images as positive, so members are the
            negatives; the others the reverse).
        n_members, n_heldout: images of each split behind the number (a selection, a quartile,
            a fold, or the whole run).
        fpr: the FPR bound in (0, 1), e.g. 0.01 or 0.001.

    Returns:
        :class:`FprSupport`; ``.warning()`` gives the caution to show beside the number.

    Raises:
        LdminvError: ``fpr`` outside (0, 1) or negative counts.
    """
    if not (isinstance(fpr, numbers.Real) and 0.0 < float(fpr) < 1.0):
        raise LdminvError(f"fpr: expected a rate in (0, 1), got {fpr!r}")
    n_mem = check_int(n_members, "n_members", minimum=0)
    n_held = check_int(n_heldout, "n_heldout", minimum=0)
    negative = "member" if protocol.positive_class == "heldout" else "heldout"
    n_neg = n_mem if negative == "member" else n_held
    step = float("inf") if n_neg == 0 else 1.0 / n_neg
    allowed = n_neg * float(fpr)  # false positives the bound admits (strict under paper)
    enough = allowed > 1.0 + 1e-9 if protocol.strict_fpr else allowed >= 1.0 - 1e-9
    return FprSupport(fpr=float(fpr), n_negatives=n_neg, negative_class=negative, step=step,
                      sufficient=n_neg > 0 and enough)
