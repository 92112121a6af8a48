"""The Model & data page's view of the chosen model before anything runs: the detected family, how
it is conditioned, its schedule and prediction type, the latent shape and the decoder-geometry
engine the analysis will use (:func:`ldminv_core.models.family_summary.summarize_model`, JSON only),
or the reason the model cannot be analysed, as a message.

The summary is cached per model reference and the modification times of the folder's entries, so
an edited or rebuilt folder is read again and typing elsewhere on the page reads nothing.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from ldminv_core.errors import LdminvError
from ldminv_core.models.family_summary import FamilySummary, summarize_model

from .notices import show_error

__all__ = ["model_summary", "REFUSED_WHAT"]

#: The prefix of the message shown for a model that cannot be analysed.
REFUSED_WHAT = "This model cannot be analysed"


def _stamp(model: str) -> tuple:
    """(name, mtime) of a local folder's entries and of its sub-folders' entries; () for a hub id."""
    root = Path(model).expanduser()
    if not root.is_dir():
        return ()
    out: list[tuple[str, int]] = []
    try:
        for entry in sorted(root.iterdir()):
            out.append((entry.name, entry.stat().st_mtime_ns))
            if entry.is_dir():
                out.extend((f"{entry.name}/{e.name}", e.stat().st_mtime_ns) for e in sorted(entry.iterdir()))
    except OSError:  # unreadable: the summary names the problem
        pass
    return tuple(out)


@st.cache_data(max_entries=64, ttl=600, show_spinner=False)
def _summary(model: str, stamp: tuple) -> tuple[FamilySummary | None, str | None]:
    """(summary, None), or (None, the reason) for a model the loader would refuse."""
    try:
        return summarize_model(model), None
    except LdminvError as exc:
        return None, str(exc)


def model_summary(model: str) -> bool:
    """Show what ``model`` (a folder or hub id; "" shows nothing) is and how it will be analysed.

    Returns:
        False when the model cannot be analysed (the reason is shown as an error, no traceback),
        else True.
    """
    if not model:
        return True
    try:
        summary, error = _summary(model, _stamp(model))
    except Exception as exc:  # noqa: BLE001 - an unexpected failure is a message, not a traceback wall
        show_error(exc, what=REFUSED_WHAT)
        return False
    if error is not None:
        st.error(f"{REFUSED_WHAT}: {error}")
        return False
    what, value = zip(*summary.rows())
    table = pd.DataFrame({"detected from its configs, before anything runs (no weights read)": value},
                         index=pd.Index([w.capitalize() for w in what], name="Model"))
    st.table(table)
    return True
