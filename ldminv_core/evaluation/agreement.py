"""Agreement between the attacks of a run under one protocol (METHOD.md section 7): which samples
each attack flags at the 1%-FPR threshold, how much those sets overlap, and how alike the attacks
rank the samples.

:func:`agreement` evaluates every attack of a run (or those asked for) with its
:class:`~.evaluator.Evaluation` under the protocol, scores one arm of each (the baseline by
default; ``"masked"`` uses the protocol's drop for maskable attacks and the baseline for the
others) exactly as the protocol scores it (:meth:`~.protocols.base.Protocol.score_arm`: the
protocol's t choice, drop and folds), and returns an :class:`Agreement`:

- the samples each attack *flags*: those the protocol calls positive at its 1%-FPR operating
  point: the scores at or above :func:`~.low_fpr.threshold_at_1fpr` under the protocol's ROC
  convention (``paper``: the statistic, held-out images positive, FPR < 1% strict), or, when
  the protocol transfers thresholds (``honest``), its decisions at the thresholds chosen on the
  other folds. These are the samples :func:`~.low_fpr.low_fpr_count` counts;
- per pair of attacks, the Jaccard index |A & B| / |A | B| of the flagged sets, over all samples
  and per split (among the positive class these are the true positives). Undefined (NaN, with
  the reason) when either attack flags no sample of the subset;
- per pair and split, the Spearman correlation of the scores the protocol reports AUROC from
  (``scipy.stats.spearmanr``); NaN with the reason when a split's scores are constant;
- a "who flags whom" table: per sample (id, file, split) the attacks that flag it, the samples
  flagged by most attacks first (then by sample id).

Intervals: percentile intervals over the evaluation's stratified bootstrap design (split x fold,
:func:`~.resampling.resample_index` with the evaluation's seed, so paired with the arms'
intervals). In every replicate the thresholds are recomputed on the resampled scores, except under
a protocol that transfers thresholds (its decisions stay fixed, as its TPR's replicates do);
Spearman's interval is the bootstrap one (each replicate: Spearman of the resampled scores of the
split), not Fisher's z. Replicate Jaccards are counted over the replicate's columns (a sample drawn
twice counts twice). Conventions: labels 1 = member; scores higher = member.
"""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from ..errors import LdminvError, UnknownNameError
from .low_fpr import threshold_at_1fpr, thresholds_at_1fpr_rows
from .protocols import Protocol, ScoredArm, make_protocol
from .resampling import DEFAULT_N_BOOT, combine_strata, percentile_interval, resample_index

__all__ = ["Agreement", "JaccardResult", "SpearmanResult", "PairAgreement", "FlaggedSample", "agreement",
           "AGREEMENT_ARMS", "JACCARD_SUBSETS", "SPEARMAN_SPLITS", "INTERVAL_METHOD"]

#: The arms agreement is computed on.
AGREEMENT_ARMS = ("baseline", "masked")
#: Subsets of the Jaccard index: every sample, the members, the held-out images.
JACCARD_SUBSETS = ("all", "member", "heldout")
#: Splits of the Spearman correlation.
SPEARMAN_SPLITS = ("member", "heldout")
#: How the intervals are made, in words.
INTERVAL_METHOD = ("percentile bootstrap over the evaluation's stratified design (split x fold); 1%-FPR "
                   "thresholds recomputed in every replicate unless the protocol transfers them; Spearman "
                   "interval: bootstrap (not Fisher z)")

_SPLIT_WORDS = {"all": "sample", "member": "member", "heldout": "held-out image"}


@dataclass(frozen=True)
class JaccardResult:
    """Jaccard index of two attacks' flagged sets on one subset ("all", "member", "heldout").

    Attributes: value (NaN when undefined), ci (percentile bootstrap interval), n_a / n_b
    (flagged by each), n_both, n_either, reason (why the value is NaN; "" otherwise)."""

    subset: str
    value: float
    ci: tuple[float, float]
    n_a: int
    n_b: int
    n_both: int
    n_either: int
    reason: str = ""


