"""The shared selectors bound to the session: attack, timestep (with which t the protocol's numbers
use) and evaluation protocol (with the honest protocol's folds).
"""
from __future__ import annotations

from typing import Any

import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.runstore import Run

from . import state
from .timestep_text import headline_t_caption, protocol_t_text, sidebar_t_agrees

__all__ = ["attack_selector", "timestep_selector", "PROTOCOL_LABELS", "protocol_selector"]


def _sync(widget_key: str, target: str) -> None:
    st.session_state[target] = st.session_state[widget_key]


def attack_selector(run: Run, *, key: str, label: str = "Attack", container: Any = None) -> str:
    """A selectbox bound to the shared attack (all pages use the same one)."""
    where = container if container is not None else st
    st.session_state[key] = state.current_attack(run)
    where.selectbox(
        label,
        run.attacks,
        key=key,
        format_func=attack_label,
        on_change=_sync,
        args=(key, state.ATTACK),
        help="Membership-inference attack whose scores every page shows.",
    )
    return state.current_attack(run)


def _sync_t(run: Run, attack: str, key: str) -> None:
    state.set_timestep(run, attack, st.session_state[key])


def timestep_selector(run: Run, attack: str, *, key: str = "sidebar_t", container: Any = None) -> int | None:
    """A select-slider bound to the shared timestep of ``attack``; returns the t index."""
    where = container if container is not None else st
    t_index = state.current_t_index(run, attack)
    if t_index is None:
        where.caption(f"{attack_label(attack)} gives one score per sample: no timestep, not maskable.")
        return None
    timesteps = run.timesteps(attack)
    st.session_state[key] = timesteps[t_index]
    if len(timesteps) > 1:
        where.select_slider(
            "Timestep t",
            options=timesteps,
            key=key,
            on_change=_sync_t,
            args=(run, attack, key),
            help="Timestep of the per-timestep views: the charts and tables that name a t (AUROC against the "
            "drop %, the dimension ranking, AUROC by quartile at one t, per-sample scores). The protocol's "
            "numbers (metric cards, findings, ROC curves, metrics tables) keep the t the protocol chooses. "
            "Defaults to the best baseline AUROC.",
        )
    ev = state.evaluation(run, attack)
    t = timesteps[t_index]
    if sidebar_t_agrees(ev, t_index):
        lead = f"t = {t}: the per-timestep views and the protocol's numbers use the same t. "
    else:
        lead = (f":orange[**Sidebar t = {t}; the protocol's numbers: {protocol_t_text(ev)}.**] t = {t} sets the "
                "per-timestep views (the charts and tables that name it); the metric cards, findings, ROC curves "
                f"and metrics tables stay at the protocol's {protocol_t_text(ev)}. ")
    where.caption(lead + headline_t_caption(ev))
    return t_index


PROTOCOL_LABELS = {"standard": "standard", "paper": "paper", "honest": "honest (cross-fitted)"}


def protocol_selector(*, container: Any = None) -> str:
    """The sidebar's protocol choice (and the honest protocol's folds); every page honours it."""
    where = container if container is not None else st
    st.session_state["sidebar_protocol"] = state.current_protocol()
    where.selectbox(
        "Evaluation protocol", list(PROTOCOL_LABELS), key="sidebar_protocol", format_func=PROTOCOL_LABELS.get,
        on_change=_sync, args=("sidebar_protocol", state.PROTOCOL),
        help="standard: members positive, TPR at FPR <= 1%, t chosen on the same samples (optimistic). "
        "paper: held-out positive TPR at FPR < 1%, each metric at its own best t (as the paper's code). "
        "honest: t, drop % and the 1% FPR threshold chosen on the other folds (K-fold cross-fitting).",
    )
    if state.current_protocol() == "honest":
        st.session_state["sidebar_folds"] = state.current_folds()
        where.number_input("Folds", 2, 10, step=1, key="sidebar_folds", on_change=_sync,
                           args=("sidebar_folds", state.FOLDS), help="Stratified cross-fitting folds (seeded).")
    return state.current_protocol()
