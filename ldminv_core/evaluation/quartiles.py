"""Distortion quartiles: the quartile rule, and an evaluation's baseline metrics by log-volume
quartile and by within-class quartile (classes = the data's captions).

The protocol supplies the quartile rule (:attr:`~.protocols.base.Protocol.quartile_rule`) and how a
quartile's baseline is scored (:meth:`~.protocols.base.Protocol.score_subgroup`: ``paper`` chooses
each metric's t on the quartile itself).
"""
from __future__ import annotations


import numpy as np

from ..errors import LdminvError, UnknownNameError
from .protocols import ScoredArm
from .resampling import percentile_interval
from .results import ClassQuartiles, QuartileResult
from .state import EvaluationState

__all__ = ["quartile_index", "Quartiles", "MIN_CLASS_SIZE"]

#: Smallest class (caption) size used by the within-class quartile finding.
MIN_CLASS_SIZE = 16


def quartile_index(log_volume: np.ndarray, *, rule: str = "split") -> np.ndarray:
    """Distortion quartile of every sample, int64 (N,) in 0..3 (0 = lowest log-volume).

    ``rule="split"`` (``standard``, ``honest``): samples sorted by log-volume (stable sort) and
    split into four near-equal parts by ``numpy.array_split``. ``rule="percentile"``
    (``paper``): cut at ``np.percentile(log_volume, [25, 50, 75])``; Q1 holds values <= q25,
    Q2 (q25, q50], Q3 (q50, q75], Q4 > q75. NaN log-volumes get -1 (no quartile).
    """
    lv = np.asarray(log_volume, dtype=np.float64)
    if lv.ndim != 1:
        raise LdminvError(f"log_volume: expected shape (N,), got {lv.shape}")
    out = np.full(lv.shape[0], -1, dtype=np.int64)
    ok = np.flatnonzero(np.isfinite(lv))
    if ok.size == 0:
        return out
    if rule == "percentile":
        q25, q50, q75 = np.percentile(lv[ok], [25, 50, 75])
        v = lv[ok]
        out[ok] = np.where(v <= q25, 0, np.where(v <= q50, 1, np.where(v <= q75, 2, 3)))
    elif rule == "split":
        order = ok[np.argsort(lv[ok], kind="stable")]
        for q, idx in enumerate(np.array_split(order, 4)):
            out[idx] = q
    else:
        raise UnknownNameError(f"rule: expected 'split' or 'percentile', got {rule!r}")
    return out


class Quartiles(EvaluationState):
    """Mixin of :class:`~.evaluator.Evaluation`: baseline metrics by quartile and class (memoised)."""

    def quartile_groups(self) -> np.ndarray:
        """(N,) quartile 0..3 by the protocol's rule (-1 for a NaN log-volume)."""
        rule = self.protocol.quartile_rule
        return self._cached(("quartile_groups",), lambda: quartile_index(self.run.log_volume, rule=rule))

    def quartile_per_t(self) -> np.ndarray:
        """(4, T) baseline AUROC of every quartile at every timestep (all samples, descriptive)."""
        def make() -> np.ndarray:
            groups = self.quartile_groups()
            return np.stack([self.metrics_over_t(self.baseline_stat(), groups == q)["auroc"] for q in range(4)])
        return self._cached(("quartile_per_t",), make)

    def _quartile_scored(self, q: int) -> tuple[ScoredArm, dict[str, int | None]]:
        scored, best_t, _ = self.protocol.score_subgroup(self, self.quartile_groups() == q)
        return scored, best_t

    def _quartile_measure(self, q: int, boot: bool) -> dict[str, np.ndarray]:
        """``_measure`` of quartile ``q``'s baseline on its rows (``boot``: on the replicates of the
        quartile design), memoised: the quartiles table and the quartile finding share it."""
        def make() -> dict[str, np.ndarray]:
            scored, _ = self._quartile_scored(q)
            cols = self.quartile_groups() == q
            # the replicates serve the AUROC intervals only (under paper each metric has its own t)
            return self._measure(scored, cols, self._design("quartile") if boot else None,
                                 only=("auroc",) if boot else None)
        return self._cached(("quartile_measure", int(q), bool(boot)), make)

    def quartiles(self) -> tuple[QuartileResult, ...]:
        """Baseline metrics in each log-volume quartile (``paper``: each metric at the quartile's
        own best t; ``honest``: the pooled calibrated out-of-fold scores of the quartile)."""
        def make() -> tuple[QuartileResult, ...]:
            groups = self.quartile_groups()
            lv = np.asarray(self.run.log_volume, dtype=np.float64)
            design = self._design("quartile")
            out = []
            for q in range(4):
                cols = groups == q
                scored, best_t = self._quartile_scored(q)
                point = self._quartile_measure(q, False)
                ci = (float("nan"), float("nan"))
                if design is not None and cols.any():
                    ci = percentile_interval(self._quartile_measure(q, True)["auroc"], level=self.level)
                out.append(QuartileResult(
                    q=q + 1, n=int(cols.sum()), n_members=int(self.labels[cols].sum()),
                    log_volume_min=float(lv[cols].min()) if cols.any() else float("nan"),
                    log_volume_max=float(lv[cols].max()) if cols.any() else float("nan"),
                    auroc=float(point["auroc"][0]), tpr_at_1fpr=float(point["tpr_at_1fpr"][0]),
                    asr=float(point["asr"][0]), auroc_ci=ci, best_t=best_t,
                ))
            return tuple(out)
        return self._cached(("quartiles",), make)

    def _classes(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(class id (N,) (-1 = not used), within-class quartile (N,), class names): classes are
        the captions of the data, kept when they hold >= MIN_CLASS_SIZE samples of both splits."""
        def make():
            cls = np.full(self.n, -1, dtype=np.int64)
            cq = np.full(self.n, -1, dtype=np.int64)
            names: list[str] = []
            if "caption" not in self.run.samples.columns:
                return cls, cq, names
            captions = self.run.samples["caption"].fillna("").astype(str).str.strip().to_numpy()
            values = sorted(v for v in set(captions) if v)
            if len(values) < 2:
                return cls, cq, names
            lv = np.asarray(self.run.log_volume, dtype=np.float64)
            rule = self.protocol.quartile_rule
            for v in values:
                rows = np.flatnonzero(captions == v)
                n_mem = int(self.labels[rows].sum())
                if rows.size < MIN_CLASS_SIZE or n_mem == 0 or n_mem == rows.size:
                    continue
                cls[rows] = len(names)
                cq[rows] = quartile_index(lv[rows], rule=rule)
                names.append(v)
            if len(names) < 2:  # one usable class cannot remove a confounding with class
                return np.full(self.n, -1, dtype=np.int64), np.full(self.n, -1, dtype=np.int64), []
            return cls, cq, names
        return self._cached(("classes",), make)

    def class_quartiles(self) -> tuple[ClassQuartiles, ...]:
        """Baseline AUROC by within-class log-volume quartile for every class (caption); empty
        when the data carry fewer than two classes."""
        def make():
            cls, cq, names = self._classes()
            scored, _, _ = self._scored("baseline", None)
            out = []
            for c, name in enumerate(names):
                rows = cls == c
                aurocs = tuple(float(self._measure(scored, rows & (cq == q))["auroc"][0]) for q in range(4))
                out.append(ClassQuartiles(label=name, n=int(rows.sum()), n_members=int(self.labels[rows].sum()),
                                          aurocs=aurocs))  # type: ignore[arg-type]
            return tuple(out)
        return self._cached(("class_quartiles",), make)
