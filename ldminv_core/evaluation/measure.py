"""How an evaluation measures its arms: metrics and bootstrap replicates of scored arms, the
bootstrap designs, and the arms' results (:class:`~.results.ArmResult`).

One source per statistic: :meth:`Measure._measure` reads every metric of a scored arm (the
protocol's ROC convention; under ``honest`` TPR@1%FPR and the realised FPR from the pooled
decisions at the transferred thresholds), on the data or on every bootstrap replicate.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..errors import LdminvError
from .low_fpr import low_fpr_count
from .protocols import REPORTED_METRICS, ScoredArm, convention_metrics, convention_metrics_resampled
from .resampling import combine_strata, percentile_interval, resample_index
from .results import ArmResult, FoldChoice
from .state import EvaluationState

__all__ = ["Measure"]


class Measure(EvaluationState):
    """Mixin of :class:`~.evaluator.Evaluation`: metrics, intervals and arms (memoised)."""

    def _measure(self, scored: ScoredArm, cols: np.ndarray | None = None,
                 index: np.ndarray | None = None, only: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Metrics of a scored arm on the rows ``cols`` (bool (N,), None = all), on every
        replicate of ``index`` (B, N) (None = the data itself, B = 1) -> metric -> (B,).
        ``only``: the metrics wanted (a score vector no wanted metric uses is not measured;
        the others may come along).

        ``honest``: AUROC and ASR of the pooled calibrated out-of-fold scores (like any other
        scores: never averages of per-fold values); TPR@1%FPR and ``realised_fpr`` = shares of the
        pooled decisions ``score >= the fold's transferred threshold`` among the members and the
        held-out images of the rows.
        """
        rows = np.arange(self.n) if cols is None else np.flatnonzero(cols)
        idx = np.arange(self.n)[None, :] if index is None else index
        b = idx.shape[0]
        lab = self.labels
        if rows.size == 0:
            return {m: np.full(b, np.nan) for m in (*REPORTED_METRICS, "realised_fpr")}
        out: dict[str, np.ndarray] = {}
        done: dict[int, dict[str, np.ndarray]] = {}
        picked = idx if cols is None else idx[:, rows]
        for m in (REPORTED_METRICS if only is None else only):
            key = id(scored.scores[m])
            if key not in done:
                done[key] = (convention_metrics(scored.scores[m][picked], lab[rows], self.protocol)
                             if index is None else self._resampled(scored.scores[m], rows, picked))
            out[m] = done[key][m]
        if scored.decisions is not None:
            for name, cls in (("tpr_at_1fpr", 1), ("realised_fpr", 0)):
                sel = rows[lab[rows] == cls]
                out[name] = scored.decisions[idx[:, sel]].mean(axis=1) if sel.size else np.full(b, np.nan)
        return out

    def _resampled(self, score: np.ndarray, rows: np.ndarray, picked: np.ndarray) -> dict[str, np.ndarray]:
        """``convention_metrics_resampled(score, labels[rows], picked)`` for the replicate columns
        ``picked`` (B, len(rows)) of the rows ``rows``. When every replicate draws from ``rows``
        only (a design stratified by fold or quartile), the scores are restricted to those rows
        first: the same numbers (they depend on the drawn scores' order and ties alone) from
        count tables len(rows) wide instead of N."""
        lab = self.labels[rows]
        if rows.size < self.n:
            pos = np.full(self.n, -1, dtype=np.int64)
            pos[rows] = np.arange(rows.size)
            local = pos[picked]
            if (local >= 0).all():
                return convention_metrics_resampled(score[rows], lab, local, self.protocol)
        return convention_metrics_resampled(score, lab, picked, self.protocol)

    def _arm_values(self, arm: str, drop: float | None, seed: int | None) -> tuple:
        """(point metrics, replicate metrics or None, best_t, fold choices, low-FPR counts) of one
        arm and seed on all samples, memoised (the arms and the masking findings share them)."""
        def make() -> tuple:
            scored, best_t, choices = self._scored(arm, drop, seed)
            design = self._design()
            point = self._measure(scored)
            reps = self._measure(scored, index=design) if design is not None else None
            low = low_fpr_count(scored.scores["tpr_at_1fpr"], self.labels, self.protocol,
                                decisions=scored.decisions, level=self.level)
            return point, reps, best_t, choices, low
        return self._cached(("arm_values", arm, drop, seed), make)

    def _design(self, *keys: str) -> np.ndarray | None:
        """The bootstrap index matrix, or None without replicates.

        Without ``keys`` (the whole-run arms and the masking findings): stratified by split and,
        under ``honest``, by fold (each fold keeps its size; its choices and calibration stay
        fixed). With subgroup keys ("quartile", "class", "class_quartile"): stratified by split
        and the subgroup only. A split x fold x subgroup cell of a few hundred images holds a
        handful of them (about 3 in a quartile of a 60 + 60 run with 5 folds), and resampling
        within a cell of m images shrinks its bootstrap variance by (m - 1) / m (a third at m = 3):
        the intervals would be narrower under ``honest`` than under ``standard``. The pooled
        calibrated scores are one sample of out-of-fold scores, so the subgroup is resampled like
        any other sample."""
        if self.n_boot == 0:
            return None

        def make() -> np.ndarray:
            parts = [self.labels.astype(np.int64)]
            if not keys:
                parts.append(self.folds())
            for k in keys:
                parts.append({"quartile": lambda: self.quartile_groups(),
                              "class": lambda: self._classes()[0],
                              "class_quartile": lambda: self._classes()[1]}[k]())
            return resample_index(combine_strata(*parts), n_boot=self.n_boot, seed=self.seed)
        return self._cached(("design", keys), make)

    # ------------------------------------------------------------------ arms

    def _arm(self, arm: str, drop: float | None) -> ArmResult:
        seeds = self.seeds if arm == "random" else (None,)
        values: dict[str, list[float]] = {m: [] for m in (*REPORTED_METRICS, "realised_fpr")}
        reps: dict[str, list[np.ndarray]] = {m: [] for m in REPORTED_METRICS}
        choices: tuple[FoldChoice, ...] = ()
        best_t: dict[str, int | None] = {}
        seed_thresholds: list[tuple] = []
        for s in seeds:
            point, rep, best_t, ch, low = self._arm_values(arm, drop, s)
            if not choices:
                choices = ch
            seed_thresholds.append(tuple(c.threshold for c in ch))
            for m in values:
                if m in point:
                    values[m].append(float(point[m][0]))
            if rep is not None:
                for m in REPORTED_METRICS:
                    reps[m].append(rep[m])
        if arm == "random" and choices:
            choices = tuple(
                FoldChoice(fold=c.fold, t=c.t, drop_percent=c.drop_percent, threshold=c.threshold,
                           sample_ids=c.sample_ids, thresholds_by_seed=tuple(st[i] for st in seed_thresholds))
                for i, c in enumerate(choices)
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = {m: float(np.nanmean(v)) if v else float("nan") for m, v in values.items()}
            ci = {m: percentile_interval(np.nanmean(np.stack(reps[m]), axis=0), level=self.level) if reps[m]
                  else (float("nan"), float("nan")) for m in REPORTED_METRICS}
        fixed_drop = drop if arm != "baseline" else None  # None: chosen per fold (honest) or a custom arm
        return ArmResult(
            arm=arm,
            auroc=mean["auroc"], tpr_at_1fpr=mean["tpr_at_1fpr"], asr=mean["asr"],
            ci=ci, best_t=best_t,
            drop_percent=None if fixed_drop is None else float(fixed_drop),
            realised_fpr_at_1fpr=mean["realised_fpr"] if self.protocol.transfers_thresholds else None,
            folds=choices,
            seeds=tuple(self.seeds) if arm == "random" else (),
            per_seed={m: tuple(values[m]) for m in REPORTED_METRICS} if arm == "random" else {},
            low_fpr=None if arm == "random" else low,
        )

    def arms(self, drop: float | None = None) -> dict[str, ArmResult]:
        """{"baseline", "masked", "random"} -> :class:`ArmResult` ({"baseline"} only for attacks
        that are not maskable). ``drop`` None = the protocol's default: chosen per fold under
        ``honest``, :data:`DEFAULT_DROP` otherwise."""
        drop = self._drop_arg(drop)

        def make() -> dict[str, ArmResult]:
            out = {"baseline": self.baseline()}
            if self.maskable:
                out["masked"] = self._arm("masked", drop)
                out["random"] = self._arm("random", drop)
            return out
        return self._cached(("arms", drop), make)

    def baseline(self) -> ArmResult:
        """The baseline (unmasked) arm alone: the cheap part of :meth:`arms`, needing no geometry
        (what a partial run without its geometry stage can report)."""
        return self._cached(("arm", "baseline"), lambda: self._arm("baseline", None))

    def custom_arm(self, name: str, stat: np.ndarray) -> ArmResult:
        """An arm from any statistic (N, T) (a manual or global mask, say), chosen and measured
        like the others: the headline t (``standard``), each metric's own best t (``paper``) or
        the folds' t and transferred thresholds (``honest``); bootstrap intervals as the arms'."""
        key = self.custom_key(stat)

        return self._cached(("custom_arm", key, name), lambda: replace(self._arm(key, None), arm=name))

    def selection(self, rows: Sequence[int]) -> dict[str, float]:
        """Baseline metrics of a selection of samples (a latent-map lasso, say), scored as the
        protocol scores the baseline arm: at the headline t (``standard``), at the AUROC's best t
        on all samples (``paper``), or the pooled calibrated out-of-fold scores with the folds'
        transferred thresholds (``honest``: nothing chosen on the selection or its fold).

        Args:
            rows: (M,) row indices of the selection.

        Returns:
            {"n", "n_members", "n_heldout", "auroc", "tpr_at_1fpr", "asr", "realised_fpr_at_1fpr"}
            (the last NaN unless ``honest``); metrics NaN when the selection holds one class.
        """
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise LdminvError(f"rows: expected indices in 0..{self.n - 1}, got {int(idx.min())}..{int(idx.max())}")
        cols = np.zeros(self.n, dtype=bool)
        cols[idx] = True
        scored, _, _ = self._scored("baseline", None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = self._measure(scored, cols)
        n_mem = int(self.labels[cols].sum())
        out: dict[str, float] = {"n": int(cols.sum()), "n_members": n_mem, "n_heldout": int(cols.sum()) - n_mem}
        out.update({m: float(res[m][0]) for m in REPORTED_METRICS})
        out["realised_fpr_at_1fpr"] = float(res["realised_fpr"][0]) if "realised_fpr" in res else float("nan")
        return out