@dataclass(frozen=True)
class SpearmanResult:
    """Spearman correlation of two attacks' scores on one split, its bootstrap interval, the
    number of samples and why it is NaN ("" otherwise)."""

    split: str
    rho: float
    ci: tuple[float, float]
    n: int
    reason: str = ""


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of attacks ``a`` and ``b``: Jaccard per subset, Spearman per split."""

    a: str
    b: str
    jaccard: dict[str, JaccardResult]
    spearman: dict[str, SpearmanResult]


@dataclass(frozen=True)
class FlaggedSample:
    """One row of the who-flags-whom table: row index, sample id, file, split and the attacks
    flagging it (in the order of :attr:`Agreement.attacks`)."""

    index: int
    sample_id: int
    file: str
    split: str
    flagged_by: tuple[str, ...]

    @property
    def n_flagged(self) -> int:
        return len(self.flagged_by)


@dataclass(frozen=True)
class Agreement:
    """The agreement of a run's attacks under one protocol (see the module docstring).

    Attributes:
        protocol: the protocol; ``positive_class`` is the class its flags call.
        attacks: the attacks compared, in the run's order. arms: attack -> the arm scored.
        drop: the drop asked for the masked arm (None: the protocol's).
        flagged: attack -> bool (N,) flagged samples. counts: attack -> split -> flagged count.
        pairs: every pair (a before b in ``attacks``). samples: every sample, most flags first.
        warnings: one line per degenerate case (an attack flagging nothing, constant scores).
        n_boot, level, seed: the intervals' replicates, level and design seed.
    """

    protocol: Protocol
    attacks: tuple[str, ...]
    arms: dict[str, str]
    drop: float | None
    flagged: dict[str, np.ndarray]
    counts: dict[str, dict[str, int]]
    pairs: tuple[PairAgreement, ...]
    samples: tuple[FlaggedSample, ...]
    warnings: tuple[str, ...]
    n_boot: int
    level: float
    seed: int
    interval_method: str = INTERVAL_METHOD

    @property
    def positive_class(self) -> str:
        return self.protocol.positive_class

    def pair(self, a: str, b: str) -> PairAgreement:
        """The pair of ``a`` and ``b`` (either order); ``a == b`` gives the attack with itself."""
        for p in self.pairs:
            if {p.a, p.b} == {a, b} and a != b:
                return p
        if a == b and a in self.attacks:
            raise LdminvError(f"pair: {a!r} with itself is not stored (its Jaccard is 1 by definition)")
        raise UnknownNameError(f"pair: expected two of {list(self.attacks)}, got {a!r} and {b!r}")

    def flagged_samples(self, *, minimum: int = 1) -> tuple[FlaggedSample, ...]:
        """The rows of the who-flags-whom table flagged by at least ``minimum`` attacks."""
        return tuple(s for s in self.samples if s.n_flagged >= minimum)


# ---------------------------------------------------------------------- flags


def flag_at_1fpr(scores: np.ndarray, labels: np.ndarray, protocol: Protocol, *,
                 decisions: np.ndarray | None = None) -> np.ndarray:
    """bool (N,): the samples the protocol calls positive at its 1%-FPR operating point.

    Args:
        scores: (N,) membership scores (higher = member). labels: (N,) 1 = member.
        protocol: its ROC convention (``heldout_positive``: the statistic = -scores with held-out
            images positive; ``strict_fpr``: FPR < 1%).
        decisions: (N,) bool decisions at thresholds fixed elsewhere (returned as they are).
    """
    if decisions is not None:
        return np.asarray(decisions, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    key, pos = (-s, ~y) if protocol.heldout_positive else (s, y)
    return key >= threshold_at_1fpr(key, pos, strict=protocol.strict_fpr)


def _replicate_flags(scored: ScoredArm, labels: np.ndarray, protocol: Protocol, index: np.ndarray) -> np.ndarray:
    """bool (B, N): the flags of every replicate's columns, thresholds recomputed per replicate
    (decisions gathered as they are when the protocol transfers thresholds)."""
    if scored.decisions is not None:
        return np.asarray(scored.decisions, dtype=bool)[index]
    s = np.asarray(scored.scores["tpr_at_1fpr"], dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if not np.isfinite(s).all():  # the row-by-row rule (NaN / inf scores keep its exact ordering)
        return np.stack([flag_at_1fpr(s[row], labels, protocol) for row in index])
    # flag_at_1fpr of every replicate at once: the same key, positives and thresholds
    key, pos = (-s[index], ~y) if protocol.heldout_positive else (s[index], y)
    return key >= thresholds_at_1fpr_rows(key, pos, strict=protocol.strict_fpr)[:, None]


# ---------------------------------------------------------------------- the measures


def _jaccard_counts(fa: np.ndarray, fb: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(|A|, |B|, |A & B|, |A | B|) over the columns ``rows`` of flags (..., N) -> (...,) each."""
    a, b = fa[..., rows], fb[..., rows]
    return a.sum(-1), b.sum(-1), (a & b).sum(-1), (a | b).sum(-1)


def _jaccard_values(n_a: np.ndarray, n_b: np.ndarray, both: np.ndarray, either: np.ndarray) -> np.ndarray:
    """|A & B| / |A | B|, NaN where either set is empty."""
    ok = (n_a > 0) & (n_b > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, both / np.where(either > 0, either, 1), np.nan).astype(np.float64)


def _jaccard(a: str, b: str, subset: str, flags: tuple[np.ndarray, np.ndarray],
             reps: tuple[np.ndarray, np.ndarray] | None, rows: np.ndarray, level: float) -> JaccardResult:
    n_a, n_b, both, either = (int(v) for v in _jaccard_counts(flags[0], flags[1], rows))
    value = float(_jaccard_values(np.asarray(n_a), np.asarray(n_b), np.asarray(both), np.asarray(either)))
    empty = [name for name, k in ((a, n_a), (b, n_b)) if k == 0]
    reason = ""
    if empty:
        reason = (f"Jaccard undefined: {' and '.join(empty)} flag{'s' if len(empty) == 1 else ''} no "
                  f"{_SPLIT_WORDS[subset]} at the 1%-FPR threshold")
    ci = (float("nan"), float("nan"))
    if reps is not None:
        ci = percentile_interval(_jaccard_values(*_jaccard_counts(reps[0], reps[1], rows)), level=level)
    return JaccardResult(subset=subset, value=value, ci=ci, n_a=n_a, n_b=n_b, n_both=both, n_either=either,
                         reason=reason)


def _centred_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks of every row of x (B, n) minus their row mean, and their row sums of squares."""
    rx = stats.rankdata(x, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    return rx, (rx * rx).sum(axis=1)


def _row_spearman(x: np.ndarray, y: np.ndarray, *, ranks: tuple | None = None) -> np.ndarray:
    """Spearman correlation of every row of x and y (B, n) (average ranks, as ``spearmanr``);
    ``ranks``: (x's, y's) :func:`_centred_ranks` already computed (each attack's are shared by
    all its pairs)."""
    (rx, sx), (ry, sy) = ranks if ranks is not None else (_centred_ranks(x), _centred_ranks(y))
    den = np.sqrt(sx * sy)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)


def _spearman(split: str, sa: np.ndarray, sb: np.ndarray, index: np.ndarray | None, rows: np.ndarray,
              level: float, names: tuple[str, str], ranks: Callable[[str], tuple] | None = None) -> SpearmanResult:
    x, y = sa[rows], sb[rows]
    reason = ""
    if rows.size < 2:
        rho = float("nan")
        reason = f"Spearman undefined: fewer than 2 {_SPLIT_WORDS[split]}s"
    elif np.ptp(x) == 0 or np.ptp(y) == 0:
        rho = float("nan")
        const = [n for n, v in zip(names, (x, y)) if np.ptp(v) == 0]
        reason = f"Spearman undefined: {' and '.join(const)} score{'s' if len(const) == 1 else ''} constant on the {split} split"
    else:
        rho = float(stats.spearmanr(x, y).statistic)
    ci = (float("nan"), float("nan"))
    if index is not None and rows.size >= 2:
        cols = index[:, rows]
        pair = None if ranks is None else (ranks(names[0]), ranks(names[1]))
        ci = percentile_interval(_row_spearman(sa[cols] if pair is None else None,
                                               sb[cols] if pair is None else None, ranks=pair), level=level)
    return SpearmanResult(split=split, rho=rho, ci=ci, n=int(rows.size), reason=reason)


# ---------------------------------------------------------------------- the facade


def _evaluations(run, protocol: Protocol, attacks: Sequence[str] | None, evaluations: Mapping | None,
                 n_boot: int, level: float, seed: int) -> dict:
    """attack -> Evaluation: those given, else new ones under ``protocol``."""
    from .evaluator import Evaluation  # the evaluator imports nothing from here

    names = list(run.attacks) if attacks is None else list(attacks)
    for name in names:
        if name not in run.attacks:
            raise UnknownNameError(f"attacks: {name!r} is not in run {run.path}; it holds {run.attacks}")
    if not names:
        raise LdminvError(f"attacks: expected at least one attack of run {run.path}, got none")
    given = dict(evaluations or {})
    return {name: given[name] if name in given else
            Evaluation(run, name, protocol, n_boot=n_boot, level=level, seed=seed) for name in names}


def agreement(run, protocol: Protocol | str = "standard", *, attacks: Sequence[str] | None = None,
              arm: str = "baseline", drop: float | None = None, n_boot: int = DEFAULT_N_BOOT,
              level: float = 0.95, seed: int = 0, folds: int | None = None,
              evaluations: Mapping | None = None) -> Agreement:
    """The agreement of a run's attacks under one protocol (see the module docstring).

    Args:
        run: a finished :class:`~ldminv_core.runs.Run`.
        protocol: a :class:`Protocol` or its name (``folds`` and ``seed`` make it from a name).
        attacks: the attacks compared (default: every attack of the run, in its order).
        arm: "baseline" (default) or "masked" (maskable attacks at ``drop``, the others' baseline).
        drop: the masked arm's drop (None: the protocol's default; chosen per fold under ``honest``).
        n_boot: bootstrap replicates (0 = no intervals). level: interval level.
        seed: seed of the bootstrap design (the evaluation's).
        evaluations: attack -> :class:`~.evaluator.Evaluation` already made under ``protocol``
            (the app's cached ones); their ``n_boot``, ``level`` and ``seed`` are then used.

    Returns:
        :class:`Agreement`; flags (N,) per attack, pairs, the who-flags-whom rows.

    Raises:
        UnknownNameError: an attack not in the run, an unknown protocol or arm.
        LdminvError: no attack, or evaluations under another protocol.
    """
    # 1. the protocol and every attack's evaluation
    if arm not in AGREEMENT_ARMS:
        raise UnknownNameError(f"arm: expected one of {', '.join(AGREEMENT_ARMS)}, got {arm!r}")
    proto = protocol if isinstance(protocol, Protocol) else make_protocol(protocol, folds=folds, seed=seed)
    evs = _evaluations(run, proto, attacks, evaluations, n_boot, level, seed)
    first = next(iter(evs.values()))
    for name, ev in evs.items():
        if ev.protocol != proto:
            raise LdminvError(f"evaluations: {name!r} is under {ev.protocol!r}, expected {proto!r}")
    labels = first.labels
    # 2. every attack's arm scored as the protocol scores it, and its flags at 1% FPR
    p = proto.default_drop if drop is None else float(drop)
    arms, scored = {}, {}
    for name, ev in evs.items():
        arms[name] = arm if (arm == "masked" and ev.maskable) else "baseline"
        scored[name] = proto.score_arm(ev, arms[name], p if arms[name] == "masked" else None, None)[0]
    flags = {name: flag_at_1fpr(sc.scores["tpr_at_1fpr"], labels, proto, decisions=sc.decisions)
             for name, sc in scored.items()}
    # 3. the design (the evaluation's: split x fold) and every replicate's flags
    design = None
    if first.n_boot > 0:
        design = resample_index(combine_strata(labels.astype(np.int64), first.folds()),
                                n_boot=first.n_boot, seed=first.seed)
    rep_flags = ({name: _replicate_flags(sc, labels, proto, design) for name, sc in scored.items()}
                 if design is not None else None)
    # 4. the pairs
    subsets = {"all": np.arange(labels.size), "member": np.flatnonzero(labels == 1),
               "heldout": np.flatnonzero(labels == 0)}
    pairs = []
    rank_memo: dict = {}

    def ranks_of(split: str) -> Callable[[str], tuple]:
        """The centred replicate ranks of an attack's scores on ``split`` (computed once per attack)."""
        def get(name: str) -> tuple:
            if (name, split) not in rank_memo:
                s = np.asarray(scored[name].scores["auroc"], dtype=np.float64)
                rank_memo[name, split] = _centred_ranks(s[design[:, subsets[split]]])
            return rank_memo[name, split]
        return get

    for a, b in itertools.combinations(evs, 2):
        reps = (rep_flags[a], rep_flags[b]) if rep_flags is not None else None
        jac = {k: _jaccard(a, b, k, (flags[a], flags[b]), reps, subsets[k], first.level) for k in JACCARD_SUBSETS}
        sa, sb = (np.asarray(scored[x].scores["auroc"], dtype=np.float64) for x in (a, b))
        spear = {k: _spearman(k, sa, sb, design, subsets[k], first.level, (a, b),
                              ranks_of(k) if design is not None else None) for k in SPEARMAN_SPLITS}
        pairs.append(PairAgreement(a=a, b=b, jaccard=jac, spearman=spear))
    return _assemble(run, proto, evs, arms, drop, flags, tuple(pairs), subsets, first)


def _assemble(run, proto: Protocol, evs: dict, arms: dict, drop: float | None, flags: dict,
              pairs: tuple[PairAgreement, ...], subsets: dict, first) -> Agreement:
    """The :class:`Agreement`: counts, the who-flags-whom rows (most flags first, then sample
    id) and one warning per degenerate case (issued as a ``RuntimeWarning`` too)."""
    names = tuple(evs)
    counts = {n: {k: int(flags[n][subsets[k]].sum()) for k in JACCARD_SUBSETS} for n in names}
    samples = run.samples
    split = np.where(first.labels == 1, "member", "heldout")
    n_flag = np.sum([flags[n] for n in names], axis=0)
    order = np.lexsort((first.sample_ids, -n_flag))
    rows = tuple(FlaggedSample(index=int(i), sample_id=int(first.sample_ids[i]), file=str(samples["path"].iloc[i]),
                               split=str(split[i]), flagged_by=tuple(n for n in names if flags[n][i]))
                 for i in order)
    notes = [f"{n} flags no sample at the 1%-FPR threshold: its Jaccard indices are undefined (NaN)"
             for n in names if counts[n]["all"] == 0]
    notes += [f"{p.a} vs {p.b}: {s.reason}" for p in pairs for s in p.spearman.values() if s.reason]
    for note in notes:
        warnings.warn(note, RuntimeWarning, stacklevel=3)
    return Agreement(protocol=proto, attacks=names, arms=arms, drop=drop, flagged=flags, counts=counts,
                     pairs=pairs, samples=rows, warnings=tuple(notes), n_boot=int(first.n_boot),
                     level=float(first.level), seed=int(first.seed))
