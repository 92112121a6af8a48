"""Descriptive tables of a run for the dashboard: per latent coordinate, per subset of samples,
ranks and quartile ranges (numpy / pandas; no Streamlit, no file access).

Unlike :class:`~ldminv_core.evaluation.Evaluation`, nothing here is a headline number: these are
the tables a user browses (the Dimensions ranking, a selection's metrics on the Latent map).
Conventions: labels (N,) with 1 = member, scores with higher = member, statistic = -score.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import ShapeError
from .protocols import REPORTED_METRICS, Protocol, convention_metrics

__all__ = ["dimension_table", "subset_metrics", "rank_of", "quartile_edges"]

#: Coordinates whose per-coordinate AUROC is ranked at a time in :func:`dimension_table`.
_COORD_BLOCK = 1024


def _labels(labels, n: int | None = None) -> np.ndarray:
    lab = np.asarray(labels).astype(np.int8)
    if lab.ndim != 1:
        raise ShapeError(f"labels: expected shape (N,), got {lab.shape}")
    if n is not None and lab.shape[0] != n:
        raise ShapeError(f"labels: expected {n} labels to match the scores, got {lab.shape[0]}")
    return lab


def quartile_edges(log_volume: np.ndarray, quartiles: np.ndarray) -> np.ndarray:
    """Log-volume range of the distortion quartiles, for axis labels and hovers.

    Args:
        log_volume: (N,) log-volume per sample.
        quartiles: (N,) quartile of every sample, 0..3 (-1 = none), e.g.
            ``Evaluation.quartile_groups()``.

    Returns:
        (5,) float64: the minimum of Q1, then the maximum of Q1, Q2, Q3, Q4 (NaN for an empty one).
    """
    lv = np.asarray(log_volume, dtype=np.float64)
    q = np.asarray(quartiles)
    if lv.ndim != 1 or q.shape != lv.shape:
        raise ShapeError(f"quartiles: expected shape {lv.shape} to match log_volume (N,), got {q.shape}")
    edges = np.full(5, np.nan)
    if lv.size:
        edges[0] = lv[q == 0].min() if (q == 0).any() else np.nan
        for i in range(4):
            if (q == i).any():
                edges[i + 1] = lv[q == i].max()
    return edges


def _order_keys(scores: np.ndarray) -> np.ndarray:
    """uint64 keys of float32 ``scores`` (K, N) that sort as the values do (-0.0 counted as +0.0),
    shifted left one bit to make room for a label."""
    s = np.ascontiguousarray(scores, dtype=np.float32) + np.float32(0.0)  # -0.0 + 0.0 = +0.0
    u = s.view(np.uint32)
    # negative values: all bits flipped (larger magnitude sorts first); others: the sign bit set
    key = np.where(u >> np.uint32(31), ~u, u | np.uint32(0x80000000))
    return key.astype(np.uint64) << np.uint64(1)


def _column_auroc_keys(scores: np.ndarray, labels: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    """Mann-Whitney U of every row from two sorts of value-and-label keys, no ranks: sorted with
    the positives first among equal values, the negatives before a positive are those strictly
    below it; with the negatives first, those at or below it. U is the mean of the two sums
    (ties count one half), exact in int64."""
    key = _order_keys(scores)
    # 1. positives first among ties: negatives strictly below each positive
    a = np.sort(key | (~labels).astype(np.uint64), axis=1)
    neg = (a & np.uint64(1)).astype(bool)
    below = np.where(neg, 0, np.cumsum(neg, axis=1, dtype=np.int32)).sum(axis=1, dtype=np.int64)
    del a
    # 2. negatives first among ties: negatives at or below each positive
    b = np.sort(key | labels.astype(np.uint64), axis=1)
    pos = (b & np.uint64(1)).astype(bool)
    at_or_below = np.where(pos, np.cumsum(~pos, axis=1, dtype=np.int32), 0).sum(axis=1, dtype=np.int64)
    return (below + at_or_below) / 2.0 / (n_pos * n_neg)


def _column_auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every row of ``scores`` (K, N) against ``labels`` (N,) bool (members positive),
    tie-averaged (Mann-Whitney): the numbers of ``metrics.auroc_many``, exactly. Finite float32
    (or float16) rows: from two sorts of value-and-label keys (:func:`_column_auroc_keys`, 3x
    faster); otherwise from one sort per row and tie-averaged ranks (the rank sums are sums of
    half-integers, exact in float64). NaN when a class is missing."""
    k, n = scores.shape
    n_pos = int(np.count_nonzero(labels))
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(k, np.nan)
    if scores.dtype in (np.float32, np.float16) and n < 2**31 and np.isfinite(scores).all():
        return _column_auroc_keys(scores, np.asarray(labels, dtype=bool), n_pos, n_neg)
    order = np.argsort(scores, axis=1)
    srt = np.take_along_axis(scores, order, axis=1)
    new = np.ones((k, n), dtype=bool)
    new[:, 1:] = srt[:, 1:] != srt[:, :-1]
    idx = np.arange(n)
    starts = np.maximum.accumulate(np.where(new, idx, 0), axis=1)
    last = np.ones((k, n), dtype=bool)
    last[:, :-1] = new[:, 1:]
    ends = np.minimum.accumulate(np.where(last, idx, n - 1)[:, ::-1], axis=1)[:, ::-1]
    rank = (starts + ends) / 2.0 + 1.0
    r_pos = np.where(labels[order], rank, 0.0).sum(axis=1)
    return (r_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _each_block(block, d: int, *, workers: int) -> None:
    """``block(j)`` for every block start j of :data:`_COORD_BLOCK` coordinates out of ``d``: on
    ``workers`` threads when more than one (numpy's sorts and reductions release the interpreter
    lock; each block writes its own slice of the output arrays)."""
    starts = range(0, d, _COORD_BLOCK)
    if workers > 1 and len(starts) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(int(workers), len(starts)), thread_name_prefix="ldminv-dims") as pool:
            list(pool.map(block, starts))
    else:
        for j in starts:
            block(j)


