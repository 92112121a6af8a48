"""Drop curves: an evaluation's metrics against the drop percentage at one timestep (masked arm
with its bootstrap band, the random control's band over seeds, the baseline), with extra drops
merged in order so a marker at any drop lies on the curve.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..errors import LdminvError
from .protocols import REPORTED_METRICS, convention_metrics, convention_metrics_resampled
from .resampling import combine_strata, percentile_interval, resample_index
from .results import DropCurves
from .state import EvaluationState

__all__ = ["Curves", "DROP_PERCENTS"]

#: Drop percentages of the curves: 0, 5, ..., 90.
DROP_PERCENTS: tuple[int, ...] = tuple(range(0, 95, 5))


class Curves(EvaluationState):
    """Mixin of :class:`~.evaluator.Evaluation`: the drop curves (memoised)."""

    def drop_curves(self, t_index: int, *, percents: Sequence[float] = DROP_PERCENTS,
                    n_boot: int | None = None, extra: Sequence[float] = ()) -> DropCurves:
        """Metrics against the drop percentage at one timestep index, on all samples (see
        :class:`DropCurves`); the masked band uses ``n_boot`` replicates (default: the
        evaluation's, at most 200).

        ``extra``: more drop percentages (e.g. the one in use, off the 5 % grid) computed the
        same way and merged into the curves in order, so a marker at that drop lies on the
        curve; the grid is computed once and each extra point once (a new extra drop costs
        one point, not a new curve)."""
        if not self.maskable:
            raise LdminvError(f"{self.attack} gives one score per sample; it has no drop curves")
        if not 0 <= int(t_index) < len(self.timesteps):
            raise LdminvError(f"t_index: expected 0..{len(self.timesteps) - 1}, got {t_index!r}")
        pcts = tuple(float(self._check_drop(p)) for p in percents)
        nb = min(self.n_boot, 200) if n_boot is None else int(n_boot)
        ti = int(t_index)
        grid = self._cached(("drop_curves", ti, pcts, nb), lambda: self._curve_values(ti, pcts, nb))
        more = sorted({float(self._check_drop(p)) for p in extra} - set(pcts))
        if not more:
            return grid
        points = [self._cached(("drop_curve_point", ti, p, nb), lambda p=p: self._curve_values(ti, (p,), nb))
                  for p in more]
        return self._merge_curves(grid, points)

    @staticmethod
    def _merge_curves(grid: DropCurves, points: Sequence[DropCurves]) -> DropCurves:
        """The curves of ``grid`` with the single-drop curves ``points`` inserted in drop order."""
        parts = [grid, *points]
        pcts = np.concatenate([np.asarray(c.percents, dtype=np.float64) for c in parts])
        order = np.argsort(pcts, kind="stable")

        def cat(field: str) -> dict[str, np.ndarray]:
            return {m: np.concatenate([np.asarray(getattr(c, field)[m], dtype=np.float64) for c in parts])[order]
                    for m in getattr(grid, field)}
        return replace(grid, percents=tuple(float(p) for p in pcts[order]),
                       **{f: cat(f) for f in ("masked", "masked_lo", "masked_hi", "random_mean", "random_lo",
                                               "random_hi")})

    def _curve_values(self, t_index: int, pcts: tuple[float, ...], nb: int) -> DropCurves:
        """The :class:`DropCurves` of the drops ``pcts`` at one t index (``nb`` replicates)."""
        ti = int(t_index)
        stats = self.masked_many_at(ti, pcts)  # (K, N)
        masked = convention_metrics(-stats, self.labels, self.protocol)
        lo = {m: np.full(len(pcts), np.nan) for m in REPORTED_METRICS}
        hi = {m: np.full(len(pcts), np.nan) for m in REPORTED_METRICS}
        if nb > 0:
            design = resample_index(combine_strata(self.labels.astype(np.int64)), n_boot=nb, seed=self.seed)
            for k in range(len(pcts)):
                rep = convention_metrics_resampled(-stats[k], self.labels, design, self.protocol)
                for m in REPORTED_METRICS:
                    lo[m][k], hi[m][k] = percentile_interval(rep[m], level=self.level)
        per_seed = []
        for s in self.seeds:
            r_stats = self.random_many_at(ti, s, pcts)  # (K, N)
            per_seed.append(convention_metrics(-r_stats, self.labels, self.protocol))
        base_scores = -self.baseline_stat()[:, ti]
        base = convention_metrics(base_scores, self.labels, self.protocol)
        base_ci = {m: (float("nan"), float("nan")) for m in REPORTED_METRICS}
        if nb > 0:
            rep = convention_metrics_resampled(base_scores, self.labels, design, self.protocol)
            base_ci = {m: percentile_interval(rep[m], level=self.level) for m in REPORTED_METRICS}
        return DropCurves(
            t=self.timesteps[ti], percents=pcts, masked=masked, masked_lo=lo, masked_hi=hi,
            random_mean={m: np.mean([r[m] for r in per_seed], axis=0) for m in REPORTED_METRICS},
            random_lo={m: np.min([r[m] for r in per_seed], axis=0) for m in REPORTED_METRICS},
            random_hi={m: np.max([r[m] for r in per_seed], axis=0) for m in REPORTED_METRICS},
            baseline={m: float(base[m]) for m in REPORTED_METRICS}, baseline_ci=base_ci, seeds=self.seeds,
            n_boot=int(nb),
        )
