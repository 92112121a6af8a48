"""ROC curves as the pages draw them: the points come from the evaluation layer
(``ldminv_core.evaluation.curves_for_display``, the protocol's convention), the AUROC beside each
curve from the ``Evaluation``'s arms, and the blind baseline's curve (the files alone) is added
dashed beside the attack's.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ldminv_core.evaluation.curves_for_display import roc_points, roc_points_of, selection_roc_points

from .blind import BLIND_CURVE, blind_curve

if TYPE_CHECKING:
    from ldminv_core.evaluation import Evaluation

__all__ = ["Curves", "arm_curves", "baseline_curves", "selection_curves", "axis_titles"]

#: name -> (fpr (L,), tpr (L,)) of each curve drawn.
Curves = dict[str, tuple[np.ndarray, np.ndarray]]


def _add_blind(ev: Evaluation, curves: Curves, aurocs: dict[str, float]) -> bool:
    """Add the blind baseline's curve and AUROC (same convention) when it is available."""
    blind = blind_curve(ev)
    if blind is None:
        return False
    curves[BLIND_CURVE] = (blind[0].fpr, blind[0].tpr)
    aurocs[BLIND_CURVE] = blind[1]
    return True


def arm_curves(ev: Evaluation, scores: Mapping[str, np.ndarray],
               arms: Mapping) -> tuple[Curves, dict[str, float], bool]:
    """The ROC curves of the arms' ``scores`` (name -> (N,)) in ``ev``'s protocol convention, each
    with its arm's AUROC (``arms``: name -> ``ArmResult``; a random arm: its first seed's), then the
    blind baseline's. Returns (curves, aurocs, whether the blind curve is drawn)."""
    curves = roc_points_of(scores, ev.labels, protocol=ev.protocol)
    aurocs = {}
    for name in scores:
        arm = arms[name]  # the legend's AUROC is the evaluation's: the arm's (the random curve: its seed's)
        aurocs[name] = arm.per_seed["auroc"][0] if arm.per_seed else arm.auroc
    has_blind = _add_blind(ev, curves, aurocs)
    return curves, aurocs, has_blind


def baseline_curves(ev: Evaluation) -> tuple[Curves, dict[str, float]]:
    """The baseline's ROC curve (no mask) in ``ev``'s protocol convention with its AUROC, and the
    blind baseline's beside it when available."""
    curves: Curves = {"baseline": roc_points(ev.scores("baseline"), ev.labels, ev.protocol)}
    aurocs = {"baseline": ev.baseline().auroc}
    _add_blind(ev, curves, aurocs)
    return curves, aurocs


def selection_curves(scores: np.ndarray, labels: np.ndarray, rows: Sequence[int]) -> Curves:
    """The ROC of the selected rows beside that of every sample, members positive:
    {"selection", "all"} (``scores`` and ``labels`` (N,), ``rows`` (M,))."""
    return selection_roc_points(scores, labels, rows)


def axis_titles(heldout_positive: bool) -> dict[str, str]:
    """The ROC axis titles of a convention (``paper``: held-out images are the positive class)."""
    if heldout_positive:
        return dict(xlabel="false-positive rate (members)", ylabel="true-positive rate (held-out)")
    return dict(xlabel="false-positive rate (held-out)", ylabel="true-positive rate (members)")
