"""Latent map page: a UMAP of the latents, coloured by distortion, split, score or a coordinate's
influence; a box / lasso selection shows its images and that subset's ROC and metrics.

The embedding is computed on request and stored in the run folder (umap.npy), so it is
computed once per run.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from ldminv_core import metrics
from ldminv_core.embedding import cached_umap_embedding, read_cached_umap

from ldminv_core.evaluation import subset_metrics

from ldminv_app import cache, figures, state, ui

run = ui.page_frame()

with ui.guard("The Latent map page failed"):
    attack = state.current_attack(run)
    t_index = state.current_t_index(run, attack)
    labels = run.labels
    n = len(run)

    st.title("Latent map")
    st.caption("UMAP of the flattened latents (encoder means). Select points with the box or lasso tool.")

    o1, o2, o3 = st.columns([1, 1, 2])
    with o1:
        n_neighbors = int(st.number_input("UMAP neighbours", 2, 200, 15, step=1, key="umap_neighbors"))
    with o2:
        umap_seed = int(st.number_input("UMAP seed", 0, 2**31 - 1, 0, step=1, key="umap_seed"))

    xy = read_cached_umap(run.path, n, seed=umap_seed, n_neighbors=n_neighbors)
    if xy is None:
        st.info("No UMAP with these settings yet for this run.")
        if st.button("Compute the UMAP", type="primary", key="umap_compute"):
            bar = st.progress(0.0, text="Embedding the latents with UMAP…")

            def _progress(stage: str, done: int, total: int) -> None:
                bar.progress(done / max(total, 1), text="Embedding the latents with UMAP…" if done < total else "Done")

            try:
                with st.spinner("Running UMAP (the first run compiles numba code and takes longer)…"):
                    xy = cached_umap_embedding(
                        run.path, cache.latents(run), seed=umap_seed, n_neighbors=n_neighbors, progress=_progress
                    )
            except Exception as exc:  # noqa: BLE001
                ui.show_error(exc, what="UMAP failed")
        if xy is None:
            st.stop()

    # ---- colouring
    scores = cache.baseline_scores(run, attack)[:, 0 if t_index is None else t_index]
    log_volume = run.log_volume
    splits = run.samples["split"].to_numpy()
    with o3:
        color_by = st.selectbox(
            "Colour by",
            ["log-volume", "split", "attack score", "influence of a coordinate"],
            key="umap_color",
        )
    categorical = False
    if color_by == "split":
        color, color_label, categorical = splits, "split", True
    elif color_by == "attack score":
        t_text = "" if t_index is None else f", t={run.timesteps(attack)[t_index]}"
        color, color_label = scores, f"{ui.attack_label(attack)} score{t_text}"
    elif color_by == "influence of a coordinate":
        c_count, h, w = run.latent_shape
        i1, i2, i3 = st.columns(3)
        ch = int(i1.number_input("channel", 0, c_count - 1, 0, key="umap_coord_c"))
        row = int(i2.number_input("row", 0, h - 1, 0, key="umap_coord_r"))
        col = int(i3.number_input("col", 0, w - 1, 0, key="umap_coord_w"))
        color, color_label = cache.influence(run)[:, ch, row, col], f"influence (c{ch}, r{row}, c{col})"
    else:
        color, color_label = log_volume, "log-volume"

    fig = figures.latent_scatter(
        xy,
        color,
        color_label=color_label,
        categorical=categorical,
        sample_ids=run.samples["sample_id"].to_numpy(),
        hover={
            "split": splits,
            "log-volume": np.round(log_volume, 3),
            "score": np.array([f"{v:.4g}" for v in scores]),
        },
    )
    event = st.plotly_chart(
        fig, key="umap_chart", on_select="rerun", selection_mode=("points", "box", "lasso")
    )


    def _selected_rows(event) -> list[int]:
        selection = getattr(event, "selection", None) or {}
        points = selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
        rows = []
        for p in points or []:
            if p.get("curve_number", 0) != 0:
                continue
            custom = p.get("customdata")
            if isinstance(custom, (list, tuple)) and custom:
                rows.append(int(custom[0]))
            elif p.get("point_index") is not None:
                rows.append(int(p["point_index"]))
        return sorted(set(r for r in rows if 0 <= r < n))


    rows = _selected_rows(event)
    if not rows:
        st.caption("Select points (click, box or lasso) to see their images and metrics.")
        st.stop()

    # ---- the selection
    proto = cache.evaluation(run, attack).protocol  # the sidebar's protocol (its ROC convention)
    sub = subset_metrics(scores, labels, rows, protocol=proto)
    all_m = subset_metrics(scores, labels, list(range(n)), protocol=proto)
    t_text = "" if t_index is None else f" at t = {run.timesteps(attack)[t_index]}"
    st.subheader(f"Selection: {sub['n']} samples ({sub['n_members']} members, {sub['n_heldout']} held-out)")
    st.caption(f"Baseline {ui.attack_label(attack)} scores{t_text}, {proto.name} protocol's ROC convention "
               f"(TPR@1%FPR = {proto.tpr_rule}); in-sample, descriptive. Difference: selection − all samples.")
    m1, m2, m3 = st.columns(3)
    for col, (m, name) in zip((m1, m2, m3), (("auroc", "AUROC"), ("tpr_at_1fpr", "TPR@1%FPR"), ("asr", "ASR"))):
        value = sub[m]
        col.metric(f"{name} (selection)", None if np.isnan(value) else value, format="%.4f",
                   help="empty when the selection holds one class")
        if not np.isnan(value):
            col.caption(f"{value - all_m[m]:+.4f} vs all samples ({all_m[m]:.4f})")

    left, right = st.columns([1, 1])
    with left:
        sel_labels = labels[rows]
        if 0 < sel_labels.sum() < len(rows):
            curve_sel = metrics.roc(scores[rows], sel_labels)
            curve_all = metrics.roc(scores, labels)
            st.plotly_chart(
                figures.roc_curves({"selection": (curve_sel.fpr, curve_sel.tpr), "all": (curve_all.fpr, curve_all.tpr)},
                                   aurocs={"selection": sub["auroc"], "all": all_m["auroc"]},
                                   title=f"ROC of the selection ({ui.attack_label(attack)})"),
                key="umap_subset_roc",
            )
        else:
            st.info("The selection holds only one class: no ROC.")
    with right:
        paths = run.samples["path"].tolist()
        shown = rows[:48]
        st.markdown(f"**Images** ({len(shown)} of {len(rows)} shown)")
        cols = st.columns(6)
        for j, i in enumerate(shown):
            thumb = cache.thumbnail(paths[i], size=80)
            with cols[j % 6]:
                cap = f"#{i} {splits[i][:4]} · {log_volume[i]:.2f}"
                if thumb is None:
                    st.caption(f"{cap} (missing)")
                else:
                    st.image(thumb, caption=cap)
