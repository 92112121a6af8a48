"""Shared Streamlit building blocks: start-up (LDMINV_RUN or the demo), the sidebar with the
active run and the shared attack / timestep selectors, error display, and following a
background analysis with a progress bar.
"""
from __future__ import annotations

import html
import math
import re
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import streamlit as st

from ldminv_core.choices import ATTACK_LABELS, attack_label
from ldminv_core.errors import LdminvError
from ldminv_core.evaluation import (FINDING_TITLES, below_chance_text, convention_roc, effect_sentence,
                                    verdict_words)
from ldminv_core.report import format_rate, format_rate_ci
from ldminv_core.runstore import Run, run_status

from . import cache, state
from .jobs import AnalysisJob, JobState

__all__ = [
    "ATTACK_LABELS",
    "attack_label",
    "show_error",
    "guard",
    "show_notice",
    "startup_run",
    "demo_pending",
    "prepare_demo",
    "render_sidebar",
    "attack_selector",
    "timestep_selector",
    "protocol_selector",
    "PROTOCOL_LABELS",
    "headline_t_caption",
    "protocol_t_text",
    "sidebar_t_agrees",
    "t_scope_text",
    "finding_card",
    "verdict_badge",
    "statement_text",
    "ci_text",
    "metric_t_text",
    "arm_t_cell",
    "arm_drop_cell",
    "arm_metric_caption",
    "auroc_note",
    "low_fpr_text",
    "below_chance_captions",
    "blind_result",
    "BLIND_CURVE",
    "blind_curve",
    "shift_note",
    "page_frame",
    "require_run",
    "stage_label",
    "follow_job",
    "job_progress_text",
    "live_job_progress",
    "live_analysis_status",
    "path_html",
    "partial_banner",
    "pending_text",
    "require_geometry",
    "start_demo_job",
    "stage_order",
    "first_results",
    "run_title",
]

_STAGE_LABELS = {
    "starting": "Loading the model and the images",
    "encode": "Encoding the images",
    "blind": "Blind baseline features (the files alone)",
    "geometry": "Decoder geometry (log-volume and influence)",
}
_STARTUP_DONE = "_startup_done"
_DEMO_PENDING = "_demo_pending"
DEMO_JOB_ID = "demo"  # job ids of the demo analysis: "demo:<its run folder>"


def stage_label(stage: str) -> str:
    """Readable name of an analysis stage ("encode", "geometry", or an attack name)."""
    if stage in _STAGE_LABELS:
        return _STAGE_LABELS[stage]
    return f"Attack {attack_label(stage)}"


def show_error(exc: BaseException, *, what: str | None = None) -> None:
    """Show an error without a traceback wall: LdminvError as its message; anything else
    as a one-line message with the traceback folded in an expander."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, LdminvError):
        st.error(f"{prefix}{exc}")
        return
    st.error(f"{prefix}unexpected {type(exc).__name__}: {exc}")
    with st.expander("Details"):
        st.code("".join(traceback.format_exception(exc)), language="text")


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Show any exception raised in the block with :func:`show_error` instead of a traceback
    (Streamlit's own stop / rerun signals pass through)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the whole point is to catch everything
        show_error(exc, what=what)


def show_notice() -> None:
    """Show (once) the message left by the previous script run."""
    notice = state.pop_notice()
    if notice is None:
        return
    kind, text = notice
    getattr(st, kind if kind in ("success", "info", "warning", "error") else "info")(text)


def run_title(run: Run) -> str:
    return Path(run.path).name


# --------------------------------------------------------------------------- start-up


def _demo_module():
    from ldminv_core import demo

    return demo


def demo_config(*, device: str = "auto"):
    """The AnalyzeConfig of the built-in demo run (``demo.DEMO_ANALYZE_DEFAULTS``).

    Raises DataLoadError when the demo assets are missing from this checkout.
    """
    from ldminv_core.analyze import AnalyzeConfig
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
    the demo's shipped decoder geometry when that provably applies (``ldminv_core.precomputed``)."""
    import functools

    from ldminv_core.analyze import AnalysisCancelled, run_analysis

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


