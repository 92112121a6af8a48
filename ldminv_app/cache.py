"""Cached access to runs, models and the arrays the pages derive from them.

``st.cache_resource`` holds objects that are shared and never copied: opened runs, loaded
models, in-memory attack terms and ``DropSweep`` objects, background analysis jobs.
``st.cache_data`` holds derived arrays and tables. Every cache key starts with the run's
resolved path and the modification time of its run.json (its "stamp"), so a recomputed
run is never served stale results. Moving a control on a page therefore only recomputes
from these cached objects: no model call, no file re-read.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ldminv_core import masks, metrics
from ldminv_core.errors import RunError, UnknownNameError
from ldminv_core.runstore import Run

from . import compute
from .images import load_display_image, load_thumbnail, to_rgb_uint8
from .jobs import AnalysisJob

__all__ = [
    "run_key",
    "open_run",
    "get_model",
    "influence",
    "latents",
    "terms",
    "baseline_scores",
    "per_t_metrics",
    "best_t_index",
    "quartiles",
    "quartile_auroc_table",
    "influence_sweep",
    "random_sweep",
    "ranking_sweep",
    "dimension_table",
    "variant_table",
    "sweep_curves",
    "thumbnail",
    "display_image",
    "reconstruction",
    "job_registry",
    "clear_run_caches",
]


# --------------------------------------------------------------------------- keys


def run_key(path: str | os.PathLike) -> tuple[str, int]:
    """(resolved path, mtime_ns of run.json) of a run folder; the stamp is 0 when missing."""
    folder = Path(path).expanduser().resolve()
    try:
        stamp = (folder / "run.json").stat().st_mtime_ns
    except OSError:
        stamp = 0
    return str(folder), int(stamp)


# --------------------------------------------------------------------------- resources


@st.cache_resource(max_entries=8, show_spinner=False)
def _open_run(path: str, stamp: int) -> Run:
    return Run.open(path)


def open_run(path: str | os.PathLike) -> Run:
    """The finished run at ``path`` (``Run.open``, cached by path and run.json mtime).

    Raises RunError (not cached) when the folder is missing or not a finished run.
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


@st.cache_resource(max_entries=4, show_spinner="Reading the attack terms…")
def _terms(path: str, stamp: int, attack: str) -> np.ndarray:
    return np.array(_open_run(path, stamp).terms(attack))


def terms(run: Run, attack: str) -> np.ndarray:
    """(N, T, C, h, w) per-coordinate terms of a maskable attack, in memory (stored dtype)."""
    return _terms(*run_key(run.path), attack)


@st.cache_data(max_entries=16, show_spinner=False)
def _baseline_scores(path: str, stamp: int, attack: str) -> np.ndarray:
    run = _open_run(path, stamp)
    if run.is_maskable(attack):
        return -masks.masked_statistic(_terms(path, stamp, attack), None)
    return run.stored_scores(attack)


def baseline_scores(run: Run, attack: str) -> np.ndarray:
    """Membership scores without any mask: (N, T) for maskable attacks, (N,) otherwise."""
    return _baseline_scores(*run_key(run.path), attack)


@st.cache_data(max_entries=16, show_spinner=False)
def _per_t_metrics(path: str, stamp: int, attack: str) -> dict[str, np.ndarray]:
    run = _open_run(path, stamp)
    scores = _baseline_scores(path, stamp, attack)
    if scores.ndim == 1:
        scores = scores[:, None]
    return compute.per_timestep_metrics(scores, run.labels)


def per_t_metrics(run: Run, attack: str) -> dict[str, np.ndarray]:
    """Baseline metrics at every timestep: {name: (T,)} ((1,) for non-maskable attacks)."""
    return _per_t_metrics(*run_key(run.path), attack)


def best_t_index(run: Run, attack: str) -> int:
    """Index of the timestep with the best baseline AUROC (``metrics.best_t_index``); 0 when
    the AUROC is undefined everywhere."""
    aurocs = per_t_metrics(run, attack)["auroc"]
    if np.isnan(aurocs).all():
        return 0
    return metrics.best_t_index(aurocs)


@st.cache_data(max_entries=8, show_spinner=False)
def _quartiles(path: str, stamp: int) -> np.ndarray:
    return compute.quartile_index(_open_run(path, stamp).log_volume)


def quartiles(run: Run) -> np.ndarray:
    """(N,) distortion quartile 0..3 of every sample."""
    return _quartiles(*run_key(run.path))


@st.cache_data(max_entries=16, show_spinner=False)
def _quartile_aurocs(path: str, stamp: int, attack: str) -> np.ndarray:
    run = _open_run(path, stamp)
    scores = _baseline_scores(path, stamp, attack)
    return compute.quartile_aurocs(scores, run.labels, _quartiles(path, stamp))


def quartile_auroc_table(run: Run, attack: str) -> np.ndarray:
    """Baseline AUROC per distortion quartile: (4, T) for maskable attacks, (4,) otherwise."""
    return _quartile_aurocs(*run_key(run.path), attack)


