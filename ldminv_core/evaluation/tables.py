"""Descriptive tables of a run for the dashboard: per latent coordinate, per subset of samples,
ranks and quartile ranges (numpy / pandas; no Streamlit, no file access).

Unlike :class:`~ldminv_core.evaluation.Evaluation`, nothing here is a headline number: these are
the tables a user browses (the Dimensions ranking, a selection's metrics on the Latent map).
Conventions: labels (N,) with 1 = member, scores with higher = member, statistic = -score.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning

from .. import metrics
from ..errors import ShapeError
from .protocols import REPORTED_METRICS, Protocol, convention_metrics

__all__ = ["dimension_table", "subset_metrics", "rank_of", "quartile_edges"]


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


def dimension_table(influence: np.ndarray, terms_t: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    """Statistics of every latent coordinate (channel, row, col), one row each.

    Args:
        influence: (N, C, h, w) per-sample influence (0.5 * log G_ii).
        terms_t: (N, C, h, w) the attack's per-coordinate terms at one timestep.
        labels: (N,) 1 = member.

    Returns:
        DataFrame with d = C*h*w rows, sorted by decreasing mean influence, columns:
        ``coord`` (flat index), ``channel``, ``row``, ``col``, ``influence_mean``,
        ``influence_std`` (over samples), ``gap`` (mean held-out term - mean member term),
        ``gap_std`` (gap / pooled standard deviation of the term), ``auroc`` (AUROC of the
        score -term of that coordinate alone, vectorised with ``metrics.auroc_many``) and
        ``influence_rank`` (1 = most influential).
    """
    inf = np.asarray(influence, dtype=np.float64)
    terms = np.asarray(terms_t, dtype=np.float64)
    if inf.ndim != 4:
        raise ShapeError(f"influence: expected shape (N, C, h, w), got {inf.shape}")
    if terms.shape != inf.shape:
        raise ShapeError(f"terms_t: expected shape {inf.shape} to match influence, got {terms.shape}")
    n, c, h, w = inf.shape
    lab = _labels(labels, n).astype(bool)
    flat_inf = inf.reshape(n, -1)
    flat_terms = terms.reshape(n, -1)
    mem, held = flat_terms[lab], flat_terms[~lab]
    gap = held.mean(axis=0) - mem.mean(axis=0) if mem.size and held.size else np.full(c * h * w, np.nan)
    pooled = np.sqrt(0.5 * (mem.var(axis=0) + held.var(axis=0))) if mem.size and held.size else np.full(c * h * w, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        gap_std = np.where(pooled > 0, gap / pooled, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        auroc = metrics.auroc_many(-flat_terms.T, lab.astype(np.int8))
    cc, rr, ww = np.unravel_index(np.arange(c * h * w), (c, h, w))
    mean_inf = flat_inf.mean(axis=0)
    table = pd.DataFrame(
        {
            "coord": np.arange(c * h * w),
            "channel": cc,
            "row": rr,
            "col": ww,
            "influence_mean": mean_inf,
            "influence_std": flat_inf.std(axis=0),
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