def _samples_text(done: float) -> str:
    """Samples done for a reader: whole numbers as such, a sample under way to one decimal,
    rounded down (2.97 is "2.9", never a "3.0" that reads as three finished samples)."""
    if float(done).is_integer():
        return f"{done:.0f}"
    return f"{math.floor(float(done) * 10 + 1e-9) / 10:.1f}"


def _rate_text(rate: float) -> str:
    """Samples per second, or seconds per sample when a sample takes longer than one second."""
    return f"{rate:.1f} samples/s" if rate >= 1 else f"{1 / rate:.1f} s per sample"


def job_progress_text(snap: JobState) -> tuple[float, str]:
    """(overall fraction, one line) of a job's progress record: stage k/n in the job's own stage
    order, its name, samples done, rate and the time left in the stage. The sidebar and the pages
    both show this line, from the same record (:class:`~ldminv_app.jobs.JobState`)."""
    stage = snap.stage
    number = snap.stage_number
    if number is None:
        return 0.0, stage_label(stage) + "…"
    k, total = number
    text = f"Stage {k}/{total} · {stage_label(stage)} · {_samples_text(snap.done)}/{snap.total} samples"
    rate, eta = snap.rate, snap.stage_eta
    if rate is not None and eta is not None and snap.done < snap.total:
        from ldminv_core.analyze import format_duration

        text += f" · {_rate_text(rate)} · about {format_duration(eta)} left in this stage"
    return min(max((k - 1 + snap.fraction) / total, 0.0), 1.0), text


def _job_detail(job: AnalysisJob, snap: JobState) -> str:
    """The caption under a job's progress bar: elapsed time, threads, finished stages."""
    elapsed = (snap.finished or time.time()) - snap.started if snap.started else 0.0
    done_stages = ", ".join(stage_label(s) for s in snap.stages_seen[:-1])
    threads = f" · {snap.threads} CPU thread(s)" if snap.threads else ""
    return (f"{elapsed:.0f} s elapsed{threads}" + (f" · finished: {done_stages}" if done_stages else "")
            + (" · stopping after the current batch…" if job.cancel_requested and snap.status == "running" else ""))


def live_job_progress(job: AnalysisJob, *, rerun_when: Any = None, every_s: float = 1.0) -> None:
    """The job's progress bar and caption, refreshed every ``every_s`` seconds in a fragment (so
    the page and the sidebar both keep moving; nothing blocks the script). The whole page reruns
    when the job ends, or when ``rerun_when()`` turns true (e.g. "the first results are readable")."""

    @st.fragment(run_every=every_s)
    def progress() -> None:
        snap = job.state()
        overall, text = job_progress_text(snap)
        st.progress(overall, text=text)
        st.caption(_job_detail(job, snap))
        if snap.status not in ("pending", "running") or (rerun_when is not None and rerun_when()):
            st.rerun(scope="app")

    progress()


def follow_job(job: AnalysisJob, *, poll_s: float = 0.25, until: Any = None) -> JobState:
    """Show the job's progress (st.progress with the stage, samples, rate and time left) until
    it ends, or until ``until()`` is true (checked every poll; e.g. "the first results are
    readable"); returns the last state. A widget interaction interrupts the wait (the job keeps
    running)."""
    bar = st.progress(0.0, text="Starting…")
    detail = st.empty()
    while True:
        snap = job.state()
        overall, text = job_progress_text(snap)
        bar.progress(overall, text=text)
        detail.caption(_job_detail(job, snap))
        if snap.status not in ("pending", "running"):
            if snap.status == "done":
                bar.progress(1.0, text="Done")
            return snap
        if until is not None and until():
            return snap
        time.sleep(poll_s)


# --------------------------------------------------------------------------- partial runs


