"""The server-wide registry of background analysis jobs (no Streamlit import, cheap to import).

One :class:`JobRegistry` per server process (:func:`registry`): the first start's preview and demo
jobs, the Model & data page's analyses and the resumed partial runs all live in it, so every
session of the server sees the same jobs. ``ldminv_app.cache.job_registry`` returns the same object.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from . import shutdown
from .jobs import AnalysisJob

__all__ = ["JobRegistry", "registry"]


class JobRegistry:
    """Background analysis jobs by id, shared by every session of this server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, AnalysisJob] = {}

    def get(self, job_id: str | None) -> AnalysisJob | None:
        with self._lock:
            return self._jobs.get(job_id) if job_id else None

    def start(self, job_id: str, job: AnalysisJob) -> AnalysisJob:
        """Start ``job`` under ``job_id`` unless a running job already has that id (returned)."""
        with self._lock:
            current = self._jobs.get(job_id)
            if current is not None and current.running:
                return current
            self._jobs[job_id] = job
        job.start()
        # stopped after its current batch and waited for at interpreter exit: a thread still
        # inside torch then aborts the process (ldminv_app.shutdown)
        shutdown.register(f"the analysis {job.label!r}", wait=job.wait, stop=job.cancel)
        return job

    def for_run(self, path: str | os.PathLike) -> AnalysisJob | None:
        """The job writing the run folder ``path`` (its config's ``out``), if any."""
        target = str(Path(path).expanduser().resolve())
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            out = getattr(job.config, "out", None)
            if out is not None and str(Path(out).expanduser().resolve()) == target:
                return job
        return None

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)


_REGISTRY = JobRegistry()


def registry() -> JobRegistry:
    """The server's one :class:`JobRegistry`."""
    return _REGISTRY
