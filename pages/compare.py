"""Compare page: two or more runs on the same samples (checkpoints, LoRA scales, training steps)
side by side under the sidebar's protocol: every metric and finding of each run, the difference
B - A with its paired interval and a verdict, and the images that become exposed. Numbers come
from ``ldminv_core.evaluation.compare`` through ``ldminv_app.compare_view`` (cached).
"""
from __future__ import annotations

import streamlit as st

from ldminv_app import compare_view, frame, notices, state

frame.page_frame(needs_run=False)

with notices.guard("The Compare page failed"):
    st.title("Compare")
    protocol, folds = state.current_protocol(), state.current_folds()
    st.caption("Runs analyzed on the same images (same sample ids, splits and file contents): the first is A, "
               f"each other one B. Protocol **{protocol}** (sidebar). Intervals are paired: both runs are "
               "resampled on the same samples; a difference *rises* / *falls* when its 95% paired interval lies "
               "above / below 0, and is *inconclusive* when it contains 0.")
    paths = st.multiselect("Runs (A first)", compare_view.complete_runs(), key="compare_runs",
                           help="Complete runs under the runs folder (LDMINV_HOME)")
    if len(paths) < 2:
        st.info("Pick at least two runs on the same samples.")
        st.stop()
    with st.spinner("Comparing the runs…"):
        results = compare_view.comparison(paths, protocol=protocol, folds=folds)
    for cmp in results:
        st.subheader(f"B = {cmp.run_b.name} against A = {cmp.run_a.name}")
        st.markdown("**Metrics**")
        st.dataframe(compare_view.metrics_table(cmp), hide_index=True)
        st.markdown("**Findings**")
        st.dataframe(compare_view.findings_table(cmp), hide_index=True)
        st.markdown("**Newly exposed images** (baseline arm, flagged at the 1%-FPR threshold in B, not in A)")
        for attack in cmp.attacks:
            compare_view.exposure_gallery(cmp, attack)
