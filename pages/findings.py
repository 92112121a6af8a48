"""Findings page (the landing page): what this run shows about the paper's claims, under the
protocol chosen in the sidebar, each claim an estimate with its 95% interval and a verdict; then
every attack's baseline AUROC and TPR@1%FPR side by side. All numbers come from the cached
``Evaluation`` objects; the page only lays them out.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from ldminv_app import cache, figures, state, ui

run = ui.page_frame()

with ui.guard("The Findings page failed"):
    attack = state.current_attack(run)
    ev = cache.evaluation(run, attack)
    proto = ev.protocol
    res = ev.result()

    st.title("Findings")
    st.caption(
        f"**{ui.attack_label(attack)}** on {run.n_members} members / {run.n_heldout} held-out images · "
        f"protocol **{proto.name}**: {proto.description}. TPR@1%FPR = {proto.tpr_rule}. Intervals: "
        f"{ev.n_boot} paired stratified bootstrap replicates (95%); a verdict is *supported* when the "
        "interval lies above 0, *contradicted* below 0, *inconclusive* otherwise."
    )

    # ---- the findings, two per row
    cards = []
    for f in res.findings:
        chart = None
        if f.id == "distortion_quartiles":
            qs = res.quartiles
            chart = figures.quartile_auroc_bars(
                [q.auroc for q in qs], ci=[q.auroc_ci for q in qs],
                edges=[qs[0].log_volume_min] + [q.log_volume_max for q in qs], counts=[q.n for q in qs],
                title="Baseline AUROC by distortion quartile ("
                + ("each quartile at its own best t" if proto.name == "paper" else res.baseline.t_text) + ")",
            )
        elif f.id in ("masking_vs_baseline", "masking_vs_random") and res.maskable:
            curves = ev.drop_curves(ev.headline_t_index())
            drop = res.masked.drop_percent if res.masked.drop_percent is not None else None
            chart = figures.drop_curves_with_bands(
                curves.percents, masked=curves.masked["auroc"],
                masked_band=(curves.masked_lo["auroc"], curves.masked_hi["auroc"]),
                random_mean=curves.random_mean["auroc"],
                random_band=(curves.random_lo["auroc"], curves.random_hi["auroc"]),
                baseline=curves.baseline["auroc"], baseline_ci=curves.baseline_ci["auroc"],
                n_seeds=len(curves.seeds), current=drop,
                title=f"AUROC vs drop %, t = {curves.t} (all samples)",
            )
        cards.append((f, chart))
    for row_start in range(0, len(cards), 2):
        cols = st.columns(2)
        for col, (f, chart) in zip(cols, cards[row_start:row_start + 2]):
            with col:
                ui.finding_card(f, chart=chart, chart_key=f"finding_{f.id}")
    if res.classes:
        with st.expander("Quartile AUROC within each class (the within-class finding)", expanded=False):
            st.dataframe(
                {
                    "class": [c.label for c in res.classes],
                    "n": [c.n for c in res.classes],
                    "members": [c.n_members for c in res.classes],
                    **{f"Q{i + 1}": [round(c.aurocs[i], 3) for c in res.classes] for i in range(4)},
                    "Q4 − Q1": [round(c.difference, 3) for c in res.classes],
                },
                hide_index=True, key="findings_classes",
            )
    if not any(f.id == "distortion_quartiles_within_class" for f in res.findings):
        st.caption("No within-class control: the data carry fewer than two caption classes with at least 16 "
                   "images of both splits.")

    # ---- attack overview
    st.subheader("All attacks")
    names, auroc, auroc_ci, tpr, tpr_ci, where = [], [], [], [], [], []
    for name in run.attacks:
        arm = cache.evaluation(run, name).arms()["baseline"]
        names.append(ui.attack_label(name))
        auroc.append(arm.auroc)
        auroc_ci.append(arm.ci["auroc"])
        tpr.append(arm.tpr_at_1fpr)
        tpr_ci.append(arm.ci["tpr_at_1fpr"])
        where.append(f"{ui.attack_label(name)}: {arm.t_text}")
    st.plotly_chart(
        figures.attack_overview(names, auroc=np.array(auroc), auroc_ci=auroc_ci, tpr=np.array(tpr), tpr_ci=tpr_ci,
                                title=f"Baseline AUROC and TPR@1%FPR of every attack ({proto.name} protocol)"),
        key="findings_overview",
    )
    st.caption("Timesteps: " + " · ".join(where) + ". Error bars: 95% stratified bootstrap intervals.")

    st.markdown("**Explore further**")
    l1, l2, l3 = st.columns(3)
    l1.page_link("pages/distortion.py", label="Distortion: quartiles, per-sample viewer",
                 icon=":material/blur_on:")
    l2.page_link("pages/masks_roc.py", label="Masks & ROC: tune the drop", icon=":material/show_chart:")
    l3.page_link("pages/dimensions.py", label="Dimensions: coordinate ranking",
                 icon=":material/grid_on:")
