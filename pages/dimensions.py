"""Dimensions page: which latent coordinates carry the membership signal?

Every coordinate (channel, row, col) with its mean and spread of influence, the member vs
held-out gap of its attack term at the timestep in use, and its own AUROC; a filterable table
whose selected rows go into the manual mask used on the Masks & ROC page, and heatmaps of mean
influence and per-coordinate AUROC.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from ldminv_app import cache, figures, state, ui

run = ui.require_run()  # waits for the decoder geometry of a partial run
#: Largest latent whose every coordinate is an option of the manual-mask picker.
MAX_PICKER_OPTIONS = 4096

with ui.guard("The Dimensions page failed"):
    attack = state.current_attack(run)
    t_index = state.current_t_index(run, attack)
    c_count, h, w = run.latent_shape

    st.title("Dimensions")
    st.caption(
        "Influence of coordinate i = ½·log‖∂D/∂z_i‖² (how much the image moves when z_i moves). "
        "Gap = mean held-out term − mean member term of the attack at the selected timestep "
        "(positive: members have smaller terms there); AUROC uses −term of that coordinate alone."
    )
    if t_index is None:
        st.info(
            f"{ui.attack_label(attack)} gives one score per sample and has no per-coordinate terms. "
            "Choose a maskable attack in the sidebar."
        )
        st.stop()

    t = run.timesteps(attack)[t_index]
    table = cache.dimension_table(run, attack, t_index)

    # ---- filters
    f1, f2, f3 = st.columns([2, 2, 1])
    with f1:
        channels = st.multiselect(
            "Channels", list(range(c_count)), default=list(range(c_count)), key="dim_channels"
        )
    lo, hi = float(table["influence_mean"].min()), float(table["influence_mean"].max())
    with f2:
        min_infl = st.slider(
            "Minimum mean influence", lo, hi if hi > lo else lo + 1e-6, lo, key="dim_min_influence", format="%.3f"
        )
    with f3:
        top_n = int(st.number_input("Show at most", 1, len(table), min(len(table), 500), step=50, key="dim_top_n"))

    view = table[table["channel"].isin(channels) & (table["influence_mean"] >= min_infl)].head(top_n)
    st.caption(
        f"{len(view)} of {len(table)} coordinates shown, sorted by mean influence; click a column "
        f"header to sort. {ui.attack_label(attack)} at t = {t}."
    )
    event = st.dataframe(
        view,
        key="dim_table",
        on_select="rerun",
        selection_mode="multi-row",
        hide_index=True,
        height=360,
        column_config={
            "coord": st.column_config.NumberColumn("coord", help="flat index (ch·h + y)·w + x"),
            "channel": st.column_config.NumberColumn("channel", help="latent channel (ch)"),
            "row": st.column_config.NumberColumn("row y", help="latent row y (0 = top)"),
            "col": st.column_config.NumberColumn("column x", help="latent column x (0 = left)"),
            "influence_mean": st.column_config.NumberColumn("influence mean", format="%.4f"),
            "influence_std": st.column_config.NumberColumn("influence std", format="%.4f"),
            "gap": st.column_config.NumberColumn("gap (held-out − member)", format="%.4g"),
            "gap_std": st.column_config.NumberColumn("gap / pooled std", format="%.3f"),
            "auroc": st.column_config.NumberColumn("AUROC (−term)", format="%.4f"),
            "influence_rank": st.column_config.NumberColumn("influence rank"),
        },
    )
    selected_rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    selected = [int(view.iloc[r]["coord"]) for r in selected_rows if r < len(view)]

    # ---- manual mask from the selection
    picked = state.manual_coords(run)
    st.markdown("**Manual mask** (used on the Masks & ROC page)")


    def _fmt(coord: int) -> str:
        c, rest = divmod(int(coord), h * w)
        r, col = divmod(rest, w)
        return f"{figures.coord_label(c, r, col)}  (#{coord})"


    b1, b2, b3 = st.columns(3)
    if b1.button(f"Add {len(selected)} selected", disabled=not selected, key="dim_add"):
        state.set_manual_coords(run, picked + selected)
        st.rerun()
    if b2.button("Keep only the selected", disabled=not selected, key="dim_replace"):
        state.set_manual_coords(run, selected)
        st.rerun()
    if b3.button("Clear the manual mask", disabled=not picked, key="dim_clear"):
        state.set_manual_coords(run, [])
        st.rerun()


    def _on_pick_change() -> None:
        state.set_manual_coords(run, st.session_state["dim_picked"])


    st.session_state["dim_picked"] = picked
    # every coordinate as an option for small latents; for large ones (an SD-size latent has
    # 16384) the picked ones and those shown in the table, so the widget stays light
    options = (list(range(len(table))) if len(table) <= MAX_PICKER_OPTIONS
               else sorted(set(picked) | {int(c) for c in view["coord"]}))
    st.multiselect(
        "Coordinates kept by the manual mask",
        options,
        key="dim_picked",
        format_func=_fmt,
        on_change=_on_pick_change,
        help="Type to search, e.g. 'ch 0 · y 3' (channel 0, latent row y = 3). Only these coordinates enter the statistic of the manual mask."
        + ("" if len(table) <= MAX_PICKER_OPTIONS else
           f" With {len(table)} coordinates, the options are those the table shows (filter it to reach others) "
           "and the ones already picked."),
    )

    # ---- heatmaps
    highlight = [tuple(int(v) for v in np.unravel_index(c, run.latent_shape)) for c in picked]
    by_coord = table.sort_values("coord")
    mean_map = by_coord["influence_mean"].to_numpy().reshape(run.latent_shape)
    auroc_map = by_coord["auroc"].to_numpy().reshape(run.latent_shape)
    st.plotly_chart(
        figures.channel_heatmaps(mean_map, title="Mean influence over samples", highlight=highlight),
        key="dim_mean_heatmap", theme=None,  # Streamlit's theme would replace the colour scale
        config=figures.plotly_config(f"ldminv-mean-influence-{Path(run.path).name}"),
    )
    st.plotly_chart(
        figures.channel_heatmaps(
            auroc_map, title=f"AUROC of each coordinate alone ({ui.attack_label(attack)}, t = {t})",
            colorscale="RdBu_r", colorbar_title="AUROC", zmid=0.5, highlight=highlight,
        ),
        key="dim_auroc_heatmap", theme=None,
        config=figures.plotly_config(f"ldminv-coordinate-auroc-{ui.attack_label(attack)}-t{t}-{Path(run.path).name}"),
    )
    st.plotly_chart(figures.dimension_scatter(table), key="dim_scatter",
                    config=figures.plotly_config(f"ldminv-influence-vs-auroc-{ui.attack_label(attack)}-t{t}"))
    cache.warm_dimension_tables(run, attack, (t_index + 1, t_index - 1))  # the next timestep is a lookup
