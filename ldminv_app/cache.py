"""Cached access to runs, models and the arrays the pages derive from them.

``st.cache_resource`` holds objects that are shared and never copied: opened runs, loaded
models, in-memory arrays, background analysis jobs, and one
:class:`~ldminv_core.evaluation.Evaluation` per (run, attack, protocol), which memoises every
reported number itself: there is no other cache of reported numbers. ``st.cache_data``
holds descriptive tables and images. Every cache key starts with the run's resolved path and
the modification time of its run.json (its "stamp"), so a recomputed run is never served stale
results. Moving a control on a page therefore only recomputes
from these cached objects: no model call, no file re-read.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ldminv_core.errors import RunError
from ldminv_core.evaluation import Evaluation, make_protocol, tables
from ldminv_core.runstore import Run

from .images import load_display_image, load_thumbnail, to_rgb_uint8
from .jobs import AnalysisJob

__all__ = [
    "run_key",
    "open_run",
    "get_model",
    "influence",
    "latents",
    "terms",
    "evaluation",
    "PAGE_N_BOOT",
    "baseline_scores",
    "best_t_index",
    "dimension_table",
    "thumbnail",
    "display_image",
    "reconstruction",
    "job_registry",
    "clear_run_caches",
]


#: Bootstrap replicates of the intervals on the pages (the CLI and the HTML export use 1000).
PAGE_N_BOOT = 200

# --------------------------------------------------------------------------- keys


@functools.lru_cache(maxsize=64)
def _stamp_of(run_json: str, mtime_ns: int, size: int) -> int:
    """The stamp of one version of a run.json (parsed once per version, not on every lookup)."""
    try:
        with open(run_json, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return 0
    if isinstance(data, dict) and data.get("status") != "complete":
        stages = data.get("stages")
        done = sorted(str(k) for k, v in stages.items() if v is True) if isinstance(stages, dict) else []
        digest = hashlib.sha256(("partial:" + ",".join(done)).encode()).digest()
        return -int.from_bytes(digest[:7], "big") - 1  # negative: never equal to an mtime
    return mtime_ns


def run_key(path: str | os.PathLike) -> tuple[str, int]:
    """(resolved path, stamp) of a run folder. The stamp is run.json's mtime_ns for a complete
    run; for an unfinished one it changes only when a stage finishes (its batch counters move
    every few seconds and must not invalidate every cached result); 0 when missing."""
    folder = Path(path).expanduser().resolve()
    try:
        st_ = (folder / "run.json").stat()
    except OSError:
        return str(folder), 0
    return str(folder), _stamp_of(str(folder / "run.json"), int(st_.st_mtime_ns), int(st_.st_size))


# --------------------------------------------------------------------------- resources


@st.cache_resource(max_entries=8, show_spinner=False)
def _open_run(path: str, stamp: int) -> Run:
    return Run.open(path, partial=True)


def open_run(path: str | os.PathLike) -> Run:
    """The run at ``path``: complete, or partial with its finished stages (``Run.open(path,
    partial=True)``), cached by :func:`run_key`.

    Raises RunError (not cached) when the folder is missing, not a run, or has no finished stage.
    """
    return _open_run(*run_key(path))


@st.cache_resource(max_entries=2, show_spinner="Loading the model…")
def _load_model(source: str, device: str, dtype_name: str):
    import torch

    from ldminv_core.loading import load_model

    return load_model(source, device=device, dtype=getattr(torch, dtype_name))


def model_source(run: Run) -> str | None:
    """The model folder or hub id a run was computed with (from run.json)."""
    for where in (run.settings, run.settings.get("config", {})):
        for key in ("model", "model_path", "model_source"):
            value = where.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def get_model(run: Run, *, device: str = "cpu", dtype_name: str = "float32"):
    """The run's model (``loading.load_model``), loaded once per source/device/dtype."""
    source = model_source(run)
    if source is None:
        raise RunError(f"{run.path / 'run.json'}: no model path recorded; cannot decode latents")
    return _load_model(source, device, dtype_name)


@st.cache_resource(max_entries=4, show_spinner=False)
def _influence(path: str, stamp: int) -> np.ndarray:
    return np.array(_open_run(path, stamp).influence, dtype=np.float32)


def influence(run: Run) -> np.ndarray:
    """(N, C, h, w) float32 influence, in memory (read once per run)."""
    return _influence(*run_key(run.path))


@st.cache_resource(max_entries=4, show_spinner=False)
def _latents(path: str, stamp: int) -> np.ndarray:
    return np.array(_open_run(path, stamp).latents, dtype=np.float32)


def latents(run: Run) -> np.ndarray:
    """(N, C, h, w) float32 latents, in memory (read once per run)."""
    return _latents(*run_key(run.path))


