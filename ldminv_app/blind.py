"""The blind baseline (the files alone) as the pages show it: its result with a spinner, its ROC
curve beside the attack's, and the distribution-shift note.
"""
from __future__ import annotations

import streamlit as st

from ldminv_core.evaluation import convention_roc
from ldminv_core.formatting import format_rate

from ldminv_core.formatting import format_rate_ci

__all__ = ["BLIND_CURVE", "blind_result", "blind_curve", "shift_note"]


#: Legend name of the blind baseline's ROC curve (drawn dashed beside the attack's).
BLIND_CURVE = "blind baseline, files only"


def blind_result(ev):
    """``ev.blind()`` (an ``Evaluation``'s :class:`BlindResult`, computed once per run and protocol;
    its fits run with the BLAS thread pool at one thread), with a spinner while it is fitted."""
    with st.spinner("Fitting the blind baseline on the files alone (once per run)…"):
        return ev.blind()


def blind_curve(ev):
    """The blind baseline's ROC curve (all feature groups) in ``ev``'s protocol convention, the
    same as the attack curves (``convention_roc``), with its AUROC: (RocCurve, auroc), or None
    when the blind baseline is unavailable."""
    blind = blind_result(ev)
    if not blind.available or "all" not in blind.scores:
        return None
    return convention_roc(blind.scores["all"], ev.labels, ev.protocol), float(blind.group("all").auroc)


def shift_note(ev) -> str | None:
    """One line for beside an attack's ROC when the files alone separate the folders (None when
    they do not): the blind AUROC and that the attack's curve is then no evidence of membership."""
    blind = blind_result(ev)
    if not blind.separable:
        return None
    g = blind.group("all")
    by = ", ".join(blind.separating_groups) or "all feature groups together"
    return (f":orange[**Distribution shift.**] The files alone separate these folders (blind AUROC "
            f"{format_rate(g.auroc, 3)}, 95% CI {format_rate_ci(g.ci['auroc'], 3)}; separating: {by}): the "
            "attack's curve on them is not evidence of membership. See the shift check on the Findings page.")