def _resume_job(run: Run) -> None:
    """Start (again) the analysis that finishes the partial ``run`` with its own settings."""
    from ldminv_core.analyze import AnalysisCancelled, run_analysis

    from .jobs import resume_config

    demo_dir = _demo_module().demo_run_dir()
    if Path(run.path).resolve() == Path(demo_dir).expanduser().resolve():
        start_demo_job()
        return
    config = resume_config(run.path)
    cache.job_registry().start(str(run.path), AnalysisJob(label=run_title(run), config=config, target=run_analysis,
                                                          cancelled_exc=AnalysisCancelled))


def pending_text(run: Run) -> str:
    """The pending stages of a partial run, in words."""
    return ", ".join(stage_label(s) for s in run.pending_stages)


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


def partial_banner(run: Run) -> None:
    """The label every page of a partial run shows above its content."""
    if run.partial:
        done = ", ".join(attack_label(a) for a in run.attacks) or "none"
        st.info(
            f"**Partial run.** Finished: {done}" + (" and the decoder geometry" if run.has_geometry else "")
            + f". Still computing: {pending_text(run)}. Numbers here use the finished stages only and the page "
            "refreshes as each stage lands.",
            icon=":material/hourglass_top:",
        )


def run_warnings_banner(run: Run) -> None:
    """The warnings the analysis recorded in run.json (top-level ``"warnings"``: a list of
    strings), one ``st.warning`` each, and a warning when the decoder geometry finished without
    a single finite log-volume (so every number by distortion quartile is missing). Malformed
    entries never break a page: non-strings are left out and one generic warning says so."""
    import numpy as np

    settings = run.settings if isinstance(run.settings, dict) else {}
    recorded = settings.get("warnings")
    problem = None
    if recorded is None:
        texts: list = []
    elif isinstance(recorded, str):  # one string instead of a list of them: still readable
        texts = [recorded]
    elif isinstance(recorded, list):
        texts = [t for t in recorded if isinstance(t, str)]
        if len(texts) != len(recorded):
            problem = f"a list with {len(recorded) - len(texts)} entries that are not strings"
    else:
        texts, problem = [], f"a {type(recorded).__name__}"
    for text in texts:
        if text.strip():
            st.warning(f"**Analysis warning.** {text}", icon=":material/warning:")
    if problem is not None:
        st.warning(
            f"The warnings recorded in {Path(run.path) / 'run.json'} are malformed: expected \"warnings\" "
            f"to be a list of strings, got {problem}"
            + ("; the readable ones are shown above." if texts else "; none can be shown."),
            icon=":material/warning:",
        )
    if run.has_geometry:
        try:
            values = np.asarray(run.samples["log_volume"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            values = np.array([])
        if not np.isfinite(values).any():
            st.warning(
                "**No log-volume values.** The decoder geometry finished but every sample's log-volume is "
                "missing (NaN) in samples.parquet, so the numbers by distortion quartile (and the findings "
                "built on them) cannot be computed and are left out. The geometry may have failed for every "
                "sample (for instance a decoder whose Jacobian is singular); re-run the analysis with another "
                "influence method or check the model.",
                icon=":material/warning:",
            )


def require_geometry(run: Run) -> None:
    """Stop a page that needs the decoder geometry while a partial run does not have it yet,
    saying so and pointing to what is already usable."""
    if run.has_geometry:
        return
    st.info(
        "This page needs the decoder geometry (log-volume and influence), which has not finished yet "
        f"(still computing: {pending_text(run)}; progress in the sidebar). It opens by itself when ready; "
        "meanwhile the Findings page shows the AUROC and ROC of the finished attacks.",
        icon=":material/hourglass_top:",
    )
    st.page_link("pages/findings.py", label="Go to Findings", icon=":material/fact_check:")
    st.stop()


# --------------------------------------------------------------------------- sidebar


def _sync(widget_key: str, target: str) -> None:
    st.session_state[target] = st.session_state[widget_key]


def attack_selector(run: Run, *, key: str, label: str = "Attack", container: Any = None) -> str:
    """A selectbox bound to the shared attack (all pages use the same one)."""
    where = container if container is not None else st
    st.session_state[key] = state.current_attack(run)
    where.selectbox(
        label,
        run.attacks,
        key=key,
        format_func=attack_label,
        on_change=_sync,
        args=(key, state.ATTACK),
        help="Membership-inference attack whose scores every page shows.",
    )
    return state.current_attack(run)


def _sync_t(run: Run, attack: str, key: str) -> None:
    state.set_timestep(run, attack, st.session_state[key])


def timestep_selector(run: Run, attack: str, *, key: str = "sidebar_t", container: Any = None) -> int | None:
    """A select-slider bound to the shared timestep of ``attack``; returns the t index."""
    where = container if container is not None else st
    t_index = state.current_t_index(run, attack)
    if t_index is None:
        where.caption(f"{attack_label(attack)} gives one score per sample: no timestep, not maskable.")
        return None
    timesteps = run.timesteps(attack)
    st.session_state[key] = timesteps[t_index]
    if len(timesteps) > 1:
        where.select_slider(
            "Timestep t",
            options=timesteps,
            key=key,
            on_change=_sync_t,
            args=(run, attack, key),
            help="Timestep of the per-timestep views: the charts and tables that name a t (AUROC against the "
            "drop %, the dimension ranking, AUROC by quartile at one t, per-sample scores). The protocol's "
            "numbers (metric cards, findings, ROC curves, metrics tables) keep the t the protocol chooses. "
            "Defaults to the best baseline AUROC.",
        )
    ev = cache.evaluation(run, attack)
    t = timesteps[t_index]
    if sidebar_t_agrees(ev, t_index):
        lead = f"t = {t}: the per-timestep views and the protocol's numbers use the same t. "
    else:
        lead = (f":orange[**Sidebar t = {t}; the protocol's numbers: {protocol_t_text(ev)}.**] t = {t} sets the "
                "per-timestep views (the charts and tables that name it); the metric cards, findings, ROC curves "
                f"and metrics tables stay at the protocol's {protocol_t_text(ev)}. ")
    where.caption(lead + headline_t_caption(ev))
    return t_index


def headline_t_caption(ev) -> str:
    """Which t the headline numbers of ``ev`` (an ``Evaluation``) use and which protocol chose it,
    in words; computed from the evaluation's cheap parts (per-t curve, fold choices), never its arms."""
    ts = ev.timesteps
    per_t = ev.per_t()
    best = ev.headline_t_index()
    name = ev.protocol.name
    if name == "standard":
        return (f"Headline t = {ts[best]}, chosen by the standard protocol: the best baseline AUROC on all "
                f"samples ({per_t['auroc'][best]:.4f}; optimistic).")
    if name == "paper":
        picks = ev.best_t("baseline")
        return (f"Headline t chosen by the paper protocol, each metric its own best on all samples: baseline "
                f"AUROC t = {picks['auroc']}, TPR@1%FPR t = {picks['tpr_at_1fpr']}, ASR t = "
                f"{picks['asr']} (masked, random and quartiles pick their own).")
    fold_ts = [ts[ev.fold_t_index(f)] for f in sorted(set(int(x) for x in ev.folds()))]
    return (f"Headline t chosen by the honest protocol on the other folds ({ev.protocol.folds} folds): t per fold "
            f"{', '.join(map(str, fold_ts))}. Best baseline AUROC on all samples (descriptive): t = {ts[best]}.")


def _protocol_ts(ev) -> list[int]:
    """The t's of the protocol's baseline numbers: one (standard), one per metric (paper: AUROC,
    TPR@1%FPR, ASR), one per fold (honest)."""
    ts = ev.timesteps
    if ev.protocol.name == "paper":
        picks = ev.best_t("baseline")
        return [picks[m] for m in ("auroc", "tpr_at_1fpr", "asr")]
    if ev.protocol.name == "honest":
        return [ts[ev.fold_t_index(f)] for f in sorted(set(int(x) for x in ev.folds()))]
    return [ts[ev.headline_t_index()]]


def protocol_t_text(ev) -> str:
    """The t of the protocol's headline numbers in a few words: "t = 60" (standard), "t: AUROC 60,
    TPR@1%FPR 40, ASR 60" (paper; the baseline's, every arm picks its own), "t = 60 in every fold"
    or "t per fold: 60, 50, 60" (honest)."""
    picks = _protocol_ts(ev)
    if ev.protocol.name == "paper" and len(set(picks)) > 1:
        return "t: " + ", ".join(f"{METRIC_LABELS[m]} {t}" for m, t in zip(("auroc", "tpr_at_1fpr", "asr"), picks))
    if ev.protocol.name == "honest":
        return f"t = {picks[0]} in every fold" if len(set(picks)) == 1 else "t per fold: " + ", ".join(map(str, picks))
    return f"t = {picks[0]}"


def sidebar_t_agrees(ev, t_index: int) -> bool:
    """True when every t of the protocol's baseline numbers is the sidebar's t."""
    return set(_protocol_ts(ev)) == {ev.timesteps[t_index]}


def t_scope_text(ev, t_index: int, *, fixed: str, follows: str) -> str:
    """Which numbers of a page keep the protocol's t (``fixed``) and which follow the sidebar's
    (``follows``), naming both t's where they differ: "cards ... at the standard protocol's t = 60 ·
    drop curves at the sidebar's t = 100", or "numbers and curves all at t = 60 ..." when they agree."""
    t = ev.timesteps[t_index]
    name = ev.protocol.name
    if sidebar_t_agrees(ev, t_index):
        return f"numbers and curves all at t = {t} (the {name} protocol's t and the sidebar's)"
    return f"{fixed} at the {name} protocol's {protocol_t_text(ev)} · {follows} at the sidebar's t = {t}"


PROTOCOL_LABELS = {"standard": "standard", "paper": "paper", "honest": "honest (cross-fitted)"}


def protocol_selector(*, container: Any = None) -> str:
    """The sidebar's protocol choice (and the honest protocol's folds); every page honours it."""
    where = container if container is not None else st
    st.session_state["sidebar_protocol"] = state.current_protocol()
    where.selectbox(
        "Evaluation protocol", list(PROTOCOL_LABELS), key="sidebar_protocol", format_func=PROTOCOL_LABELS.get,
        on_change=_sync, args=("sidebar_protocol", state.PROTOCOL),
        help="standard: members positive, TPR at FPR <= 1%, t chosen on the same samples (optimistic). "
        "paper: held-out positive TPR at FPR < 1%, each metric at its own best t (as the paper's code). "
        "honest: t, drop % and the 1% FPR threshold chosen on the other folds (K-fold cross-fitting).",
    )
    if state.current_protocol() == "honest":
        st.session_state["sidebar_folds"] = state.current_folds()
        where.number_input("Folds", 2, 10, step=1, key="sidebar_folds", on_change=_sync,
                           args=("sidebar_folds", state.FOLDS), help="Stratified cross-fitting folds (seeded).")
    return state.current_protocol()


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


def render_sidebar(run: Run | None) -> tuple[str | None, int | None]:
    """The active run's summary and the shared attack and timestep selectors.

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
        t_index = timestep_selector(run, attack)
        return attack, t_index


def _use_app_navigation() -> None:
    """Make a page requested by URL on a fresh server run through app.py's ``st.navigation``.

    With a ``pages/`` folder next to app.py, Streamlit starts in its pages-folder mode and,
    until app.py has called ``st.navigation`` once, runs a page file requested by URL on its
    own (automatic navigation, no page titles or wide layout). Leaving that mode and rerunning
    runs app.py, which resolves the same page. Not done under ``streamlit.testing`` (AppTest
    runs page files directly by design).
    """
    try:
        from streamlit import config
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - other Streamlit layouts
        return
    if getattr(PagesManager, "uses_pages_directory", None) and not config.get_option("global.appTest"):
        PagesManager.uses_pages_directory = False
        st.rerun()


def page_frame(*, needs_run: bool = True) -> Run | None:
    """What every page shows around its content; call it first in each page script.

    Initialises the session state, opens the start-up run (LDMINV_RUN, else the cached demo),
    renders the sidebar (active run, shared attack and timestep) and any pending message.
    Each page renders the frame itself, so a page script also works on its own. When the page
    ``needs_run`` and none is open: computes the demo (progress bar) if it is pending, else
    explains where to get a run; then stops the script.
    """
    _use_app_navigation()
    state.init_state()
    run = startup_run()
    with st.sidebar, guard("The sidebar failed"):
        render_sidebar(run)
    show_notice()
    if run is not None:
        partial_banner(run)
        with guard("The run's warnings cannot be shown"):
            run_warnings_banner(run)
    if run is None and needs_run:
        if demo_pending():
            prepare_demo()
        else:
            st.info("No run is open. Open or compute one on the Model & data page.")
            st.page_link("pages/model_data.py", label="Go to Model & data", icon=":material/dataset:")
        st.stop()
    return run


def require_run(*, needs_geometry: bool = True) -> Run:
    """``page_frame()`` for a page that needs a run: the frame, then the active run (the
    script stops when none is open, and, when ``needs_geometry``, while a partial run has no
    decoder geometry yet: :func:`require_geometry`)."""
    run = page_frame(needs_run=True)
    assert run is not None  # page_frame stops the script otherwise
    if needs_geometry:
        require_geometry(run)
    return run


# --------------------------------------------------------------------------- findings

VERDICT_COLORS = {"supported": "green", "contradicted": "red", "inconclusive": "gray", "undefined": "gray"}
# FINDING_TITLES: the evaluation layer's (ldminv_core.evaluation.wording), shared with the export
FINDING_LABELS = {
    "distortion_quartiles": "AUROC(Q4) − AUROC(Q1)",
    "distortion_quartiles_within_class": "mean within-class AUROC(Q4) − AUROC(Q1)",
    "masking_vs_baseline": "AUROC masked − baseline",
    "masking_vs_random": "AUROC masked − random",
    "blind_baseline": "blind AUROC − 0.5",
    "attack_vs_blind": "attack AUROC − blind AUROC",
    "attack_within_blind_strata": "AUROC within blind strata − 0.5",
}
METRIC_LABELS = {"auroc": "AUROC", "tpr_at_1fpr": "TPR@1%FPR", "asr": "ASR"}


def verdict_badge(verdict: str, *, confounded: bool = False) -> str:
    """Markdown of a coloured verdict badge (supported green, contradicted red, else grey); a
    supported or contradicted verdict that is ``confounded`` (the finding's ``caveat``: the files
    alone separate the folders) is orange: the statistic holds, it is not evidence of membership."""
    color = "orange" if confounded and verdict in ("supported", "contradicted") else VERDICT_COLORS.get(verdict, "gray")
    return f":{color}-badge[{verdict}]"


def ci_text(ci: tuple[float, float], digits: int = 4, *, signed: bool = True) -> str:
    """"[lo, hi]" of an interval ("[+lo, +hi]" when ``signed``), "–" when undefined."""
    if not signed:
        return format_rate_ci(ci, digits)
    lo, hi = ci
    if not (lo == lo and hi == hi):  # NaN
        return "–"
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _per_fold(values: list, unit: str = "") -> str:
    """"60 in every fold" when the folds agree, else "per fold: 60, 50, 60"."""
    if len(set(values)) == 1:
        return f"{values[0]}{unit} in every fold"
    return "per fold: " + ", ".join(f"{v}" for v in values) + unit


def arm_t_cell(arm) -> str:
    """The t of an ``ArmResult`` in a few words: "t = 60", "t: AUROC 60, TPR 40, ASR 70" (``paper``),
    "t = 60 in every fold" or "t per fold: 60, 50, ..." (``honest``), "no timestep"."""
    if arm.folds:
        ts = [f.t for f in arm.folds]
        if all(t is None for t in ts):
            return "no timestep"
        return "t = " + _per_fold(ts) if len(set(ts)) == 1 else "t " + _per_fold(ts)
    return arm.t_text


def arm_drop_cell(arm) -> str:
    """The drop of an ``ArmResult`` in a few words: "40 %", "55 % in every fold",
    "per fold: 55, 50, 55 %", "–" for the baseline."""
    if not arm.drop_text:
        return "–"
    if arm.drop_percent is not None:
        return arm.drop_text
    return _per_fold([f"{f.drop_percent:g}" for f in arm.folds if f.drop_percent is not None], " %")


def metric_t_text(arm, metric: str) -> str:
    """The t one metric of an ``ArmResult`` is reported at: "t = 60" (``paper``: that metric's own
    best t), the folds' t under ``honest`` (:func:`arm_t_cell`), "no timestep" without one."""
    if arm.folds:
        return arm_t_cell(arm)
    t = arm.best_t.get(metric)
    return "no timestep" if t is None else f"t = {t}"


def arm_metric_caption(arm, metric: str, protocol) -> str:
    """Where one metric card's number comes from: protocol, t (that metric's own under ``paper``),
    drop, 95% interval, and under ``honest`` the realised FPR beside TPR@1%FPR."""
    parts = [f"{protocol.name} · {metric_t_text(arm, metric)}"]
    if arm.drop_text:
        parts.append(f"drop {arm_drop_cell(arm)}")
    parts.append(f"95% CI {ci_text(arm.ci[metric], signed=False)}")
    if metric == "tpr_at_1fpr" and arm.realised_fpr_at_1fpr is not None:
        parts.append(f"realised FPR {format_rate(arm.realised_fpr_at_1fpr)}")
    if metric == "tpr_at_1fpr" and getattr(arm, "low_fpr", None) is not None:
        parts.append(low_fpr_text(arm.low_fpr))
    if metric == "auroc" and auroc_note(arm):
        parts.append(f":material/warning: AUROC {auroc_note(arm)}")
    return " · ".join(parts)


def auroc_note(arm) -> str | None:
    """For an arm (or blind group) whose AUROC interval lies below 0.5, what that means
    (``below_chance_text``: shift or swapped folders, not a weak attack); None otherwise."""
    return below_chance_text(arm.auroc, arm.ci["auroc"]) if getattr(arm, "below_chance", False) else None


def low_fpr_text(low) -> str:
    """What a TPR@1%FPR rests on and its exact interval, from a ``LowFprCount``: "1% FPR = 3 of 300
    held-out images · exact 95% CI [0.0120, 0.0800] (Clopper-Pearson, 12 of 300 members)"."""
    pos = "held-out images" if low.positive_class == "heldout" else "members"
    return (f"{low.rests_on()} · exact {low.level:.0%} CI {ci_text(low.exact_ci, signed=False)} "
            f"(Clopper-Pearson, {low.true_positives} of {low.n_positives} {pos})")


def below_chance_captions(named_arms) -> list[str]:
    """One line per (name, arm) pair whose AUROC lies below chance, for beside a table or a chart
    that shows the AUROC as a plain number: "baseline: AUROC 0.3450, below chance (95% CI ...): ..."."""
    return [f":material/warning: **{name}**: AUROC {format_rate(arm.auroc)}, {auroc_note(arm)}."
            for name, arm in named_arms if auroc_note(arm)]


#: Legend name of the blind baseline's ROC curve (drawn dashed beside the attack's).
BLIND_CURVE = "blind baseline, files only"


def blind_result(ev):
    """``ev.blind()`` (an ``Evaluation``'s :class:`BlindResult`, computed once per run and protocol;
    its fits run with the BLAS thread pool at one thread), with a spinner while it is fitted."""
    with st.spinner("Fitting the blind baseline on the files alone (once per run)…"):
        return ev.blind()


def blind_curve(ev):
    """The blind baseline's ROC curve (all feature groups) in ``ev``'s protocol convention, the
    same as the attack curves (``convention_roc``), with its AUROC: (RocCurve, auroc), or None
    when the blind baseline is unavailable."""
    blind = blind_result(ev)
    if not blind.available or "all" not in blind.scores:
        return None
    return convention_roc(blind.scores["all"], ev.labels, ev.protocol), float(blind.group("all").auroc)


def shift_note(ev) -> str | None:
    """One line for beside an attack's ROC when the files alone separate the folders (None when
    they do not): the blind AUROC and that the attack's curve is then no evidence of membership."""
    blind = blind_result(ev)
    if not blind.separable:
        return None
    g = blind.group("all")
    by = ", ".join(blind.separating_groups) or "all feature groups together"
    return (f":orange[**Distribution shift.**] The files alone separate these folders (blind AUROC "
            f"{format_rate(g.auroc, 3)}, 95% CI {ci_text(g.ci['auroc'], 3, signed=False)}; separating: {by}): the "
            "attack's curve on them is not evidence of membership. See the shift check on the Findings page.")


def statement_text(finding) -> str:
    """A finding's statement without its shift caveat at the end (the pages show the caveat
    on its own, as a warning)."""
    caveat = getattr(finding, "caveat", "")
    text = finding.statement
    return text[: -len(caveat)].rstrip() if caveat and text.endswith(caveat) else text


def finding_card(finding, *, chart=None, chart_key: str | None = None, note: str | None = None,
                 table=None, table_key: str | None = None, table_config: dict | None = None,
                 n_boot: int | None = None) -> None:
    """One finding in a bordered card: question, verdict badge (a tiny effect named as such),
    estimate with its interval (and its ``n_boot`` bootstrap replicates when given), the statement
    computed from the data, its shift caveat as a warning when it has one (the badge then orange,
    the verdict words "... not separable from the folders' difference"), an optional note
    (caption), an optional plotly chart and an optional small table (a DataFrame or dict of columns)."""
    confounded = bool(getattr(finding, "caveat", ""))
    # a supported blind baseline is a warning (the folders differ without the model), not good news
    alarm = confounded or (finding.id == "blind_baseline" and finding.verdict == "supported")
    with st.container(border=True):
        words = verdict_words(finding.verdict, finding.estimate, metric=finding.metric, confounded=confounded)
        st.markdown(f"**{FINDING_TITLES.get(finding.id, finding.id)}** "
                    f"{verdict_badge(finding.verdict, confounded=alarm)}"
                    + (f" *{words[len(finding.verdict):].strip()}*" if words != finding.verdict else ""))
        est = "–" if finding.estimate != finding.estimate else f"{finding.estimate:+.4f}"
        label = FINDING_LABELS.get(finding.id, finding.metric)
        st.markdown(f"{label}: **{est}**, 95% CI {ci_text(finding.ci)}"
                    + (f" ({n_boot} bootstrap replicates)" if n_boot else ""))
        size = effect_sentence(finding)
        if size:
            st.caption(size)
        for sec in finding.secondary:
            s_est = "–" if sec["estimate"] != sec["estimate"] else f"{sec['estimate']:+.4f}"
            name = METRIC_LABELS.get(sec["metric"], sec["metric"])
            st.caption(f"{name} difference: {s_est}, 95% CI {ci_text(sec['ci'])}, {sec['verdict']}")
        st.write(statement_text(finding))
        if confounded:
            st.warning(finding.caveat, icon=":material/warning:")
        if note:
            st.caption(note)
        if chart is not None:
            from . import figures

            st.plotly_chart(chart, key=chart_key, config=figures.plotly_config(chart_key))
        if table is not None:
            st.dataframe(table, hide_index=True, key=table_key, column_config=table_config)
