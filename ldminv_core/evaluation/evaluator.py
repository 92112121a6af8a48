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
mean over seeds, its band the spread. An instance is safe to share between threads, and starts
none (the app's one background prefetcher is ``ldminv_app.warm``).

The parts live in one module each, mixed into :class:`Evaluation`: :mod:`.source` (the
statistics), :mod:`.scoring` (t choice, folds, the protocol's scoring of an arm), :mod:`.measure`
(metrics, bootstrap designs, arms), :mod:`.quartiles`, :mod:`.findings`, :mod:`.blind_findings`,
:mod:`.curves`. The protocol object (:mod:`.protocols`) supplies every rule; nothing here asks
for its name.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .._validation import check_int, check_real
from ..choices import attack_label
from ..errors import LdminvError, UnknownNameError
from ldminv_core.runs import Run
from .blind_findings import BlindFindings
from .curves import DROP_PERCENTS, Curves
from .findings import Findings
from .folds import stratified_folds
from .low_fpr import threshold_at_1fpr
from .measure import Measure
from .protocols import DEFAULT_DROP, REPORTED_METRICS, Protocol, ScoredArm, first_max, make_protocol
from .quartiles import MIN_CLASS_SIZE, Quartiles, quartile_index
from .resampling import DEFAULT_N_BOOT
from .results import AttackEvaluation
from .scoring import Scoring
from .source import StatisticSource

__all__ = ["Evaluation", "DROP_PERCENTS", "DEFAULT_DROP", "DEFAULT_RANDOM_SEEDS", "quartile_index",
           "stratified_folds", "MIN_CLASS_SIZE"]

#: Seeds of the random control (its band).
DEFAULT_RANDOM_SEEDS = 5

# names other modules imported from here before the split (kept for one release)
_Scored = ScoredArm
_first_max = first_max


def _threshold_at_1fpr(scores: np.ndarray, labels: np.ndarray) -> float:
    """:func:`~.low_fpr.threshold_at_1fpr` (members positive, FPR <= 1%)."""
    return threshold_at_1fpr(scores, labels)


class Evaluation(StatisticSource, Scoring, Measure, Quartiles, Findings, BlindFindings, Curves):
    """Reported numbers of one attack of a run under one protocol (see the module docstring).

    Args:
        run: a finished :class:`~ldminv_core.runs.Run`.
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
            check_int(value, name, minimum=low)
        check_real(level, "level", low=0.0, high=1.0, low_open=True, high_open=True,
                   what="a number strictly between 0 and 1")
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
        # locks only: the evaluation starts no thread, but the app's prefetcher (ldminv_app.warm)
        # may ask for parts from its own thread while a page asks for others
        self._lock = threading.RLock()
        self._key_locks: dict[tuple, threading.RLock] = {}

    # ------------------------------------------------------------------ memo

    def _cached(self, key: tuple, make: Callable[[], Any]) -> Any:
        # One lock per part: a thread computing one part (say the app's background prefetch) never blocks
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

    # ------------------------------------------------------------------ everything

    def result(self, drop: float | None = None) -> AttackEvaluation:
        """The whole evaluation of the attack (arms, quartiles, findings, per-t curve, classes)."""
        arms = self.arms(drop)
        per_t = self.per_t()
        best_t = None  # honest: chosen per fold (see ``folds`` of the arms)
        if self.protocol.reports_headline_t and self.maskable:
            best_t = self.timesteps[self.headline_t_index()]
        return AttackEvaluation(
            attack=self.attack, protocol=self.protocol, maskable=self.maskable, timesteps=self.timesteps,
            best_t=best_t,
            per_t={"t": list(self.timesteps), **{m: [float(v) for v in per_t[m]] for m in REPORTED_METRICS}}
            if self.maskable else {},
            baseline=arms["baseline"], masked=arms.get("masked"), random=arms.get("random"),
            quartiles=self.quartiles(), findings=self.findings(drop), classes=self.class_quartiles(),
            n_boot=self.n_boot, level=self.level, blind=self.blind(),
        )
