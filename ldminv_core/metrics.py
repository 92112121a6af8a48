"""Membership-inference metrics: ROC, AUROC, TPR at low FPR, attack success rate.

Conventions: members are the positive class (label 1 or ``True``), held-out samples
the negative class (label 0 or ``False``), and a higher score means "more likely a
member". Inputs may be lists, numpy arrays or CPU torch tensors; results are Python
floats (scalar functions) or float64 numpy arrays (the ``*_many`` functions).

The scalar functions use :func:`sklearn.metrics.roc_curve` and
:func:`sklearn.metrics.roc_auc_score`. The vectorised functions (:func:`auroc_many`,
:func:`evaluate_many`, :func:`bootstrap_ci`) compute the same numbers for many score
vectors at once -- e.g. one row per timestep or per drop percentage -- and agree with
the scalar functions, ties included.

Metric definitions (METHOD.md):

* AUROC: area under the ROC curve; ties count one half (Mann-Whitney U / (P * Q)).
* TPR at FPR <= x: the largest true-positive rate among the ROC points whose
  false-positive rate is at most x (the point (0, 0) always qualifies).
* ASR: the best balanced accuracy over all thresholds, max (TPR + 1 - FPR) / 2.

When the labels hold only one class every metric is undefined: a
:class:`sklearn.exceptions.UndefinedMetricWarning` is emitted and NaN returned.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score, roc_curve

from .errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError, UnknownNameError

__all__ = [
    "RocCurve",
    "Metrics",
    "METRIC_NAMES",
    "roc",
    "auroc",
    "tpr_at_fpr",
    "asr",
    "evaluate",
    "auroc_many",
    "evaluate_many",
    "bootstrap_ci",
    "best_t_index",
]

#: Names accepted by :func:`bootstrap_ci` and returned by :func:`evaluate_many`.
METRIC_NAMES = ("auroc", "tpr_at_1fpr", "tpr_at_01fpr", "asr")

# FPR limits of the two reported TPR@FPR metrics.
_MAX_FPR = {"tpr_at_1fpr": 0.01, "tpr_at_01fpr": 0.001}

# Bootstrap replicates are processed in blocks of about this many scores.
_BOOT_BLOCK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class RocCurve:
    """An ROC curve: arrays of equal length L, starting at (0, 0) with threshold +inf.

    ``fpr`` (L,), ``tpr`` (L,) and ``thresholds`` (L,) as returned by
    :func:`sklearn.metrics.roc_curve`; a sample is called a member when its score is
    ``>= thresholds[i]``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


@dataclass(frozen=True)
class Metrics:
    """The four reported metrics of one score vector (all floats, NaN if undefined)."""

    auroc: float
    tpr_at_1fpr: float
    tpr_at_01fpr: float
    asr: float

    def as_dict(self) -> dict[str, float]:
        """Return the metrics as a plain ``{name: float}`` dictionary."""
        return {k: float(v) for k, v in asdict(self).items()}


# --------------------------------------------------------------------------- input checks


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a list, numpy array or torch tensor to a numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and similar
        raise LdminvError(f"{name} must be array-like; could not convert {type(x).__name__}: {exc}") from exc


def _check_labels(labels: Any, n: int | None) -> np.ndarray:
    """Validate labels and return them as a bool array of shape (N,)."""
    y = _to_numpy(labels, "labels")
    if y.ndim != 1:
        raise ShapeError(f"labels must be 1-D of shape (N,); got shape {y.shape}")
    if y.size == 0:
        raise EmptyInputError("labels must hold at least one element; got an empty array")
    if n is not None and y.shape[0] != n:
        raise ShapeError(f"scores and labels must have the same length N; got {n} scores and {y.shape[0]} labels")
    if y.dtype == bool:
        return y
    if y.dtype.kind not in "iuf":
        raise LdminvError(f"labels must be 0/1 integers or booleans; got dtype {y.dtype}")
    bad = ~((y == 0) | (y == 1))
    if bad.any():
        shown = np.unique(y[bad])[:5].tolist()
        raise LdminvError(f"labels must contain only 0 (held-out) and 1 (member); got other values such as {shown}")
    return y == 1


