"""The exposure list of a run for model owners: the member images most at risk under a protocol.

For one chosen attack, every member image gets its rank among the members (1 = the most
member-like score, the scores the protocol evaluates the arm's AUROC on: the headline t under
``standard``, the AUROC's own t under ``paper``, the calibrated out-of-fold scores under
``honest``), the attacks of the run that flag it at the 1%-FPR threshold, and its decoder
log-volume (the run's geometry stage); the list is sorted most exposed first (rank 1 first).

Flags are membership decisions: a member is flagged by an attack when its score is at or above
:func:`~.low_fpr.threshold_at_1fpr` of that attack's scores (members positive, at most 1% of the
held-out images at or above it; strictly below 1% when the protocol's FPR bound is strict), and
under a protocol that transfers thresholds (``honest``) when it is at or above its fold's
transferred threshold (the protocol's own decisions). Every attack is scored as the protocol
scores its arms (:meth:`~.protocols.base.Protocol.score_arm`): the masked arm at the chosen drop
for maskable attacks when the masked arm is asked for, else the baseline.

Degenerate cases warn (``RuntimeWarning``) and say why in :attr:`ExposureList.notes`: no geometry
stage (log-volume NaN with the reason; masked arms fall back to the baseline), an attack that
cannot be masked (its baseline), a run with one class only (no thresholds, nobody flagged).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import LdminvError, UnknownNameError
from .evaluator import Evaluation
from .low_fpr import threshold_at_1fpr

__all__ = ["ARMS", "ExposureEntry", "ExposureList", "exposure_list", "member_ranks", "flags_at_1fpr"]

#: The arms an exposure list can rank by.
ARMS = ("baseline", "masked")


@dataclass(frozen=True)
class ExposureEntry:
    """One member image of the list.

    Attributes:
        row: its row in the run (0-based); sample_id, path, caption: from the run's samples.
        rank: 1-based rank of its score among the members (1 = most member-like; ties by row
            order; a NaN score ranks last).
        score: its membership score (higher = member) under the chosen attack and arm.
        flagged_by: the attacks that flag it at the 1%-FPR threshold, in the run's attack order.
        log_volume: its decoder log-volume (NaN without the geometry stage).
    """

    row: int
    sample_id: int
    path: str
    caption: str | None
    rank: int
    score: float
    flagged_by: tuple[str, ...]
    log_volume: float

    @property
    def n_flagged(self) -> int:
        return len(self.flagged_by)


@dataclass(frozen=True)
class ExposureList:
    """The member images of a run, most exposed first, under one attack, arm and protocol.

    Attributes:
        attack: the attack the ranks come from; arm: its arm ("baseline" or "masked").
        protocol: the protocol's name; drop_percent: the masked arm's drop (None: the baseline,
            or chosen per fold); t: the timestep of the ranks (None: per fold, or no timesteps).
        attacks: every attack asked whether it flags (the run's order); attack_arms: attack ->
            the arm it was scored with; flagged_counts: attack -> members it flags.
        n_members, n_heldout: the run's classes.
        entries: one per member, sorted by rank.
        log_volume_reason: why the log-volumes are NaN (None when they are the run's).
        notes: what was degenerate and what was done about it (each also warned).
    """

    attack: str
    arm: str
    protocol: str
    drop_percent: float | None
    t: int | None
    attacks: tuple[str, ...]
    attack_arms: dict[str, str]
    flagged_counts: dict[str, int]
    n_members: int
    n_heldout: int
    entries: tuple[ExposureEntry, ...]
    log_volume_reason: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def top(self, k: int) -> tuple[ExposureEntry, ...]:
        """The ``k`` most exposed members."""
        return self.entries[:max(int(k), 0)]


def member_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """1-based rank of every member's score among the members (1 = highest; ties by row order;
    NaN last); 0 for held-out rows.

    Args:
        scores: (N,) membership scores (higher = member). labels: (N,) 1 = member.

    Returns:
        int64 (N,).
    """
    s = np.asarray(scores, dtype=np.float64)
    members = np.flatnonzero(np.asarray(labels).astype(bool))
    key = np.where(np.isnan(s[members]), np.inf, -s[members])
    order = members[np.argsort(key, kind="stable")]
    ranks = np.zeros(s.shape[0], dtype=np.int64)
    ranks[order] = np.arange(1, order.size + 1)
    return ranks


def flags_at_1fpr(ev: Evaluation, arm: str, drop: float | None) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The membership flags of an arm at the 1%-FPR threshold, as the protocol scores it.

    Args:
        ev: the attack's evaluation (its protocol). arm: "baseline" or "masked".
        drop: the masked arm's drop (None: the protocol's default).

    Returns:
        (flags bool (N,), rank scores float64 (N,) (the AUROC's scores), the AUROC's t or None).
    """
    p = ev._drop_arg(drop) if arm == "masked" else None
    scored, best_t, _ = ev.protocol.score_arm(ev, arm, p, None)
    if scored.decisions is not None:  # thresholds transferred between folds: the protocol's decisions
        flags = np.asarray(scored.decisions, dtype=bool)
    else:
        s = np.asarray(scored.scores["tpr_at_1fpr"], dtype=np.float64)
        flags = s >= threshold_at_1fpr(s, ev.labels, strict=ev.protocol.strict_fpr)
    return flags, np.asarray(scored.scores["auroc"], dtype=np.float64), best_t.get("auroc")


def _say(notes: list[str], text: str) -> None:
    notes.append(text)
    warnings.warn(text, RuntimeWarning, stacklevel=3)


def _arm_of(ev: Evaluation, arm: str, notes: list[str], *, chosen: bool) -> str:
    """The arm an attack is scored with: ``arm``, or the baseline when it cannot be masked (said
    for the chosen attack; the others' arms are in :attr:`ExposureList.attack_arms`)."""
    if arm == "baseline":
        return "baseline"
    if not ev.maskable:
        if chosen:
            _say(notes, f"{ev.attack}: cannot be masked; ranked and flagged by its baseline")
        return "baseline"
    if not ev.run.has_geometry:
        return "baseline"
    return "masked"


def _log_volume(run, notes: list[str]) -> tuple[np.ndarray, str | None]:
    if run.has_geometry:
        return np.asarray(run.log_volume, dtype=np.float64), None
    reason = (f"run {run.path} has no geometry stage (finished: {', '.join(run.stages_done) or 'none'}): "
              "log-volume NaN, masked arms replaced by the baseline")
    _say(notes, reason)
    return np.full(len(run), np.nan), reason


def exposure_list(evaluations: Mapping[str, Evaluation], *, attack: str, arm: str = "masked",
                  drop: float | None = None) -> ExposureList:
    """The member images of a run sorted most exposed first (see the module docstring).

    Args:
        evaluations: attack -> its :class:`Evaluation` of one run under one protocol (every
            attack that should be asked whether it flags; the app passes its cached ones).
        attack: the attack the ranks come from (a key of ``evaluations``).
        arm: "masked" (the masked arm at ``drop`` where the attack can be masked and the run has
            its geometry, else the baseline, with a note) or "baseline".
        drop: the masked arm's drop percentage; None = the protocol's default (chosen per fold
            under ``honest``).

    Returns:
        :class:`ExposureList` with one entry per member (N_members,), sorted by rank.

    Raises:
        UnknownNameError: ``attack`` not in ``evaluations``, or an unknown ``arm``.
        LdminvError: no evaluations, or evaluations of different runs or protocols.
    """
    if not evaluations:
        raise LdminvError("evaluations: expected at least one Evaluation, got none")
    if attack not in evaluations:
        raise UnknownNameError(f"attack: {attack!r} is not among the evaluations; they hold {sorted(evaluations)}")
    if arm not in ARMS:
        raise UnknownNameError(f"arm: expected one of {ARMS}, got {arm!r}")
    main = evaluations[attack]
    for name, ev in evaluations.items():
        if ev.run.path != main.run.path or ev.protocol != main.protocol:
            raise LdminvError(f"evaluations: {name!r} is of run {ev.run.path} under {ev.protocol!r}; expected "
                              f"run {main.run.path} under {main.protocol!r} like {attack!r}")
    run, labels, notes = main.run, main.labels, []
    lv, lv_reason = _log_volume(run, notes)
    if labels.all() or not labels.any():
        _say(notes, f"run {run.path} holds one class only ({int(labels.sum())} members, "
                    f"{int((1 - labels).sum())} held-out): no 1%-FPR threshold, nobody flagged")
    order = [a for a in run.attacks if a in evaluations]
    arms = {a: _arm_of(evaluations[a], arm, notes, chosen=a == attack) for a in order}
    flags: dict[str, np.ndarray] = {}
    rank_scores, t = np.full(len(labels), np.nan), None
    for a in order:
        f, s, t_a = flags_at_1fpr(evaluations[a], arms[a], drop)
        flags[a] = f & labels.astype(bool)
        if a == attack:
            rank_scores, t = s, t_a
    ranks = member_ranks(rank_scores, labels)
    samples = run.samples
    captions = samples["caption"].tolist() if "caption" in samples.columns else [None] * len(labels)
    members = np.flatnonzero(labels.astype(bool))
    entries = [ExposureEntry(
        row=int(i), sample_id=int(main.sample_ids[i]), path=str(samples["path"].iloc[i]),
        caption=None if c is None or (isinstance(c, float) and math.isnan(c)) else str(c),
        rank=int(ranks[i]), score=float(rank_scores[i]), flagged_by=tuple(a for a in order if flags[a][i]),
        log_volume=float(lv[i])) for i, c in ((i, captions[i]) for i in members)]
    entries.sort(key=lambda e: e.rank)
    used_drop = None
    if arms[attack] == "masked":
        used_drop = main._drop_arg(drop)
    return ExposureList(
        attack=attack, arm=arms[attack], protocol=main.protocol.name, drop_percent=used_drop,
        t=None if t is None else int(t), attacks=tuple(order), attack_arms=arms,
        flagged_counts={a: int(flags[a].sum()) for a in order}, n_members=int(labels.sum()),
        n_heldout=int(len(labels) - labels.sum()), entries=tuple(entries), log_volume_reason=lv_reason,
        notes=tuple(notes))
