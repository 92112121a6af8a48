"""The Model & data page's view of the chosen model before anything runs: the detected family, how
it is conditioned, its schedule and prediction type, the latent shape and the decoder-geometry
engine the analysis will use (:func:`ldminv_core.models.family_summary.summarize_model`, JSON only;
for a single-file checkpoint with its config folder, that folder's family and the file's name and
SHA-256; for a custom adapter, :func:`~ldminv_core.models.family_summary.summarize_adapter`, which
imports and runs the adapter file), or the reason the model cannot be analysed, as a message.

The summary is cached per model reference and the modification times of the folder's entries (an
adapter file: its SHA-256; a checkpoint file: its size and modification time), so an edited or
rebuilt model is read again and typing elsewhere on the page reads (and runs) nothing.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

from ldminv_core.errors import LdminvError
from ldminv_core.models.family_summary import FamilySummary, summarize_adapter, summarize_model

from .notices import show_error

__all__ = ["model_summary", "REFUSED_WHAT"]

#: The prefix of the message shown for a model that cannot be analysed.
REFUSED_WHAT = "This model cannot be analysed"


def _stamp(model: str | None) -> tuple:
    """(name, mtime) of a local folder's entries and of its sub-folders' entries; a file's (size,
    mtime, SHA-256 for a small file such as an adapter); () for a hub id."""
    if not model:
        return ()
    root = Path(model).expanduser()
    if root.is_file():
        try:
            stat = root.stat()
            small = stat.st_size <= 1 << 20  # an adapter .py: its bytes, so an edit within the same second counts
            return (stat.st_size, stat.st_mtime_ns, hashlib.sha256(root.read_bytes()).hexdigest() if small else "")
        except OSError:
            return ()
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
def _summary(model: str, stamp: tuple, model_config: str | None = None,
             config_stamp: tuple = ()) -> tuple[FamilySummary | None, str | None]:
    """(summary, None), or (None, the reason) for a model the loader would refuse."""
    try:
        return summarize_model(model, model_config=model_config), None
    except LdminvError as exc:
        return None, str(exc)


@st.cache_data(max_entries=16, ttl=600, show_spinner=False)
def _adapter_summary(adapter: str, stamp: tuple, model_path: str | None,
                     path_stamp: tuple) -> tuple[FamilySummary | None, str | None]:
    """(summary, None), or (None, the loader's reason) for an adapter file (runs the file once per
    version of it and of the model path)."""
    try:
        return summarize_adapter(adapter, model_path=model_path), None
    except LdminvError as exc:
        return None, str(exc)


def model_summary(model: str, *, adapter: str | None = None, model_config: str | None = None) -> bool:
    """Show what the model is and how it will be analysed: ``model`` a folder, hub id or
    single-file checkpoint (with its config folder ``model_config``), or, with ``adapter``, the
    custom model that adapter file builds (``model`` then the path handed to it, "" for None).
    Nothing given shows nothing.

    Returns:
        False when the model cannot be analysed (the reason is shown as an error, no traceback),
        else True.
    """
    if not (model or adapter):
        return True
    try:
        if adapter:
            with st.spinner("Loading the model through the adapter file…"):
                summary, error = _adapter_summary(adapter, _stamp(adapter), model or None, _stamp(model))
        else:
            summary, error = _summary(model, _stamp(model), model_config or None, _stamp(model_config))
    except Exception as exc:  # noqa: BLE001 - an unexpected failure is a message, not a traceback wall
        show_error(exc, what=REFUSED_WHAT)
        return False
    if error is not None:
        st.error(f"{REFUSED_WHAT}: {error}")
        return False
    what, value = zip(*summary.rows())
    if adapter:
        head = "built by the adapter file and probed on one batch, before anything runs"
    elif model_config:
        head = "detected from the config folder and the file's header, before anything runs (nothing converted)"
    else:
        head = "detected from its configs, before anything runs (no weights read)"
    table = pd.DataFrame({head: value},
                         index=pd.Index([w.capitalize() for w in what], name="Model"))
    st.table(table)
    return True