def _check_scores(scores: Any, *, ndim: int | None) -> np.ndarray:
    """Validate scores and return them as float64 (1-D if ``ndim == 1``, else at least 1-D)."""
    s = _to_numpy(scores, "scores")
    if s.dtype.kind not in "biuf":
        raise LdminvError(f"scores must be real numbers; got dtype {s.dtype}")
    if ndim == 1 and s.ndim != 1:
        raise ShapeError(f"scores must be 1-D of shape (N,); got shape {s.shape}")
    if ndim is None and s.ndim < 1:
        raise ShapeError(f"scores must have shape (..., N) with at least one axis; got shape {s.shape}")
    if s.size == 0 or s.shape[-1] == 0:
        raise EmptyInputError(f"scores must hold at least one element; got shape {s.shape}")
    s = s.astype(np.float64, copy=False)
    finite = np.isfinite(s)
    if not finite.all():
        n_bad = int(s.size - np.count_nonzero(finite))
        raise NonFiniteError(f"scores must be finite; got {n_bad} NaN or infinite value(s) out of {s.size}")
    return s


def _check_pair(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 1-D score vector and its labels: returns (float64 (N,), bool (N,))."""
    s = _check_scores(scores, ndim=1)
    y = _check_labels(labels, s.shape[0])
    return s, y


def _check_max_fpr(max_fpr: float) -> float:
    try:
        value = float(max_fpr)
    except (TypeError, ValueError) as exc:
        raise LdminvError(f"max_fpr must be a number in [0, 1]; got {max_fpr!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise LdminvError(f"max_fpr must be in [0, 1]; got {max_fpr!r}")
    return value


def _single_class(y: np.ndarray, what: str) -> bool:
    """Warn and return True when ``y`` holds only one class."""
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.shape[0] - n_pos)
    if n_pos == 0 or n_neg == 0:
        warnings.warn(
            f"{what} is undefined when labels hold only one class "
            f"({n_pos} member(s), {n_neg} held-out); returning NaN",
            UndefinedMetricWarning,
            stacklevel=3,
        )
        return True
    return False


# --------------------------------------------------------------------------- scalar metrics


def roc(scores: Any, labels: Any) -> RocCurve:
    """ROC curve of ``scores`` (N,) against ``labels`` (N,); every threshold is kept.

    Returns a :class:`RocCurve` with arrays of length L <= N + 1. With single-class
    labels, a warning is emitted and the undefined rate (``fpr`` or ``tpr``) is NaN.
    """
    s, y = _check_pair(scores, labels)
    _single_class(y, "the ROC curve")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thr = roc_curve(y.astype(np.int8), s, drop_intermediate=False)
    return RocCurve(fpr=np.asarray(fpr), tpr=np.asarray(tpr), thresholds=np.asarray(thr))


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of ``scores`` (N,) against ``labels`` (N,), ties as one half."""
    s, y = _check_pair(scores, labels)
    if _single_class(y, "AUROC"):
        return float("nan")
    return float(roc_auc_score(y.astype(np.int8), s))


def _tpr_at_fpr_curve(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    return float(np.max(tpr[fpr <= max_fpr]))  # (0, 0) always qualifies


def tpr_at_fpr(scores: Any, labels: Any, *, max_fpr: float = 0.01) -> float:
    """Largest TPR among the ROC points with FPR <= ``max_fpr`` (scores and labels (N,))."""
    max_fpr = _check_max_fpr(max_fpr)
    s, y = _check_pair(scores, labels)
    if _single_class(y, "TPR at FPR"):
        return float("nan")
    fpr, tpr, _ = roc_curve(y.astype(np.int8), s, drop_intermediate=False)
    return _tpr_at_fpr_curve(fpr, tpr, max_fpr)


def asr(scores: Any, labels: Any) -> float:
    """Attack success rate: max over thresholds of (TPR + 1 - FPR) / 2 (scores, labels (N,))."""
    s, y = _check_pair(scores, labels)
    if _single_class(y, "ASR"):
        return float("nan")
    fpr, tpr, _ = roc_curve(y.astype(np.int8), s, drop_intermediate=False)
    return float(np.max((tpr + 1.0 - fpr) / 2.0))


def evaluate(scores: Any, labels: Any) -> Metrics:
    """AUROC, TPR at FPR <= 1% and <= 0.1%, and ASR of ``scores`` (N,) against ``labels`` (N,).

    Single-class labels give one warning and all-NaN metrics.
    """
    s, y = _check_pair(scores, labels)
    if _single_class(y, "every metric"):
        nan = float("nan")
        return Metrics(auroc=nan, tpr_at_1fpr=nan, tpr_at_01fpr=nan, asr=nan)
    yi = y.astype(np.int8)
    fpr, tpr, _ = roc_curve(yi, s, drop_intermediate=False)
    return Metrics(
        auroc=float(roc_auc_score(yi, s)),
        tpr_at_1fpr=_tpr_at_fpr_curve(fpr, tpr, _MAX_FPR["tpr_at_1fpr"]),
        tpr_at_01fpr=_tpr_at_fpr_curve(fpr, tpr, _MAX_FPR["tpr_at_01fpr"]),
        asr=float(np.max((tpr + 1.0 - fpr) / 2.0)),
    )


# --------------------------------------------------------------------------- vectorised metrics


def auroc_many(scores: Any, labels: Any) -> np.ndarray:
    """AUROC of every score vector along the last axis: ``scores`` (..., N), ``labels`` (N,) -> (...).

    Computed from average ranks (Mann-Whitney U), so ties count one half exactly as in
    :func:`sklearn.metrics.roc_auc_score`. Returns a float64 array of the leading shape
    (a 0-d array for 1-D scores); NaN with a warning for single-class labels.
    """
    s = _check_scores(scores, ndim=None)
    y = _check_labels(labels, s.shape[-1])
    out_shape = s.shape[:-1]
    if _single_class(y, "AUROC"):
        return np.full(out_shape, np.nan)
    n_pos = int(np.count_nonzero(y))
    n_neg = int(y.shape[0] - n_pos)
    ranks = rankdata(s, method="average", axis=-1)
    u = ranks[..., y].sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    return np.asarray(u / (n_pos * n_neg), dtype=np.float64)


def _curve_metrics(
    tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int, names: tuple[str, ...], strict_fpr: bool = False
) -> dict[str, np.ndarray]:
    """Metrics from ROC points given as cumulative counts.

    ``tp`` and ``fp`` (B, L) int64: members / held-out samples scoring at or above each
    of L thresholds, in order of decreasing threshold, the last column being
    (n_pos, n_neg). A point may repeat (it adds nothing); (0, 0) is implied.
    Returns ``{name: (B,) float64}``.
    """
    tpr = tp / n_pos
    fpr = fp / n_neg
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "auroc":
            # trapezoids between consecutive points, in integer arithmetic: 2 * area * P * Q
            tp_prev = np.zeros_like(tp)
            tp_prev[:, 1:] = tp[:, :-1]
            dfp = np.diff(fp, axis=1, prepend=0)
            out[name] = (dfp * (tp + tp_prev)).sum(axis=1) / (2.0 * n_pos * n_neg)
        elif name in _MAX_FPR:
            within = fpr < _MAX_FPR[name] if strict_fpr else fpr <= _MAX_FPR[name]
            out[name] = np.where(within, tpr, 0.0).max(axis=1)
        elif name == "asr":
            out[name] = np.maximum(((tpr + 1.0 - fpr) / 2.0).max(axis=1), 0.5)
        else:  # pragma: no cover - names are checked by the callers
            raise UnknownNameError(f"metric must be one of {METRIC_NAMES}; got {name!r}")
    return out


def _sorted_metrics(
    s: np.ndarray, y: np.ndarray, names: tuple[str, ...], strict_fpr: bool = False
) -> dict[str, np.ndarray]:
    """Metrics of each row of ``s`` (K, N) against ``y`` (N,) bool, from one sort per row.

    Both classes must be present. The ROC points are the ends of the tie groups of the
    descending sort, exactly the points of sklearn's ``roc_curve``; inside a tie group
    the counts are held at the previous point so that every column is a valid point.
    """
    k, n = s.shape
    n_pos = int(np.count_nonzero(y))
    order = np.argsort(-s, axis=1)  # order inside a tie group does not matter
    s_sorted = np.take_along_axis(s, order, axis=1)
    tp = np.cumsum(y[order], axis=1, dtype=np.int64)
    last = np.ones((k, n), dtype=bool)  # last element of a tie group = an ROC point
    last[:, :-1] = s_sorted[:, :-1] != s_sorted[:, 1:]
    # index of the previous group's last element (-1 for the first group)
    idx = np.arange(n)
    first = np.ones((k, n), dtype=bool)
    first[:, 1:] = last[:, :-1]
    prev = np.maximum.accumulate(np.where(first, idx - 1, -1), axis=1)
    tp_prev = np.where(prev >= 0, np.take_along_axis(tp, np.maximum(prev, 0), axis=1), 0)
    tp_pt = np.where(last, tp, tp_prev)
    fp_pt = np.where(last, idx + 1, prev + 1) - tp_pt
    return _curve_metrics(tp_pt, fp_pt, n_pos, n - n_pos, names, strict_fpr)


def evaluate_many(scores: Any, labels: Any, *, strict_fpr: bool = False) -> dict[str, np.ndarray]:
    """The four metrics for every score vector along the last axis.

    ``scores`` (K, N) (any leading shape (..., N) works), ``labels`` (N,). Returns
    ``{"auroc", "tpr_at_1fpr", "tpr_at_01fpr", "asr"}`` -> float64 arrays of shape (K,)
    (the leading shape), equal to :func:`evaluate` row by row. Each row is sorted once.
    Single-class labels give one warning and NaN arrays. ``strict_fpr=True`` takes the TPR
    metrics among ROC points with FPR strictly below the limit (the convention of the
    paper's released code) instead of at or below it.
    """
    s = _check_scores(scores, ndim=None)
    y = _check_labels(labels, s.shape[-1])
    lead = s.shape[:-1]
    if _single_class(y, "every metric"):
        return {name: np.full(lead, np.nan) for name in METRIC_NAMES}
    res = _sorted_metrics(s.reshape(-1, s.shape[-1]), y, METRIC_NAMES, bool(strict_fpr))
    return {name: res[name].reshape(lead) for name in METRIC_NAMES}


def _bootstrap_values(s: np.ndarray, y: np.ndarray, *, metric: str, n_boot: int, seed: int) -> np.ndarray:
    """The metric of each of ``n_boot`` stratified bootstrap replicates -> (n_boot,) float64.

    Replicate b draws ``n_pos`` member indices from the first stream of
    ``np.random.SeedSequence(seed).spawn(2)`` (``integers(0, n_pos)``) and ``n_neg``
    held-out indices from the second, member and held-out samples each taken in their
    order in ``s``. The scores are sorted once: a replicate is a vector of counts per
    distinct score, whose cumulative sums are its ROC points, so no replicate is sorted.
    """
    uniq, inv = np.unique(s, return_inverse=True)
    n_u = uniq.shape[0]
    level_desc = (n_u - 1 - inv.reshape(-1)).astype(np.int64)  # 0 = highest score
    pos_level, neg_level = level_desc[y], level_desc[~y]
    n_pos, n_neg = pos_level.shape[0], neg_level.shape[0]
    rng_pos, rng_neg = (np.random.default_rng(ss) for ss in np.random.SeedSequence(seed).spawn(2))
    block = max(1, _BOOT_BLOCK_ELEMENTS // max(n_pos + n_neg, n_u))
    values = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        offset = (np.arange(b, dtype=np.int64) * n_u)[:, None]
        counts = []
        for rng, lev, m in ((rng_pos, pos_level, n_pos), (rng_neg, neg_level, n_neg)):
            codes = lev[rng.integers(0, m, size=(b, m))] + offset
            counts.append(np.bincount(codes.ravel(), minlength=b * n_u).reshape(b, n_u))
        tp = np.cumsum(counts[0], axis=1)
        fp = np.cumsum(counts[1], axis=1)
        values[start : start + b] = _curve_metrics(tp, fp, n_pos, n_neg, (metric,))[metric]
    return values


def bootstrap_ci(
    scores: Any,
    labels: Any,
    *,
    metric: str = "auroc",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified-bootstrap percentile interval of one metric of ``scores`` (N,) vs ``labels`` (N,).

    Each of the ``n_boot`` replicates resamples the members and the held-out samples
    separately, with replacement, keeping both class counts, so every replicate has both
    classes. Returns ``(lo, hi)``, the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of the replicate metrics. ``metric`` is one of :data:`METRIC_NAMES`.
    Reproducible for a given ``seed``; ``(nan, nan)`` with a warning for single-class labels.
    """
    if metric not in METRIC_NAMES:
        raise UnknownNameError(f"metric must be one of {METRIC_NAMES}; got {metric!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise LdminvError(f"n_boot must be a positive integer; got {n_boot!r}")
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0.0 < float(level) < 1.0:
        raise LdminvError(f"level must be a number strictly between 0 and 1; got {level!r}")
    s, y = _check_pair(scores, labels)
    if _single_class(y, f"the bootstrap interval of {metric}"):
        return (float("nan"), float("nan"))

    values = _bootstrap_values(s, y, metric=metric, n_boot=int(n_boot), seed=seed)
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def best_t_index(aurocs: Any) -> int:
    """Index of the largest AUROC in ``aurocs`` (T,), ignoring NaN; the first one on ties.

    Raises :class:`LdminvError` when every entry is NaN.
    """
    a = _to_numpy(aurocs, "aurocs")
    if a.ndim != 1:
        raise ShapeError(f"aurocs must be 1-D of shape (T,); got shape {a.shape}")
    if a.size == 0:
        raise EmptyInputError("aurocs must hold at least one value; got an empty array")
    if a.dtype.kind not in "iuf":
        raise LdminvError(f"aurocs must be real numbers; got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if np.isnan(a).all():
        raise LdminvError(f"aurocs holds only NaN ({a.size} value(s)); no best timestep can be chosen")
    return int(np.nanargmax(a))
