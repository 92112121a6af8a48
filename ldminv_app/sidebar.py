"""The sidebar: the active run's summary (paths shortened for its width), the live status of a
partial run's analysis, the protocol, attack and timestep selectors.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import streamlit as st

from ldminv_core.runs import Run

from . import cache, state
from .banners import pending_text
from .jobs import AnalysisJob
from .notices import guard
from .progress import job_progress_text
from .startup import _demo_module, demo_pending, start_demo_job
from .widgets import attack_selector, protocol_selector, timestep_selector

__all__ = ["run_title", "path_html", "live_analysis_status", "render_sidebar"]


def run_title(run: Run) -> str:
    return Path(run.path).name


def _resume_job(run: Run) -> None:
    """Start (again) the analysis that finishes the partial ``run`` with its own settings."""
    from ldminv_core.pipeline.batches import AnalysisCancelled
    from ldminv_core.pipeline.run import run_analysis

    from .jobs import resume_config

    demo_dir = _demo_module().demo_run_dir()
    if Path(run.path).resolve() == Path(demo_dir).expanduser().resolve():
        start_demo_job()
        return
    config = resume_config(run.path)
    cache.job_registry().start(str(run.path), AnalysisJob(label=run_title(run), config=config, target=run_analysis,
                                                          cancelled_exc=AnalysisCancelled))


def live_analysis_status(run: Run) -> None:
    """Sidebar block of a partial run: the analysis' live progress (refreshed every 1.5 s) and a
    full rerun of the page whenever a stage lands, so every page shows what exists as soon as it
    exists. Without a running analysis: what is missing and a button that resumes it."""
    if not run.partial:
        return
    path, stamp = cache.run_key(run.path)

    @st.fragment(run_every=1.5)
    def status() -> None:
        if cache.run_key(path)[1] != stamp:
            st.rerun(scope="app")
        job = cache.job_registry().for_run(path)
        snap = job.state() if job is not None else None
        if snap is not None and snap.status in ("pending", "running"):
            overall, text = job_progress_text(snap)  # the record the page's own bar formats too
            st.progress(overall, text=text)
            st.caption(f"Still computing: {pending_text(run)}. Pages refresh as each stage lands.")
            return
        if snap is not None and snap.status == "error":
            st.error(f"The analysis stopped: {snap.error}")
        st.warning(f"Partial run: {pending_text(run)} not computed (the analysis is not running).")
        if st.button("Resume the analysis", key="resume_partial", icon=":material/play_arrow:"):
            with guard("Resuming the analysis failed"):
                _resume_job(run)
                st.rerun()

    status()


def path_html(path: Any, *, keep: int = 2, max_chars: int = 40) -> str:
    """A file path for the narrow sidebar, as HTML: a path longer than ``max_chars`` characters
    shows its last ``keep`` components after "…/"; line breaks are allowed after each separator
    (``/ \\ - _ .``) rather than inside a name; the whole path is the tooltip."""
    text = str(path)
    parts = [p for p in re.split(r"(?<=[/\\])", text) if p]  # each component with its separator
    short = len(text) <= max_chars or len(parts) <= keep + 1
    shown = text if short else "…/" + "".join(parts[-keep:])
    body = re.sub(r"([/\\_.-])", r"\1<wbr>", html.escape(shown, quote=False))
    body = re.sub(r"[\\`*_$\[\]~|]", lambda m: f"&#{ord(m.group())};", body)  # literal, not Markdown
    return (f'<code title="{html.escape(text, quote=True)}" style="white-space: normal; word-break: normal; '
            f'overflow-wrap: anywhere">{body}</code>')


def render_sidebar(run: Run | None, *, uses_timestep: bool = True) -> tuple[str | None, int | None]:
    """The active run's summary and the shared attack and timestep selectors (``uses_timestep``
    False: the page shows nothing at the sidebar's t, and the slider reruns only itself).

    Returns (attack, t_index) in use, (None, None) without a run.
    """
    with st.sidebar:
        st.markdown("#### Active run")
        err = st.session_state.get(state.STARTUP_ERROR)
        if run is None:
            if err:
                st.error(err)
            if demo_pending():
                st.info("The built-in demo is being prepared (first start only): its findings open here as "
                        "soon as its first attack has finished.")
            else:
                st.info("No run open. Use the Model & data page to open or compute one.")
            return None, None
        s = run.settings
        c, h, w = run.latent_shape
        st.markdown(f"**{run_title(run)}**")
        st.markdown(
            f"- model: {path_html(s.get('model', '?'))}\n"
            f"- members: {path_html(s.get('members', '?'))}\n"
            f"- held-out: {path_html(s.get('heldout', '?'))}\n"
            f"- {run.n_members} members / {run.n_heldout} held-out\n"
            f"- latent {c}×{h}×{w} (d = {c * h * w})",
            unsafe_allow_html=True,
        )
        live_analysis_status(run)
        protocol_selector()
        attack = attack_selector(run, key="sidebar_attack")
        t_index = timestep_selector(run, attack, reruns_page=uses_timestep)
        return attack, t_index
