"""The run folder: what ``analyze`` writes and the dashboard and ``report`` read.

- :mod:`.layout`: the fixed names (run.json, samples.parquet, latents.npy, influence.npy,
  residuals/, scores/, run.lock, the cache folder), the attacks a run may hold, and the order of
  a run's stages (:func:`planned_stages`);
- :mod:`.schema`: what run.json and the samples table must hold (checked on every read);
- :mod:`.files`: atomic writes, JSON, ``.npy`` / ``.npz`` loading, paths resolved inside the
  folder;
- :mod:`.lock`: the writer lock ``run.lock`` (take, release, holder, leftovers of a killed
  creation);
- :mod:`.writer`: :class:`RunWriter`, which creates or resumes a run;
- :mod:`.reader`: :class:`Run`, a run read-only (arrays memory-mapped);
- :mod:`.catalog`: :func:`run_status`, :func:`list_runs`, :func:`delete_run`,
  :func:`default_runs_root`.

Nothing here imports torch: reading a run is light.
"""
from __future__ import annotations

from .catalog import RunInfo, default_runs_root, delete_run, list_runs, run_status
from .files import load_npy, load_npz
from .layout import (
    ATTACK_KINDS,
    CACHE_DIR,
    INFLUENCE,
    KNOWN_ATTACKS,
    LATENTS,
    LOCK,
    OWNED_DIRS,
    OWNED_FILES,
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    RUN_JSON,
    SAMPLE_COLUMNS,
    SAMPLES,
    SPLITS,
    planned_stages,
)
from .reader import Run, StageNotReadyError
from .writer import RunWriter

__all__ = [
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "RUN_JSON",
    "SAMPLES",
    "LATENTS",
    "INFLUENCE",
    "LOCK",
    "SAMPLE_COLUMNS",
    "SPLITS",
    "CACHE_DIR",
    "load_npy",
    "load_npz",
    "RunWriter",
    "StageNotReadyError",
    "Run",
    "RunInfo",
    "run_status",
    "planned_stages",
    "list_runs",
    "delete_run",
    "default_runs_root",
    "KNOWN_ATTACKS",
    "ATTACK_KINDS",
    "OWNED_FILES",
    "OWNED_DIRS",
]
