"""The ``honest`` protocol: seeded, stratified K-fold cross-fitting.

Every choice (t, drop percentage, the score threshold of the 1% FPR operating point) is made on
the other folds and applied to the fold's own samples, whose scores are then calibrated on the
other folds' held-out scores (:mod:`..calibration`) so that all folds pool into one set of
out-of-fold scores; every metric and subgroup is computed on the pooled scores; TPR@1%FPR is
realised with the transferred thresholds and reported with the realised FPR beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..calibration import heldout_calibration
from ..folds import stratified_folds
from ..low_fpr import threshold_at_1fpr
from ..results import FoldChoice
from .base import HONEST_DROPS, REPORTED_METRICS, ArmScoring, Protocol, ScoredArm

if TYPE_CHECKING:
    from ..evaluator import Evaluation

__all__ = ["HonestProtocol"]


@dataclass(frozen=True, repr=False)
class HonestProtocol(Protocol):
    """``honest`` (see the module docstring)."""

    name: str = "honest"

    default_drop = None
    transfers_thresholds = True
    reports_headline_t = False

    @property
    def description(self) -> str:
        return (f"{self.folds}-fold cross-fitting: t, drop % and the 1% FPR threshold chosen on the other folds; "
                "TPR realised with transferred thresholds")

    @property
    def tpr_rule(self) -> str:
        return "realised TPR of thresholds chosen at FPR <= 1% on the other folds"

    def rule_settings(self) -> dict[str, Any]:
        return dict(folds=self.folds, fold_seed=self.seed, stratified_by="split",
                    best_t="argmax baseline AUROC on the other folds (ties: smallest t)",
                    drop_choice=f"argmax masked AUROC on the other folds over {HONEST_DROPS[0]}..{HONEST_DROPS[-1]} "
                    "step 5 (ties: smallest)",
                    drop_rule="round(d * p / 100)", random_count="round(d * p / 100)",
                    quartiles="stable sort, numpy.array_split",
                    calibration="each fold's scores mapped to the share of the other folds' held-out "
                    "scores below them (same t and mask; linear between them, continued linearly beyond)",
                    pooling="every metric and subgroup (quartiles, classes, selections) on the pooled "
                    "calibrated out-of-fold scores; TPR and FPR: pooled decisions at the transferred "
                    "thresholds")

    def assign_folds(self, labels: np.ndarray) -> np.ndarray:
        return stratified_folds(labels, folds=self.folds, seed=self.seed)

    def blind_fold_protocol(self) -> Protocol:
        return self

    def score_arm(self, ev: Evaluation, arm: str, drop: float | None, seed: int | None = None,
                  cols: np.ndarray | None = None) -> ArmScoring:
        """Every fold scored with the other folds' choices (t, drop), then calibrated on the other
        folds' held-out scores (same t, same mask) so that the folds pool (METHOD.md section 4);
        its decisions at the threshold transferred from the other folds."""
        folds = ev.folds()
        score = np.empty(ev.n, dtype=np.float64)
        decisions = np.zeros(ev.n, dtype=bool)
        heldout = ev.labels == 0
        thresholds = []
        choices = []
        for f in ev.fold_ids():
            ti = ev.fold_t_index(f)
            p = ev.fold_drop(f, drop) if arm in ("masked", "random") else None
            s = -ev.arm_stat_at(arm, ti, p, seed)
            own = folds == f
            score[own] = heldout_calibration(s[own], reference=s[~own & heldout])
            thr = threshold_at_1fpr(s[~own], ev.labels[~own])
            decisions[own] = s[own] >= thr
            thresholds.append(thr)
            choices.append(FoldChoice(
                fold=f, t=ev.t_value(ti), drop_percent=p,
                threshold=thr if np.isfinite(thr) else None,
                sample_ids=tuple(int(i) for i in ev.sample_ids[own]),
            ))
        scored = ScoredArm({m: score for m in REPORTED_METRICS}, folds, np.asarray(thresholds), decisions)
        return scored, {m: None for m in REPORTED_METRICS}, tuple(choices)
