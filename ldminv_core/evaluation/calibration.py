"""Calibration of out-of-fold scores: how the ``honest`` protocol pools its folds (METHOD.md section 4).

Under ``honest`` every fold is scored with choices made on the other folds (its own t, its own
drop), so the raw scores of two folds are statistics of different things and cannot be ranked
against each other. Each fold's scores are therefore mapped through the held-out score
distribution of the OTHER folds, computed with the same choices: a score becomes the share of
those held-out scores below it. The map

- uses no label of the fold it calibrates (only the other folds' held-out scores);
- interpolates linearly between the distinct reference scores (knot ``u_j`` -> the share of
  reference scores strictly below ``u_j``) and continues linearly beyond the smallest and the
  largest with the slope of the nearest segment, so it is strictly increasing: it keeps the
  order and the ties of a fold's own scores (every within-fold AUROC is unchanged) and never
  collapses the top members onto one value;
- puts every fold on one scale (about 0 = typical of the least member-like held-out images, about
  1 = beyond them all), so the folds' calibrated scores pool like ``cross_val_predict`` output and
  every metric and subgroup is computed on the pooled scores.
"""
from __future__ import annotations

import numpy as np

from ..errors import LdminvError, ShapeError

__all__ = ["heldout_calibration"]


def heldout_calibration(scores: np.ndarray, *, reference: np.ndarray) -> np.ndarray:
    """Calibrated scores: each score's share of the ``reference`` held-out scores below it.

    Args:
        scores: (n,) membership scores of one fold (higher = member), raw.
        reference: (m,) membership scores of the OTHER folds' held-out images, with the same
            choices (t, mask) as ``scores``; m >= 1, finite.

    Returns:
        float64 (n,): piecewise linear in ``scores`` through the knots (u_j, #(reference < u_j) / m)
        of the distinct reference values u_1 < ... < u_k, extended linearly beyond u_1 and u_k with
        the slope of the first and last segment (slope 1 / m per unit score when k = 1). Strictly
        increasing; NaN where ``scores`` is NaN.

    Raises:
        ShapeError: an argument is not one-dimensional. LdminvError: ``reference`` is empty or
            not finite.
    """
    # 1. validate
    s = np.asarray(scores, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if s.ndim != 1 or ref.ndim != 1:
        raise ShapeError(f"heldout_calibration: expected 1-D scores and reference, got {s.shape} and {ref.shape}")
    if ref.size == 0 or not np.isfinite(ref).all():
        raise LdminvError(f"heldout_calibration: reference: expected at least one finite held-out score, "
                          f"got {ref.size} values ({int((~np.isfinite(ref)).sum())} not finite)")
    # 2. knots: distinct reference values and the share of the reference strictly below each
    knots, counts = np.unique(ref, return_counts=True)
    share = (np.cumsum(counts) - counts) / float(ref.size)
    if knots.size == 1:
        return share[0] + (s - knots[0]) / float(ref.size)
    # 3. inside the reference range: linear between neighbours
    out = np.interp(s, knots, share)
    # 4. outside: continued with the slope of the nearest segment
    left = s < knots[0]
    right = s > knots[-1]
    slope_left = (share[1] - share[0]) / (knots[1] - knots[0])
    slope_right = (share[-1] - share[-2]) / (knots[-1] - knots[-2])
    out[left] = share[0] + (s[left] - knots[0]) * slope_left
    out[right] = share[-1] + (s[right] - knots[-1]) * slope_right
    out[np.isnan(s)] = np.nan
    return out
