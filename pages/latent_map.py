"""Latent map page: a UMAP of the latents, coloured by distortion, split, score or a coordinate's
influence; a box / lasso selection shows its images and that subset's ROC and metrics.

Each embedding is computed on request and stored in the run folder under its settings
(``ldminv_app.cache.compute_umap``), so every setting is computed once and stays available.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import streamlit as st

from ldminv_core.pipeline.cost import format_duration
from ldminv_core.choices import attack_label
from ldminv_core.evaluation import fpr_support

from ldminv_app import cache, figure_memo, figures, frame, latent_view, notices, roc_view, selections, state

#: Session-state key of the point selection: {resolved run path: sorted row indices}. Kept here
#: (not only in the chart's widget state) because a new colouring is a new chart whose own
#: selection starts empty; the page re-applies the stored rows to it.
SELECTION = "_umap_selection"
#: Session-state key of the chart (its widget state holds plotly's latest selection event).
CHART_KEY = "umap_chart"
#: Most thumbnails shown for a selection (half per split where both have that many).
MAX_THUMBNAILS = 48
#: Session-state key of the seed of the thumbnails' sample ("Show other images" moves it on).
THUMB_SEED = "_umap_thumb_seed"


def selected_rows(selection, n: int) -> list[int]:
    """Row indices (0 <= row < n) of the samples in a plotly selection state (points of trace 0;
    ``customdata[0]`` is the row, else ``point_index``)."""
    if selection is None:
        return []
    if not isinstance(selection, dict):
        selection = getattr(selection, "selection", None) or {}
    if "selection" in selection and "points" not in selection:
        selection = selection["selection"] or {}
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


run = frame.require_run()  # waits for the decoder geometry of a partial run

with notices.guard("The Latent map page failed"):
    attack = state.current_attack(run)
    t_index = state.current_t_index(run, attack)
    labels = run.labels
    n = len(run)
    run_id = str(Path(run.path).resolve())
    st.session_state.setdefault(SELECTION, {})

    st.title("Latent map")
    st.caption("UMAP of the flattened latents (encoder means). Select points with the box or lasso tool.")

    o1, o2, o3 = st.columns([1, 1, 2])
    with o1:
        n_neighbors = int(st.number_input("UMAP neighbours", 2, 200, 15, step=1, key="umap_neighbors"))
    with o2:
        umap_seed = int(st.number_input("UMAP seed", 0, 2**31 - 1, 0, step=1, key="umap_seed"))

    xy = cache.stored_umap(run, seed=umap_seed, n_neighbors=n_neighbors)
    if xy is None:
        notice = st.empty()  # the notice and its button go as soon as the embedding exists
        with notice.container():
            st.info(f"No UMAP with these settings yet for this run ({n} samples, {n_neighbors} neighbours, "
                    f"seed {umap_seed}).")
            clicked = st.button("Compute the UMAP", type="primary", key="umap_compute")
        if clicked:
            notice.empty()
            d = int(np.prod(run.latent_shape))
            with st.status(f"Computing the UMAP of {n} latents (d = {d})…", expanded=True) as status:
                st.write(f"Embedding {n} samples with {n_neighbors} neighbours, seed {umap_seed}. The first UMAP "
                         "of a session also compiles umap-learn's numba code (about half a minute).")
                t0 = time.perf_counter()
                try:
                    xy, not_saved = cache.compute_umap(run, seed=umap_seed, n_neighbors=n_neighbors)
                except Exception as exc:  # noqa: BLE001
                    status.update(label="UMAP failed", state="error")
                    notices.show_error(exc, what="UMAP failed")
                else:
                    status.update(label=f"UMAP of {n} latents computed in {format_duration(time.perf_counter() - t0)}",
                                  state="complete", expanded=False)
                    if not_saved:
                        st.warning(f"Kept until the dashboard restarts, not saved with the run: {not_saved}")
        if xy is None:
            st.stop()

    # ---- colouring
    scores = state.baseline_scores(run, attack)[:, 0 if t_index is None else t_index]
    log_volume = run.log_volume
    splits = run.samples["split"].to_numpy()
    split_names = np.array([figures.split_label(v) for v in splits], dtype=object)
    sample_ids = run.samples["sample_id"].to_numpy()
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
        color, color_label = scores, f"{attack_label(attack)} score{t_text}"
    elif color_by == "influence of a coordinate":
        c_count, h, w = run.latent_shape
        i1, i2, i3 = st.columns(3)
        ch = int(i1.number_input("channel", 0, c_count - 1, 0, key="umap_coord_c"))
        row = int(i2.number_input("row y", 0, h - 1, 0, key="umap_coord_r"))
        col = int(i3.number_input("column x", 0, w - 1, 0, key="umap_coord_w"))
        color, color_label = np.asarray(run.influence[:, ch, row, col], dtype=np.float32), f"influence ({figures.coord_label(ch, row, col)})"
    else:
        color, color_label = log_volume, "log-volume"

    def _on_select() -> None:
        """A selection event of the user (box, lasso, click or a double-click that clears it)."""
        st.session_state.setdefault(SELECTION, {})[run_id] = selected_rows(st.session_state.get(CHART_KEY), n)

    rows = [r for r in st.session_state[SELECTION].get(run_id, []) if 0 <= r < n]
    fig = figure_memo.figure(figures.latent_scatter, xy,
        color,
        color_label=color_label,
        categorical=categorical,
        sample_ids=sample_ids,
        hover={
            "split": split_names,
            "log-volume": np.round(log_volume, 3),
            "score": np.array([f"{v:.4g}" for v in scores]),
        },
        selected=rows or None,
    )
    st.plotly_chart(
        fig, key=CHART_KEY, on_select=_on_select, selection_mode=("points", "box", "lasso"),
        config=figures.plotly_config(f"ldminv-umap-{Path(run.path).name}"),
    )
    rows = [r for r in st.session_state[SELECTION].get(run_id, []) if 0 <= r < n]  # as the callback left it
    if not rows:
        st.caption("Select points (click, box or lasso) to see their images and metrics.")
        st.stop()
    if st.button("Clear the selection", key="umap_clear"):
        st.session_state[SELECTION][run_id] = []
        st.rerun()

    # ---- the selection
    ev = state.evaluation(run, attack)
    proto = ev.protocol  # the sidebar's protocol (its ROC convention)
    st.subheader(f"Selection: {len(rows)} samples ({int(labels[rows].sum())} members, "
                 f"{len(rows) - int(labels[rows].sum())} held-out)")
    # nothing chosen on the selection (honest: the pooled out-of-fold scores, the folds' thresholds)
    picked = latent_view.selection_metrics(ev, run, attack, scores, rows, t_index=t_index)
    metric_scores, sub, all_m = picked.scores, picked.selection, picked.everything
    st.caption(picked.caption)
    m1, m2, m3 = st.columns(3)
    for col, (m, name) in zip((m1, m2, m3), (("auroc", "AUROC"), ("tpr_at_1fpr", "TPR@1%FPR"), ("asr", "ASR"))):
        value = sub[m]
        col.metric(f"{name} (selection)", None if np.isnan(value) else value, format="%.4f",
                   help="empty when the selection holds one class")
        if not np.isnan(value):
            col.caption(f"{value - all_m[m]:+.4f} vs all samples ({all_m[m]:.4f})")
        if m == "tpr_at_1fpr":
            caution = fpr_support(proto, n_members=sub["n_members"], n_heldout=sub["n_heldout"], fpr=0.01).warning()
            if caution:
                col.caption(f":warning: {caution}")

    left, right = st.columns([1, 1])
    with left:
        sel_labels = labels[rows]
        if 0 < sel_labels.sum() < len(rows):
            st.plotly_chart(
                figure_memo.figure(figures.roc_curves, roc_view.selection_curves(metric_scores, labels, rows),
                                   aurocs={"selection": sub["auroc"], "all": all_m["auroc"]},
                                   title=f"ROC of the selection ({attack_label(attack)})"),
                key="umap_subset_roc", config=figures.plotly_config(f"ldminv-umap-selection-roc-{attack}"),
            )
        else:
            st.info("The selection holds only one class: no ROC.")
    with right:
        paths = run.samples["path"].tolist()
        sample_seed = int(st.session_state.get(THUMB_SEED, 0))
        shown = selections.balanced_sample(rows, labels, limit=MAX_THUMBNAILS, seed=sample_seed)
        per_row = 4  # ~120 px per thumbnail column: "held-out #1234" fits on one line
        st.markdown("**Images**")
        if len(shown) < len(rows):
            st.caption(f"A random sample (seed {sample_seed}) of at most {MAX_THUMBNAILS // 2} per split where "
                       "both have that many.")
            if st.button("Show other images", key="umap_thumb_resample"):
                st.session_state[THUMB_SEED] = sample_seed + 1
                st.rerun()
        for split_value, split_title in ((1, "Members"), (0, "Held-out")):
            part = [i for i in shown if (labels[i] == 1) == (split_value == 1)]
            total = int(np.sum((labels[rows] == 1) == (split_value == 1)))
            if not total:
                continue
            st.markdown(f"{split_title}: {len(part)} of {total} shown")
            for start in range(0, len(part), per_row):
                cols = st.columns(per_row)
                for j, i in enumerate(part[start:start + per_row]):
                    thumb = cache.thumbnail(paths[i], size=80)
                    with cols[j]:
                        if thumb is None:
                            st.caption("(image missing)")
                        else:
                            st.image(thumb, width=80)
                        st.caption(f"{split_names[i]} #{sample_ids[i]}  \nlog-vol {log_volume[i]:.2f}")
