"""The held-out minus member shift of a per-coordinate attack term, in the rank sense of its AUROC.

A mean gap (mean held-out term - mean member term) and the coordinate's AUROC (of -term) can
point opposite ways: the terms are powers of noise residuals (|eps|^4 for SimA), skewed and
heavy-tailed, so a few large values move a mean while the AUROC counts pairs. The
Hodges-Lehmann shift, the median over all (held-out, member) pairs of ``held-out term - member
term``, is the location shift that goes with the Mann-Whitney statistic the AUROC is: with
``AUROC = P(held-out term > member term) + P(tie) / 2``, more than half of the pairs are positive
when AUROC > 0.5, so the shift is >= 0; it is <= 0 when AUROC < 0.5. The two never disagree in
sign (the shift can be 0 when ties decide).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import LdminvError, ShapeError
from ..metrics import auroc_many

__all__ = ["heldout_member_shift", "shift_is_exact", "PAIR_BUDGET"]

#: Pair differences one call takes at most: the pairs per column are this divided by the number
#: of columns (at least 1024), all pairs (exact) when members x held-out fits. A 300 + 300
#: sample run with 256 coordinates (the demo) is exact.
PAIR_BUDGET = 30_000_000
# pair differences held in memory at once
_BLOCK_VALUES = 4_000_000
# a class represented by K quantiles takes them from at most this many x K of its values
_ROWS_PER_ATOM = 16


def heldout_member_shift(
    values: Any, labels: Any, *, max_pairs: int | None = None, seed: int = 0, auroc: Any = None
) -> tuple[np.ndarray, bool]:
    """Hodges-Lehmann shift of every column: the median over all (held-out, member) pairs of
    ``held-out value - member value``.

    Exact (every pair) when members x held-out <= ``max_pairs``. Otherwise each class is
    represented by K equally spaced quantiles (probabilities (i + 0.5) / K, K**2 about
    ``max_pairs``; a class small enough is taken whole), read off at most 16 K of its values
    drawn with ``seed``, and the median is taken over the pairs of quantiles; the estimate is
    then clipped to the side of 0 where the exact shift lies (>= 0 when the column's AUROC of
    -value, members positive, is above 0.5; <= 0 below), so the signs agree on both paths.

    Args:
        values: (N, d) values (an attack's terms at one timestep, one column per latent
            coordinate), any float dtype; read a block of columns at a time. float16 / float32
            values are differenced in float32 (the sign of a difference is exact).
        labels: (N,) 1 = member, 0 = held-out; both classes present.
        max_pairs: pairs per column up to which the shift is exact; default
            ``max(1024, PAIR_BUDGET // d)``.
        seed: seed of the values drawn for the quantiles of large classes.
        auroc: (d,) the columns' AUROC of -value (members positive), when already computed
            (the Dimensions table's); computed here when needed and not given.

    Returns:
        (shift, exact): float64 (d,) shifts, and whether every column used all pairs.

    Raises:
        ShapeError: ``values`` is not 2-D or ``labels`` does not match its rows.
        LdminvError: a class is missing or ``max_pairs`` < 1.
    """
    src = values if hasattr(values, "shape") and hasattr(values, "dtype") else np.asarray(values)
    if src.ndim != 2:
        raise ShapeError(f"values: expected shape (N, d), got {tuple(src.shape)}")
    lab = np.asarray(labels).reshape(-1)
    if lab.shape[0] != src.shape[0]:
        raise ShapeError(f"labels: expected {src.shape[0]} labels to match values, got {lab.shape[0]}")
    d = int(src.shape[1])
    auc_all = None if auroc is None else np.asarray(auroc, dtype=np.float64).reshape(-1)
    if auc_all is not None and auc_all.shape[0] != d:
        raise ShapeError(f"auroc: expected {d} values, one per column, got {auc_all.shape[0]}")
    if max_pairs is None:
        max_pairs = _default_pairs(d)
    if int(max_pairs) < 1:
        raise LdminvError(f"max_pairs: expected an integer >= 1, got {max_pairs!r}")
    member = lab == 1
    n_m, n_h = int(member.sum()), int((~member).sum())
    if n_m == 0 or n_h == 0:
        raise LdminvError(f"labels: a shift needs members and held-out samples, got {n_m} and {n_h}")
    work = np.float32 if np.dtype(src.dtype) in (np.dtype(np.float16), np.dtype(np.float32)) else np.float64
    out = np.empty(d, dtype=np.float64)
    exact = n_m * n_h <= int(max_pairs)
    k_m, k_h = _atoms(n_m, n_h, int(max_pairs))
    rows_m, rows_h = np.flatnonzero(member), np.flatnonzero(~member)
    if not exact:  # the values the quantiles are read from
        rng = np.random.default_rng(int(seed))
        if k_m < n_m:
            rows_m = np.sort(rng.choice(rows_m, size=min(n_m, _ROWS_PER_ATOM * k_m), replace=False))
        if k_h < n_h:
            rows_h = np.sort(rng.choice(rows_h, size=min(n_h, _ROWS_PER_ATOM * k_h), replace=False))
    block = max(1, _BLOCK_VALUES // (k_m * k_h))
    for j in range(0, d, block):
        sl = slice(j, min(d, j + block))
        mem = _quantile_atoms(np.asarray(src[rows_m, sl], dtype=work), k_m)
        held = _quantile_atoms(np.asarray(src[rows_h, sl], dtype=work), k_h)
        diffs = held[:, None, :] - mem[None, :, :]  # (k_h, k_m, b)
        est = np.median(diffs.reshape(-1, diffs.shape[-1]), axis=0).astype(np.float64)
        if not exact:
            if auc_all is not None:
                auc = auc_all[sl]
            else:  # as the Dimensions table's AUROC
                auc = auroc_many(-(np.asarray(src[:, sl]).astype(work)).T, member)
            est = np.where(auc > 0.5, np.maximum(est, 0.0), np.where(auc < 0.5, np.minimum(est, 0.0), est))
        out[sl] = est
    return out, exact


def _default_pairs(d: int) -> int:
    return max(1024, PAIR_BUDGET // max(int(d), 1))


def shift_is_exact(n_members: int, n_heldout: int, d: int, *, max_pairs: int | None = None) -> bool:
    """Whether :func:`heldout_member_shift` uses every pair for a run of this size (``d``
    columns), with the same ``max_pairs``."""
    limit = _default_pairs(d) if max_pairs is None else int(max_pairs)
    return int(n_members) * int(n_heldout) <= limit


def _atoms(n_m: int, n_h: int, max_pairs: int) -> tuple[int, int]:
    """Values (or quantiles) per class so that their pairs number about ``max_pairs``."""
    if n_m * n_h <= max_pairs:
        return n_m, n_h
    small, large = sorted((n_m, n_h))
    k = max(1, math.isqrt(max_pairs))
    if small <= k:  # the small class whole, the large one as quantiles
        k_small, k_large = small, max(1, max_pairs // small)
    else:
        k_small = k_large = k
    return (k_small, k_large) if n_m <= n_h else (k_large, k_small)


def _quantile_atoms(x: np.ndarray, k: int) -> np.ndarray:
    """(k, b) quantiles of each column of ``x`` (n, b) at probabilities (i + 0.5) / k, in x's
    dtype; ``x`` itself when k >= n."""
    if k >= x.shape[0]:
        return x
    return np.quantile(x, (np.arange(k) + 0.5) / k, axis=0).astype(x.dtype, copy=False)
