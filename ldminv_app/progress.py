"""Following a background analysis: the one progress line of a job's record (stage k/n, samples,
rate, time left), a live progress bar in a fragment, and a blocking follow-until.
"""
from __future__ import annotations

import math
import time
from typing import Any

import streamlit as st

from ldminv_core.choices import attack_label

from .jobs import AnalysisJob, JobState

__all__ = ["stage_label", "job_progress_text", "live_job_progress", "follow_job"]


_STAGE_LABELS = {
    "starting": "Loading the model and the images",
    "encode": "Encoding the images",
    "blind": "Blind baseline features (the files alone)",
    "geometry": "Decoder geometry (log-volume and influence)",
}


def stage_label(stage: str) -> str:
    """Readable name of an analysis stage ("encode", "geometry", or an attack name)."""
    if stage in _STAGE_LABELS:
        return _STAGE_LABELS[stage]
    return f"Attack {attack_label(stage)}"


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
        from ldminv_core.pipeline.cost import format_duration

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
