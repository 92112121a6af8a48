"""Start-up of a session: open the run LDMINV_RUN names, the cached demo run or its preview, or,
on the very first start, compute the preview (seconds) and then the demo, each in a process of
its own.

The first start, step by step:

0. ``streamlit run app.py`` starts the server; its start-up (:func:`server_lifespan`) starts the
   preview job at once when the first start needs it, and the imports the pages need;
1. ``app.py`` asks :func:`needs_preparation` before it runs any page (this module imports neither
   torch nor the evaluation layer, so the question costs milliseconds);
2. :func:`prepare_demo` draws "Preparing the demo", starts the preview job
   (``python -m ldminv_core.first_start preview``: SimA at t = 0, 100, 200 on the demo's images,
   :mod:`ldminv_core.first_start`) and follows it; meanwhile the server imports what the pages
   need (``app.py``), on the other core;
3. when the preview has landed the app reruns: :func:`startup_run` opens it, and the demo job
   (``... first_start demo``: five attacks, 30 timesteps) starts in its own process;
4. every page of the preview says what it is and switches to the demo run by itself as soon as
   the demo's first attack has landed (:func:`preview_banner`).

If the preview cannot be computed, the demo is computed anyway and opened at its first attack.
A later start opens the demo run (complete, or partial with its analysis resumed) at once.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator

import streamlit as st

from ldminv_core.runs import run_status

from .job_registry import registry
from .jobs import AnalysisJob
from .progress import follow_job, job_progress_text

__all__ = ["server_lifespan", "first_start_pending", "DEMO_JOB_ID", "PREVIEW_JOB_ID", "demo_config", "needs_preparation", "startup_run", "demo_pending",
           "stage_order", "start_demo_job", "start_preview_job", "first_results", "DEMO_INTRO", "prepare_demo",
           "is_preview", "preview_banner"]


_STARTUP_DONE = "_startup_done"
_DEMO_PENDING = "_demo_pending"
_PREPARED = "_first_start_prepared"
#: ``ldminv_app.state.ACTIVE_RUN`` (not imported: that module loads the evaluation layer).
_ACTIVE_RUN = "active_run"
_ENV_RUN = "LDMINV_RUN"

DEMO_JOB_ID = "demo"  # job ids of the demo analysis: "demo:<its run folder>"
PREVIEW_JOB_ID = "demo-preview"  # and of its preview: "demo-preview:<its run folder>"
_MODULE = "ldminv_core.first_start"
#: Nice value added to the demo's process: on a small machine the pages of the preview are drawn first.
DEMO_NICENESS = 5


def _demo_module():
    from ldminv_core import demo

    return demo


def _first_start():
    from ldminv_core import first_start

    return first_start


def _demo_dir() -> Path:
    from ldminv_core.demo import demo_run_dir

    return demo_run_dir()


def demo_config(*, device: str = "auto"):
    """The AnalyzeConfig of the built-in demo run (``demo.DEMO_ANALYZE_DEFAULTS``).

    Raises DataLoadError when the demo assets are missing from this checkout.
    """
    return _first_start().demo_config(device=device)


def _has_results(path: Path) -> bool:
    """A run folder at ``path`` that is complete, or partial with a finished attack (cheap: run.json only)."""
    import json

    status = run_status(path)
    if status == "complete":
        return True
    if status not in ("running", "unfinished"):
        return False
    try:
        stages = json.loads((path / "run.json").read_text(encoding="utf-8")).get("stages", {})
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(stages, dict) and any(done for name, done in stages.items()
                                            if name not in ("encode", "blind", "geometry"))


def first_start_pending() -> bool:
    """True when this server has the first start to prepare: LDMINV_RUN names no run, and neither
    the demo run (with a finished attack) nor its complete preview exists. (A session that opens
    a run of its own does not wait for it: :func:`needs_preparation`.)"""
    if os.environ.get(_ENV_RUN, "").strip():
        return False
    return not (_has_results(_demo_dir()) or run_status(_first_start().demo_preview_run_dir()) == "complete")


@contextlib.asynccontextmanager
async def server_lifespan(app: Any) -> AsyncIterator[None]:
    """The server's start-up (``st.App(lifespan=...)`` in app.py): on a first start, the preview job
    (:func:`start_preview_job`) and the pages' imports begin before any browser has connected.
    Any failure here is left to the first session, which reports it."""
    from .preimport import start_preimport

    try:
        if first_start_pending():
            start_preview_job()
    except Exception:  # noqa: BLE001 - the first session shows the error (prepare_demo)
        pass
    start_preimport()
    yield
    # the server is stopping (SIGTERM, Ctrl-C): end the background work now, while the process
    # still runs its Python code (uvicorn then re-raises the signal, and no atexit handler runs)
    from . import shutdown

    shutdown.stop_all()


def needs_preparation() -> bool:
    """True while this session must wait for the first start's preview: no run is open, LDMINV_RUN
    names none, and neither the demo run (with a finished attack) nor its preview exists yet.
    Decided on a session's first script run and kept until :func:`prepare_demo` has finished."""
    decided = st.session_state.get(_PREPARED)
    if decided is not None:
        return not decided
    ready = bool(st.session_state.get(_ACTIVE_RUN)) or bool(os.environ.get(_ENV_RUN, "").strip())
    if not ready:
        try:
            ready = _has_results(_demo_dir()) or run_status(_first_start().demo_preview_run_dir()) == "complete"
        except Exception:  # noqa: BLE001 - a broken home folder: the page frame reports it
            ready = True
    st.session_state[_PREPARED] = ready
    return not ready