def terms(run: Run, attack: str) -> np.ndarray:
    """(N, T, C, h, w) per-coordinate terms of a maskable attack: the memory-mapped array the
    session's cached evaluation reads (no second copy in memory)."""
    return evaluation(run, attack).terms()


@st.cache_resource(max_entries=32, show_spinner=False)
def _evaluation(path: str, stamp: int, attack: str, protocol: str, folds: int, n_boot: int) -> Evaluation:
    return Evaluation(_open_run(path, stamp), attack, make_protocol(protocol, folds=folds), n_boot=n_boot)


def evaluation(run: Run, attack: str, *, protocol: str | None = None, folds: int | None = None,
               n_boot: int | None = None) -> Evaluation:
    """The one cached :class:`~ldminv_core.evaluation.Evaluation` of (run path, run.json stamp,
    attack, protocol, folds, n_boot): it memoises its own parts (per-t curves, arms per drop,
    quartiles, findings, sweeps), so every page and every control reuses what was computed once.

    ``protocol`` / ``folds`` default to the session's (sidebar) choice, ``n_boot`` to
    :data:`PAGE_N_BOOT`. The folds are part of the key only for ``honest`` (the other protocols
    do not use them), so changing the folds never recomputes a ``standard`` evaluation.
    """
    from . import state

    name = protocol or state.current_protocol()
    k = int(folds if folds is not None else state.current_folds()) if name == "honest" else 5
    nb = PAGE_N_BOOT if n_boot is None else int(n_boot)
    return _evaluation(*run_key(run.path), attack, name, k, nb)


def baseline_scores(run: Run, attack: str) -> np.ndarray:
    """Membership scores without any mask: (N, T) for maskable attacks, (N, 1) otherwise (the
    same for every protocol; read from the session's cached evaluation)."""
    return -evaluation(run, attack).baseline_stat()


def best_t_index(run: Run, attack: str) -> int:
    """Index of the timestep with the best baseline AUROC on all samples (first on ties)."""
    return evaluation(run, attack).headline_t_index()


@st.cache_data(max_entries=16, show_spinner="Ranking the latent coordinates…")
def _dimension_table(path: str, stamp: int, attack: str, t_index: int) -> pd.DataFrame:
    run = _open_run(path, stamp)
    terms_t = np.asarray(run.terms(attack)[:, int(t_index)], dtype=np.float64)  # one timestep off the memmap
    return tables.dimension_table(_influence(path, stamp), terms_t, run.labels)


def dimension_table(run: Run, attack: str, t_index: int) -> pd.DataFrame:
    """``ldminv_core.evaluation.tables.dimension_table`` of the attack's terms at one timestep
    (descriptive, the same under every protocol), cached."""
    return _dimension_table(*run_key(run.path), attack, int(t_index))


# --------------------------------------------------------------------------- images


def _file_stamp(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


@st.cache_data(max_entries=4096, show_spinner=False)
def _thumbnail(path: str, stamp: int, size: int) -> np.ndarray | None:
    return load_thumbnail(path, size=size)


def thumbnail(path: str, *, size: int = 96) -> np.ndarray | None:
    """uint8 (h, w, 3) thumbnail of an image file, or None when unreadable (cached)."""
    return _thumbnail(str(path), _file_stamp(str(path)), int(size))


@st.cache_data(max_entries=256, show_spinner=False)
def _display_image(path: str, stamp: int, resolution: int, channels: int) -> np.ndarray | None:
    return load_display_image(path, resolution=resolution, channels=channels)


def display_image(path: str, *, resolution: int, channels: int = 3) -> np.ndarray | None:
    """The image centre-cropped and resized to the model's resolution (grey for 1-channel
    models), uint8 (R, R, 3), or None when unreadable (cached)."""
    return _display_image(str(path), _file_stamp(str(path)), int(resolution), int(channels))


@st.cache_data(max_entries=256, show_spinner="Decoding…")
def _reconstruction(path: str, stamp: int, index: int) -> np.ndarray:
    import torch

    run = _open_run(path, stamp)
    model = get_model(run)
    z = torch.from_numpy(np.array(_latents(path, stamp)[int(index)][None], dtype=np.float32))
    return to_rgb_uint8(model.decode(z)[0])


def reconstruction(run: Run, index: int) -> np.ndarray:
    """Decoded stored latent of sample row ``index``: uint8 (H, W, 3) (model loaded once)."""
    return _reconstruction(*run_key(run.path), int(index))


# --------------------------------------------------------------------------- jobs


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
        return job.start()

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


@st.cache_resource(show_spinner=False)
def job_registry() -> JobRegistry:
    """The server-wide registry of analysis jobs."""
    return JobRegistry()


def clear_run_caches() -> None:
    """Drop every cached run-derived object (after a run was deleted or recomputed)."""
    for fn in (_open_run, _influence, _latents, _evaluation):
        fn.clear()
    for fn in (_dimension_table, _reconstruction):
        fn.clear()
