"""Error display and one-shot notices: an exception as a message (its traceback folded away),
a guard around a block, the message the previous script run left in the session.
"""
from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from ldminv_core.errors import LdminvError

from . import state

__all__ = ["show_error", "guard", "show_notice"]


def show_error(exc: BaseException, *, what: str | None = None) -> None:
    """Show an error without a traceback wall: LdminvError as its message; anything else
    as a one-line message with the traceback folded in an expander."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, LdminvError):
        st.error(f"{prefix}{exc}")
        return
    st.error(f"{prefix}unexpected {type(exc).__name__}: {exc}")
    with st.expander("Details"):
        st.code("".join(traceback.format_exception(exc)), language="text")


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Show any exception raised in the block with :func:`show_error` instead of a traceback
    (Streamlit's own stop / rerun signals pass through)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the whole point is to catch everything
        show_error(exc, what=what)


def show_notice() -> None:
    """Show (once) the message left by the previous script run."""
    notice = state.pop_notice()
    if notice is None:
        return
    kind, text = notice
    getattr(st, kind if kind in ("success", "info", "warning", "error") else "info")(text)