def startup_run():
    """The active run; on the first script run of a session, open the run named by LDMINV_RUN or,
    without it, the demo run (complete, or partial with a finished attack: its analysis is resumed),
    else the demo's preview (the demo's analysis is started), or mark the demo as to be computed."""
    from ldminv_core.errors import LdminvError

    from . import state

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
        demo_dir = _demo_dir()
        if run_status(demo_dir) == "complete":
            return state.set_active_run(demo_dir)
        for path in (demo_dir, _first_start().demo_preview_run_dir()):
            if _has_results(path):
                start_demo_job()  # resumed (or still running)
                return state.set_active_run(path)
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


def _run(what: str, out: Any, *, progress, should_stop) -> Path:
    """``python -m ldminv_core.first_start <what> <out>`` in a process of its own (:mod:`.subprocess_job`);
    the demo yields the CPU to the pages being drawn (the preview is what they wait for)."""
    from .subprocess_job import run_module

    return run_module(_MODULE, out, args=(what,), progress=progress, should_stop=should_stop,
                      niceness=DEMO_NICENESS if what == "demo" else 0)


#: Longest wait (s) of the demo's process for the preview's first page to be drawn.
DEMO_AFTER_FIRST_PAGE_S = 10.0


def _in_process(what: str):
    """The job target of ``what`` ("preview" or "demo"); the preview starts the demo when it is
    done, once the first page has been drawn (its imports would compete with that page for the
    CPU) or after :data:`DEMO_AFTER_FIRST_PAGE_S` seconds without one."""
    def target(config, *, progress, should_stop):
        from .preimport import wait_first_page

        path = _run(what, config.out, progress=progress, should_stop=should_stop)
        if what == "preview":
            deadline = time.monotonic() + DEMO_AFTER_FIRST_PAGE_S
            while not wait_first_page(0.1) and time.monotonic() < deadline and not should_stop():
                pass
            if not should_stop():
                start_demo_job()  # the demo follows, in its own process
        return path
    return target


def _start(prefix: str, label: str, config: Any, what: str) -> AnalysisJob:
    from .subprocess_job import ProcessCancelled

    job_id = f"{prefix}:{Path(config.out).resolve()}"  # one job per folder (per LDMINV_HOME)
    job = registry().get(job_id)
    if job is not None and job.state().status not in ("error", "cancelled"):
        return job
    return registry().start(job_id, AnalysisJob(label=label, config=config, target=_in_process(what),
                                                 cancelled_exc=ProcessCancelled, set_threads=False))


def start_demo_job() -> AnalysisJob:
    """The server-wide demo analysis job (started, or resumed, when none is running), in a process
    of its own. It reuses the demo's shipped decoder geometry when that provably applies
    (``ldminv_core.geometry.precomputed``)."""
    return _start(DEMO_JOB_ID, "demo", demo_config(), "demo")


def start_preview_job() -> AnalysisJob:
    """The server-wide job of the demo's preview (:mod:`ldminv_core.first_start`), which starts the
    demo job when it has finished."""
    return _start(PREVIEW_JOB_ID, "demo preview", _first_start().preview_config(), "preview")