def dimension_table(influence: np.ndarray, terms_t: np.ndarray, labels: np.ndarray, *,
                    workers: int = 1) -> pd.DataFrame:
    """Statistics of every latent coordinate (channel, row, col), one row each.

    Args:
        influence: (N, C, h, w) per-sample influence (0.5 * log G_ii).
        terms_t: (N, C, h, w) the attack's per-coordinate terms at one timestep.
        labels: (N,) 1 = member.
        workers: threads over blocks of 1024 coordinates (the same numbers for any count).

    Returns:
        DataFrame with d = C*h*w rows, sorted by decreasing mean influence, columns:
        ``coord`` (flat index), ``channel``, ``row``, ``col``, ``influence_mean``,
        ``influence_std`` (over samples), ``gap`` (mean held-out term - mean member term),
        ``gap_std`` (gap / pooled standard deviation of the term), ``auroc`` (AUROC of the
        score -term of that coordinate alone, tie-averaged ranks: the numbers of ``metrics.auroc_many``) and
        ``influence_rank`` (1 = most influential).
    """
    inf_src = influence if hasattr(influence, "shape") and hasattr(influence, "dtype") else np.asarray(influence)
    terms_src = terms_t if hasattr(terms_t, "shape") and hasattr(terms_t, "dtype") else np.asarray(terms_t)
    if inf_src.ndim != 4:
        raise ShapeError(f"influence: expected shape (N, C, h, w), got {inf_src.shape}")
    if tuple(terms_src.shape) != tuple(inf_src.shape):
        raise ShapeError(f"terms_t: expected shape {inf_src.shape} to match influence, got {terms_src.shape}")
    n, c, h, w = inf_src.shape
    d = c * h * w
    lab = _labels(labels, n).astype(bool)
    flat_inf_src = inf_src.reshape(n, d)
    flat_terms_src = terms_src.reshape(n, d)
    gap, pooled, auroc = np.empty(d), np.empty(d), np.empty(d)
    mean_inf, std_inf = np.empty(d), np.empty(d)
    has_both = bool(lab.any() and (~lab).any())
    # ranked in the stored precision when it holds the values exactly (float16 / float32)
    exact = np.dtype(flat_terms_src.dtype) in (np.dtype(np.float16), np.dtype(np.float32))

    def block(j: int) -> None:
        # in blocks of coordinates (memory-mapped arrays are read a block of columns at a time,
        # as float64): never a whole (N, d) float64 copy, and the ranks of one block at a time
        sl = slice(j, min(d, j + _COORD_BLOCK))
        terms = np.asarray(flat_terms_src[:, sl], dtype=np.float64)
        flat_inf = np.asarray(flat_inf_src[:, sl], dtype=np.float64)
        mean_inf[sl] = flat_inf.mean(axis=0)
        std_inf[sl] = flat_inf.std(axis=0)
        if has_both:
            mem, held = terms[lab], terms[~lab]
            gap[sl] = held.mean(axis=0) - mem.mean(axis=0)
            pooled[sl] = np.sqrt(0.5 * (mem.var(axis=0) + held.var(axis=0)))
        else:
            gap[sl] = np.nan
            pooled[sl] = np.nan
        auroc[sl] = _column_auroc(-(terms.astype(np.float32) if exact else terms).T, lab)

    _each_block(block, d, workers=workers)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap_std = np.where(pooled > 0, gap / pooled, np.nan)
    cc, rr, ww = np.unravel_index(np.arange(c * h * w), (c, h, w))
    table = pd.DataFrame(
        {
            "coord": np.arange(c * h * w),
            "channel": cc,
            "row": rr,
            "col": ww,
            "influence_mean": mean_inf,
            "influence_std": std_inf,
            "gap": gap,
            "gap_std": gap_std,
            "auroc": auroc,
        }
    )
    order = np.argsort(-mean_inf, kind="stable")
    rank = np.empty(c * h * w, dtype=np.int64)
    rank[order] = np.arange(1, c * h * w + 1)
    table["influence_rank"] = rank
    return table.iloc[order].reset_index(drop=True)


