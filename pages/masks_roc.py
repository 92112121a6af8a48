"""Masks & ROC page: does dropping low-influence coordinates from the attack statistic help?

Per-sample drop (each sample drops its own lowest-influence p %), the random-drop control at
the same percentage (several seeds: a band), a global ranking mask and manual channel / position /
coordinate masks; the masking findings with their paired intervals, ROC curves, a metrics table
that names the protocol, t and drop of every number, metrics against the drop percentage and the
timestep. Every control recomputes inside a fragment from the cached ``Evaluation`` only.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from ldminv_core import masks, metrics

from ldminv_app import cache, export, figures, state, ui

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

    def roc_panel(ev, scores: dict) -> None:
        curves, aurocs = {}, {}
        for name, s in scores.items():
            c = metrics.roc(s, labels)
            curves[name] = (c.fpr, c.tpr)
            aurocs[name] = metrics.auroc(s, labels)
        r1, r2 = st.columns(2)
        note = ev.arms()["baseline"].t_text
        r1.plotly_chart(figures.roc_curves(curves, aurocs=aurocs, title=f"ROC ({note})"), key="masks_roc_lin")
        r2.plotly_chart(figures.roc_curves(curves, aurocs=aurocs, log_scale=True, title=f"ROC, log-log ({note})"),
                        key="masks_roc_log")

    if t_index is None:
        # PFAMI: one score per sample, nothing to mask.
        ev = cache.evaluation(run, attack, n_boot=1000)
        st.info(f"{ui.attack_label(attack)} gives one score per sample: it cannot be masked. Its ROC and metrics "
                f"({ev.protocol.name} protocol):")
        roc_panel(ev, {"baseline": ev.scores("baseline")})
        st.dataframe(export.arms_table([ev.arms()["baseline"]], honest=ev.protocol.name == "honest").set_index("variant"))
        st.stop()

    timesteps = run.timesteps(attack)
    with head2:
        st.markdown(
            f"**{ui.attack_label(attack)}** · {run.n_members} members / {run.n_heldout} held-out · "
            f"protocol **{state.current_protocol()}** (sidebar) · curves at t = {timesteps[t_index]}"
        )

    def masks_body(run, attack: str, t_index: int, labels: np.ndarray, timesteps: list[int]) -> None:
        c_count, h, w = run.latent_shape
        d = c_count * h * w
        honest = state.current_protocol() == "honest"

        # ---- controls
        k1, k2, k3 = st.columns([2, 1, 1])
        with k1:
            per_fold = False
            if honest:
                per_fold = st.toggle("Choose the drop on the other folds (honest)", value=True, key="drop_per_fold",
                                     help="Each fold takes the drop % of the best masked AUROC on the other folds; "
                                     "off: the slider fixes it for every fold.")
            drop = st.slider(
                "Drop percentage (per sample: its lowest-influence coordinates)",
                0, 90, 40, step=1, key="drop_percent", disabled=per_fold,
                help="Each sample drops its own lowest-influence coordinates (paper default 40 %).",
            )
            rule = ("coordinates at or below the sample's np.percentile threshold" if state.current_protocol() == "paper"
                    else f"{masks.drop_count(d, drop)} of {d} coordinates")
            st.caption(f"Dropped per sample: {rule}")
        with k2:
            use_global = st.toggle("Global ranking mask", value=False, key="use_global",
                                   help="Drop the same coordinates for every sample: those of lowest mean influence.")
        with k3:
            n_boot = st.select_slider("Bootstrap replicates", [0, 200, 1000], value=200, key="n_boot",
                                      help="200 keeps the page live; choose 1000 for the intervals you report.")

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

        ev = cache.evaluation(run, attack, n_boot=int(n_boot))
        p = None if per_fold else float(drop)
        arms = ev.arms(p)
        base, masked, rand = arms["baseline"], arms["masked"], arms["random"]
        shown = [base, masked, rand]
        roc_scores = {"baseline": ev.scores("baseline"), "masked": ev.scores("masked", p),
                      "random": ev.scores("random", p)}
        if use_global:
            gstat = ev.global_stat(float(drop))
            shown.append(ev.custom_arm("global", gstat))
            roc_scores["global"] = ev.custom_scores(gstat)
        if use_manual:
            if not keep.any():
                st.warning("The manual mask keeps no coordinate; its statistic is 0 for every sample.")
            mstat = masks.masked_statistic(ev.terms(), keep)
            shown.append(ev.custom_arm("manual", mstat))
            roc_scores["manual"] = ev.custom_scores(mstat)

        # ---- headline cards: every value names its t (and drop); differences with their intervals
        s1, s2, s3, s4 = st.columns(4)
        s1.metric("AUROC (baseline)", base.auroc, format="%.4f", help=base.t_text)
        s1.caption(f"{base.t_text} · 95% CI {ui.ci_text(base.ci['auroc']).replace('+', '')}")
        s2.metric("AUROC (masked)", masked.auroc, format="%.4f", help=f"{masked.t_text}, drop {masked.drop_text}")
        s2.caption(f"{masked.t_text} · drop {masked.drop_text}")
        tpr_help = ev.protocol.tpr_rule
        s3.metric("TPR@1%FPR (baseline)", base.tpr_at_1fpr, format="%.4f", help=tpr_help)
        s3.caption(base.t_text + (f" · realised FPR {base.realised_fpr_at_1fpr:.4f}" if honest else ""))
        s4.metric("TPR@1%FPR (masked)", masked.tpr_at_1fpr, format="%.4f", help=tpr_help)
        s4.caption(masked.t_text + (f" · realised FPR {masked.realised_fpr_at_1fpr:.4f}" if honest else ""))
        f1, f2 = st.columns(2)
        for col, fid in ((f1, "masking_vs_baseline"), (f2, "masking_vs_random")):
            f = next(x for x in ev.findings(p) if x.id == fid)
            with col:
                ui.finding_card(f)

        # ---- ROC curves
        roc_panel(ev, roc_scores)

        # ---- metrics table with bootstrap intervals
        st.markdown(f"**Metrics, {ev.protocol.name} protocol** (intervals: {ev.n_boot} stratified bootstrap "
                    f"replicates; random = mean of seeds {', '.join(map(str, rand.seeds))})")
        st.dataframe(export.arms_table(shown, honest=honest).set_index("variant"), key="masks_metrics_table")
        if honest:
            with st.expander("Choices of every fold (made on the other folds only)"):
                st.dataframe(export.folds_table(shown[:3]), hide_index=True, key="masks_folds_table")

        # ---- metrics against drop percentage, with bands
        curves = ev.drop_curves(t_index)
        current = None if per_fold else float(drop)
        p1, p2 = st.columns(2)
        for col, m, name in ((p1, "auroc", "AUROC"), (p2, "tpr_at_1fpr", "TPR@1%FPR")):
            col.plotly_chart(
                figures.drop_curves_with_bands(
                    curves.percents, masked=curves.masked[m], masked_band=(curves.masked_lo[m], curves.masked_hi[m]),
                    random_mean=curves.random_mean[m], random_band=(curves.random_lo[m], curves.random_hi[m]),
                    baseline=curves.baseline[m], baseline_ci=curves.baseline_ci[m], n_seeds=len(curves.seeds),
                    ylabel=name, current=current,
                    title=f"{name} vs drop %, t = {curves.t} (all samples, {ev.protocol.name} convention)",
                ),
                key=f"masks_drop_{m}",
            )

        # ---- metrics against timestep: baseline vs masked at the current drop
        base_t = ev.per_t()
        masked_t = ev.masked_per_t(float(drop))
        q1, q2 = st.columns(2)
        for col, m, name in ((q1, "auroc", "AUROC"), (q2, "tpr_at_1fpr", "TPR@1%FPR")):
            col.plotly_chart(
                figures.metric_vs_timestep(timesteps, {"baseline": base_t[m], "masked": masked_t[m]}, ylabel=name,
                                           selected_t=timesteps[t_index],
                                           title=f"{name} vs timestep (drop {drop} %, all samples)"),
                key=f"masks_t_{m}",
            )
        best_masked = int(np.nanargmax(masked_t["auroc"])) if np.isfinite(masked_t["auroc"]).any() else t_index
        st.caption(
            f"Best masked AUROC over timesteps: {masked_t['auroc'][best_masked]:.4f} at t = {timesteps[best_masked]} "
            "(chosen on the evaluation set itself: optimistic; the honest protocol chooses t on other folds)."
        )

    @st.fragment
    def masks_panel(run, attack: str, t_index: int, labels: np.ndarray, timesteps: list[int]) -> None:
        """The controls and everything they change: reruns alone when a control moves."""
        with ui.guard("The masks panel failed"):
            masks_body(run, attack, t_index, labels, timesteps)

    masks_panel(run, attack, t_index, labels, timesteps)
