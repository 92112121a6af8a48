"""The ``paper`` protocol: the conventions of the paper's released code (``ldm_light/attack_per_dim.py``).

Held-out images are the positive class and the statistic itself the score, so TPR@1%FPR is the
share of held-out images above a threshold that fewer than 1% of the members pass (strict
``fpr < 0.01``); each metric takes its own best t, per arm and per quartile; the drop rule keeps
coordinates strictly above the sample's ``np.percentile(influence, p)``; the random control
drops ``int(d * p / 100)`` coordinates; quartiles are cut at pooled
``np.percentile(log_volume, [25, 50, 75])``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import masks
from .base import REPORTED_METRICS, ArmScoring, Protocol, ScoredArm, first_max

if TYPE_CHECKING:
    from ..evaluator import Evaluation

__all__ = ["PaperProtocol"]


@dataclass(frozen=True, repr=False)
class PaperProtocol(Protocol):
    """``paper`` (see the module docstring)."""

    name: str = "paper"

    heldout_positive = True
    strict_fpr = True
    grid_drop_rule = "threshold"
    grid_random_rule = "int"
    quartile_rule = "percentile"

    @property
    def description(self) -> str:
        return ("the paper's code conventions: held-out positive, TPR at FPR < 1%, each metric at its own "
                "best t per arm and quartile (optimistic)")

    @property
    def tpr_rule(self) -> str:
        return "held-out TPR at member FPR < 1% (strict)"

    def rule_settings(self) -> dict[str, Any]:
        return dict(best_t="each metric's own max over t, per arm and per quartile",
                    drop_rule="keep influence > np.percentile(influence, p)", random_count="int(d * p / 100)",
                    quartiles="pooled np.percentile(log_volume, [25, 50, 75])")

    def random_count(self, d: int, drop: float) -> int:
        return masks.paper_drop_count(d, drop)

    def drop_mask(self, influence: np.ndarray, drop: float) -> np.ndarray:
        return masks.percentile_threshold_mask(influence, drop)

    def sweep_serves_drop(self) -> bool:
        return False

    def curve_statistics(self, sweep: masks.DropSweep, influence: np.ndarray, percents: list[float]) -> np.ndarray:
        counts = masks.threshold_drop_counts_many(influence, tuple(percents))
        return sweep.statistic_at_counts(counts)

    def score_arm(self, ev: Evaluation, arm: str, drop: float | None, seed: int | None = None,
                  cols: np.ndarray | None = None) -> ArmScoring:
        """Each metric at its own best t over the arm's full (N, T) statistic, chosen on the rows
        ``cols`` (bool (N,): a quartile) or on all samples."""
        stat = ev.arm_stat(arm, drop, seed)
        over_t = ev.metrics_over_t(stat, cols)
        idx = {m: first_max(over_t[m]) for m in REPORTED_METRICS}
        scored = ScoredArm({m: -stat[:, idx[m]] for m in REPORTED_METRICS}, np.zeros(ev.n, dtype=np.int64))
        return scored, {m: ev.t_value(i) for m, i in idx.items()}, ()

    def score_subgroup(self, ev: Evaluation, cols: np.ndarray) -> ArmScoring:
        return self.score_arm(ev, "baseline", None, cols=cols)

    def quartile_context(self, ev: Evaluation, ctx: str) -> str:
        if not ev.maskable:
            return ctx
        q_t = {q: self.score_subgroup(ev, ev.quartile_groups() == q)[1]["auroc"] for q in (0, 3)}
        return (f"{ev.attack_label}, paper protocol, each quartile's AUROC at its own best t: "
                f"Q1 t = {q_t[0]}, Q4 t = {q_t[3]}")
