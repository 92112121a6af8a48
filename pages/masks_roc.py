"""Masks & ROC page: does dropping low-influence coordinates from the attack statistic help?

Per-sample drop (each sample drops its own lowest-influence p %), the random-drop control at
the same percentage (several seeds: a band), a global ranking mask and manual channel / position /
coordinate masks; the masking findings with their paired intervals, ROC curves, a metrics table
that names the protocol, t and drop of every number, metrics against the drop percentage and the
timestep. The ROC curves carry the blind baseline's (the files alone, never the model; METHOD.md
section 6) dashed beside the attack's, with a one-line shift note when the files alone separate the
folders. Every control recomputes inside a fragment from the cached ``Evaluation`` only.

Live: the drop slider reruns the fragment alone; the headline numbers come first (``st.metric``),
the ROC curves are thinned to about 200 points, and after each run the neighbouring drops are
computed in the background (``ldminv_app.warm.prefetch_drops``) so that one slider step is a lookup.
"""
from __future__ import annotations

import streamlit as st

from ldminv_core.choices import attack_label

from ldminv_app import activity, cache, frame, masks_view, notices, state, timestep_text, widgets

run = frame.require_run()  # waits for the decoder geometry of a partial run

with notices.guard("The Masks & ROC page failed"):
    st.title("Masks & ROC")
    st.caption(
        "Statistic = Σ mask_i · term_i(t); score = −statistic (higher = member). The model always "
        "sees the full latent: masks only choose which coordinates enter the statistic."
    )
    head1, head2 = st.columns([1, 2])
    with head1:
        attack = widgets.attack_selector(run, key="masks_attack")
    t_index = state.current_t_index(run, attack)

    if t_index is None:
        # PFAMI: one score per sample, nothing to mask.
        masks_view.unmaskable(run, attack, state.evaluation(run, attack))
        st.stop()

    timesteps = run.timesteps(attack)
    with head2:
        st.markdown(
            f"**{attack_label(attack)}** · {run.n_members} members / {run.n_heldout} held-out · "
            f"protocol **{state.current_protocol()}** (sidebar)  \n"
            + timestep_text.t_scope_text(state.evaluation(run, attack), t_index,
                              fixed="cards, findings, ROC curves and metrics table",
                              follows="the curves against the drop %")
        )

    def masks_body(run, attack: str, t_index: int, timesteps: list[int]) -> None:
        """Controls, then the arms they select and everything showing them, then the background warm-up."""
        honest = state.current_protocol() == "honest"
        controls = masks_view.controls(run)
        drop, per_fold, n_boot, p = controls.drop, controls.per_fold, controls.n_boot, controls.p
        ev = state.evaluation(run, attack, n_boot=int(n_boot))
        arms = masks_view.mask_arms(ev, controls)
        masks_view.headline(ev, run, arms, p)
        masks_view.chart_views(ev, run, arms, t_index=t_index, timesteps=timesteps, drop=drop,
                               current=None if per_fold else float(drop), honest=honest)
        masks_view.metrics_table(ev, arms, honest)
        if not per_fold:
            # the neighbouring drops, computed in the background: the next slider step is a lookup
            near = [float(drop + k) for k in (1, -1, 2, -2, 3, -3) if 0 <= drop + k <= 90]
            from ldminv_app import warm

            warm.prefetch_drops(ev, near, t_index=t_index)
        if int(n_boot) == cache.PAGE_N_BOOT:
            # then the other protocols at this drop and the neighbouring timesteps (one low-priority
            # thread): a protocol or timestep change is a lookup too
            state.warm_controls(run, attack, p, t_index)

    @st.fragment

    @activity.counts_as_page
    def masks_panel(run, attack: str, t_index: int, timesteps: list[int]) -> None:
        """The controls and everything they change: reruns alone when a control moves."""
        with notices.guard("The masks panel failed"):
            masks_body(run, attack, t_index, timesteps)

    masks_panel(run, attack, t_index, timesteps)
