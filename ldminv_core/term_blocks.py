"""Reading an attack's terms array block by block of samples, for arrays larger than memory.

An attack writes per-coordinate terms of shape (N, T, C, h, w), often a float16 or float32
``np.memmap`` larger than memory. The readers here take it one block of samples at a time
(about 64 MiB as float64, :data:`_BLOCK_ELEMENTS`), convert a block to float64 only when summing
it, and release the pages of a block that was read from this process's mapping again
(:func:`_release_pages`), so the resident memory stays near one block, not the whole file:

- :func:`read_timestep`: ``terms[:, t]`` as an in-memory copy;
- :func:`gathered_statistic`: weighted sums of a few coordinates, reading only those.

Used by :mod:`ldminv_core.masks` (masked statistics, sweeps) and the drop-grid engine.
"""
from __future__ import annotations

import mmap as _mmap
from typing import Any

import numpy as np

from ._validation import check_finite, check_int
from .errors import EmptyInputError, LdminvError, ShapeError

__all__ = ["read_timestep", "gathered_statistic"]

# float64 elements of one block of terms (64 MiB).
_BLOCK_ELEMENTS = 8 * 1024 * 1024
#: Coordinates closer than this (flat index) are read as one slice by :func:`gathered_statistic`.
_GATHER_GAP = 64


def _block_size(per_sample: int) -> int:
    """Number of samples per block so that one float64 block stays near 64 MiB."""
    return max(1, _BLOCK_ELEMENTS // max(1, per_sample))


def _as_real_array(x: Any, name: str, *, ndim: int, layout: str) -> np.ndarray:
    """``np.asarray`` (no copy for numpy arrays and memmaps) with dtype and ndim checks."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != ndim:
        raise ShapeError(f"{name} must be {ndim}-D {layout}; got shape {arr.shape}")
    if arr.dtype.kind not in "iuf":
        raise LdminvError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.size == 0:
        raise EmptyInputError(f"{name} must not be empty; got shape {arr.shape}")
    return arr


def _check_terms(terms: Any) -> np.ndarray:
    return _as_real_array(terms, "terms", ndim=5, layout="(N, T, C, h, w)")


def _check_finite(arr: np.ndarray, name: str) -> None:
    """``NonFiniteError`` naming ``name`` when ``arr`` holds NaN or infinite values."""
    check_finite(arr, name)


def _release_pages(arr: np.ndarray, view: np.ndarray) -> None:
    """Drop the pages of ``view`` (a slice of the read-only memmap ``arr``) from this process's
    mapping (``madvise(MADV_DONTNEED)``): they stay in the page cache, but no longer count in the
    resident memory of the process. A no-op for anything but a read-only np.memmap."""
    mm = None
    obj: Any = arr
    for _ in range(8):  # np.asarray(memmap) and slices keep the mmap at the end of their .base chain
        if isinstance(obj, _mmap.mmap):
            mm = obj
            break
        obj = getattr(obj, "base", None)
        if obj is None:
            break
    if mm is None or not hasattr(mm, "madvise"):
        return
    try:
        if not mm.closed and getattr(mm, "access", None) is not None and arr.flags.writeable:
            return  # a writable mapping: its dirty pages must not be dropped
    except AttributeError:
        pass
    try:
        base = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
        start = view.__array_interface__["data"][0] - base
        length = view.nbytes
        page = _mmap.PAGESIZE
        lo = (start // page) * page
        hi = min(len(mm), -(-(start + length) // page) * page)
        if 0 <= lo < hi:
            mm.madvise(_mmap.MADV_DONTNEED, lo, hi - lo)
    except (AttributeError, ValueError, OSError, TypeError):  # pragma: no cover - platform without madvise
        pass


def _read_block(arr: np.ndarray, start: int, stop: int, index: Any = None, *, dtype: Any = None) -> np.ndarray:
    """``np.array(arr[start:stop][index], dtype)`` (a copy), releasing the memmap pages read."""
    view = arr[start:stop]
    out = np.array(view if index is None else view[index], dtype=dtype if dtype is not None else view.dtype)
    if view.flags.c_contiguous:
        _release_pages(arr, view)
    return out


def read_timestep(terms: Any, t_index: int) -> np.ndarray:
    """``terms[:, t_index]`` (N, C, h, w) as an in-memory copy in the stored dtype, read in blocks of
    samples and releasing the memory-mapped pages read (the process keeps 1/T of the file, not
    the neighbourhoods of pages the kernel maps around each read)."""
    t_arr = _check_terms(terms)
    ti = check_int(t_index, "t_index", minimum=0)
    if ti >= t_arr.shape[1]:
        raise LdminvError(f"t_index must be 0..{t_arr.shape[1] - 1}; got {t_index!r}")
    n = t_arr.shape[0]
    out = np.empty((n, *t_arr.shape[2:]), dtype=t_arr.dtype)
    block = _block_size(int(np.prod(t_arr.shape[1:])) // 4)
    for start in range(0, n, block):
        stop = min(n, start + block)
        view = t_arr[start:stop]
        out[start:stop] = view[:, ti]
        if view.flags.c_contiguous:
            _release_pages(t_arr, view)
    return out


def gathered_statistic(terms: Any, coords: Any, weights: Any = None, *, block_samples: int | None = None) -> np.ndarray:
    """``sum_j weights[j] * terms[n, t, coords[j]]`` -> float64 (N, T), reading only those
    coordinates (flat indices into C*h*w) of a memory-mapped ``terms``, block by block of samples.

    The cost is in proportion to ``len(coords)``, not d: a manual mask of a few coordinates (or
    the complement of one) is summed without reading the whole array. ``weights`` default 1."""
    t_arr = _check_terms(terms)
    n, t_count = t_arr.shape[:2]
    d = int(np.prod(t_arr.shape[2:]))
    idx = np.asarray(coords, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= d):
        raise LdminvError(f"coords must lie in 0..{d - 1}")
    w = np.ones(idx.size) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != idx.shape:
        raise ShapeError(f"weights must have shape {idx.shape} like coords; got {w.shape}")
    out = np.zeros((n, t_count), dtype=np.float64)
    if idx.size == 0:
        return out
    order = np.argsort(idx, kind="stable")
    idx, w = idx[order], w[order]
    flat = t_arr.reshape(n * t_count, d)
    # runs of nearby coordinates are copied as one slice of every row (a memcpy per row, the same
    # pages a gather would touch), then picked in memory: much faster than a gather off the map
    cut = np.flatnonzero(np.diff(idx) > _GATHER_GAP) + 1
    spans = [(int(g[0]), int(g[-1]) + 1, g - g[0], wg) for g, wg in zip(np.split(idx, cut), np.split(w, cut))]
    width = sum(hi - lo for lo, hi, _, _ in spans)
    rows = max(1, _BLOCK_ELEMENTS // max(1, 8 * width)) * t_count if block_samples is None else \
        check_int(block_samples, "block_samples", minimum=1) * t_count
    flat_out = out.reshape(-1)
    for start in range(0, n * t_count, rows):
        stop = min(n * t_count, start + rows)
        for lo, hi, local, wg in spans:
            part = np.asarray(np.array(flat[start:stop, lo:hi])[:, local], dtype=np.float64)
            _check_finite(part, f"terms (rows {start}..{stop - 1})")
            flat_out[start:stop] += part @ wg
        if flat.flags.c_contiguous:
            _release_pages(t_arr, flat[start:stop])  # the kernel maps whole neighbourhoods of pages
    return out
