"""The protocol base class: the rules every protocol owns, and how a protocol is made by name.

A :class:`Protocol` is a frozen (name, folds, seed) record whose subclass carries its rules
(:mod:`.standard`, :mod:`.paper`, :mod:`.honest`): how t is chosen and the scores produced
(:meth:`Protocol.score_arm`), the drop rule and the random control's count, the quartile rule,
the ROC convention (positive class, strict or non-strict FPR bound), whether TPR at 1% FPR is
realised with transferred thresholds, and the JSON ``settings()`` of the report.
``Protocol(name=...)`` and :func:`make_protocol` return the subclass of that name. The
evaluation (:mod:`..evaluator`) asks these rules and never the protocol's name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ... import masks
from ..._validation import check_int
from ...choices import DEFAULT_PROTOCOL, PROTOCOLS  # the names, default first (light module)
from ...errors import UnknownNameError

if TYPE_CHECKING:
    from ..evaluator import Evaluation
    from ..results import FoldChoice

__all__ = ["PROTOCOLS", "DEFAULT_PROTOCOL", "DEFAULT_FOLDS", "HONEST_DROPS", "REPORTED_METRICS", "DEFAULT_DROP",
           "Protocol", "ScoredArm", "ArmScoring", "make_protocol", "first_max"]

#: Number of cross-fitting folds of the ``honest`` protocol.
DEFAULT_FOLDS = 5
#: Drop percentages the ``honest`` protocol chooses from (0, 5, ..., 90).
HONEST_DROPS: tuple[int, ...] = tuple(range(0, 95, 5))
#: The metrics every arm reports.
REPORTED_METRICS: tuple[str, ...] = ("auroc", "tpr_at_1fpr", "asr")
#: The paper's default drop percentage.
DEFAULT_DROP = 40.0

#: name -> subclass, filled by the subclasses' modules (see ``__init_subclass__``).
_REGISTRY: dict[str, type[Protocol]] = {}


@dataclass
class ScoredArm:
    """Scores of one arm as evaluated: metric -> (N,) membership scores, fold id (N,) and, for
    ``honest``, the transferred threshold of every fold (K,) and the decisions (N,) bool "score >=
    its fold's threshold" (the scores are then the calibrated out-of-fold scores)."""

    scores: dict[str, np.ndarray]
    fold: np.ndarray
    thresholds: np.ndarray | None = None
    decisions: np.ndarray | None = None


#: (scored arm, metric -> the t it is reported at (None: chosen per fold), fold choices)
ArmScoring = tuple[ScoredArm, dict[str, "int | None"], tuple["FoldChoice", ...]]


def first_max(values: np.ndarray, keys: Any = None) -> int:
    """Index of the largest finite value of ``values`` (K,); ties go to the smallest key
    (``keys`` (K,), default: the first index). 0 when no value is finite."""
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


