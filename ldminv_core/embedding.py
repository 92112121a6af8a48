"""Two-dimensional maps of latent codes (UMAP), for the dashboard's latent map.

``umap_embedding`` flattens each latent (C, h, w) into one vector and embeds the N vectors in
the plane with umap-learn. ``cached_umap_embedding`` stores the result in a run folder as
``umap.npy`` (atomic write, with the settings in ``umap.json``) so it is computed once per run.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import LdminvError, NonFiniteError, RunError, ShapeError
from .runstore import load_npy

__all__ = [
    "umap_embedding",
    "cached_umap_embedding",
    "read_cached_umap",
    "UMAP_FILE",
    "UMAP_SETTINGS_FILE",
]

UMAP_FILE = "umap.npy"
UMAP_SETTINGS_FILE = "umap.json"

# Below this many samples the spectral initialisation of UMAP can fail (it needs more points
# than eigenvectors); a random initialisation is used instead.
_SPECTRAL_MIN_SAMPLES = 11

ProgressCallback = Callable[[str, int, int], None]


def umap_embedding(
    latents: np.ndarray,
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Embed latent codes in the plane with UMAP.

    Args:
        latents: array (N, C, h, w) of latent codes; each is flattened to a vector of
            length C*h*w. N must be at least 3.
        seed: random seed; the same seed gives the same embedding (UMAP then runs
            single-threaded).
        n_neighbors: size of the local neighbourhood; clamped to N - 1 when N is small.
        progress: optional callback ``(stage, done, total)``, called with stage "umap" at
            the start (0, 1) and at the end (1, 1).

    Returns:
        float32 array (N, 2).

    Raises:
        ShapeError: ``latents`` is not 4-dimensional or holds fewer than 3 samples.
        NonFiniteError: ``latents`` holds NaN or infinite values.
        LdminvError: ``n_neighbors`` is below 2.
    """
    arr = np.asarray(latents)
    if arr.ndim != 4:
        raise ShapeError(
            f"latents: expected an array of shape (N, C, h, w), got shape {arr.shape}"
        )
    n = arr.shape[0]
    if n < 3:
        raise ShapeError(
            f"latents: a UMAP embedding needs at least 3 samples, got N={n}"
        )
    if int(n_neighbors) < 2:
        raise LdminvError(f"n_neighbors: expected an integer >= 2, got {n_neighbors!r}")
    flat = arr.reshape(n, -1).astype(np.float32, copy=False)
    if not np.isfinite(flat).all():
        bad = int((~np.isfinite(flat)).any(axis=1).sum())
        raise NonFiniteError(
            f"latents: expected finite values, got NaN or infinity in {bad} of {n} samples"
        )
    neighbours = min(int(n_neighbors), n - 1)
    if progress is not None:
        progress("umap", 0, 1)

    import umap  # imported lazily: numba compilation makes the import slow

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=neighbours,
        random_state=int(seed),
        n_jobs=1,
        init="spectral" if n >= _SPECTRAL_MIN_SAMPLES else "random",
    )
    with warnings.catch_warnings():
        # umap-learn warns that a fixed random_state forces a single thread and about
        # small graphs; both are expected here.
        warnings.simplefilter("ignore", UserWarning)
        emb = reducer.fit_transform(flat)
    if progress is not None:
        progress("umap", 1, 1)
    return np.ascontiguousarray(emb, dtype=np.float32)


def read_cached_umap(
    run_dir: str | os.PathLike, n: int, *, seed: int = 0, n_neighbors: int = 15
) -> np.ndarray | None:
    """The embedding stored by :func:`cached_umap_embedding` for these settings, or None.

    Args:
        run_dir: the run folder.
        n: number of samples N the embedding must cover.
        seed, n_neighbors: the settings it must have been computed with.

    Returns:
        float32 (N, 2), or None when no matching ``umap.npy`` is stored.
    """
    settings = {"seed": int(seed), "n_neighbors": int(n_neighbors), "n": int(n)}
    return _read_cached(Path(run_dir), int(n), settings)


def _read_cached(run_dir: Path, n: int, settings: dict) -> np.ndarray | None:
    emb_path = run_dir / UMAP_FILE
    meta_path = run_dir / UMAP_SETTINGS_FILE
    if not emb_path.is_file() or not meta_path.is_file():
        return None
    try:
        stored = json.loads(meta_path.read_text())
        emb = load_npy(emb_path)
    except (OSError, ValueError):
        return None
    if stored != settings or emb.shape != (n, 2):
        return None
    return emb.astype(np.float32, copy=False)


def _atomic_write(path: Path, write: Callable[[object], None], *, binary: bool) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cached_umap_embedding(
    run_dir: str | os.PathLike,
    latents: np.ndarray,
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """UMAP embedding of a run's latents, computed once and stored in the run folder.

    Reads ``run_dir/umap.npy`` when it exists and was computed with the same ``seed``,
    ``n_neighbors`` and number of samples (recorded in ``umap.json``); otherwise computes
    ``umap_embedding(latents, seed=seed, n_neighbors=n_neighbors)`` and writes both files
    atomically (temporary file + ``os.replace``).

    Args:
        run_dir: the run folder (must exist).
        latents: array (N, C, h, w), the run's latents.
        seed, n_neighbors, progress: as in ``umap_embedding``.

    Returns:
        float32 array (N, 2).

    Raises:
        RunError: ``run_dir`` is not an existing folder.
        ShapeError, NonFiniteError: as in ``umap_embedding``.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise RunError(f"run_dir: expected an existing run folder, got {str(folder)!r}")
    arr = np.asarray(latents)
    if arr.ndim != 4:
        raise ShapeError(
            f"latents: expected an array of shape (N, C, h, w), got shape {arr.shape}"
        )
    settings = {"seed": int(seed), "n_neighbors": int(n_neighbors), "n": int(arr.shape[0])}
    cached = _read_cached(folder, arr.shape[0], settings)
    if cached is not None:
        if progress is not None:
            progress("umap", 1, 1)
        return cached
    emb = umap_embedding(arr, seed=seed, n_neighbors=n_neighbors, progress=progress)
    _atomic_write(folder / UMAP_FILE, lambda fh: np.save(fh, emb), binary=True)
    _atomic_write(
        folder / UMAP_SETTINGS_FILE, lambda fh: json.dump(settings, fh), binary=False
    )
    return emb
