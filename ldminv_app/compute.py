"""Derived quantities the dashboard shows, computed from a run's arrays (numpy / pandas).

Pure functions: no Streamlit, no file access. They combine ldminv_core's masks and metrics
into the tables and curves of the pages (quartiles of distortion, per-coordinate statistics,
metric tables with bootstrap intervals, drop-percentage sweeps), so that the pages only lay
out UI and an exported report can reuse the same numbers. Conventions as in ldminv_core:
labels (N,) with 1 = member, scores with higher = member, statistic = -score.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning

from ldminv_core import metrics
from ldminv_core.errors import ShapeError
from ldminv_core.masks import DropSweep
from ldminv_core.report import quartile_groups

__all__ = [
    "DROP_PERCENTS",
    "quartile_index",
    "quartile_edges",
    "quartile_aurocs",
    "per_timestep_metrics",
    "dimension_table",
    "variant_metrics",
    "sweep_metrics",
    "subset_metrics",
    "rank_of",
]

#: Drop percentages of the sweep plots: 0, 5, ..., 90.
DROP_PERCENTS: tuple[int, ...] = tuple(range(0, 95, 5))


def _labels(labels, n: int | None = None) -> np.ndarray:
    lab = np.asarray(labels).astype(np.int8)
    if lab.ndim != 1:
        raise ShapeError(f"labels: expected shape (N,), got {lab.shape}")
    if n is not None and lab.shape[0] != n:
        raise ShapeError(f"labels: expected {n} labels to match the scores, got {lab.shape[0]}")
    return lab


def quartile_index(log_volume: np.ndarray) -> np.ndarray:
    """Distortion quartile of every sample: int (N,) in 0..3 (0 = lowest log-volume).

    The same groups as the report (``report.quartile_groups``): samples sorted by
    log-volume (stable sort) and split into four near-equal parts with ``numpy.array_split``.
    """
    lv = np.asarray(log_volume, dtype=np.float64)
    if lv.ndim != 1:
        raise ShapeError(f"log_volume: expected shape (N,), got {lv.shape}")
    out = np.empty(lv.shape[0], dtype=np.int64)
    for q, idx in enumerate(quartile_groups(lv)):
        out[idx] = q
    return out


def quartile_edges(log_volume: np.ndarray, quartiles: np.ndarray) -> np.ndarray:
    """(5,) log-volume range of the quartiles: min of Q1, max of Q1..Q4 (NaN for empty ones)."""
    lv = np.asarray(log_volume, dtype=np.float64)
    q = np.asarray(quartiles)
    edges = np.full(5, np.nan)
    if lv.size:
        edges[0] = lv[q == 0].min() if (q == 0).any() else np.nan
        for i in range(4):
            if (q == i).any():
                edges[i + 1] = lv[q == i].max()
    return edges


def quartile_aurocs(scores: np.ndarray, labels: np.ndarray, quartiles: np.ndarray) -> np.ndarray:
    """AUROC of ``scores`` within each distortion quartile.

    Args:
        scores: (N,) or (N, T) membership scores.
        labels: (N,) 1 = member.
        quartiles: (N,) ints in 0..3 from :func:`quartile_index`.

    Returns:
        (4,) or (4, T) float64; NaN (with the metrics module's warning silenced) for a
        quartile holding a single class.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    lab = _labels(labels, n)
    q = np.asarray(quartiles)
    if q.shape != (n,):
        raise ShapeError(f"quartiles: expected shape ({n},), got {q.shape}")
    out = np.full((4,) + s.shape[1:], np.nan)
    for i in range(4):
        sel = q == i
        if not sel.any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            out[i] = metrics.auroc_many(np.moveaxis(s[sel], 0, -1), lab[sel])
    return out


def per_timestep_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """The four metrics at every timestep: ``scores`` (N, T) -> {name: (T,)} (metrics.evaluate_many)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ShapeError(f"scores: expected shape (N, T), got {s.shape}")
    return metrics.evaluate_many(s.T, _labels(labels, s.shape[0]))


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


def variant_metrics(
    scores: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Metrics table of several score variants with stratified-bootstrap intervals.

    Args:
        scores: variant name -> (N,) membership scores.
        labels: (N,) 1 = member.
        n_boot: bootstrap replicates per metric (0 = no intervals).

    Returns:
        DataFrame indexed by variant with, for m in ``metrics.METRIC_NAMES``
        ("auroc", "tpr_at_1fpr", "tpr_at_01fpr", "asr"), the columns ``m``, ``m_lo``,
        ``m_hi`` (NaN without intervals).
    """
    rows = []
    for name, s in scores.items():
        s = np.asarray(s, dtype=np.float64)
        lab = _labels(labels, s.shape[0])
        row: dict[str, float | str] = {"variant": name}
        row.update(metrics.evaluate(s, lab).as_dict())
        for m in metrics.METRIC_NAMES:
            lo = hi = float("nan")
            if n_boot > 0:
                lo, hi = metrics.bootstrap_ci(s, lab, metric=m, n_boot=int(n_boot), level=level, seed=seed)
            row[f"{m}_lo"], row[f"{m}_hi"] = lo, hi
        rows.append(row)
    cols = ["variant"] + [c for m in metrics.METRIC_NAMES for c in (m, f"{m}_lo", f"{m}_hi")]
    return pd.DataFrame(rows, columns=cols).set_index("variant")


def sweep_metrics(
    sweep: DropSweep,
    labels: np.ndarray,
    *,
    t_index: int | None,
    percents: Sequence[float] = DROP_PERCENTS,
) -> dict[str, np.ndarray]:
    """Metrics at every drop percentage, from one ``DropSweep.statistics`` call.

    Args:
        sweep: a DropSweep over all timesteps (then ``t_index`` picks one) or built for a
            single timestep (``t_index`` None).
        labels: (N,) 1 = member.
        percents: (K,) drop percentages.

    Returns:
        {"auroc", "tpr_at_1fpr", "tpr_at_01fpr", "asr"} -> (K,) float64, the scores being
        ``-statistic``, evaluated with ``metrics.evaluate_many``.
    """
    stats = sweep.statistics(list(percents))
    if t_index is not None:
        stats = stats[:, :, int(t_index)]
    if stats.ndim != 2:
        raise ShapeError(f"t_index: the sweep covers several timesteps; pick one (got statistics of shape {stats.shape})")
    return metrics.evaluate_many(-stats, _labels(labels, stats.shape[1]))


def subset_metrics(scores: np.ndarray, labels: np.ndarray, index: Sequence[int]) -> dict[str, float]:
    """Metrics of a subset of samples (rows ``index``): {"n", "n_members", "n_heldout", metric: value}.

    Metrics are NaN (without a warning) when the subset holds a single class.
    """
    s = np.asarray(scores, dtype=np.float64)
    lab = _labels(labels, s.shape[0])
    idx = np.asarray(index, dtype=np.int64)
    sub_s, sub_l = s[idx], lab[idx]
    out: dict[str, float] = {"n": int(idx.size), "n_members": int(sub_l.sum()), "n_heldout": int(idx.size - sub_l.sum())}
    if idx.size == 0:
        out.update({m: float("nan") for m in metrics.METRIC_NAMES})
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        out.update(metrics.evaluate(sub_s, sub_l).as_dict())
    return out


def rank_of(values: np.ndarray, index: int, *, descending: bool = True) -> int:
    """1-based rank of ``values[index]`` among ``values`` (N,) (1 = largest when descending)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(-v if descending else v, kind="stable")
    ranks = np.empty(v.shape[0], dtype=np.int64)
    ranks[order] = np.arange(1, v.shape[0] + 1)
    return int(ranks[int(index)])
