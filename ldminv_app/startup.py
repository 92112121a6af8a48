"""Start-up of a session: open the run LDMINV_RUN names or the cached demo run, or compute the
demo (progress bar) on the first start.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from ldminv_core.errors import LdminvError
from ldminv_core.runs import Run, run_status

from . import cache, state
from .jobs import AnalysisJob
from .notices import show_error
from .progress import follow_job

__all__ = ["DEMO_JOB_ID", "demo_config", "startup_run", "demo_pending", "stage_order",
           "start_demo_job", "first_results", "DEMO_INTRO", "prepare_demo"]


_STARTUP_DONE = "_startup_done"


_DEMO_PENDING = "_demo_pending"


DEMO_JOB_ID = "demo"  # job ids of the demo analysis: "demo:<its run folder>"


def _demo_module():
    from ldminv_core import demo

    return demo


def demo_config(*, device: str = "auto"):
    """The AnalyzeConfig of the built-in demo run (``demo.DEMO_ANALYZE_DEFAULTS``).

    Raises DataLoadError when the demo assets are missing from this checkout.
    """
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.errors import DataLoadError

    demo = _demo_module()
    if not demo.demo_available():
        raise DataLoadError(
            f"the demo assets are missing: expected {demo.DEMO_MODEL_DIR}, {demo.DEMO_MEMBERS_DIR} and "
            f"{demo.DEMO_HELDOUT_DIR} (python scripts/train_demo.py writes them)"
        )
    return AnalyzeConfig(
        model=str(demo.DEMO_MODEL_DIR),
        members=str(demo.DEMO_MEMBERS_DIR),
        heldout=str(demo.DEMO_HELDOUT_DIR),
        out=str(demo.demo_run_dir()),
        device=device,
        **demo.DEMO_ANALYZE_DEFAULTS,
    )


def startup_run() -> Run | None:
    """The active run; on the first script run of a session, open the run named by
    LDMINV_RUN or, without it, the demo run (or mark the demo as to be computed)."""
    run = state.active_run()
    if run is not None or st.session_state.get(_STARTUP_DONE):
        return run
    st.session_state[_STARTUP_DONE] = True
    env = state.env_run_path()
    if env:
        try:
            return state.set_active_run(env)
        except LdminvError as exc:
            st.session_state[state.STARTUP_ERROR] = f"LDMINV_RUN={env} cannot be opened: {exc}"
            return None
    try:
        demo_dir = _demo_module().demo_run_dir()
        if run_status(demo_dir) == "complete":
            return state.set_active_run(demo_dir)
    except Exception as exc:  # noqa: BLE001 - a broken demo must not stop the app
        st.session_state[state.STARTUP_ERROR] = f"The demo run cannot be opened: {exc}"
        return None
    st.session_state[_DEMO_PENDING] = True
    return None


def demo_pending() -> bool:
    return bool(st.session_state.get(_DEMO_PENDING))


def stage_order(config: Any) -> list[str]:
    """The stages of an analysis of ``config`` in the order ``run_analysis`` computes them."""
    from .jobs import planned_stage_order

    return planned_stage_order(config)


def start_demo_job() -> AnalysisJob:
    """The server-wide demo analysis job (started, or resumed, when none is running). It reuses
    the demo's shipped decoder geometry when that provably applies (``ldminv_core.geometry.precomputed``)."""
    import functools

    from ldminv_core.pipeline.batches import AnalysisCancelled
    from ldminv_core.pipeline.run import run_analysis

    registry = cache.job_registry()
    config = demo_config()
    job_id = f"{DEMO_JOB_ID}:{Path(config.out).resolve()}"  # one job per demo folder (per LDMINV_HOME)
    job = registry.get(job_id)
    if job is not None and job.state().status not in ("error", "cancelled"):
        return job
    target = functools.partial(run_analysis, precomputed=_demo_module().demo_precomputed())
    return registry.start(
        job_id, AnalysisJob(label="demo", config=config, target=target, cancelled_exc=AnalysisCancelled))


def first_results(path: str | Path) -> Run | None:
    """The run at ``path`` once it has a finished attack (complete or partial), else None."""
    try:
        run = cache.open_run(path)
    except LdminvError:
        return None
    return run if run.attacks else None


#: What the first start says while the demo is analysed. It promises no duration: that depends on
#: the machine and its load, so the progress bar under it gives the rate and the time left.
DEMO_INTRO = (
    "The built-in demo (a small latent diffusion model trained on Fashion-MNIST members) is analysed "
    "on this machine and cached on disk. The bar below shows the stage, its rate and the time left at that "
    "rate (it depends on this machine and its load); the findings open as soon as the first attack has "
    "finished and the other attacks fill in while you read. Later starts open the cached run at once."
)


def prepare_demo() -> None:
    """Start the demo analysis (once per server) and open its run as soon as the first attack
    has finished: the pages then show what exists, labelled as partial, and refresh as the
    other stages land (:func:`live_analysis_status`)."""
    st.title("Preparing the demo")
    st.write(DEMO_INTRO)
    try:
        config = demo_config()
        job = start_demo_job()
    except Exception as exc:  # noqa: BLE001
        st.session_state[_DEMO_PENDING] = False
        show_error(exc, what="The demo is not available")
        return
    out = config.out
    final = follow_job(job, until=lambda: first_results(out) is not None)
    ready = first_results(out)
    if ready is not None:
        st.session_state[_DEMO_PENDING] = False
        try:
            state.set_active_run(ready.path)
        except LdminvError as exc:
            show_error(exc, what="The demo run cannot be opened")
            return
        st.rerun()
    st.session_state[_DEMO_PENDING] = False
    if final.error is not None:
        show_error(final.error, what="Computing the demo failed")
    st.info("Open or compute another run on the Model & data page.")
