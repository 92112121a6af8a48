"""Distortion page: is memorization stronger where the decoder distorts latent space most?

Below the distortion finding, three tabs of which only the open one is computed and drawn: the
per-sample log-volume of members vs held-out, attack AUROC by log-volume quartile (at the timestep
in use and across timesteps) and the attack's ROC beside the blind baseline's (the files alone,
never the model: METHOD.md section 6); galleries of the least / most distorted images; a
per-sample viewer (image, reconstruction, influence heatmaps, score and rank).
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import quartile_edges, rank_of, verdict_words

from ldminv_app import (activity, blind, cache, cards, distortion_view, figure_memo, figures, frame, notices,
                        reconstruction_view, roc_view, state, widgets)

run = frame.require_run()  # waits for the decoder geometry of a partial run

with notices.guard("The Distortion page failed"):
    attack = state.current_attack(run)
    t_index = state.current_t_index(run, attack)
    labels = run.labels
    log_volume = run.log_volume
    t_text = "" if t_index is None else f" at t = {run.timesteps(attack)[t_index]}"

    ev = state.evaluation(run, attack)
    finding = next(f for f in ev.findings() if f.id == "distortion_quartiles")
    st.title("Distortion")
    st.caption(
        "Log-volume = sum of the top-k log singular values of the decoder Jacobian at the sample's "
        "latent: how much the decoder stretches space there."
    )
    words = verdict_words(finding.verdict, finding.estimate, metric=finding.metric, confounded=finding.confounded)
    st.markdown(f"{cards.verdict_badge(finding.verdict, confounded=finding.confounded)} "
                + (f"*{words[len(finding.verdict):].strip()}* " if words != finding.verdict else "")
                + cards.statement_text(finding))
    if finding.confounded:
        st.warning(finding.caveat, icon=":material/warning:")

    # ---- three views, one tab each: only the open one is computed and drawn
    quartiles_tab, galleries_tab, viewer_tab = widgets.lazy_tabs(distortion_view.VIEWS, key=distortion_view.VIEW_KEY)

    def distribution_and_quartiles() -> None:
        """The log-volume distribution, AUROC by distortion quartile, the ROC beside the blind baseline's."""
        left, right = st.columns(2)

        @st.fragment

        @activity.counts_as_page
        def distribution(log_volume: np.ndarray, labels: np.ndarray) -> None:
            """The plot-kind control and the distribution it draws (reruns alone)."""
            kind = st.segmented_control(
                "Plot", ["histogram", "violin"], default="histogram", key="dist_kind", required=True
            )
            st.plotly_chart(
                figure_memo.figure(figures.log_volume_distribution, log_volume, labels, kind=kind or "histogram"),
                key="dist_logvol",
            )
            gap = log_volume[labels == 1].mean() - log_volume[labels == 0].mean()
            st.caption(f"mean log-volume: members − held-out = {gap:+.4f}")

        with left:
            distribution(log_volume, labels)

        quartiles = ev.quartile_groups()
        q_res = ev.quartiles()
        edges = quartile_edges(log_volume, quartiles)
        counts = np.array([q.n for q in q_res])
        with right:
            # the timestep in use (descriptive); the finding above is at the protocol's t
            values, ci, where = distortion_view.quartile_bar_values(ev, run.timesteps(attack), t_index)
            st.plotly_chart(
                figure_memo.figure(figures.quartile_auroc_bars, values, ci=ci, edges=edges, counts=counts,
                    title=f"{attack_label(attack)} AUROC by distortion quartile {where}",
                ),
                key="dist_quartile_bars",
            )
        if ev.maskable and len(ev.timesteps) > 1:
            st.plotly_chart(
                figure_memo.figure(
                    figures.quartile_auroc_vs_timestep, run.timesteps(attack), ev.quartile_per_t(), selected_t=run.timesteps(attack)[t_index],
                    title=f"{attack_label(attack)} AUROC vs timestep per distortion quartile (all samples)",
                ),
                key="dist_quartile_t",
            )

        # ---- the attack's ROC beside the files alone (the blind baseline), same convention
        proto, base = ev.protocol, ev.baseline()
        roc, aurocs = roc_view.baseline_curves(ev)  # the evaluation layer's points, the arm's AUROC
        paper = proto.name == "paper"
        roc_col, roc_text = st.columns([3, 2])
        roc_col.plotly_chart(
            figure_memo.figure(
                figures.roc_curves, roc, aurocs=aurocs, dashed=(blind.BLIND_CURVE,), height=340, max_points=200,
                               title=f"{attack_label(attack)} baseline ROC beside the files alone<br><sup>{proto.name} "
                                     f"protocol, {cards.metric_t_text(base, 'auroc')}</sup>",
                               **roc_view.axis_titles(paper)),
            key="dist_blind_roc", config=figures.plotly_config(f"ldminv-{attack}-roc-vs-blind"),
        )
        with roc_text:
            st.markdown("**Is the distortion effect membership or the folders' difference?**")
            st.caption(f"Solid: {attack_label(attack)}'s baseline, the scores the quartiles above split. Dashed: the "
                       f"{blind.BLIND_CURVE}, a classifier of the images' format, pixels and captions, cross-fitted and never "
                       "seeing the model. If the dashed curve lies as high as the solid one, the files alone separate the "
                       "folders as well as the attack does, and the quartile differences above cannot be read as "
                       "memorization." if blind.BLIND_CURVE in roc else
                       f"The blind baseline is unavailable: {blind.blind_result(ev).reason}")
            shift = blind.shift_note(ev)
            if shift:
                st.caption(shift)
            for line in cards.below_chance_captions([("baseline", base)]):
                st.caption(line)

    if quartiles_tab.open:
        with quartiles_tab:
            distribution_and_quartiles()

    # ---- galleries
    order = np.argsort(log_volume, kind="stable")
    paths = run.samples["path"].tolist()
    splits = [figures.split_label(s) for s in run.samples["split"]]  # "held-out" as everywhere on screen

    def gallery(indices, title: str) -> None:
        st.markdown(f"**{title}**")
        cols = st.columns(min(len(indices), 8) or 1)
        for j, i in enumerate(indices):
            thumb = cache.thumbnail(paths[i], size=96)
            with cols[j % len(cols)]:
                caption = f"#{i} · {splits[i]} · {log_volume[i]:.2f}"
                if thumb is None:
                    st.caption(f"{caption} (image file missing)")
                else:
                    st.image(thumb, caption=caption)

    @st.fragment

    @activity.counts_as_page
    def galleries() -> None:
        """The gallery size and the two galleries (reruns alone)."""
        with notices.guard("The galleries failed"):
            n_show = st.slider("Images per gallery", 4, 24, 8, step=4, key="dist_gallery_n")
            gallery(order[:n_show], "Lowest log-volume")
            gallery(order[::-1][:n_show], "Highest log-volume")

    if galleries_tab.open:
        with galleries_tab:
            galleries()

    # ---- per-sample viewer
    scores = state.baseline_scores(run, attack)[:, 0 if t_index is None else t_index]
    n = len(run)

    @st.fragment

    @activity.counts_as_page
    def viewer() -> None:
        """The sample viewer's controls and what they show (reruns alone)."""
        with notices.guard("The sample viewer failed"):
            sample_viewer()

    def sample_viewer() -> None:
        c1, c2, c3 = st.columns([1, 1, 1])
        with c1:
            pick_by = st.radio("Select by", ["log-volume rank", "sample id"], horizontal=True, key="dist_pick_by")
        with c2:
            if pick_by == "sample id":
                index = int(st.number_input("Sample id", 0, n - 1, 0, step=1, key="dist_sample_id"))
            else:
                rank = int(st.number_input("Rank (1 = most distorted)", 1, n, 1, step=1, key="dist_rank"))
                index = int(order[::-1][rank - 1])
        with c3:
            reduce = st.selectbox("Aggregate channels by", ["mean", "max", "total"], key="dist_reduce")
            opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, step=0.05, key="dist_opacity")

        sample_influence = cache.influence_row(run, index)  # one sample off the memory-mapped file
        score_rank = rank_of(scores, index)
        lv_rank = rank_of(log_volume, index)
        m1, m2, m3, m4 = st.columns(4)
        m1.metric("Split", splits[index])
        m2.metric("Log-volume", f"{log_volume[index]:.4f}", help=f"rank {lv_rank} of {n} (1 = most distorted)")
        m3.metric(f"Score ({attack_label(attack)}{t_text})", f"{scores[index]:.4g}")
        m4.metric("Score rank", f"{score_rank} / {n}", help="1 = most member-like")

        image_shape = run.settings.get("image_shape") or [3, 64, 64]
        image = cache.display_image(paths[index], resolution=int(image_shape[-1]), channels=int(image_shape[0]))

        v1, v2, v3 = st.columns(3)
        with v1:
            if image is None:
                st.warning(f"Image file {paths[index]} cannot be read.")
            else:
                st.image(image, caption=f"input #{index} (as the model sees it)", width="stretch")
        with v2:
            reconstruction_view.reconstruction_section(run, index)  # from the background: never waited for
        with v3:
            if image is not None:
                from ldminv_core.geometry import influence_heatmap  # torch: imported here, when an image is shown

                heat = influence_heatmap(sample_influence, size=image.shape[:2], reduce=reduce)
                st.plotly_chart(
                    figure_memo.figure(
                        figures.image_with_heatmap, image, heat, opacity=opacity, title=f"influence ({reduce} over channels)"),
                    key="dist_overlay", theme=None,  # Streamlit's theme would replace the colour scale
                )
        st.plotly_chart(
            figure_memo.figure(
                figures.channel_heatmaps, sample_influence, title=f"Influence per latent channel, sample #{index}"),
            key="dist_channels", theme=None,
        )
        st.caption(f"{paths[index]}")

    if viewer_tab.open:
        with viewer_tab:
            viewer()