@st.cache_resource(max_entries=4, show_spinner="Preparing the drop sweep…")
def _influence_sweep(path: str, stamp: int, attack: str) -> masks.DropSweep:
    return masks.DropSweep.by_influence(_terms(path, stamp, attack), _influence(path, stamp))


def influence_sweep(run: Run, attack: str) -> masks.DropSweep:
    """``DropSweep.by_influence(terms, influence)`` over all timesteps, built once per run/attack."""
    return _influence_sweep(*run_key(run.path), attack)


@st.cache_resource(max_entries=8, show_spinner=False)
def _random_sweep(path: str, stamp: int, attack: str, t_index: int, seed: int) -> masks.DropSweep:
    return masks.DropSweep.random(_terms(path, stamp, attack), seed=seed, t_index=t_index)


def random_sweep(run: Run, attack: str, *, t_index: int, seed: int) -> masks.DropSweep:
    """``DropSweep.random(terms, seed=seed, t_index=t_index)`` (one timestep), cached."""
    return _random_sweep(*run_key(run.path), attack, int(t_index), int(seed))


@st.cache_resource(max_entries=8, show_spinner=False)
def _ranking_sweep(path: str, stamp: int, attack: str, t_index: int) -> masks.DropSweep:
    ranking = _influence(path, stamp).mean(axis=0)
    return masks.DropSweep.by_ranking(_terms(path, stamp, attack), ranking, t_index=t_index)


def ranking_sweep(run: Run, attack: str, *, t_index: int) -> masks.DropSweep:
    """``DropSweep.by_ranking(terms, mean influence over samples, t_index=t_index)``, cached."""
    return _ranking_sweep(*run_key(run.path), attack, int(t_index))


@st.cache_data(max_entries=16, show_spinner="Ranking the latent coordinates…")
def _dimension_table(path: str, stamp: int, attack: str, t_index: int) -> pd.DataFrame:
    run = _open_run(path, stamp)
    terms_t = _terms(path, stamp, attack)[:, int(t_index)]
    return compute.dimension_table(_influence(path, stamp), terms_t, run.labels)


def dimension_table(run: Run, attack: str, t_index: int) -> pd.DataFrame:
    """``compute.dimension_table`` of the attack's terms at one timestep, cached."""
    return _dimension_table(*run_key(run.path), attack, int(t_index))


@st.cache_data(max_entries=64, show_spinner="Bootstrapping the metrics…")
def _variant_table(key: tuple, _scores: dict, _labels: np.ndarray, n_boot: int) -> pd.DataFrame:
    return compute.variant_metrics(_scores, _labels, n_boot=n_boot)


def variant_table(key: tuple, scores: dict[str, np.ndarray], labels: np.ndarray, *, n_boot: int) -> pd.DataFrame:
    """``compute.variant_metrics`` cached under ``key``, which must identify the scores
    (run path and stamp, attack, timestep and every mask setting)."""
    return _variant_table(key, scores, labels, int(n_boot))


@st.cache_data(max_entries=64, show_spinner=False)
def _sweep_curves(
    path: str, stamp: int, attack: str, kind: str, t_index: int, seed: int, percents: tuple
) -> dict[str, np.ndarray]:
    run = _open_run(path, stamp)
    if kind == "masked":
        return compute.sweep_metrics(
            _influence_sweep(path, stamp, attack), run.labels, t_index=t_index, percents=percents
        )
    if kind == "random":
        sweep = _random_sweep(path, stamp, attack, t_index, seed)
    elif kind == "global":
        sweep = _ranking_sweep(path, stamp, attack, t_index)
    else:
        raise UnknownNameError(f"kind: expected 'masked', 'random' or 'global', got {kind!r}")
    return compute.sweep_metrics(sweep, run.labels, t_index=None, percents=percents)


def sweep_curves(
    run: Run, attack: str, kind: str, *, t_index: int, seed: int = 0,
    percents: tuple = compute.DROP_PERCENTS,
) -> dict[str, np.ndarray]:
    """Metrics against drop percentage ({name: (K,)}) of the "masked" (per-sample influence),
    "random" (seeded) or "global" (mean-influence ranking) sweep at timestep index ``t_index``,
    from one ``DropSweep.statistics`` call and ``metrics.evaluate_many``; cached."""
    return _sweep_curves(*run_key(run.path), attack, kind, int(t_index), int(seed), tuple(percents))


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

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)


@st.cache_resource(show_spinner=False)
def job_registry() -> JobRegistry:
    """The server-wide registry of analysis jobs."""
    return JobRegistry()


def clear_run_caches() -> None:
    """Drop every cached run-derived object (after a run was deleted or recomputed)."""
    for fn in (_open_run, _influence, _latents, _terms, _influence_sweep, _random_sweep, _ranking_sweep):
        fn.clear()
    for fn in (_baseline_scores, _per_t_metrics, _quartiles, _quartile_aurocs, _dimension_table, _variant_table,
               _sweep_curves,
               _reconstruction):
        fn.clear()
