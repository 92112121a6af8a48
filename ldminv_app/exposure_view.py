"""The Findings page's exposure list, for model owners: the member images most at risk under the
sidebar's protocol, most exposed first, each with its thumbnail, its rank among the members (the
page's attack, its masked arm at the protocol's drop where it can be masked, else the baseline),
the attacks flagging it at the 1%-FPR threshold and its log-volume; a CSV download of the whole list.

Every number is :func:`ldminv_core.evaluation.exposure.exposure_list`'s over the page's cached
evaluations (:func:`ldminv_app.state.evaluation`), cached here per run, attack, protocol and folds;
the table is :func:`ldminv_app.html_report.csv_export.exposure_table`'s, the CSV the export's.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.evaluation.exposure import ExposureList, exposure_list
from ldminv_core.runs import Run

from . import cache, lazy, state
from .html_report.csv_export import exposure_csv, exposure_table

__all__ = ["load", "job", "section", "draw", "EXPOSURE_ROWS", "THUMB_SIZE"]

#: Members shown with thumbnails (the CSV holds them all).
EXPOSURE_ROWS = 24
#: Thumbnail size, pixels.
THUMB_SIZE = 64


@st.cache_resource(max_entries=16, show_spinner="Ranking the members…")
def _exposure(path: str, stamp: int, attack: str, arm: str, protocol: str, folds: int,
              _evaluations: dict) -> ExposureList:
    """The exposure list (keyed by run, attack, arm, protocol, folds; the cached evaluations passed
    unhashed). Degenerate cases are shown from its notes, not warned on the console."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return exposure_list(_evaluations, attack=attack, arm=arm)


def load(run: Run, attack: str) -> ExposureList:
    """The exposure list of ``attack`` (masked arm at the protocol's drop where it can be masked
    and the run has its geometry, else the baseline) under the session's protocol and folds."""
    evaluations = {a: state.evaluation(run, a) for a in run.attacks}
    proto = evaluations[attack].protocol
    arm = "masked" if run.is_maskable(attack) and run.has_geometry else "baseline"
    return _exposure(*cache.run_key(run.path), attack, arm, proto.name, proto.folds, evaluations)


def _compute(evaluations: dict, attack: str, arm: str) -> ExposureList:
    """:func:`exposure_list` (a background job of :func:`section`); degenerate cases are shown
    from its notes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return exposure_list(evaluations, attack=attack, arm=arm)


def job(run: Run, attack: str, *, evaluations: dict | None = None) -> tuple[tuple, object]:
    """(key, callable) of :func:`load`'s list, for :func:`ldminv_app.lazy.section` (of
    ``evaluations``, attack -> cached ``Evaluation`` of one protocol, when given)."""
    if evaluations is None:
        evaluations = {a: state.evaluation(run, a) for a in run.attacks}
    proto = evaluations[attack].protocol
    arm = "masked" if run.is_maskable(attack) and run.has_geometry else "baseline"
    key = ("exposure", *cache.run_key(run.path), attack, arm, proto.name, proto.folds)
    return key, lambda: _compute(evaluations, attack, arm)


def _thumb(path: str) -> str | None:
    return cache.thumbnail_uri(path, size=THUMB_SIZE)


def _scope(lst: ExposureList) -> str:
    drop = (f", drop {lst.drop_percent:g} %" if lst.drop_percent is not None
            else ", drop chosen per fold" if lst.arm == "masked" else "")
    t = f", t = {lst.t}" if lst.t is not None else ""
    return f"{attack_label(lst.attack)}, {lst.arm} arm{drop}{t}, protocol {lst.protocol}"


def section(run: Run, attack: str) -> None:
    """The exposure section: what it ranks by, the most exposed members with thumbnails, the CSV;
    computed in the background when it is not ready (:func:`ldminv_app.lazy.section`)."""
    key, fn = job(run, attack)
    lazy.section("exposure", [(key, fn)], lambda got: draw(run, got[key]),
                 what="The members most at risk")


def draw(run: Run, lst: ExposureList) -> None:
    """The exposure section of ``lst``."""
    st.subheader("Which training images are most at risk?")
    counts = ", ".join(f"{attack_label(a)} {c}" for a, c in lst.flagged_counts.items())
    st.caption(f"Members ranked by {_scope(lst)} (rank 1 = the most member-like score among the "
               f"{lst.n_members} members); members flagged at the 1%-FPR threshold: {counts}. Look at the top "
               "images first.")
    table = exposure_table(lst).head(EXPOSURE_ROWS)
    table.insert(0, "image", [_thumb(p) for p in table["path"]])
    table.insert(1, "file", [Path(p).name for p in table["path"]])
    shown = table[["image", "file", "member_rank", "score", "flagged_by", "n_attacks_flagging", "log_volume"]]
    st.dataframe(shown, hide_index=True, key="exposure_table",
                 column_config={"image": st.column_config.ImageColumn("image", width="small"),
                                "member_rank": "member rank", "flagged_by": "flagged by (1% FPR)",
                                "n_attacks_flagging": "attacks flagging", "log_volume": "log-volume"})
    st.download_button("Download the exposure list (CSV)", exposure_csv(lst),
                       file_name=f"{Path(run.path).name}_{lst.attack}_{lst.protocol}_exposure.csv", mime="text/csv",
                       key="exposure_csv")
    for note in lst.notes:
        st.warning(note)
