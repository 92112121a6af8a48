"""Which timestep a page's numbers use, in words: the protocol's headline t against the sidebar's
t (computed from an Evaluation's cheap parts, never its arms).
"""
from __future__ import annotations

from .cards import METRIC_LABELS

__all__ = ["headline_t_caption", "protocol_t_text", "sidebar_t_agrees", "t_scope_text"]


def headline_t_caption(ev) -> str:
    """Which t the headline numbers of ``ev`` (an ``Evaluation``) use and which protocol chose it,
    in words; computed from the evaluation's cheap parts (per-t curve, fold choices), never its arms."""
    ts = ev.timesteps
    per_t = ev.per_t()
    best = ev.headline_t_index()
    name = ev.protocol.name
    if name == "standard":
        return (f"Headline t = {ts[best]}, chosen by the standard protocol: the best baseline AUROC on all "
                f"samples ({per_t['auroc'][best]:.4f}; optimistic).")
    if name == "paper":
        picks = ev.best_t("baseline")
        return (f"Headline t chosen by the paper protocol, each metric its own best on all samples: baseline "
                f"AUROC t = {picks['auroc']}, TPR@1%FPR t = {picks['tpr_at_1fpr']}, ASR t = "
                f"{picks['asr']} (masked, random and quartiles pick their own).")
    fold_ts = [ts[ev.fold_t_index(f)] for f in sorted(set(int(x) for x in ev.folds()))]
    return (f"Headline t chosen by the honest protocol on the other folds ({ev.protocol.folds} folds): t per fold "
            f"{', '.join(map(str, fold_ts))}. Best baseline AUROC on all samples (descriptive): t = {ts[best]}.")


def _protocol_ts(ev) -> list[int]:
    """The t's of the protocol's baseline numbers: one (standard), one per metric (paper: AUROC,
    TPR@1%FPR, ASR), one per fold (honest)."""
    ts = ev.timesteps
    if ev.protocol.name == "paper":
        picks = ev.best_t("baseline")
        return [picks[m] for m in ("auroc", "tpr_at_1fpr", "asr")]
    if ev.protocol.name == "honest":
        return [ts[ev.fold_t_index(f)] for f in sorted(set(int(x) for x in ev.folds()))]
    return [ts[ev.headline_t_index()]]


def protocol_t_text(ev) -> str:
    """The t of the protocol's headline numbers in a few words: "t = 60" (standard), "t: AUROC 60,
    TPR@1%FPR 40, ASR 60" (paper; the baseline's, every arm picks its own), "t = 60 in every fold"
    or "t per fold: 60, 50, 60" (honest)."""
    picks = _protocol_ts(ev)
    if ev.protocol.name == "paper" and len(set(picks)) > 1:
        return "t: " + ", ".join(f"{METRIC_LABELS[m]} {t}" for m, t in zip(("auroc", "tpr_at_1fpr", "asr"), picks))
    if ev.protocol.name == "honest":
        return f"t = {picks[0]} in every fold" if len(set(picks)) == 1 else "t per fold: " + ", ".join(map(str, picks))
    return f"t = {picks[0]}"


def sidebar_t_agrees(ev, t_index: int) -> bool:
    """True when every t of the protocol's baseline numbers is the sidebar's t."""
    return set(_protocol_ts(ev)) == {ev.timesteps[t_index]}


def t_scope_text(ev, t_index: int, *, fixed: str, follows: str) -> str:
    """Which numbers of a page keep the protocol's t (``fixed``) and which follow the sidebar's
    (``follows``), naming both t's where they differ: "cards ... at the standard protocol's t = 60 ·
    drop curves at the sidebar's t = 100", or "numbers and curves all at t = 60 ..." when they agree."""
    t = ev.timesteps[t_index]
    name = ev.protocol.name
    if sidebar_t_agrees(ev, t_index):
        return f"numbers and curves all at t = {t} (the {name} protocol's t and the sidebar's)"
    return f"{fixed} at the {name} protocol's {protocol_t_text(ev)} · {follows} at the sidebar's t = {t}"
