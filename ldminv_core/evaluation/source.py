"""The statistic source of an evaluation: every (N, T) or (N,) statistic an arm is scored from.

One function per statistic, each reading the drop grids (:mod:`.grids`) when they serve the drop
and the terms otherwise, with the protocol supplying its drop rule and random count:
:meth:`StatisticSource.baseline_stat`, :meth:`~StatisticSource.masked_stat`,
:meth:`~StatisticSource.random_stat`, :meth:`~StatisticSource.global_stat`,
:meth:`~StatisticSource.manual_stat`, and at one t :meth:`~StatisticSource.arm_stat_at`.
Conventions: statistic = sum of the kept terms (larger = held-out); score = -statistic.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import masks
from .._validation import check_percent
from ..errors import LdminvError
from . import grid_engine
from .grids import AttackGrids, attack_grids, attack_totals, grid_index
from .state import EvaluationState

__all__ = ["StatisticSource"]


class StatisticSource(EvaluationState):
    """Mixin of :class:`~.evaluator.Evaluation`: the statistics of its arms (memoised)."""

    # ------------------------------------------------------------------ arrays

    def terms(self) -> np.ndarray:
        """(N, T, C, h, w) per-coordinate terms of the attack (read once, stored dtype)."""
        if not self.maskable:
            raise LdminvError(f"{self.attack} gives one score per sample; it has no per-coordinate terms")
        return self._cached(("terms",), lambda: np.asarray(self.run.terms(self.attack)))

    def influence(self) -> np.ndarray:
        """(N, C, h, w) float32 influence (read once)."""
        return self._cached(("influence",), lambda: np.asarray(self.run.influence, dtype=np.float32))

    def baseline_stat(self) -> np.ndarray:
        """(N, T) float64 unmasked statistic; (N, 1) = -stored score for non-maskable attacks."""
        def make() -> np.ndarray:
            if self.maskable:
                return attack_totals(self.run, self.attack, terms=self.terms(), seeds=self.seeds)
            return -np.asarray(self.run.stored_scores(self.attack), dtype=np.float64)[:, None]
        return self._cached(("baseline_stat",), make)

    def _check_drop(self, drop: Any) -> float:
        return check_percent(drop, "drop")

    def _d(self) -> int:
        return int(np.prod(self.run.latent_shape))

    def _random_count(self, drop: float) -> int:
        return self.protocol.random_count(self._d(), drop)

    # ------------------------------------------------------------------ the drop grids

    def grids(self, progress: Callable[[float], None] | None = None) -> AttackGrids:
        """The attack's drop grids (masked, random and global statistics at drops 0..99 and every
        timestep; :mod:`.grids`), built once per run object and attack and shared by all its
        evaluations. The first call reads the terms once (tens of seconds for an SD-size run;
        ``progress`` is called with the share done) and saves a copy next to the run, which later
        opens memory-map in about a second."""
        return self._cached(("grids",), lambda: attack_grids(self.run, self.attack, self.seeds, terms=self.terms(),
                                                              influence=self.influence(), progress=progress))

    def mean_influence(self) -> np.ndarray:
        """(C, h, w) float32 mean influence over samples (the global ranking), from the grids."""
        return np.asarray(self.grids().mean_influence)

    def grids_ready(self) -> bool:
        """True when :meth:`grids` is computed (or not needed: no terms or no geometry), so the
        masked / random / global arms at drops 0..99 are lookups."""
        return ("grids",) in self._memo or not (self.maskable and self.run.has_geometry)

    def _on_grid(self, drop: float) -> int | None:
        """Grid index of ``drop`` when the grids can serve it (maskable attack, geometry done)."""
        if not self.maskable or not self.run.has_geometry:
            return None
        return grid_index(drop)

    # ------------------------------------------------------------------ (N, T) statistics

    def manual_stat(self, keep: Any) -> np.ndarray:
        """(N, T) statistic of a shared (C, h, w) keep-mask (a manual mask), memoised per mask.

        From the grids' per-channel statistics and the few coordinates that differ from whole
        channels when that reads at most 1/8 of the terms
        (:func:`~ldminv_core.evaluation.grid_engine.decomposed_statistic`), else one chunked pass over the terms
        (:func:`~ldminv_core.masks.masked_statistic`). Equal to ``masked_statistic(terms, keep)``
        up to the order of the float64 additions."""
        if not self.maskable:
            raise LdminvError(f"{self.attack} gives one score per sample; it has no per-coordinate terms")
        k = np.asarray(keep).astype(bool)
        key = ("manual_stat", k.shape, hashlib.sha1(np.packbits(k).tobytes()).hexdigest())

        def make() -> np.ndarray:
            out = None
            if self.run.has_geometry and k.shape == tuple(self.run.latent_shape):
                out = grid_engine.decomposed_statistic(self.terms(), k, self.grids().channel_totals)
            if out is None:
                out = masks.masked_statistic(self.terms(), k)
            out.setflags(write=False)
            return out
        return self._cached(key, make)

    def masked_stat(self, drop: float) -> np.ndarray:
        """(N, T) statistic with each sample's lowest-influence coordinates dropped, by the
        protocol's drop rule (``paper``: the percentile threshold; else ``round(d * p / 100)``).
        Integer drops 0..99 are read off :meth:`grids`; others are summed from the terms."""
        drop = self._check_drop(drop)
        k = self._on_grid(drop)
        if k is not None:
            return self.grids().masked(k, self.protocol.grid_drop_rule)

        def make() -> np.ndarray:
            return masks.masked_statistic(self.terms(), self.protocol.drop_mask(self.influence(), drop))
        return self._cached(("masked_stat", drop), make)

    def random_stat(self, drop: float, seed: int) -> np.ndarray:
        """(N, T) statistic with the protocol's count of random coordinates dropped (seeded);
        integer drops 0..99 of the evaluation's seeds are read off :meth:`grids`."""
        drop = self._check_drop(drop)
        k = self._on_grid(drop)
        if k is not None and int(seed) in self.seeds:
            return self.grids().random(k, int(seed), self.protocol.grid_random_rule)

        def make() -> np.ndarray:
            keep = masks.random_drop_mask(self.influence().shape, drop, seed=int(seed), n_drop=self._random_count(drop))
            return masks.masked_statistic(self.terms(), keep)
        return self._cached(("random_stat", drop, int(seed)), make)

    def global_stat(self, drop: float) -> np.ndarray:
        """(N, T) statistic with the coordinates of lowest mean influence (over samples) dropped,
        the same ones for every sample (``round(d * p / 100)`` of them)."""
        drop = self._check_drop(drop)
        k = self._on_grid(drop)
        if k is not None:
            return self.grids().ranking(k)

        def make() -> np.ndarray:
            keep = masks.global_drop_mask(self.influence().mean(axis=0), drop, n=1)[0]
            return masks.masked_statistic(self.terms(), keep)
        return self._cached(("global_stat", drop), make)

    def sweep(self, t_index: int) -> masks.DropSweep:
        """``DropSweep.by_influence`` at one timestep index (for curves and the honest drop choice)."""
        return self._cached(
            ("sweep", int(t_index)),
            lambda: masks.DropSweep.by_influence(self.terms(), self.influence(), t_index=int(t_index)),
        )

    def random_sweep(self, t_index: int, seed: int) -> masks.DropSweep:
        """``DropSweep.random`` at one timestep index."""
        return self._cached(
            ("random_sweep", int(t_index), int(seed)),
            lambda: masks.DropSweep.random(self.terms(), seed=int(seed), t_index=int(t_index)),
        )

    # ------------------------------------------------------------------ several drops at one t

    def masked_many_at(self, t_index: int, percents: Sequence[float]) -> np.ndarray:
        """(K, N) masked statistics at one t index for the K drops ``percents``: read off the
        grids when they serve every drop, else from the t's drop sweep by the protocol's rule."""
        ti = int(t_index)
        if all(self._on_grid(p) is not None for p in percents):
            return self.grids().masked_many([grid_index(p) for p in percents], self.protocol.grid_drop_rule, ti)
        return self.protocol.curve_statistics(self.sweep(ti), self.influence(), list(percents))

    def random_many_at(self, t_index: int, seed: int, percents: Sequence[float]) -> np.ndarray:
        """(K, N) random-control statistics (one seed) at one t index for the K drops ``percents``:
        read off the grids when they serve every drop, else from the t's random sweep at the
        protocol's counts."""
        ti = int(t_index)
        if all(self._on_grid(p) is not None for p in percents):
            return self.grids().random_many([grid_index(p) for p in percents], seed, self.protocol.grid_random_rule, ti)
        rs = self.random_sweep(ti, seed)
        counts = np.array([self._random_count(p) for p in percents], dtype=np.int64)
        return np.stack([rs.statistic_at_counts(int(c)) for c in counts])

    # ------------------------------------------------------------------ an arm's statistic

    def custom_key(self, stat: np.ndarray) -> str:
        """The arm name ("custom:<sha1>") of a statistic (N, T) of the baseline's shape, kept in the memo."""
        st = np.ascontiguousarray(stat, dtype=np.float64)
        if st.shape != self.baseline_stat().shape:
            raise LdminvError(f"stat: expected shape {self.baseline_stat().shape} (N, T), got {st.shape}")
        key = "custom:" + hashlib.sha1(st.tobytes()).hexdigest()
        with self._lock:  # type: ignore[attr-defined]
            self._memo.setdefault(("custom_stat", key), st)
        return key

    def arm_stat(self, arm: str, drop: float | None, seed: int | None) -> np.ndarray:
        """(N, T) statistic of an arm: "baseline", "masked" (at ``drop``), "random" (``drop``,
        ``seed``) or a custom arm (:meth:`custom_key`)."""
        if arm == "baseline":
            return self.baseline_stat()
        if arm.startswith("custom:"):
            return self._memo[("custom_stat", arm)]
        if arm == "masked":
            return self.masked_stat(drop)
        return self.random_stat(drop, seed)

    def arm_stat_at(self, arm: str, t_index: int, drop: float | None, seed: int | None) -> np.ndarray:
        """(N,) statistic of an arm at one t index (and drop, seed): ``arm_stat(...)[:, t_index]``,
        summing the terms of that t only when the grids do not serve the drop."""
        if arm == "baseline":
            return self.baseline_stat()[:, t_index]
        if arm.startswith("custom:"):
            return self._memo[("custom_stat", arm)][:, t_index]
        if arm == "masked":
            if not self.protocol.sweep_serves_drop() or self._on_grid(drop) is not None:
                return self.masked_stat(drop)[:, t_index]
            return self.sweep(t_index).statistic(drop)
        return self._random_stat_at(drop, seed, t_index)

    def _random_stat_at(self, drop: float, seed: int, t_index: int) -> np.ndarray:
        """(N,) = ``random_stat(drop, seed)[:, t_index]``, summing the terms of that t only (the
        arms of ``standard`` / ``honest`` need one t: a drop change costs 1/T of the full sum)."""
        drop = self._check_drop(drop)
        if self._on_grid(drop) is not None and int(seed) in self.seeds:
            return self.random_stat(drop, seed)[:, t_index]
        full = self._memo.get(("random_stat", drop, int(seed)))
        if full is not None:
            return full[:, t_index]

        def make() -> np.ndarray:
            keep = masks.random_drop_mask(self.influence().shape, drop, seed=int(seed), n_drop=self._random_count(drop))
            return masks.masked_statistic(self.terms()[:, int(t_index):int(t_index) + 1], keep)[:, 0]
        return self._cached(("random_stat_at", drop, int(seed), int(t_index)), make)
