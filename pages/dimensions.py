"""Dimensions page: which latent coordinates carry the membership signal?

Every coordinate (channel, row, col) with its mean and spread of influence, the held-out minus
member shift of its attack term at the timestep in use, and its own AUROC; a filterable table
whose selected rows go into the manual mask used on the Masks & ROC page (or found by a typed
coordinate query), and three tabs of which only the open one is drawn: heatmaps of mean influence,
heatmaps of per-coordinate AUROC, and every coordinate's influence against its AUROC.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.errors import LdminvError
from ldminv_core.evaluation.pair_shift import shift_is_exact

from ldminv_app import activity, cache, figure_memo, figures, frame, notices, selections, state, tables, widgets

run = frame.require_run()  # waits for the decoder geometry of a partial run
#: Largest latent whose every coordinate is an option of the manual-mask picker.
MAX_PICKER_OPTIONS = 4096
#: The charts below the table, one tab each (only the open one is computed and drawn).
CHART_VIEWS = ("Mean influence", "AUROC of each coordinate", "Influence against AUROC")

with notices.guard("The Dimensions page failed"):
    attack = state.current_attack(run)
    t_index = state.current_t_index(run, attack)
    c_count, h, w = run.latent_shape

    st.title("Dimensions")
    st.caption(
        "Influence of coordinate i = ½·log‖∂D/∂z_i‖² (how much the image moves when z_i moves). "
        "AUROC uses −term of that coordinate alone. Shift = the median, over every (held-out, member) "
        "pair, of held-out term − member term at the selected timestep (positive: members have smaller "
        "terms there). It always has the sign of AUROC − 0.5: both count pairs. A difference of mean "
        "terms would not: the terms are powers of noise residuals (|ε|⁴ for SimA), skewed and "
        "heavy-tailed, so a few large terms can pull a mean against most pairs."
    )
    if t_index is None:
        st.info(
            f"{attack_label(attack)} gives one score per sample and has no per-coordinate terms. "
            "Choose a maskable attack in the sidebar."
        )
        st.stop()

    t = run.timesteps(attack)[t_index]
    table = cache.dimension_table(run, attack, t_index)

    @st.fragment

    @activity.counts_as_page
    def table_section(drawn: list[int]) -> None:
        """Filters, the table and the manual mask's controls: rerun alone when a filter or the table's
        selection changes; the whole page reruns when the manual mask changes (``drawn``: the
        coordinates the heatmaps below were drawn with)."""
        with notices.guard("The coordinate table failed"):
            table_controls()
        if state.manual_coords(run) != drawn:
            st.rerun(scope="app")  # the heatmaps highlight the manual mask

    def table_controls() -> None:
        """The filters and the table, then the manual mask's controls."""
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
            f"header to sort. {attack_label(attack)} at t = {t}."
        )
        if not shift_is_exact(run.n_members, run.n_heldout, len(table)):
            st.caption("With this many samples and coordinates the shift is estimated from quantiles of each "
                       "split (its sign is exact).")
        event = st.dataframe(
            view,
            key="dim_table",
            column_order=tables.DIMENSION_COLUMNS,
            on_select="rerun",
            selection_mode="multi-row",
            hide_index=True,
            height=360,
            column_config=tables.dimension_columns(),
        )
        selected_rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
        selected = [int(view.iloc[r]["coord"]) for r in selected_rows if r < len(view)]

        manual_mask_controls(view, selected)

    def manual_mask_controls(view, selected: list[int]) -> None:
        """The manual mask from the table's selection, a coordinate query or the picker."""
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

        query_text = st.text_input(
            "Find coordinates", key="dim_find", placeholder="ch 0 · y 3 · x 1,  ch 0,  ch 0 · y 3,  #25",
            help="Fields as in the coordinate labels, in any order; a field left out matches all its values: "
                 "'ch 0' is every coordinate of channel 0, 'ch 0 · y 3' every column of its row 3, "
                 "'ch 0 · y 3 · x 1' one coordinate. '#25' is the flat index shown in the table.",
        )
        if query_text.strip():
            try:
                query = selections.parse_coordinate_query(query_text, shape=run.latent_shape)
            except LdminvError as exc:
                st.warning(str(exc))
            else:
                found = [int(c) for c in query.coordinates(shape=run.latent_shape)]
                new = [c for c in found if c not in set(picked)]
                listed = ", ".join(_fmt(c) for c in found[:6]) + (", …" if len(found) > 6 else "")
                already = f" ({len(found) - len(new)} already in the manual mask)" if len(new) < len(found) else ""
                st.caption(f"{len(found)} coordinate{'' if len(found) == 1 else 's'} with {query.describe()}: "
                           f"{listed}{already}")
                label = (f"Add {query.describe()}" if query.exact
                         else f"Add {len(new)} coordinate{'' if len(new) == 1 else 's'} with {query.describe()}")
                if st.button(label, disabled=not new, key="dim_find_add"):
                    state.set_manual_coords(run, picked + new)
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
            filter_mode="contains",
            select_all=False,  # one option at a time: a typed filter never adds its matches at once
            help="Only these coordinates enter the statistic of the manual mask. Typing filters the options "
                 "by the text in their labels; 'Find coordinates' above reads a coordinate query exactly."
            + ("" if len(table) <= MAX_PICKER_OPTIONS else
               f" With {len(table)} coordinates, the options are those the table shows (filter it to reach others) "
               "and the ones already picked."),
        )

    table_section(state.manual_coords(run))

    # ---- the charts, one tab each: only the open one is computed and drawn
    picked = state.manual_coords(run)
    highlight = [tuple(int(v) for v in np.unravel_index(c, run.latent_shape)) for c in picked]
    by_coord = table.sort_values("coord")
    mean_tab, auroc_tab, scatter_tab = widgets.lazy_tabs(CHART_VIEWS, key="dim_chart_view")
    if mean_tab.open:
        with mean_tab:
            mean_map = by_coord["influence_mean"].to_numpy().reshape(run.latent_shape)
            st.plotly_chart(
                figure_memo.figure(
                    figures.channel_heatmaps, mean_map, title="Mean influence over samples", highlight=highlight),
                key="dim_mean_heatmap", theme=None,  # Streamlit's theme would replace the colour scale
                config=figures.plotly_config(f"ldminv-mean-influence-{Path(run.path).name}"),
            )
    if auroc_tab.open:
        with auroc_tab:
            auroc_map = by_coord["auroc"].to_numpy().reshape(run.latent_shape)
            st.plotly_chart(
                figure_memo.figure(
                    figures.channel_heatmaps, auroc_map,
                    title=f"AUROC of each coordinate alone ({attack_label(attack)}, t = {t})",
                    colorscale="RdBu_r", colorbar_title="AUROC", zmid=0.5, highlight=highlight,
                ),
                key="dim_auroc_heatmap", theme=None,
                config=figures.plotly_config(f"ldminv-coordinate-auroc-{attack_label(attack)}-t{t}-{Path(run.path).name}"),
            )
    if scatter_tab.open:
        with scatter_tab:
            st.plotly_chart(figure_memo.figure(figures.dimension_scatter, table), key="dim_scatter",
                            config=figures.plotly_config(f"ldminv-influence-vs-auroc-{attack_label(attack)}-t{t}"))
    cache.warm_dimension_tables(run, attack, (t_index + 1, t_index - 1))  # the next timestep is a lookup
