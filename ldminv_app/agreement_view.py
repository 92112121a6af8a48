"""The Findings page's agreement section (METHOD.md section 7): for every attack of the run under
the sidebar's protocol, the samples each flags at the 1%-FPR threshold, the Jaccard index and
Spearman correlation per pair with their intervals, and who flags whom with thumbnails of the
images (the samples flagged by most attacks first).

Every number is :func:`ldminv_core.evaluation.agreement`'s, over the page's cached evaluations
(:func:`ldminv_app.state.evaluation`), cached here per run, protocol, folds and replicates; the
tables are :mod:`ldminv_app.agreement_tables`', the thumbnails :func:`ldminv_app.cache.thumbnail`.
"""
from __future__ import annotations

import warnings

import streamlit as st

from ldminv_core.evaluation import Agreement, agreement
from ldminv_core.runs import Run

from . import cache, lazy, state
from .agreement_tables import counts_table, flag_words, pair_table, who_flags_table

__all__ = ["load", "job", "section", "draw", "WHO_FLAGS_ROWS", "THUMB_SIZE"]

#: Rows of the who-flags-whom table with thumbnails (the samples flagged by most attacks first).
WHO_FLAGS_ROWS = 48
#: Thumbnail size of the who-flags-whom table, pixels.
THUMB_SIZE = 64


@st.cache_resource(max_entries=16, show_spinner="Comparing the attacks' flags…")
def _agreement(path: str, stamp: int, protocol: str, folds: int, n_boot: int, _evaluations: dict) -> Agreement:
    """The agreement of the run's attacks (keyed by run, protocol, folds, replicates; the cached
    evaluations of that key passed unhashed)."""
    first = next(iter(_evaluations.values()))
    with warnings.catch_warnings():  # the degenerate cases are shown under the tables
        warnings.simplefilter("ignore", RuntimeWarning)
        return agreement(first.run, first.protocol, evaluations=_evaluations)


def load(run: Run) -> Agreement:
    """The agreement of every attack of ``run`` under the session's protocol and folds."""
    evaluations = {a: state.evaluation(run, a) for a in run.attacks}
    first = next(iter(evaluations.values()))
    return _agreement(*cache.run_key(run.path), first.protocol.name, first.protocol.folds, first.n_boot,
                      evaluations)


def _compute(evaluations: dict) -> Agreement:
    """:func:`agreement` over the cached evaluations (a background job of :func:`section`)."""
    first = next(iter(evaluations.values()))
    with warnings.catch_warnings():  # the degenerate cases are shown under the tables
        warnings.simplefilter("ignore", RuntimeWarning)
        return agreement(first.run, first.protocol, evaluations=evaluations)


def job(run: Run, *, evaluations: dict | None = None) -> tuple[tuple, object]:
    """(key, callable) of the agreement under the session's protocol, folds and replicates, or of
    ``evaluations`` (attack -> cached ``Evaluation``, one protocol)."""
    if evaluations is None:
        evaluations = {a: state.evaluation(run, a) for a in run.attacks}
    first = next(iter(evaluations.values()))
    key = ("agreement", *cache.run_key(run.path), first.protocol.name, first.protocol.folds, first.n_boot)
    return key, lambda: _compute(evaluations)


def _thumb(path: str) -> str | None:
    return cache.thumbnail_uri(path, size=THUMB_SIZE)


def section(run: Run) -> None:
    """The agreement section: counts, pairs, who flags whom (nothing for a one-attack run),
    computed in the background when it is not ready (:func:`ldminv_app.lazy.section`)."""
    if len(run.attacks) < 2:
        return
    key, fn = job(run)
    lazy.section("agreement", [(key, fn)], lambda got: draw(got[key]),
                 what="Whether the attacks flag the same images")


def draw(ag: Agreement) -> None:
    """The agreement section of ``ag``."""
    st.subheader("Do the attacks flag the same images?")
    st.caption(flag_words(ag) + " Jaccard = shared flags / flags of either; Spearman = rank correlation of "
               "the scores within a split. n/a: undefined (the reason in the last column).")
    st.dataframe(counts_table(ag), hide_index=True, key="agreement_counts")
    st.dataframe(pair_table(ag), hide_index=True, key="agreement_pairs")
    flagged = ag.flagged_samples()
    if not flagged:
        st.info("No attack flags any sample at the 1%-FPR threshold: there is no who-flags-whom table.")
    else:
        who = who_flags_table(ag, limit=WHO_FLAGS_ROWS)
        who.insert(0, "image", [_thumb(p) for p in who["path"]])
        st.markdown(f"**Who flags whom**: {len(flagged)} of {len(ag.samples)} samples flagged by at least one "
                    "attack, most flags first" + (f" (first {WHO_FLAGS_ROWS} shown)." if len(flagged) > WHO_FLAGS_ROWS
                                                  else "."))
        st.dataframe(who.drop(columns=["path"]), hide_index=True, key="agreement_who",
                     column_config={"image": st.column_config.ImageColumn("image", width="small")})
    for note in ag.warnings:
        st.caption(note)
