"""The Latent map page's numbers of a selection of samples: its metrics beside those of every
sample, from the evaluation layer (``Evaluation.selection`` under ``honest``, ``subset_metrics``
in the protocol's ROC convention otherwise), and what they are, in words.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import subset_metrics

from .cards import arm_t_cell

if TYPE_CHECKING:
    from ldminv_core.evaluation import Evaluation
    from ldminv_core.runs import Run

__all__ = ["SelectionMetrics", "selection_metrics"]


@dataclass(frozen=True)
class SelectionMetrics:
    """Metrics of a selection and of every sample ({"n", "n_members", "n_heldout", "auroc",
    "tpr_at_1fpr", "asr", ...}), the scores (N,) they are of, and a caption saying which."""

    scores: np.ndarray
    selection: dict
    everything: dict
    caption: str


def selection_metrics(ev: Evaluation, run: Run, attack: str, scores: np.ndarray, rows: Sequence[int], *,
                      t_index: int | None) -> SelectionMetrics:
    """The metrics of the selected ``rows`` (M,) and of all N samples under ``ev``'s protocol:
    ``honest`` reads the pooled calibrated out-of-fold scores and the folds' thresholds (nothing is
    chosen on the selection); the others the baseline ``scores`` (N,) at the sidebar's t, in-sample."""
    proto = ev.protocol
    if proto.name == "honest":
        sub, all_m = ev.selection(rows), ev.selection(np.arange(len(run)))
        caption = (f"Baseline {attack_label(attack)}, honest protocol: pooled calibrated out-of-fold scores "
                   f"({arm_t_cell(ev.baseline())}, chosen on the other folds); TPR@1%FPR realised "
                   f"at the folds' transferred thresholds (realised FPR in the selection "
                   f"{sub['realised_fpr_at_1fpr']:.4f}). Difference: selection − all samples.")
        return SelectionMetrics(ev.scores("baseline"), sub, all_m, caption)
    labels = run.labels
    sub = subset_metrics(scores, labels, rows, protocol=proto)
    all_m = subset_metrics(scores, labels, list(range(len(run))), protocol=proto)
    t_text = "" if t_index is None else f" at t = {run.timesteps(attack)[t_index]} (sidebar)"
    caption = (f"Baseline {attack_label(attack)} scores{t_text}, {proto.name} protocol's ROC convention "
               f"(TPR@1%FPR = {proto.tpr_rule}); in-sample, descriptive. Difference: selection − all samples.")
    return SelectionMetrics(scores, sub, all_m, caption)