def subset_metrics(
    scores: np.ndarray, labels: np.ndarray, index: Sequence[int], *, protocol: Protocol | None = None
) -> dict[str, float]:
    """Metrics of a subset of samples (rows ``index``) under a protocol's ROC convention.

    Args:
        scores: (N,) membership scores (higher = member).
        labels: (N,) 1 = member.
        index: (M,) row indices of the subset.
        protocol: whose ROC convention to use (:func:`~.protocols.convention_metrics`; default
            ``standard``; ``paper`` counts held-out images as positive with a strict FPR < 1%).
            In-sample and descriptive: nothing is chosen or cross-fitted here.

    Returns:
        {"n", "n_members", "n_heldout", "auroc", "tpr_at_1fpr", "asr"}; the metrics are NaN
        (without a warning) when the subset holds a single class or no sample.
    """
    s = np.asarray(scores, dtype=np.float64)
    lab = _labels(labels, s.shape[0])
    idx = np.asarray(index, dtype=np.int64)
    sub_s, sub_l = s[idx], lab[idx]
    out: dict[str, float] = {"n": int(idx.size), "n_members": int(sub_l.sum()), "n_heldout": int(idx.size - sub_l.sum())}
    if idx.size == 0:
        out.update({m: float("nan") for m in REPORTED_METRICS})
        return out
    res = convention_metrics(sub_s, sub_l, protocol or Protocol())
    out.update({m: float(res[m]) for m in REPORTED_METRICS})
    return out


def rank_of(values: np.ndarray, index: int, *, descending: bool = True) -> int:
    """1-based rank of ``values[index]`` among ``values`` (N,) (1 = largest when ``descending``;
    ties keep the row order)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ShapeError(f"values: expected shape (N,), got {v.shape}")
    order = np.argsort(-v if descending else v, kind="stable")
    ranks = np.empty(v.shape[0], dtype=np.int64)
    ranks[order] = np.arange(1, v.shape[0] + 1)
    return int(ranks[int(index)])
