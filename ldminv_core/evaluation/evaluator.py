"""The evaluation of one attack of a finished run under one protocol, with memoised parts.

:class:`Evaluation` is the only code that turns a run's arrays into reported numbers: the CLI
report, the HTML export and every dashboard page ask it. It holds the run's labels and the
attack's baseline statistic, and computes on demand (each part once, then memoised):

- ``per_t()``: baseline metrics at every timestep (all samples, the protocol's ROC convention);
- ``arms(drop)``: the baseline, masked (each sample drops its lowest-influence coordinates)
  and random-control arms with bootstrap intervals, at the protocol's t (and, under
  ``honest``, the folds' choices);
- ``quartiles()``: baseline metrics by decoder log-volume quartile;
- ``findings(drop)``: the paper's claims on this run, with paired bootstrap intervals and
  verdicts (``distortion_quartiles``, ``distortion_quartiles_within_class`` when the data
  carry class captions, ``masking_vs_baseline``, ``masking_vs_random``);
- ``drop_curves(t_index)``, ``masked_per_t(drop)``: the curves of the charts;
- ``result(drop)``: all of it as one :class:`~ldminv_core.evaluation.results.AttackEvaluation`.

Conventions: ``statistic`` (N, T) = sum of the kept terms (larger = held-out); membership
``score`` = -statistic (higher = member); labels (N,) 1 = member. The random control is
evaluated with ``random_seeds`` seeds (``seed``, ``seed + 1``, ...): its headline numbers are the
mean over seeds, its band the spread. An instance is safe to share between threads.
"""
from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from .. import masks
from ..choices import attack_label
from ..errors import LdminvError, UnknownNameError
from ..runstore import CACHE_DIR, Run
from ..blind_features import run_blind_features
from .blind import (ALL_GROUPS, BlindScores, attack_vs_blind_finding, blind_baseline_finding, cached_fitting_null,
                    cross_fitted_blind_scores, evaluate_blind, null_file_name, within_blind_strata_finding)
from .low_fpr import low_fpr_count, threshold_at_1fpr
from .calibration import heldout_calibration
from .grids import AttackGrids, attack_grids, attack_totals, grid_index
from .protocols import (HONEST_DROPS, REPORTED_METRICS, Protocol, convention_metrics,
                        convention_metrics_resampled, make_protocol)
from .resampling import DEFAULT_N_BOOT, combine_strata, percentile_interval, resample_index, verdict
from .results import (
    VERDICT_TEXT,
    ArmResult,
    AttackEvaluation,
    BlindResult,
    ClassQuartiles,
    DropCurves,
    Finding,
    FoldChoice,
    QuartileResult,
)

__all__ = ["Evaluation", "DROP_PERCENTS", "DEFAULT_DROP", "DEFAULT_RANDOM_SEEDS", "quartile_index"]

#: Drop percentages of the curves: 0, 5, ..., 90.
DROP_PERCENTS: tuple[int, ...] = tuple(range(0, 95, 5))
#: The paper's default drop percentage.
DEFAULT_DROP = 40.0
#: Seeds of the random control (its band).
DEFAULT_RANDOM_SEEDS = 5
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


