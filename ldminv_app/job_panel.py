"""The Model & data page's panel of the analysis this session started: its live progress and Cancel
button, the partial run opened as soon as its first attack lands, then the finished run opened, or
Resume / Dismiss after a cancel, or the error.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from ldminv_core.pipeline.batches import AnalysisCancelled
from ldminv_core.pipeline.run import run_analysis

from . import progress, sidebar, startup, state
from .jobs import AnalysisJob
from .notices import show_error
from .run_folders import checked_resume_config

if TYPE_CHECKING:
    from .cache import JobRegistry

__all__ = ["job_panel"]


def job_panel(registry: JobRegistry, job_id: str, job: AnalysisJob | None) -> None:
    """The panel of ``job`` (``registry.get(job_id)``; nothing while None)."""
    if job is not None:
        st.divider()
        st.subheader(f"Analysis: {job.label}")
        snap = job.state()
        if snap.status in ("pending", "running"):
            st.button("Cancel", key="job_cancel", on_click=job.cancel, disabled=job.cancel_requested,
                      help="Stops after the current batch; the partial run can be resumed.")
            out = job.config.out
            opened = st.session_state.get("_partial_opened") == job_id

            def first_results() -> bool:
                return not opened and startup.first_results(out) is not None

            if first_results():
                # the first attack has landed: open the partial run now, the rest fills in
                st.session_state["_partial_opened"] = job_id
                try:
                    run = state.set_active_run(out)
                    state.notify("info", f"The first results of {sidebar.run_title(run)} are in: it is the active run "
                                 "now (partial; every page refreshes as the other stages land).")
                except Exception as exc:  # noqa: BLE001
                    state.notify("error", f"The partial run cannot be opened: {exc}")
                st.rerun()
            # refreshed in place; the sidebar shows the same line from the same record
            progress.live_job_progress(job, rerun_when=first_results)
        if snap.status == "done":
            registry.remove(job_id)
            st.session_state[state.JOB_ID] = None
            try:
                run = state.set_active_run(snap.result)
                state.notify("success", f"Analysis finished: {sidebar.run_title(run)} is now the active run.")
            except Exception as exc:  # noqa: BLE001
                state.notify("error", f"The analysis finished but its run cannot be opened: {exc}")
            st.rerun()
        elif snap.status == "cancelled":
            st.warning(f"{snap.error}")
            r1, r2, _ = st.columns([1, 1, 4])
            if r1.button("Resume", key="job_resume", type="primary"):
                try:
                    config = checked_resume_config(job_id, device=str(job.config.device))
                    registry.start(
                        job_id,
                        AnalysisJob(label=job.label, config=config, target=run_analysis, cancelled_exc=AnalysisCancelled),
                    )
                    st.rerun()
                except Exception as exc:  # noqa: BLE001
                    show_error(exc, what="Cannot resume")
            if r2.button("Dismiss", key="job_dismiss"):
                registry.remove(job_id)
                st.session_state[state.JOB_ID] = None
                st.rerun()
        elif snap.status == "error":
            show_error(snap.error, what="The analysis failed")
            if st.button("Dismiss", key="job_dismiss_error"):
                registry.remove(job_id)
                st.session_state[state.JOB_ID] = None
                st.rerun()