def first_results(path: str | Path):
    """The run at ``path`` once it has a finished attack (complete or partial), else None."""
    from ldminv_core.errors import LdminvError

    from . import cache

    try:
        run = cache.open_run(path)
    except LdminvError:
        return None
    return run if run.attacks else None


#: What the first start says while the demo is analysed. It promises no duration: that depends on
#: the machine and its load, so the progress bar under it gives the rate and the time left.
DEMO_INTRO = (
    "The built-in demo (a small latent diffusion model trained on Fashion-MNIST members) is analysed "
    "on this machine and cached on disk. First a quick preview: SimA at three timesteps on all of the "
    "demo's images; it opens as soon as it is ready, while the full analysis (five attacks, 30 timesteps) "
    "goes on and replaces it when its first attack has finished. The bar below shows the stage, its rate "
    "and the time left at that rate (it depends on this machine and its load). Later starts open the "
    "cached run at once."
)


def _show_error(exc: BaseException, what: str) -> None:
    from .notices import show_error

    show_error(exc, what=what)


def _preparation_failed() -> None:
    """No demo this session: the pages open without a run (the error above them says why)."""
    st.session_state[_PREPARED] = True
    st.session_state[_DEMO_PENDING] = False
    st.session_state[_STARTUP_DONE] = True


def prepare_demo() -> None:
    """Compute the preview (then, in the background, the demo) and rerun the app once the
    preview has landed; when the preview fails, compute the demo and open it at its first attack.
    Returns only when neither can be computed (the error is shown; the pages then run without a run)."""
    st.title("Preparing the demo")
    st.write(DEMO_INTRO)
    try:
        first = _first_start()
        preview_out = first.demo_preview_run_dir()
        job = start_preview_job()
    except Exception as exc:  # noqa: BLE001
        _preparation_failed()
        _show_error(exc, "The demo is not available")
        return
    final = follow_job(job, poll_s=0.1, until=lambda: run_status(preview_out) == "complete")
    if run_status(preview_out) != "complete":
        st.warning(f"The quick preview could not be computed ({final.error}); the demo itself is computed "
                   "instead and opens at its first attack.", icon=":material/warning:")
        job = start_demo_job()
        final = follow_job(job, until=lambda: _has_results(_demo_dir()))
        if not _has_results(_demo_dir()):
            _preparation_failed()
            if final.error is not None:
                _show_error(final.error, "Computing the demo failed")
            st.info("Open or compute another run on the Model & data page.")
            return
    st.session_state[_PREPARED] = True
    st.session_state[_DEMO_PENDING] = False
    st.session_state.pop(_STARTUP_DONE, None)  # startup_run opens what has landed
    st.rerun()


def is_preview(run: Any) -> bool:
    """True when ``run`` is the first start's preview of the demo."""
    try:
        return Path(run.path).resolve() == Path(_first_start().demo_preview_run_dir()).resolve()
    except (AttributeError, OSError):
        return False


def preview_banner(run: Any) -> None:
    """Above every page of the preview: what it is, the demo's progress, and the switch to the
    demo run (a full rerun) as soon as the demo's first attack has landed."""
    if not is_preview(run):
        return
    first = _first_start()
    demo_dir = _demo_dir()
    export = (getattr(run, "settings", None) or {}).get("model_export")
    how = ""
    if isinstance(export, dict) and isinstance(export.get("checked"), dict):
        atol = f"{export['checked']['atol']:.0e}".replace("e-0", "e-")  # 1e-5
        how = (" The model ran as its TorchScript export (its files checked against the model's; its outputs "
               f"equal the diffusers model's within {atol}), which loads without diffusers.")
    text = (f"**Quick preview of the demo.** {first.preview_description()}.{how} Its numbers are "
            "real but coarse: the protocols choose among these timesteps only. The full demo analysis "
            "is running; this page switches to it by itself when its first attack has finished.")

    @st.fragment(run_every=1.0)
    def banner() -> None:
        if _has_results(demo_dir):
            from . import state

            state.set_active_run(demo_dir)
            st.rerun(scope="app")
        st.info(text, icon=":material/preview:")
        job = registry().for_run(demo_dir)
        if job is not None:
            snap = job.state()
            if snap.status in ("pending", "running"):
                overall, line = job_progress_text(snap)
                st.progress(overall, text="Full demo: " + line)
            elif snap.status == "error":
                st.error(f"The demo analysis stopped: {snap.error}")

    banner()