def stratified_folds(labels: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Fold id of every sample, int64 (N,): ``StratifiedKFold(folds, shuffle=True,
    random_state=seed)`` over the split (labels (N,), 1 = member); the folds of the ``honest``
    protocol and of the blind baseline.

    Raises:
        LdminvError: fewer than ``folds`` members or held-out images.
    """
    y = np.asarray(labels).astype(np.int8)
    n, n_mem = int(y.size), int(y.sum())
    if min(n_mem, n - n_mem) < folds:
        raise LdminvError(
            f"protocol honest: {folds} folds need at least {folds} members and {folds} held-out images; "
            f"the run has {n_mem} and {n - n_mem} (use fewer --folds)"
        )
    out = np.zeros(n, dtype=np.int64)
    for f, (_, test) in enumerate(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(
            np.zeros(n), y)):
        out[test] = f
    return out


@dataclass
class _Scored:
    """Scores of one arm as evaluated: metric -> (N,) membership scores, fold id (N,) and, for
    ``honest``, the transferred threshold of every fold (K,) and the decisions (N,) bool "score >=
    its fold's threshold" (the scores are then the calibrated out-of-fold scores)."""

    scores: dict[str, np.ndarray]
    fold: np.ndarray
    thresholds: np.ndarray | None = None
    decisions: np.ndarray | None = None


def _first_max(values: np.ndarray, keys: Sequence[float] | None = None) -> int:
    """Index of the largest finite value; ties go to the smallest key (default: the first index).
    0 when no value is finite."""
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if not finite.any():
        return 0
    best = np.nanmax(np.where(finite, v, np.nan))
    candidates = np.flatnonzero(finite & (v == best))
    if keys is None:
        return int(candidates[0])
    k = np.asarray(keys, dtype=np.float64)
    return int(candidates[np.argmin(k[candidates])])


def _threshold_at_1fpr(scores: np.ndarray, labels: np.ndarray) -> float:
    """:func:`~.low_fpr.threshold_at_1fpr` (members positive, FPR <= 1%)."""
    return threshold_at_1fpr(scores, labels)


def lower_thread_priority(niceness: int = 19) -> None:
    """Give the calling (background) thread the lowest CPU priority, so the foreground (the page
    being drawn, the browser on the same machine) goes first. Linux applies ``setpriority`` to
    one thread; elsewhere, or without permission, nothing happens."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def _num(x: Any) -> float:
    return float(x) if x is not None else float("nan")


class Evaluation:
    """Reported numbers of one attack of a run under one protocol (see the module docstring).

    Args:
        run: a finished :class:`~ldminv_core.runstore.Run`.
        attack: an attack of the run.
        protocol: a :class:`Protocol` or its name.
        n_boot: bootstrap replicates of every interval (0 = no intervals).
        level: interval level.
        seed: seed of the bootstrap designs and the first seed of the random control.
        random_seeds: number of seeds of the random control.

    Raises:
        UnknownNameError: ``attack`` is not in the run, or an unknown protocol.
        LdminvError: bad options, or the ``honest`` folds do not fit the data (a fold needs
            members and held-out images).
    """

    def __init__(
        self,
        run: Run,
        attack: str,
        protocol: Protocol | str = "standard",
        *,
        n_boot: int = DEFAULT_N_BOOT,
        level: float = 0.95,
        seed: int = 0,
        random_seeds: int = DEFAULT_RANDOM_SEEDS,
    ) -> None:
        if not isinstance(run, Run):
            raise LdminvError(f"run: expected an opened Run, got {type(run).__name__}")
        if attack not in run.attacks:
            raise UnknownNameError(f"attack: {attack!r} is not in run {run.path}; it holds {run.attacks}")
        self.protocol = protocol if isinstance(protocol, Protocol) else make_protocol(protocol)
        for name, value, low in (("n_boot", n_boot, 0), ("seed", seed, 0), ("random_seeds", random_seeds, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise LdminvError(f"{name}: expected an integer >= {low}, got {value!r}")
        if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < float(level) < 1:
            raise LdminvError(f"level: expected a number strictly between 0 and 1, got {level!r}")
        self.run = run
        self.attack = attack
        self.n_boot = int(n_boot)
        self.level = float(level)
        self.seed = int(seed)
        self.seeds: tuple[int, ...] = tuple(range(int(seed), int(seed) + int(random_seeds)))
        self.labels = np.asarray(run.labels).astype(np.int8)
        self.maskable = run.is_maskable(attack)
        self.timesteps: tuple[int, ...] = tuple(int(t) for t in run.timesteps(attack)) if self.maskable else ()
        self.sample_ids = np.asarray(run.samples["sample_id"], dtype=np.int64)
        self._memo: dict[tuple, Any] = {}
        self._lock = threading.RLock()
        self._key_locks: dict[tuple, threading.RLock] = {}
        self._pending: list[tuple[float, int | None]] = []
        self._worker: threading.Thread | None = None

    # ------------------------------------------------------------------ memo

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        # One lock per part: a thread computing one part (say a background prefetch) never blocks
        # another thread's lookup of a part already computed, and a part is computed once. A part
        # only asks for parts below it, so the per-part locks cannot deadlock.
        try:
            return self._memo[key]
        except KeyError:
            pass
        with self._lock:
            lock = self._key_locks.setdefault(key, threading.RLock())
        with lock:
            if key not in self._memo:
                self._memo[key] = make()
            return self._memo[key]

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def attack_label(self) -> str:
        return attack_label(self.attack)

    def _t_value(self, t_index: int) -> int | None:
        return self.timesteps[t_index] if self.maskable else None

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
        if isinstance(drop, bool) or not isinstance(drop, (int, float, np.integer, np.floating)):
            raise LdminvError(f"drop: expected a percentage in [0, 100), got {drop!r}")
        if not 0 <= float(drop) < 100:
            raise LdminvError(f"drop: expected a percentage in [0, 100), got {drop!r}")
        return float(drop)

    def _d(self) -> int:
        return int(np.prod(self.run.latent_shape))

    def _random_count(self, drop: float) -> int:
        if self.protocol.name == "paper":
            return masks.paper_drop_count(self._d(), drop)
        return masks.drop_count(self._d(), drop)

    def grids(self, progress: Callable[[float], None] | None = None) -> AttackGrids:
        """The attack's drop grids (masked, random and global statistics at drops 0..99 and every
        timestep; :mod:`.grids`), built once per run object and attack and shared by all its
        evaluations. The first call reads the terms once (tens of seconds for an SD-size run;
        ``progress`` is called with the share done) and saves a copy next to the run, which later
        opens memory-map in about a second."""
        return self._cached(("grids",), lambda: attack_grids(self.run, self.attack, self.seeds, terms=self.terms(),
                                                              influence=self.influence(), progress=progress))

    def manual_stat(self, keep: Any) -> np.ndarray:
        """(N, T) statistic of a shared (C, h, w) keep-mask (a manual mask), memoised per mask.

        From the grids' per-channel statistics and the few coordinates that differ from whole
        channels when that reads at most 1/8 of the terms
        (:func:`~ldminv_core.masks.decomposed_statistic`), else one chunked pass over the terms
        (:func:`~ldminv_core.masks.masked_statistic`). Equal to ``masked_statistic(terms, keep)``
        up to the order of the float64 additions."""
        if not self.maskable:
            raise LdminvError(f"{self.attack} gives one score per sample; it has no per-coordinate terms")
        k = np.asarray(keep).astype(bool)
        key = ("manual_stat", k.shape, hashlib.sha1(np.packbits(k).tobytes()).hexdigest())

        def make() -> np.ndarray:
            out = None
            if self.run.has_geometry and k.shape == tuple(self.run.latent_shape):
                out = masks.decomposed_statistic(self.terms(), k, self.grids().channel_totals)
            if out is None:
                out = masks.masked_statistic(self.terms(), k)
            out.setflags(write=False)
            return out
        return self._cached(key, make)

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

    def masked_stat(self, drop: float) -> np.ndarray:
        """(N, T) statistic with each sample's lowest-influence coordinates dropped, by the
        protocol's rule (``paper``: the percentile threshold; else ``round(d * p / 100)``).
        Integer drops 0..99 are read off :meth:`grids`; others are summed from the terms."""
        drop = self._check_drop(drop)
        k = self._on_grid(drop)
        if k is not None:
            return self.grids().masked(k, "threshold" if self.protocol.name == "paper" else "round")

        def make() -> np.ndarray:
            if self.protocol.name == "paper":
                keep = masks.percentile_threshold_mask(self.influence(), drop)
            else:
                keep = masks.percentile_drop_mask(self.influence(), drop)
            return masks.masked_statistic(self.terms(), keep)
        return self._cached(("masked_stat", drop), make)

    def random_stat(self, drop: float, seed: int) -> np.ndarray:
        """(N, T) statistic with the protocol's count of random coordinates dropped (seeded);
        integer drops 0..99 of the evaluation's seeds are read off :meth:`grids`."""
        drop = self._check_drop(drop)
        k = self._on_grid(drop)
        if k is not None and int(seed) in self.seeds:
            return self.grids().random(k, int(seed), "int" if self.protocol.name == "paper" else "round")

        def make() -> np.ndarray:
            keep = masks.random_drop_mask(self.influence().shape, drop, seed=int(seed), n_drop=self._random_count(drop))
            return masks.masked_statistic(self.terms(), keep)
        return self._cached(("random_stat", drop, int(seed)), make)

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

    # ------------------------------------------------------------------ descriptive curves

    def _metrics_over_t(self, stat: np.ndarray, cols: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Protocol-convention metrics of -stat (N, T) at every t on the rows ``cols`` -> metric -> (T,)."""
        s = stat if cols is None else stat[cols]
        lab = self.labels if cols is None else self.labels[cols]
        if s.shape[0] == 0:
            return {m: np.full(stat.shape[1], np.nan) for m in REPORTED_METRICS}
        return convention_metrics(-s.T, lab, self.protocol)

    def per_t(self) -> dict[str, np.ndarray]:
        """Baseline metrics at every timestep on all samples: metric -> (T,) ((1,) without t)."""
        return self._cached(("per_t",), lambda: self._metrics_over_t(self.baseline_stat()))

    def masked_per_t(self, drop: float) -> dict[str, np.ndarray]:
        """Masked-arm metrics at every timestep on all samples: metric -> (T,)."""
        drop = self._check_drop(drop)
        return self._cached(("masked_per_t", drop), lambda: self._metrics_over_t(self.masked_stat(drop)))

    def headline_t_index(self) -> int:
        """Index of the headline t: the best baseline AUROC on all samples (first on ties)."""
        return _first_max(self.per_t()["auroc"])

    # ------------------------------------------------------------------ honest folds

    def folds(self) -> np.ndarray:
        """Fold id of every sample, int64 (N,): all 0 unless the protocol is ``honest``
        (:func:`stratified_folds` with the protocol's K and seed)."""
        def make() -> np.ndarray:
            if self.protocol.name != "honest":
                return np.zeros(self.n, dtype=np.int64)
            return stratified_folds(self.labels, folds=self.protocol.folds, seed=self.protocol.seed)
        return self._cached(("folds",), make)

    def _fold_ids(self) -> list[int]:
        return sorted(int(f) for f in np.unique(self.folds()))

    def fold_t_index(self, fold: int) -> int:
        """``honest``: the t index chosen on the other folds (argmax baseline AUROC, ties: smallest t)."""
        def make() -> int:
            cal = self.folds() != fold
            aurocs = self._metrics_over_t(self.baseline_stat(), cal)["auroc"]
            return _first_max(aurocs, self.timesteps or None)
        return self._cached(("fold_t", int(fold)), make)

    def fold_drop(self, fold: int, drop: float | None) -> float:
        """``honest``: the drop % of the masked arm: ``drop`` when fixed, else the argmax masked
        AUROC over 0..90 step 5 on the other folds at the fold's t (ties: smallest)."""
        if drop is not None:
            return self._check_drop(drop)

        def make() -> float:
            cal = self.folds() != fold
            ti = self.fold_t_index(fold)
            if all(self._on_grid(p) is not None for p in HONEST_DROPS):
                stats = self.grids().masked_many(list(HONEST_DROPS), "round", ti)  # (K, N)
            else:
                stats = self.sweep(ti).statistics(list(HONEST_DROPS))
            aurocs = convention_metrics(-stats[:, cal], self.labels[cal], self.protocol)["auroc"]
            return float(HONEST_DROPS[_first_max(aurocs)])
        return self._cached(("fold_drop", int(fold)), make)

    # ------------------------------------------------------------------ scoring an arm

    def _arm_stat_at(self, arm: str, t_index: int, drop: float | None, seed: int | None) -> np.ndarray:
        """(N,) statistic of an arm at one t index (and drop, seed)."""
        if arm == "baseline":
            return self.baseline_stat()[:, t_index]
        if arm.startswith("custom:"):
            return self._memo[("custom_stat", arm)][:, t_index]
        if arm == "masked":
            if self.protocol.name == "paper" or self._on_grid(drop) is not None:
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

    def _scored(self, arm: str, drop: float | None, seed: int | None = None,
                cols: np.ndarray | None = None) -> tuple[_Scored, dict[str, int | None], tuple[FoldChoice, ...]]:
        """How an arm is scored under the protocol: (scored, best_t per metric, fold choices).

        ``cols`` (bool (N,)): choose the paper's per-metric best t on these rows (a quartile).
        """
        zeros = np.zeros(self.n, dtype=np.int64)
        if self.protocol.name == "honest":
            # every fold scored with the other folds' choices, then calibrated on the other folds'
            # held-out scores (same t, same mask) so that the folds pool (METHOD.md section 4)
            folds = self.folds()
            score = np.empty(self.n, dtype=np.float64)
            decisions = np.zeros(self.n, dtype=bool)
            heldout = self.labels == 0
            thresholds = []
            choices = []
            for f in self._fold_ids():
                ti = self.fold_t_index(f)
                p = self.fold_drop(f, drop) if arm in ("masked", "random") else None
                s = -self._arm_stat_at(arm, ti, p, seed)
                own = folds == f
                score[own] = heldout_calibration(s[own], reference=s[~own & heldout])
                thr = _threshold_at_1fpr(s[~own], self.labels[~own])
                decisions[own] = s[own] >= thr
                thresholds.append(thr)
                choices.append(FoldChoice(
                    fold=f, t=self._t_value(ti), drop_percent=p,
                    threshold=thr if np.isfinite(thr) else None,
                    sample_ids=tuple(int(i) for i in self.sample_ids[own]),
                ))
            scored = _Scored({m: score for m in REPORTED_METRICS}, folds, np.asarray(thresholds), decisions)
            return scored, {m: None for m in REPORTED_METRICS}, tuple(choices)
        if self.protocol.name == "paper":
            if arm == "baseline":
                stat = self.baseline_stat()
            elif arm.startswith("custom:"):
                stat = self._memo[("custom_stat", arm)]
            elif arm == "masked":
                stat = self.masked_stat(drop)
            else:
                stat = self.random_stat(drop, seed)
            over_t = self._metrics_over_t(stat, cols)
            idx = {m: _first_max(over_t[m]) for m in REPORTED_METRICS}
            scored = _Scored({m: -stat[:, idx[m]] for m in REPORTED_METRICS}, zeros)
            return scored, {m: self._t_value(i) for m, i in idx.items()}, ()
        ti = self.headline_t_index()
        s = -self._arm_stat_at(arm, ti, drop, seed)
        return _Scored({m: s for m in REPORTED_METRICS}, zeros), {m: self._t_value(ti) for m in REPORTED_METRICS}, ()

    def _measure(self, scored: _Scored, cols: np.ndarray | None = None,
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
        fixed_drop = drop if (arm != "baseline" and (self.protocol.name != "honest" or drop is not None)) else None
        return ArmResult(
            arm=arm,
            auroc=mean["auroc"], tpr_at_1fpr=mean["tpr_at_1fpr"], asr=mean["asr"],
            ci=ci, best_t=best_t,
            drop_percent=None if fixed_drop is None else float(fixed_drop),
            realised_fpr_at_1fpr=mean["realised_fpr"] if self.protocol.name == "honest" else None,
            folds=choices,
            seeds=tuple(self.seeds) if arm == "random" else (),
            per_seed={m: tuple(values[m]) for m in REPORTED_METRICS} if arm == "random" else {},
            low_fpr=None if arm == "random" else low,
        )

    def _drop_arg(self, drop: float | None) -> float | None:
        """The drop of the masked / random arms: ``honest`` without ``drop`` chooses per fold."""
        if drop is None:
            return None if self.protocol.name == "honest" else DEFAULT_DROP
        return self._check_drop(drop)

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

    def _custom_key(self, stat: np.ndarray) -> str:
        st = np.ascontiguousarray(stat, dtype=np.float64)
        if st.shape != self.baseline_stat().shape:
            raise LdminvError(f"stat: expected shape {self.baseline_stat().shape} (N, T), got {st.shape}")
        key = "custom:" + hashlib.sha1(st.tobytes()).hexdigest()
        with self._lock:
            self._memo.setdefault(("custom_stat", key), st)
        return key

    def custom_scores(self, stat: np.ndarray) -> np.ndarray:
        """(N,) membership scores of :meth:`custom_arm`'s arm as its AUROC is evaluated (for ROC curves)."""
        return self.scores(self._custom_key(stat))

    def custom_arm(self, name: str, stat: np.ndarray) -> ArmResult:
        """An arm from any statistic (N, T) (a manual or global mask, say), chosen and measured
        like the others: the headline t (``standard``), each metric's own best t (``paper``) or
        the folds' t and transferred thresholds (``honest``); bootstrap intervals as the arms'."""
        key = self._custom_key(stat)

        return self._cached(("custom_arm", key, name), lambda: replace(self._arm(key, None), arm=name))

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

    # ------------------------------------------------------------------ quartiles

    def quartile_groups(self) -> np.ndarray:
        """(N,) quartile 0..3 by the protocol's rule (-1 for a NaN log-volume)."""
        rule = "percentile" if self.protocol.name == "paper" else "split"
        return self._cached(("quartile_groups",), lambda: quartile_index(self.run.log_volume, rule=rule))

    def quartile_per_t(self) -> np.ndarray:
        """(4, T) baseline AUROC of every quartile at every timestep (all samples, descriptive)."""
        def make() -> np.ndarray:
            groups = self.quartile_groups()
            return np.stack([self._metrics_over_t(self.baseline_stat(), groups == q)["auroc"] for q in range(4)])
        return self._cached(("quartile_per_t",), make)

    def _quartile_scored(self, q: int) -> tuple[_Scored, dict[str, int | None]]:
        cols = self.quartile_groups() == q
        if self.protocol.name == "paper":
            scored, best_t, _ = self._scored("baseline", None, cols=cols)
        else:
            scored, best_t, _ = self._scored("baseline", None)
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

    # ------------------------------------------------------------------ classes

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
            rule = "percentile" if self.protocol.name == "paper" else "split"
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

    # ------------------------------------------------------------------ findings

    def _context(self, arms: dict[str, ArmResult] | None = None) -> str:
        base = arms["baseline"] if arms else self.baseline()  # the baseline arm of every drop
        return f"{self.attack_label}, {self.protocol.name} protocol, {base.t_text}"

    def _finding(self, fid: str, est: np.ndarray, reps: np.ndarray | None, details: dict,
                 describe: Callable[[float, tuple[float, float], str], str],
                 secondary: tuple[dict, ...] = ()) -> Finding:
        estimate = float(est)
        ci = percentile_interval(reps, level=self.level) if reps is not None else (float("nan"), float("nan"))
        v = verdict(ci) if np.isfinite(estimate) else "undefined"
        return Finding(id=fid, metric="auroc", estimate=estimate, ci=ci, verdict=v,
                       statement=describe(estimate, ci, v), details=details, secondary=secondary)

    def _quartile_finding(self) -> Finding:
        design = self._design("quartile")
        vals, reps = {}, {}
        for q in (0, 3):
            vals[q] = self._quartile_measure(q, False)["auroc"][0]
            reps[q] = self._quartile_measure(q, True)["auroc"] if design is not None else None
        est = vals[3] - vals[0]
        rep = None if design is None else reps[3] - reps[0]
        ctx = self._context()
        if self.protocol.name == "paper" and self.maskable:
            q_t = {q: self._quartile_scored(q)[1]["auroc"] for q in (0, 3)}
            ctx = (f"{self.attack_label}, paper protocol, each quartile's AUROC at its own best t: "
                   f"Q1 t = {q_t[0]}, Q4 t = {q_t[3]}")

        shifted = self.shifted()

        def describe(e: float, ci: tuple[float, float], v: str) -> str:
            if v == "undefined":
                return (f"Distortion quartiles ({ctx}): the AUROC of the least or most distorted quartile is "
                        "undefined on this run (a quartile holds one class, or log-volume is missing).")
            meaning = {
                "supported": "the most distorted samples are easier to identify as members on this run, "
                             "as the paper reports" if not shifted else
                             "the most distorted samples are easier to tell apart on this run",
                "contradicted": "the least distorted samples are easier to identify on this run, the opposite "
                                "of the paper's claim" if not shifted else
                                "the least distorted samples are easier to tell apart on this run",
                "inconclusive": "this run neither supports nor contradicts the claim that distorted samples "
                                "are memorized more",
            }[v]
            return (f"AUROC in the most distorted quartile (Q4) is {vals[3]:.3f} against {vals[0]:.3f} in the "
                    f"least distorted (Q1) ({ctx}): difference {e:+.3f}, 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]; "
                    f"{VERDICT_TEXT[v].split(':')[0]}: {meaning}.")
        return self._finding("distortion_quartiles", est, rep, {"q1_auroc": float(vals[0]), "q4_auroc": float(vals[3])},
                             describe)

    def _class_finding(self) -> Finding | None:
        cls, cq, names = self._classes()
        if not names:
            return None
        scored, _, _ = self._scored("baseline", None)
        design = self._design("class", "class_quartile")

        def pooled(index: np.ndarray | None) -> np.ndarray:
            b = 1 if index is None else index.shape[0]
            num, den = np.zeros(b), np.zeros(b)
            for c in range(len(names)):
                rows = cls == c
                d = (self._measure(scored, rows & (cq == 3), index)["auroc"]
                     - self._measure(scored, rows & (cq == 0), index)["auroc"])
                ok = np.isfinite(d)
                num += np.where(ok, d * rows.sum(), 0.0)
                den += np.where(ok, rows.sum(), 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

        est = pooled(None)[0]
        rep = pooled(design) if design is not None else None
        ctx = self._context()
        n_classes = len(names)

        def describe(e: float, ci: tuple[float, float], v: str) -> str:
            if v == "undefined":
                return f"Within-class distortion quartiles ({ctx}): undefined on this run."
            meaning = {
                "supported": "within a class, more distorted samples are easier to identify",
                "contradicted": "within a class, less distorted samples are easier to identify",
                "inconclusive": "within a class, distortion shows no clear relation to membership",
            }[v]
            return (f"Within each of {n_classes} classes (captions), AUROC(Q4) - AUROC(Q1) averages {e:+.3f} "
                    f"(size-weighted; 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]; {ctx}); {v}: {meaning}. "
                    "Quartiles are formed within each class, so class differences in distortion cannot drive it.")
        return self._finding("distortion_quartiles_within_class", est, rep, {"classes": n_classes}, describe)

    def _masking_finding(self, other: str, drop: float | None) -> Finding:
        arms = self.arms(drop)
        p = self._drop_arg(drop)
        seeds = self.seeds if other == "random" else (None,)
        masked_point, masked_rep = self._arm_values("masked", p, None)[:2]
        others = [self._arm_values(other, p if other == "random" else None, s) for s in seeds]
        other_points = [o[0] for o in others]
        other_reps = [o[1] for o in others] if masked_rep is not None else None
        results = {}
        for m in ("auroc", "tpr_at_1fpr"):
            est = masked_point[m][0] - np.mean([o[m][0] for o in other_points])
            rep = None
            if masked_rep is not None and other_reps is not None:
                rep = masked_rep[m] - np.mean(np.stack([o[m] for o in other_reps]), axis=0)
            ci = percentile_interval(rep, level=self.level) if rep is not None else (float("nan"), float("nan"))
            results[m] = (float(est), ci, verdict(ci) if np.isfinite(est) else "undefined")
        ma, oa = arms["masked"], arms[other]
        ctx = f"{self._context(arms)}, drop {ma.drop_text}"
        what = "the unmasked baseline" if other == "baseline" else f"dropping the same number of random coordinates (mean of {len(self.seeds)} seeds)"
        e_t, ci_t, v_t = results["tpr_at_1fpr"]

        def describe(e: float, ci: tuple[float, float], v: str) -> str:
            return (f"Masked AUROC {ma.auroc:.3f} against {oa.auroc:.3f} for {what} ({ctx}): difference "
                    f"{e:+.4f}, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}], {v}; TPR@1%FPR difference {e_t:+.4f} "
                    f"[{ci_t[0]:+.4f}, {ci_t[1]:+.4f}], {v_t}.")
        e, ci, _ = results["auroc"]
        fid = f"masking_vs_{other}"
        return Finding(
            id=fid, metric="auroc", estimate=e, ci=ci, verdict=results["auroc"][2], statement=describe(*results["auroc"]),
            details={"masked_auroc": ma.auroc, f"{other}_auroc": oa.auroc,
                     "masked_tpr_at_1fpr": ma.tpr_at_1fpr, f"{other}_tpr_at_1fpr": oa.tpr_at_1fpr},
            secondary=({"metric": "tpr_at_1fpr", "estimate": e_t, "ci": ci_t, "verdict": v_t},),
        )

    def blind_folds(self) -> np.ndarray:
        """Fold id of every sample for the blind baseline, int64 (N,): the ``honest`` protocol's
        seeded stratified folds (its K and seed; the defaults under the other protocols)."""
        if self.protocol.name == "honest":
            return self.folds()
        default = make_protocol("honest")
        return self._cached(("blind_folds",), lambda: stratified_folds(self.labels, folds=default.folds,
                                                                      seed=default.seed))

    def blind(self) -> BlindResult:
        """The run's blind baseline under this protocol (METHOD.md section 6): the files' features
        (stored by ``analyze``, or computed from the image paths of an older run), cross-fitted on
        :meth:`blind_folds`, measured per feature group and all together with this protocol's
        convention and bootstrap design, its intervals widened and bias-corrected by the
        cross-fitting's permutation null. ``available`` is False, with the reason, when the
        features cannot be had (e.g. the images of an old run are gone) or the folds do not fit."""
        def make() -> BlindResult:
            try:
                features, scores, null = self._blind_fit()
                return evaluate_blind(features, self.labels, self.blind_folds(), self.protocol, self._design(),
                                      level=self.level, seed=0, fold_seed=self._blind_fold_seed(), scores=scores,
                                      null=null)
            except LdminvError as exc:
                return BlindResult(available=False, reason=str(exc))
        # the same for every attack of the run: computed once per run, protocol and design
        key = ("blind", self.protocol.name, self.protocol.folds, self.protocol.seed, self.n_boot, self.level, self.seed)
        return self._cached(("blind",), lambda: self.run.derived(key, make))

    def _blind_fit(self) -> tuple:
        """(features, cross-fitted scores, permutation null) on :meth:`blind_folds`: they depend on
        the run and the folds only, so every protocol and attack shares them (once per opened run;
        the null is kept in the run's ``.ldminv-cache``, where ``analyze`` leaves the default folds')."""
        folds = self.blind_folds()

        def make() -> tuple:
            features = run_blind_features(self.run)
            with threadpool_limits(limits=1, user_api="blas"):
                scores = cross_fitted_blind_scores(features, self.labels, folds)
            null = cached_fitting_null(self.run.path / CACHE_DIR, features, self.labels, folds)
            return features, scores, null
        return self.run.derived(("blind_fit", null_file_name(self.labels, folds)), make)

    def _blind_fold_seed(self) -> int:
        return self.protocol.seed if self.protocol.name == "honest" else make_protocol("honest").seed

    def shifted(self) -> bool:
        """True when the blind baseline separates the folders without the model (then every
        membership or geometry finding carries a caveat)."""
        return self.blind().separable

    def _shift_caveat(self, what: str) -> str:
        """The caveat of a finding on folders the blind baseline separates ("" when it does not)."""
        b = self.blind()
        if not b.separable:
            return ""
        g = b.group(ALL_GROUPS)
        lo, hi = g.ci["auroc"]
        by = ", ".join(b.separating_groups) or "all feature groups together"
        return (f"The files alone separate these folders without the model (blind AUROC {g.auroc:.3f}, 95% CI "
                f"[{lo:.3f}, {hi:.3f}]; separating: {by}): {what} cannot be separated from the folders' difference "
                "(distribution shift) and is not evidence of membership.")

    def blind_findings(self, blind: BlindScores | None = None, *, group: str = ALL_GROUPS) -> tuple[Finding, ...]:
        """The blind-baseline findings of METHOD.md section 6 on this attack: ``blind_baseline``,
        ``attack_vs_blind`` (paired with the attack's baseline arm as this protocol scores it) and
        ``attack_within_blind_strata``; empty when the blind baseline is unavailable.

        Args:
            blind: out-of-fold blind scores of this run's samples, cross-fitted on
                :meth:`blind_folds` (:func:`~ldminv_core.evaluation.blind.cross_fitted_blind_scores`);
                None: :meth:`blind`'s.
            group: which classifier's scores ("all" = every feature group).
        """
        null = None
        if blind is None:
            result = self.blind()
            if not result.available:
                return ()
            blind = BlindScores(scores=result.scores, folds=self.blind_folds())
            null = self._blind_fit()[2]
        if group not in blind.scores:
            raise UnknownNameError(f"group: {group!r} is not among the blind scores {tuple(blind.scores)}")
        b = np.asarray(blind.scores[group], dtype=np.float64)
        if b.shape != (self.n,):
            raise LdminvError(f"blind.scores[{group!r}]: expected shape ({self.n},) (one per sample), got {b.shape}")
        scored, _, _ = self._scored("baseline", None)
        attack_score = scored.scores["auroc"]
        design = self._design()
        ctx = self._context()
        return (
            blind_baseline_finding(b, self.labels, design, level=self.level,
                                   groups=[g for g in blind.scores if g != ALL_GROUPS], null=null),
            attack_vs_blind_finding(attack_score, b, self.labels, design, level=self.level, context=ctx,
                                    null=null),
            within_blind_strata_finding(attack_score, b, self.labels, n_boot=self.n_boot, seed=self.seed,
                                        level=self.level, context=ctx),
        )

    def findings(self, drop: float | None = None) -> tuple[Finding, ...]:
        """The findings of METHOD.md section 4 on this run (masking ones only for maskable attacks)."""
        p = self._drop_arg(drop)

        def make() -> tuple[Finding, ...]:
            out = [self._quartile_finding()]
            within = self._class_finding()
            if within is not None:
                out.append(within)
            if self.maskable:
                out.append(self._masking_finding("baseline", p))
                out.append(self._masking_finding("random", p))
            if self.shifted():  # a membership or geometry claim on folders the files alone separate
                what = {"distortion_quartiles": "this difference between distortion quartiles",
                        "distortion_quartiles_within_class": "this within-class difference",
                        "masking_vs_baseline": "this masking effect",
                        "masking_vs_random": "this masking effect"}
                out = [replace(f, caveat=(c := self._shift_caveat(what.get(f.id, "this finding"))),
                               statement=f"{f.statement} {c}") for f in out]
            blind = self._cached(("blind_findings",), lambda: self.blind_findings())
            return (*blind, *out)
        return self._cached(("findings", p), make)

    # ------------------------------------------------------------------ curves

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
        paper = self.protocol.name == "paper"
        on_grid = all(self._on_grid(p) is not None for p in pcts)
        if on_grid:
            ks = [grid_index(p) for p in pcts]
            stats = self.grids().masked_many(ks, "threshold" if paper else "round", ti)  # (K, N)
        elif paper:
            counts = masks.threshold_drop_counts_many(self.influence(), pcts)
            stats = self.sweep(ti).statistic_at_counts(counts)  # (K, N)
        else:
            stats = self.sweep(ti).statistics(list(pcts))
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
            if on_grid:
                r_stats = self.grids().random_many(ks, s, "int" if paper else "round", ti)
            else:
                rs = self.random_sweep(ti, s)
                counts_r = np.array([self._random_count(p) for p in pcts], dtype=np.int64)
                r_stats = np.stack([rs.statistic_at_counts(int(c)) for c in counts_r])
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

    # ------------------------------------------------------------------ background prefetch

    def prefetch(self, drops: Sequence[float], *, t_index: int | None = None) -> None:
        """Compute, in one background thread, what a change of the drop to one of ``drops``
        needs (the arms, findings, per-t masked curve and, with ``t_index``, the drop curves'
        point at that drop), so that the change is a lookup. Returns at once; a newer call
        replaces the drops not started yet. Errors are left for the foreground call to raise."""
        if not self.maskable:
            return
        todo = []
        for d in drops:
            try:
                todo.append((self._check_drop(d), None if t_index is None else int(t_index)))
            except LdminvError:
                continue
        with self._lock:
            self._pending = todo
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._prefetch_loop, name="ldminv-prefetch", daemon=True)
                self._worker.start()

    def _prefetch_loop(self) -> None:
        lower_thread_priority()
        while True:
            with self._lock:
                if not self._pending:
                    self._worker = None
                    return
                drop, ti = self._pending.pop(0)
            try:
                self.arms(drop)
                self.findings(drop)
                self.masked_per_t(drop)
                if ti is not None:
                    self.drop_curves(ti, extra=(drop,))
            except Exception:  # noqa: BLE001 - the foreground call raises it where it is shown
                pass

    def prefetch_idle(self, timeout: float | None = None) -> bool:
        """Wait until the background prefetch is done (True) or ``timeout`` s passed (False)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    # ------------------------------------------------------------------ everything

    def result(self, drop: float | None = None) -> AttackEvaluation:
        """The whole evaluation of the attack (arms, quartiles, findings, per-t curve, classes)."""
        arms = self.arms(drop)
        per_t = self.per_t()
        if self.protocol.name == "honest":
            best_t = None
        elif self.maskable:
            best_t = self.timesteps[self.headline_t_index()]
        else:
            best_t = None
        return AttackEvaluation(
            attack=self.attack, protocol=self.protocol, maskable=self.maskable, timesteps=self.timesteps,
            best_t=best_t,
            per_t={"t": list(self.timesteps), **{m: [float(v) for v in per_t[m]] for m in REPORTED_METRICS}}
            if self.maskable else {},
            baseline=arms["baseline"], masked=arms.get("masked"), random=arms.get("random"),
            quartiles=self.quartiles(), findings=self.findings(drop), classes=self.class_quartiles(),
            n_boot=self.n_boot, level=self.level, blind=self.blind(),
        )
