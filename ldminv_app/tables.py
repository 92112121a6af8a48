"""Data-frame display helpers: the arms table of the Masks & ROC page (the report's arms table with
rates as 4-decimal numbers and intervals as text; under ``honest`` every fold's t and drop in short
columns) and the column configuration of its rate columns; the columns of the Dimensions table.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from ldminv_core.formatting import format_rate_ci

from . import html_report

__all__ = ["RATE_METRICS", "arms_frame", "rate_columns", "DIMENSION_COLUMNS", "dimension_columns"]

#: Display names of the reported rates, in the report's order (AUROC, TPR@1%FPR, ASR).
RATE_METRICS = ("AUROC", "TPR@1%FPR", "ASR")


def _per_fold(values: list) -> str:
    """"60 (all)" when the folds agree, else "60, 50, 60"; "–" without any."""
    if not values:
        return "–"
    return f"{values[0]} (all)" if len(set(values)) == 1 else ", ".join(map(str, values))


def arms_frame(arms: list, honest: bool, custom_drop: dict | None = None) -> pd.DataFrame:
    """The report's arms table (``html_report.arms_table``); under ``honest`` the t and drop of every
    fold in short columns ("60 (all)" when the folds agree), so the table fits the page;
    ``custom_drop``: arm name -> what a global or manual mask drops (they have no drop of their own)."""
    frame = html_report.arms_table(arms, honest=honest)
    if custom_drop:
        frame["drop"] = [custom_drop.get(a.arm, value) for a, value in zip(arms, frame["drop"])]
    # rates as numbers shown in % (column_config below), intervals in %: the cards' convention
    for m, label in zip(("auroc", "tpr_at_1fpr", "asr"), RATE_METRICS):
        frame[label] = [a.value(m) for a in arms]
        frame[f"{label} 95% CI"] = [format_rate_ci(a.ci[m]) for a in arms]
    if honest:
        frame["realised FPR"] = [a.realised_fpr_at_1fpr for a in arms]
        frame["t"] = [_per_fold([f.t for f in a.folds if f.t is not None]) for a in arms]
        frame["drop"] = [(custom_drop or {}).get(a.arm) or
                         _per_fold([f"{f.drop_percent:g}" for f in a.folds if f.drop_percent is not None])
                         for a in arms]
        frame = frame.rename(columns={"t": "t (per fold)", "drop": "drop % (per fold)"})
    return frame.set_index("variant")


def rate_columns() -> dict:
    """``st.dataframe(column_config=...)`` of the rate columns: 4-decimal fractions."""
    return {c: st.column_config.NumberColumn(c, format="%.4f") for c in (*RATE_METRICS, "realised FPR")}


#: Columns of the Dimensions page's coordinate table, in the order shown.
DIMENSION_COLUMNS = ("coord", "channel", "row", "col", "influence_mean", "influence_std", "shift", "auroc",
                     "influence_rank")


def dimension_columns() -> dict:
    """``st.dataframe(column_config=...)`` of the dimension table (``cache.dimension_table``)."""
    return {
        "coord": st.column_config.NumberColumn("coord", help="flat index (ch·h + y)·w + x"),
        "channel": st.column_config.NumberColumn("channel", help="latent channel (ch)"),
        "row": st.column_config.NumberColumn("row y", help="latent row y (0 = top)"),
        "col": st.column_config.NumberColumn("column x", help="latent column x (0 = left)"),
        "influence_mean": st.column_config.NumberColumn("influence mean", format="%.4f"),
        "influence_std": st.column_config.NumberColumn("influence std", format="%.4f"),
        "shift": st.column_config.NumberColumn(
            "shift (held-out − member)", format="%.3e",
            help="median over (held-out, member) pairs of the difference of their terms; "
                 "same sign as AUROC − 0.5"),
        "auroc": st.column_config.NumberColumn("AUROC (−term)", format="%.4f"),
        "influence_rank": st.column_config.NumberColumn("influence rank"),
    }
