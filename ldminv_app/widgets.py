"""The shared widgets: selectors bound to the session (attack, timestep with which t the protocol's
numbers use, evaluation protocol with the honest protocol's folds), the pages' lazy tabs and the
image-folder source of a new analysis (a folder typed in, or uploads saved to one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.runs import Run

from . import state
from .activity import counts_as_page
from .notices import show_error
from .timestep_text import headline_t_caption, protocol_t_text, sidebar_t_agrees
from .uploads import save_uploads, upload_digest

__all__ = ["attack_selector", "timestep_selector", "PROTOCOL_LABELS", "protocol_selector", "lazy_tabs", "data_source"]


def lazy_tabs(labels: tuple[str, ...] | list[str], *, key: str) -> list:
    """``st.tabs(labels, key=key, on_change="rerun")``: each tab's ``open`` (True or False: the
    tabs track their state) says whether to draw it (the page draws only the open one). The open tab is kept across a visit to another page:
    Streamlit forgets a widget's state when a run of another page does not draw it, so it is
    remembered under ``key + "__open"`` and put back before the tabs are drawn again."""
    memo = f"{key}__open"
    if key not in st.session_state and st.session_state.get(memo) in labels:
        st.session_state[key] = st.session_state[memo]
    tabs = st.tabs(list(labels), key=key, on_change="rerun")
    st.session_state[memo] = next((label for label, tab in zip(labels, tabs) if tab.open), labels[0])
    return tabs


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


def timestep_selector(run: Run, attack: str, *, key: str = "sidebar_t", container: Any = None,
                      reruns_page: bool = True) -> int | None:
    """A select-slider bound to the shared timestep of ``attack``; returns the t index.

    ``reruns_page`` False (a page that shows nothing at the sidebar's t, as the Findings page): the
    slider and its caption are a fragment of their own, so moving it reruns them alone."""
    if reruns_page or container is not None:
        return _timestep_widgets(run, attack, key=key, container=container)
    t_index = state.current_t_index(run, attack)

    @st.fragment
    @counts_as_page
    def alone() -> None:
        _timestep_widgets(run, attack, key=key, container=None)

    alone()
    return t_index


def _timestep_widgets(run: Run, attack: str, *, key: str, container: Any) -> int | None:
    """The slider and the caption of which t the protocol's numbers use; the t index."""
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
        where.number_input("Folds", *state.FOLDS_RANGE, step=1, key="sidebar_folds", on_change=_sync,
                           args=("sidebar_folds", state.FOLDS), help="Stratified cross-fitting folds (seeded).")
    return state.current_protocol()


def data_source(label: str, role: str, default: str, *, runs_root: Path) -> str:
    """A folder path typed in, or uploaded images / zips saved to a folder under
    ``runs_root/uploads/<digest of the content>/<role>``; returns the path ("" while there is none)."""
    mode = st.radio(f"{label} images", ["Folder", "Upload"], key=f"new_{role}_mode", horizontal=True)
    if mode == "Folder":
        st.session_state.setdefault(f"new_{role}_path", default)
        return st.text_input(f"{label} folder", key=f"new_{role}_path").strip()
    files = st.file_uploader(
        f"{label} images or a zip of them",
        type=["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "zip", "jsonl", "csv"],
        accept_multiple_files=True,
        key=f"new_{role}_upload",
    )
    if not files:
        return ""
    pairs = [(f.name, f.getvalue()) for f in files]
    dest = runs_root / "uploads" / upload_digest(pairs) / role
    saved_key = f"_saved_upload_{role}"
    if st.session_state.get(saved_key) == str(dest) and dest.is_dir():
        folder = dest  # saved by an earlier rerun (the digest names the content): not unpacked again
    else:
        try:
            folder = save_uploads(pairs, dest)
        except Exception as exc:  # noqa: BLE001 - a refused upload is a message, nothing is saved
            st.session_state[saved_key] = None
            show_error(exc, what=f"{label} upload")
            return ""
        st.session_state[saved_key] = str(folder)
    st.caption(f"Saved to {folder}")
    return str(folder)
