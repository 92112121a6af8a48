"""Seeded stratified folds: the cross-fitting folds of the ``honest`` protocol and of the blind baseline."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold

from ..errors import LdminvError

__all__ = ["stratified_folds"]


def stratified_folds(labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Fold id of every sample, int64 (N,): ``StratifiedKFold(folds, shuffle=True,
    random_state=seed)`` over the split (labels (N,), 1 = member); the folds of the ``honest``
    protocol and of the blind baseline.

    Raises:
        LdminvError: fewer than ``folds`` members or held-out images.
    """
    y = np.asarray(labels).astype(np.int8)
    n, n_mem = int(y.size), int(y.sum())
    if min(n_mem, n - n_mem) < folds:
        raise LdminvError(
            f"protocol honest: {folds} folds need at least {folds} members and {folds} held-out images; "
            f"the run has {n_mem} and {n - n_mem} (use fewer --folds)"
        )
    out = np.zeros(n, dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            np.zeros(n), y)):
        out[test] = f
    return out
