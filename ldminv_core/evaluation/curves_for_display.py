"""ROC curves for display: the points the dashboard draws, from the evaluation layer's own
convention (``convention_roc``), so no page computes a curve itself.

Every function here only calls the existing evaluation functions; the AUROC shown beside a curve
comes from the ``Evaluation`` (its arms) or from ``subset_metrics``, never from here.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ldminv_core.evaluation.protocols import Protocol, convention_roc, make_protocol

__all__ = ["roc_points", "roc_points_of", "selection_roc_points"]


def roc_points(scores: np.ndarray, labels: np.ndarray, protocol: Protocol) -> tuple[np.ndarray, np.ndarray]:
    """(fpr (L,), tpr (L,)) of membership ``scores`` (N,) against ``labels`` (N,, 1 = member) in
    ``protocol``'s ROC convention (``paper``: held-out positive; L <= N + 1)."""
    curve = convention_roc(scores, labels, protocol)
    return curve.fpr, curve.tpr


def roc_points_of(scores: Mapping[str, np.ndarray], labels: np.ndarray, *,
                  protocol: Protocol) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`roc_points` of several named score arrays (each (N,)), in the same order."""
    return {name: roc_points(s, labels, protocol) for name, s in scores.items()}


def selection_roc_points(scores: np.ndarray, labels: np.ndarray,
                         rows: Sequence[int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ROC of a selection of samples (rows (M,) of ``scores`` (N,) and ``labels`` (N,)) beside
    that of every sample, members positive (the ``standard`` convention): {"selection", "all"}."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    idx = np.asarray(rows, dtype=np.int64)
    standard = make_protocol("standard")
    return {"selection": roc_points(s[idx], y[idx], standard), "all": roc_points(s, y, standard)}
