"""Stratified bootstrap designs shared by every interval the evaluation layer reports.

A design is an index matrix ``index`` (B, N): replicate b evaluates sample ``index[b, n]``
in place of sample n, where ``index[b, n]`` is drawn uniformly (with replacement) from the
samples of n's stratum. Strata are given as one integer per sample (for example split, or
split x fold, or split x quartile), so

- every replicate keeps the count of every stratum (both classes are always present when
  the strata separate members from held-out images);
- the labels, folds and groups of the columns are the same in every replicate, so one label
  vector serves all replicates and a group is a fixed set of columns;
- two arms evaluated on the same design are *paired*: both see the same resampled samples,
  which is what the findings' difference intervals need.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..choices import DEFAULT_N_BOOT  # the one default count of replicates (defined where the CLI can read it cheaply)
from .._validation import check_int
from ..errors import LdminvError, ShapeError

__all__ = ["DEFAULT_N_BOOT", "resample_index", "combine_strata", "percentile_interval", "verdict"]


def combine_strata(*keys: np.ndarray) -> np.ndarray:
    """One stratum id per sample from several integer keys (N,) each -> int64 (N,)."""
    if not keys:
        raise LdminvError("combine_strata: expected at least one key")
    arrays = [np.asarray(k) for k in keys]
    n = arrays[0].shape[0]
    for a in arrays:
        if a.shape != (n,):
            raise ShapeError(f"combine_strata: every key must have shape ({n},); got {a.shape}")
    _, ids = np.unique(np.stack(arrays, axis=1), axis=0, return_inverse=True)
    return ids.reshape(-1).astype(np.int64)


def resample_index(strata: np.ndarray, *, n_boot: int, seed: int = 0) -> np.ndarray:
    """Stratified bootstrap index matrix: int64 (n_boot, N) for ``strata`` (N,).

    Column n of every replicate holds a sample of the same stratum as n, drawn uniformly with
    replacement; strata are processed in increasing id order from
    ``numpy.random.default_rng(seed)``, so the design is reproducible from ``seed``.
    """
    check_int(n_boot, "n_boot", minimum=1)
    s = np.asarray(strata)
    if s.ndim != 1:
        raise ShapeError(f"strata: expected shape (N,), got {s.shape}")
    rng = np.random.default_rng(seed)
    index = np.empty((int(n_boot), s.shape[0]), dtype=np.int64)
    for value in np.unique(s):
        members = np.flatnonzero(s == value)
        index[:, members] = members[rng.integers(0, members.size, size=(int(n_boot), members.size))]
    return index


def percentile_interval(values: Any, *, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicate values (B,), NaN replicates ignored.

    ``(nan, nan)`` when no replicate is finite.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def verdict(interval: tuple[float, float]) -> str:
    """"supported" (interval above 0), "contradicted" (below 0), "inconclusive" (contains 0)
    or "undefined" (NaN bounds)."""
    lo, hi = interval
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "undefined"
    if lo > 0:
        return "supported"
    if hi < 0:
        return "contradicted"
    return "inconclusive"