@dataclass(frozen=True, repr=False)
class Protocol:
    """An evaluation protocol and its settings; ``Protocol(name=...)`` is the subclass of that
    name (:class:`~.standard.StandardProtocol` by default).

    Attributes:
        name: one of :data:`PROTOCOLS`.
        folds: number of cross-fitting folds (``honest`` only; recorded for the others).
        seed: seed of the fold assignment (``honest`` only).
    """

    name: str = DEFAULT_PROTOCOL
    folds: int = DEFAULT_FOLDS
    seed: int = 0

    # ---- the rules, as the subclasses set them (these defaults are ``standard``'s)
    #: ROC convention: held-out images are the positive class and the statistic the score.
    heldout_positive: ClassVar[bool] = False
    #: ROC convention: TPR at FPR < 1% (strict) instead of <= 1%.
    strict_fpr: ClassVar[bool] = False
    #: Rule of the masked arm's drop grid (:mod:`..grids`): "round" or "threshold".
    grid_drop_rule: ClassVar[str] = "round"
    #: Rule of the random control's count on the drop grid: "round" or "int".
    grid_random_rule: ClassVar[str] = "round"
    #: Quartile rule of :func:`~..quartiles.quartile_index`: "split" or "percentile".
    quartile_rule: ClassVar[str] = "split"
    #: The masked arm's drop when none is given (None: chosen per fold).
    default_drop: ClassVar[float | None] = DEFAULT_DROP
    #: TPR at 1% FPR realised with thresholds transferred from other folds (reported with the
    #: realised FPR beside it).
    transfers_thresholds: ClassVar[bool] = False
    #: One headline t for every arm is reported (``best_t`` of the result).
    reports_headline_t: ClassVar[bool] = True

    def __new__(cls, name: str = DEFAULT_PROTOCOL, folds: int = DEFAULT_FOLDS, seed: int = 0) -> Protocol:
        if cls is Protocol:
            cls = _REGISTRY.get(name, Protocol)
        return object.__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        registered = cls.__dict__.get("name")
        if isinstance(registered, str):
            _REGISTRY[registered] = cls

    def __repr__(self) -> str:
        return f"Protocol(name={self.name!r}, folds={self.folds!r}, seed={self.seed!r})"

    # ---- words
    @property
    def description(self) -> str:
        """One line saying what the protocol does."""
        return ""

    @property
    def positive_class(self) -> str:
        """"member" or "heldout": the class TPR is measured on."""
        return "heldout" if self.heldout_positive else "member"

    @property
    def tpr_rule(self) -> str:
        """How TPR@1%FPR is read off the ROC curve, in words."""
        return "member TPR at held-out FPR <= 1%"

    def rule_settings(self) -> dict[str, Any]:
        """The protocol's own entries of :meth:`settings` (t choice, drop rule, quartiles, ...)."""
        return {}

    def settings(self) -> dict[str, Any]:
        """The JSON ``"protocol"`` object of the report: name and every setting in use."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "positive_class": self.positive_class,
            "tpr_at_1fpr": self.tpr_rule,
        }
        out.update(self.rule_settings())
        return out

    # ---- drop rule
    def random_count(self, d: int, drop: float) -> int:
        """Coordinates the random control drops out of ``d`` at ``drop`` %."""
        return masks.drop_count(d, drop)

    def drop_mask(self, influence: np.ndarray, drop: float) -> np.ndarray:
        """Per-sample keep-mask (N, C, h, w) bool dropping each sample's lowest-influence ``drop`` %."""
        return masks.percentile_drop_mask(influence, drop)

    def sweep_serves_drop(self) -> bool:
        """True when a count-based :class:`~ldminv_core.masks.DropSweep` gives this drop rule's
        statistic at one t (off the drop grid); False: the full masked statistic is read."""
        return True

    def curve_statistics(self, sweep: masks.DropSweep, influence: np.ndarray, percents: list[float]) -> np.ndarray:
        """(K, N) masked statistics at one t for the drops ``percents`` (off the drop grid)."""
        return sweep.statistics(percents)

    # ---- folds
    def assign_folds(self, labels: np.ndarray) -> np.ndarray:
        """Fold id of every sample, int64 (N,): all 0 unless the protocol cross-fits."""
        return np.zeros(np.asarray(labels).shape[0], dtype=np.int64)

    def blind_fold_protocol(self) -> Protocol:
        """The protocol whose folds (K and seed) the blind baseline cross-fits on: the default
        ``honest`` protocol's, or this protocol's own when it cross-fits."""
        return make_protocol("honest")

    # ---- how scores are produced and t chosen
    def score_arm(self, ev: Evaluation, arm: str, drop: float | None, seed: int | None = None,
                  cols: np.ndarray | None = None) -> ArmScoring:
        """How an arm is scored: one t for everything, the best baseline AUROC on all samples."""
        zeros = np.zeros(ev.n, dtype=np.int64)
        ti = ev.headline_t_index()
        s = -ev.arm_stat_at(arm, ti, drop, seed)
        t = ev.t_value(ti)
        return ScoredArm({m: s for m in REPORTED_METRICS}, zeros), {m: t for m in REPORTED_METRICS}, ()

    def score_subgroup(self, ev: Evaluation, cols: np.ndarray) -> ArmScoring:
        """How the baseline arm is scored for a subgroup (a quartile; bool (N,) ``cols``)."""
        return self.score_arm(ev, "baseline", None)

    def quartile_context(self, ev: Evaluation, ctx: str) -> str:
        """The context words of the distortion quartile finding (``ctx``: the finding's default)."""
        return ctx


def make_protocol(name: str = DEFAULT_PROTOCOL, *, folds: int | None = None, seed: int = 0) -> Protocol:
    """A validated :class:`Protocol` (the subclass of that name).

    Args:
        name: "standard", "paper" or "honest".
        folds: cross-fitting folds for ``honest`` (default :data:`DEFAULT_FOLDS`; at least 2).
        seed: seed of the fold assignment (>= 0).

    Raises:
        UnknownNameError: unknown ``name``. LdminvError: ``folds`` < 2 or a negative ``seed``.
    """
    if not isinstance(name, str) or name.strip().lower() not in PROTOCOLS:
        raise UnknownNameError(f"protocol: expected one of {', '.join(PROTOCOLS)}; got {name!r}")
    k = DEFAULT_FOLDS if folds is None else check_int(folds, "folds", minimum=2)
    return Protocol(name=name.strip().lower(), folds=k, seed=check_int(seed, "seed", minimum=0))
