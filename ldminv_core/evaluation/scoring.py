"""How an evaluation scores its arms: the per-t curves, the headline t, the folds' choices, and
the protocol's scoring of an arm (:meth:`~.protocols.base.Protocol.score_arm`).

The protocol object decides how t is chosen and the scores produced (one t, each metric's own t,
or per fold on the other folds with calibrated out-of-fold scores); this mixin gives it the
memoised parts it asks for (:meth:`Scoring.per_t`, :meth:`~Scoring.headline_t_index`,
:meth:`~Scoring.folds`, :meth:`~Scoring.fold_t_index`, :meth:`~Scoring.fold_drop`).
"""
from __future__ import annotations


import numpy as np

from .protocols import HONEST_DROPS, REPORTED_METRICS, ArmScoring, convention_metrics, first_max
from .state import EvaluationState

__all__ = ["Scoring"]


class Scoring(EvaluationState):
    """Mixin of :class:`~.evaluator.Evaluation`: how its arms are scored (memoised)."""

    def t_value(self, t_index: int) -> int | None:
        """The timestep of a t index (None for an attack without timesteps)."""
        return self.timesteps[t_index] if self.maskable else None

    # ------------------------------------------------------------------ descriptive curves

    def metrics_over_t(self, stat: np.ndarray, cols: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Protocol-convention metrics of -stat (N, T) at every t on the rows ``cols`` (bool (N,),
        None = all) -> metric -> (T,)."""
        s = stat if cols is None else stat[cols]
        lab = self.labels if cols is None else self.labels[cols]
        if s.shape[0] == 0:
            return {m: np.full(stat.shape[1], np.nan) for m in REPORTED_METRICS}
        return convention_metrics(-s.T, lab, self.protocol)

    def per_t(self) -> dict[str, np.ndarray]:
        """Baseline metrics at every timestep on all samples: metric -> (T,) ((1,) without t)."""
        return self._cached(("per_t",), lambda: self.metrics_over_t(self.baseline_stat()))

    def masked_per_t(self, drop: float) -> dict[str, np.ndarray]:
        """Masked-arm metrics at every timestep on all samples: metric -> (T,)."""
        drop = self._check_drop(drop)
        return self._cached(("masked_per_t", drop), lambda: self.metrics_over_t(self.masked_stat(drop)))

    def headline_t_index(self) -> int:
        """Index of the headline t: the best baseline AUROC on all samples (first on ties)."""
        return first_max(self.per_t()["auroc"])

    # ------------------------------------------------------------------ folds and their choices

    def folds(self) -> np.ndarray:
        """Fold id of every sample, int64 (N,): all 0 unless the protocol cross-fits (``honest``:
        :func:`~.folds.stratified_folds` with the protocol's K and seed)."""
        return self._cached(("folds",), lambda: self.protocol.assign_folds(self.labels))

    def fold_ids(self) -> list[int]:
        """The fold ids, in increasing order."""
        return sorted(int(f) for f in np.unique(self.folds()))

    def fold_t_index(self, fold: int) -> int:
        """``honest``: the t index chosen on the other folds (argmax baseline AUROC, ties: smallest t)."""
        def make() -> int:
            cal = self.folds() != fold
            aurocs = self.metrics_over_t(self.baseline_stat(), cal)["auroc"]
            return first_max(aurocs, self.timesteps or None)
        return self._cached(("fold_t", int(fold)), make)

    def fold_drop(self, fold: int, drop: float | None) -> float:
        """``honest``: the drop % of the masked arm: ``drop`` when fixed, else the argmax masked
        AUROC over 0..90 step 5 on the other folds at the fold's t (ties: smallest)."""
        if drop is not None:
            return self._check_drop(drop)

        def make() -> float:
            cal = self.folds() != fold
            ti = self.fold_t_index(fold)
            stats = self.masked_many_at(ti, list(HONEST_DROPS))  # (K, N), by the protocol's drop rule
            aurocs = convention_metrics(-stats[:, cal], self.labels[cal], self.protocol)["auroc"]
            return float(HONEST_DROPS[first_max(aurocs)])
        return self._cached(("fold_drop", int(fold)), make)

    # ------------------------------------------------------------------ scoring an arm

    def _scored(self, arm: str, drop: float | None, seed: int | None = None,
                cols: np.ndarray | None = None) -> ArmScoring:
        """How an arm is scored under the protocol: (scored, best_t per metric, fold choices)
        (:meth:`~.protocols.base.Protocol.score_arm`). ``cols`` (bool (N,)): choose the paper's
        per-metric best t on these rows (a quartile)."""
        return self.protocol.score_arm(self, arm, drop, seed, cols)

    def _drop_arg(self, drop: float | None) -> float | None:
        """The drop of the masked / random arms: the protocol's default without ``drop`` (None:
        ``honest`` chooses it per fold)."""
        if drop is None:
            return self.protocol.default_drop
        return self._check_drop(drop)

    def best_t(self, arm: str = "baseline", drop: float | None = None) -> dict[str, int | None]:
        """metric -> the t an arm is reported at, without computing its intervals: one t
        (``standard``), each metric's own (``paper``), None (``honest``: see :meth:`fold_t_index`)."""
        p = self._drop_arg(drop) if arm in ("masked", "random") else None
        s = self.seeds[0] if arm == "random" else None
        return dict(self._scored(arm, p, s)[1])

    def scores(self, arm: str, drop: float | None = None, seed: int | None = None) -> np.ndarray:
        """(N,) membership scores of an arm as the protocol evaluates its AUROC (for ROC curves):
        at the AUROC's t; under ``honest`` every sample's calibrated out-of-fold score (its fold's t
        and drop, mapped through the other folds' held-out scores: :mod:`.calibration`)."""
        p = self._drop_arg(drop) if arm in ("masked", "random") else None
        s = self.seeds[0] if (arm == "random" and seed is None) else seed
        return self._scored(arm, p, s)[0].scores["auroc"]

    def custom_scores(self, stat: np.ndarray) -> np.ndarray:
        """(N,) membership scores of :meth:`custom_arm`'s arm as its AUROC is evaluated (for ROC curves)."""
        return self.scores(self.custom_key(stat))
