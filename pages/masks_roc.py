"""Masks & ROC page: does dropping low-influence coordinates from the attack statistic help?

Per-sample drop (each sample drops its own lowest-influence p %), the random-drop control at
the same percentage, a global ranking mask and manual channel / position / coordinate masks;
ROC curves (linear and log-log), a metrics table with bootstrap intervals, metrics against the
drop percentage and against the timestep. Every control recomputes inside a fragment, from
cached arrays and DropSweep objects only.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ldminv_core import masks, metrics

from ldminv_app import cache, compute, figures, state, ui

run = ui.page_frame()

with ui.guard("The Masks & ROC page failed"):
    st.title("Masks & ROC")
    st.caption(
        "Statistic = Σ mask_i · term_i(t); score = −statistic (higher = member). The model always "
        "sees the full latent: masks only choose which coordinates enter the statistic."
    )
    head1, head2 = st.columns([1, 2])
    with head1:
        attack = ui.attack_selector(run, key="masks_attack")
    t_index = state.current_t_index(run, attack)
    labels = run.labels

    _METRIC_LABELS = {
        "auroc": "AUROC",
        "tpr_at_1fpr": "TPR@1%FPR",
        "tpr_at_01fpr": "TPR@0.1%FPR",
        "asr": "ASR",
    }


    def metrics_display(table: pd.DataFrame) -> pd.DataFrame:
        """Metric table with 'value' and '[lo, hi]' columns for display."""
        out = pd.DataFrame(index=table.index)
        for m, name in _METRIC_LABELS.items():
            out[name] = table[m].map(lambda v: f"{v:.4f}")
            lo, hi = table[f"{m}_lo"], table[f"{m}_hi"]
            out[f"{name} 95% CI"] = [
                "–" if np.isnan(a) else f"[{a:.4f}, {b:.4f}]" for a, b in zip(lo, hi)
            ]
        return out


    if t_index is None:
        # PFAMI: one score per sample, nothing to mask.
        st.info(f"{ui.attack_label(attack)} gives one score per sample: it cannot be masked. Its ROC and metrics:")
        scores = cache.baseline_scores(run, attack)
        curve = metrics.roc(scores, labels)
        a1, a2 = st.columns(2)
        a1.plotly_chart(figures.roc_curves({"baseline": (curve.fpr, curve.tpr)}), key="masks_roc_lin")
        a2.plotly_chart(figures.roc_curves({"baseline": (curve.fpr, curve.tpr)}, log_scale=True), key="masks_roc_log")
        key = (str(run.path), cache.run_key(run.path)[1], attack, "baseline")
        st.dataframe(metrics_display(cache.variant_table(key, {"baseline": scores}, labels, n_boot=1000)))
        st.stop()

    timesteps = run.timesteps(attack)
    with head2:
        st.markdown(
            f"**{ui.attack_label(attack)}**, t = {timesteps[t_index]} (change the timestep in the sidebar) · "
            f"{run.n_members} members / {run.n_heldout} held-out"
        )


    def masks_body(run, attack: str, t_index: int, labels: np.ndarray, timesteps: list[int]) -> None:
        c_count, h, w = run.latent_shape
        d = c_count * h * w

        # ---- controls
        k1, k2, k3 = st.columns([2, 1, 1])
        with k1:
            drop = st.slider(
                "Drop percentage (per sample: its lowest-influence coordinates)",
                0, 90, 40, step=1, key="drop_percent",
                help="Each sample drops its own p-th percentile of coordinates by influence (paper default 40 %).",
            )
            st.caption(f"{masks.drop_count(d, drop)} of {d} coordinates dropped per sample")
        with k2:
            use_random = st.toggle("Random drop (control)", value=True, key="use_random")
            seed = int(st.number_input("Random seed", 0, 2**31 - 1, 0, step=1, key="random_seed", disabled=not use_random))
        with k3:
            use_global = st.toggle("Global ranking mask", value=False, key="use_global",
                                   help="Drop the same coordinates for every sample: those of lowest mean influence.")
            n_boot = st.select_slider("Bootstrap replicates", [0, 200, 1000, 2000], value=200, key="n_boot",
                                    help="200 keeps the page live; choose 1000+ for the intervals you report.")

        picked = state.manual_coords(run)
        with st.expander("Manual mask (channels, positions, picked coordinates)", expanded=False):
            use_manual = st.toggle("Use the manual mask", value=False, key="use_manual")
            m1, m2, m3 = st.columns(3)
            keep_channels = m1.multiselect("Keep channels", list(range(c_count)), default=list(range(c_count)),
                                           key="manual_channels")
            positions = [(r, c) for r in range(h) for c in range(w)]
            keep_positions = m2.multiselect("Keep positions (row, col)", positions, default=[], key="manual_positions",
                                            format_func=lambda p: f"({p[0]}, {p[1]})",
                                            help="Empty = every position.")
            use_picked = m3.checkbox(f"Only the {len(picked)} coordinates picked on the Dimensions page",
                                     value=bool(picked), key="manual_use_picked", disabled=not picked)
            keep = masks.manual_mask(
                run.latent_shape,
                channels=keep_channels,
                positions=keep_positions or None,
                coords=picked if (use_picked and picked) else None,
            )
            st.caption(f"The manual mask keeps {int(keep.sum())} of {d} coordinates.")
        state.remember_mask_settings()

        # ---- scores of every variant at the timestep in use
        sweep = cache.influence_sweep(run, attack)
        masked_stat = sweep.statistic(drop)  # (N, T)
        scores = {
            "baseline": cache.baseline_scores(run, attack)[:, t_index],
            "masked": -masked_stat[:, t_index],
        }
        if use_random:
            scores["random"] = -cache.random_sweep(run, attack, t_index=t_index, seed=seed).statistic(drop)
        if use_global:
            scores["global"] = -cache.ranking_sweep(run, attack, t_index=t_index).statistic(drop)
        if use_manual:
            if not keep.any():
                st.warning("The manual mask keeps no coordinate; its statistic is 0 for every sample.")
            terms_t = cache.terms(run, attack)[:, t_index : t_index + 1]
            scores["manual"] = -masks.masked_statistic(terms_t, keep)[:, 0]

        auroc_masked = metrics.auroc(scores["masked"], labels)
        auroc_base = metrics.auroc(scores["baseline"], labels)
        tpr_masked = metrics.tpr_at_fpr(scores["masked"], labels, max_fpr=0.01)
        tpr_base = metrics.tpr_at_fpr(scores["baseline"], labels, max_fpr=0.01)
        s1, s2, s3, s4 = st.columns(4)
        s1.metric("AUROC (baseline)", auroc_base, format="%.4f")
        s2.metric("AUROC (masked)", auroc_masked, delta=auroc_masked - auroc_base, format="%.4f",
                  help=f"drop {drop} % per sample by influence, t = {timesteps[t_index]}")
        s3.metric("TPR@1%FPR (baseline)", tpr_base, format="%.4f")
        s4.metric("TPR@1%FPR (masked)", tpr_masked, delta=tpr_masked - tpr_base, format="%.4f")

        # ---- ROC curves
        curves, aurocs = {}, {}
        for name, s in scores.items():
            c = metrics.roc(s, labels)
            curves[name] = (c.fpr, c.tpr)
            aurocs[name] = metrics.auroc(s, labels)
        r1, r2 = st.columns(2)
        r1.plotly_chart(figures.roc_curves(curves, aurocs=aurocs, title="ROC"), key="masks_roc_lin")
        r2.plotly_chart(figures.roc_curves(curves, aurocs=aurocs, log_scale=True, title="ROC (log-log)"),
                        key="masks_roc_log")

        # ---- metrics table with bootstrap intervals
        stamp = cache.run_key(run.path)[1]
        key = (
            str(run.path), stamp, attack, int(t_index), int(drop), seed if use_random else None, use_global,
            (tuple(keep_channels), tuple(keep_positions), tuple(picked) if use_picked else None) if use_manual else None,
        )
        table = cache.variant_table(key, scores, labels, n_boot=int(n_boot))
        st.markdown(f"**Metrics at t = {timesteps[t_index]}** (intervals: {n_boot} stratified bootstrap replicates)")
        st.dataframe(metrics_display(table), key="masks_metrics_table")

        # ---- metrics against drop percentage (one DropSweep.statistics call per variant)
        percents = compute.DROP_PERCENTS
        sweeps = {"masked": cache.sweep_curves(run, attack, "masked", t_index=t_index)}
        if use_random:
            sweeps["random"] = cache.sweep_curves(run, attack, "random", t_index=t_index, seed=seed)
        if use_global:
            sweeps["global"] = cache.sweep_curves(run, attack, "global", t_index=t_index)
        p1, p2 = st.columns(2)
        p1.plotly_chart(
            figures.metric_vs_drop(percents, {k: v["auroc"] for k, v in sweeps.items()}, ylabel="AUROC", current=drop),
            key="masks_drop_auroc",
        )
        p2.plotly_chart(
            figures.metric_vs_drop(percents, {k: v["tpr_at_1fpr"] for k, v in sweeps.items()},
                                   ylabel="TPR@1%FPR", current=drop),
            key="masks_drop_tpr",
        )

        # ---- metrics against timestep: baseline vs masked at the current drop
        base_t = cache.per_t_metrics(run, attack)
        masked_t = compute.per_timestep_metrics(-masked_stat, labels)
        q1, q2 = st.columns(2)
        q1.plotly_chart(
            figures.metric_vs_timestep(timesteps, {"baseline": base_t["auroc"], "masked": masked_t["auroc"]},
                                       ylabel="AUROC", selected_t=timesteps[t_index]),
            key="masks_t_auroc",
        )
        q2.plotly_chart(
            figures.metric_vs_timestep(timesteps, {"baseline": base_t["tpr_at_1fpr"], "masked": masked_t["tpr_at_1fpr"]},
                                       ylabel="TPR@1%FPR", selected_t=timesteps[t_index]),
            key="masks_t_tpr",
        )
        best_masked = int(np.nanargmax(masked_t["auroc"])) if np.isfinite(masked_t["auroc"]).any() else t_index
        st.caption(
            f"Best masked AUROC over timesteps: {masked_t['auroc'][best_masked]:.4f} at t = {timesteps[best_masked]} "
            "(chosen on the evaluation set itself, as in the paper: optimistic)."
        )


    @st.fragment
    def masks_panel(run, attack: str, t_index: int, labels: np.ndarray, timesteps: list[int]) -> None:
        """The controls and everything they change: reruns alone when a control moves."""
        with ui.guard("The masks panel failed"):
            masks_body(run, attack, t_index, labels, timesteps)

    masks_panel(run, attack, t_index, labels, timesteps)
