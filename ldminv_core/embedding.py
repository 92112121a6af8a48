"""Two-dimensional maps of latent codes (UMAP), for the dashboard's latent map.

``umap_embedding`` flattens each latent (C, h, w) into one vector and embeds the N vectors in
the plane with umap-learn. ``store_umap`` keeps each embedding in the run folder under a name
holding its settings (``.ldminv-cache/umap/umap-n<N>-neighbours<k>-seed<s>.npy``, atomic
writes), so every setting is computed once per run and stays available next to the others;
``cached_umap_embedding`` reads or computes and stores.
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from ._validation import check_int
from .errors import NonFiniteError, RunError, ShapeError
from ldminv_core.runs import CACHE_DIR, load_npy

__all__ = [
    "umap_embedding",
    "cached_umap_embedding",
    "read_cached_umap",
    "store_umap",
    "umap_file",
    "UMAP_DIR",
    "UMAP_FILE",
    "UMAP_SETTINGS_FILE",
]

#: Folder of the stored embeddings, inside the run's cache folder (``runstore.CACHE_DIR``).
UMAP_DIR = "umap"
#: The single embedding (and its settings) that earlier versions stored in the run folder; read
#: when its settings match, never written.
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
        LdminvError: ``n_neighbors`` is not an integer >= 2, or ``seed`` not an integer >= 0.
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
    n_neighbors = check_int(n_neighbors, "n_neighbors", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
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


def umap_file(
    run_dir: str | os.PathLike, n: int, *, seed: int = 0, n_neighbors: int = 15
) -> Path:
    """Where the embedding of ``n`` samples with these settings is stored in a run folder:
    ``<run>/.ldminv-cache/umap/umap-n<n>-neighbours<k>-seed<s>.npy`` (one file per setting, so
    every embedding computed for a run stays available)."""
    return (
        Path(run_dir)
        / CACHE_DIR
        / UMAP_DIR
        / f"umap-n{int(n)}-neighbours{int(n_neighbors)}-seed{int(seed)}.npy"
    )


def read_cached_umap(
    run_dir: str | os.PathLike, n: int, *, seed: int = 0, n_neighbors: int = 15
) -> np.ndarray | None:
    """The embedding stored for these settings (by :func:`store_umap` or
    :func:`cached_umap_embedding`), or None.

    Looks up :func:`umap_file`, then the single ``umap.npy`` / ``umap.json`` pair that earlier
    versions wrote in the run folder (used when its recorded settings match).

    Args:
        run_dir: the run folder.
        n: number of samples N the embedding must cover.
        seed, n_neighbors: the settings it must have been computed with.

    Returns:
        float32 (N, 2), or None when no embedding with these settings is stored.
    """
    folder = Path(run_dir)
    emb = _read_array(umap_file(folder, n, seed=seed, n_neighbors=n_neighbors), int(n))
    if emb is not None:
        return emb
    settings = {"seed": int(seed), "n_neighbors": int(n_neighbors), "n": int(n)}
    return _read_legacy(folder, int(n), settings)


def _read_array(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        emb = load_npy(path)
    except (OSError, ValueError):
        return None
    if emb.shape != (n, 2):
        return None
    return np.asarray(emb, dtype=np.float32)


def _read_legacy(run_dir: Path, n: int, settings: dict) -> np.ndarray | None:
    meta_path = run_dir / UMAP_SETTINGS_FILE
    if not meta_path.is_file():
        return None
    try:
        stored = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if stored != settings:
        return None
    return _read_array(run_dir / UMAP_FILE, n)


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


def store_umap(
    run_dir: str | os.PathLike, emb: np.ndarray, *, seed: int = 0, n_neighbors: int = 15
) -> Path:
    """Store an embedding computed with these settings in the run folder (:func:`umap_file`;
    temporary file + ``os.replace``, so a reader never sees half a file). Embeddings of other
    settings are kept.

    Args:
        run_dir: the run folder (must exist).
        emb: (N, 2) embedding.
        seed, n_neighbors: the settings it was computed with.

    Returns:
        The path written.

    Raises:
        RunError: ``run_dir`` is not an existing folder, or the file cannot be written (the
            message names the file and the reason).
        ShapeError: ``emb`` is not of shape (N, 2).
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise RunError(f"run_dir: expected an existing run folder, got {str(folder)!r}")
    arr = np.ascontiguousarray(emb, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ShapeError(f"emb: expected an array of shape (N, 2), got shape {arr.shape}")
    target = umap_file(folder, arr.shape[0], seed=seed, n_neighbors=n_neighbors)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(target, lambda fh: np.save(fh, arr), binary=True)
    except OSError as exc:
        raise RunError(f"could not store the UMAP in {target}: {exc.strerror or exc}") from exc
    return target


def cached_umap_embedding(
    run_dir: str | os.PathLike,
    latents: np.ndarray,
    *,
    seed: int = 0,
    n_neighbors: int = 15,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """UMAP embedding of a run's latents, computed once per setting and stored in the run folder.

    Returns the stored embedding when one exists for this ``seed``, ``n_neighbors`` and number
    of samples (:func:`read_cached_umap`); otherwise computes
    ``umap_embedding(latents, seed=seed, n_neighbors=n_neighbors)`` and stores it
    (:func:`store_umap`), next to those of other settings.

    Args:
        run_dir: the run folder (must exist).
        latents: array (N, C, h, w), the run's latents.
        seed, n_neighbors, progress: as in ``umap_embedding``.

    Returns:
        float32 array (N, 2).

    Raises:
        RunError: ``run_dir`` is not an existing folder, or the embedding cannot be stored.
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
    cached = read_cached_umap(folder, arr.shape[0], seed=seed, n_neighbors=n_neighbors)
    if cached is not None:
        if progress is not None:
            progress("umap", 1, 1)
        return cached
    emb = umap_embedding(arr, seed=seed, n_neighbors=n_neighbors, progress=progress)
    store_umap(folder, emb, seed=seed, n_neighbors=n_neighbors)
    return emb
