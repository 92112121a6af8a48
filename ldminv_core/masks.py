"""Latent-dimension masks for the attack statistics, and the all-drop-percentages sweep.

An attack writes per-coordinate terms ``terms`` of shape (N, T, C, h, w) (N samples,
T timesteps, latent shape (C, h, w), d = C * h * w coordinates); the attack statistic
of sample n at timestep t is ``sum_i mask[n, i] * terms[n, t, i]`` over the kept
coordinates i. Masks here are boolean *keep*-masks (True = the coordinate counts).

Dropping p percent of d coordinates drops ``drop_count(d, p) = round(d * p / 100)``
of them, with Python's ``round`` (halves go to the even integer: 2.5 -> 2, 3.5 -> 4).
Every function in this module uses :func:`drop_count`, so a given percentage always
drops the same number of coordinates. ``drop_percent`` must lie in [0, 100).

Orderings are ascending: the coordinates that come first in a sample's order are
dropped first. For influence (or any shared ranking) this is a stable argsort, so
equal values are dropped in flat-index order. For random drops the order of each
sample is a uniformly random permutation drawn from ``numpy.random.default_rng(seed)``
(the argsort of one row of ``rng.random((N, d))``); :func:`random_drop_mask` and
:meth:`DropSweep.random` share it, so the two agree for the same seed.

``terms`` may be a float16 or float32 ``np.memmap`` larger than memory: it is read
in blocks of samples and converted to float64 one block at a time (the pages of a block that
was read are released from this process's mapping again, so the resident memory stays near one
block, not the whole file).

Two sweeps: :class:`DropSweep` keeps the statistic at *every* drop count (N * T * (d + 1)
float64: fine for small latents, 13 GB at N = 5000, T = 20, d = 16384); :class:`DropGrid` keeps
it at a fixed set of per-sample drop counts (e.g. 0..99 percent under each counting rule) for
several orders at once (influence, seeded random, a shared ranking), built in one chunked pass
over the terms: memory K * N * T float64 for K settings, never proportional to d.
"""
from __future__ import annotations

import math
import mmap as _mmap
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError

__all__ = [
    "drop_count",
    "paper_drop_count",
    "percentile_drop_mask",
    "percentile_threshold_mask",
    "threshold_drop_counts",
    "threshold_drop_counts_many",
    "random_drop_mask",
    "global_drop_mask",
    "manual_mask",
    "masked_statistic",
    "gathered_statistic",
    "decomposed_statistic",
    "read_timestep",
    "DropSweep",
    "GRID_PERCENTS",
    "OrderSpec",
    "DropGrid",
    "build_drop_grids",
]

# float64 elements of one block of terms (64 MiB).
_BLOCK_ELEMENTS = 8 * 1024 * 1024


# --------------------------------------------------------------------------- helpers


def _block_size(per_sample: int) -> int:
    """Number of samples per block so that one float64 block stays near 64 MiB."""
    return max(1, _BLOCK_ELEMENTS // max(1, per_sample))


def _check_percent(drop_percent: Any) -> float:
    if isinstance(drop_percent, bool) or not isinstance(drop_percent, numbers.Real):
        raise LdminvError(f"drop_percent must be a number in [0, 100); got {drop_percent!r}")
    p = float(drop_percent)
    if not (math.isfinite(p) and 0.0 <= p < 100.0):
        raise LdminvError(f"drop_percent must be in [0, 100); got {drop_percent!r}")
    return p


def _check_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise LdminvError(f"{name} must be an integer >= {minimum}; got {value!r}")
    if int(value) < minimum:
        raise LdminvError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_latent_shape(shape: Any, name: str) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError as exc:
        raise ShapeError(f"{name} must be (C, h, w); got {shape!r}") from exc
    if len(dims) != 3 or not all(
        isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) and int(v) > 0 for v in dims
    ):
        raise ShapeError(f"{name} must be three positive integers (C, h, w); got {shape!r}")
    return tuple(int(v) for v in dims)  # type: ignore[return-value]


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
    if not np.isfinite(arr).all():
        raise NonFiniteError(f"{name} must be finite; it holds NaN or infinite values")


def _stable_order(values2d: np.ndarray) -> np.ndarray:
    """Ascending stable argsort of each row -> int64 (rows, d)."""
    return np.argsort(values2d, axis=1, kind="stable")


def _influence_order(influence: np.ndarray) -> np.ndarray:
    """Per-sample ascending order of influence (N, C, h, w) -> (N, d), ties by flat index."""
    flat = influence.reshape(influence.shape[0], -1)
    _check_finite(flat, "influence")
    return _stable_order(flat)


def _ranking_order(r: np.ndarray) -> np.ndarray:
    """Ascending order of a shared ranking (C, h, w) -> (d,), ties by flat index."""
    flat = r.reshape(1, -1)
    _check_finite(flat, "ranking")
    return _stable_order(flat)[0]


def _random_orders(n: int, d: int, seed: int) -> Iterable[tuple[int, int, np.ndarray]]:
    """Per-sample uniformly random permutations of range(d), in blocks of samples.

    Yields ``(start, stop, order (stop - start, d))``. The permutation of sample n is the
    argsort of row n of ``default_rng(seed).random((n, d))``, whatever the block size.
    """
    rng = np.random.default_rng(seed)
    block = _block_size(d)
    for start in range(0, n, block):
        stop = min(n, start + block)
        yield start, stop, _stable_order(rng.random((stop - start, d)))


def _keep_from_orders(orders: Iterable[tuple[int, int, np.ndarray]], n: int, d: int, n_drop: int) -> np.ndarray:
    keep = np.ones((n, d), dtype=bool)
    for start, stop, order in orders:
        rows = np.arange(stop - start)[:, None]
        keep[start + rows, order[:, :n_drop]] = False
    return keep


# --------------------------------------------------------------------------- masks


def drop_count(d: int, drop_percent: float) -> int:
    """Number of coordinates dropped out of ``d`` at ``drop_percent``: ``round(d * p / 100)``.

    Python's round-half-to-even is used (e.g. d = 10, p = 25 -> 2). ``drop_percent``
    must be in [0, 100), else :class:`LdminvError`.
    """
    d = _check_int(d, "d", minimum=1)
    p = _check_percent(drop_percent)
    return int(round(d * p / 100.0))


def percentile_drop_mask(influence: Any, drop_percent: float) -> np.ndarray:
    """Per-sample keep-mask dropping each sample's lowest-influence coordinates.

    ``influence`` (N, C, h, w) -> bool (N, C, h, w). For every sample the
    ``drop_count(C*h*w, drop_percent)`` coordinates of lowest influence are False
    (equal values: lower flat index dropped first); the other coordinates are True.
    """
    inf = _as_real_array(influence, "influence", ndim=4, layout="(N, C, h, w)")
    n = inf.shape[0]
    d = int(np.prod(inf.shape[1:]))
    n_drop = drop_count(d, drop_percent)
    keep = _keep_from_orders([(0, n, _influence_order(inf))], n, d, n_drop)
    return keep.reshape(inf.shape)


def paper_drop_count(d: int, drop_percent: float) -> int:
    """Random-control count of the paper's released code: ``int(d * p / 100)`` (truncation).

    Differs from :func:`drop_count` (rounding) when ``d * p / 100`` has a fractional part of
    one half or more, e.g. d = 10, p = 25: 2 here and 2 there, d = 10, p = 35: 3 here, 4 there.
    """
    d = _check_int(d, "d", minimum=1)
    p = _check_percent(drop_percent)
    return int(d * p / 100.0)


def threshold_drop_counts(influence: Any, drop_percent: float) -> np.ndarray:
    """Per-sample number of coordinates the percentile-threshold rule drops -> int64 (N,).

    The rule of the paper's released code: a coordinate is kept when its influence is
    strictly above ``np.percentile(influence_of_that_sample, p)`` (linear interpolation);
    coordinates equal to the threshold are dropped too, so a sample with ties may drop more
    than ``d * p / 100``. ``p = 0`` keeps everything. ``influence`` (N, C, h, w).

    Because every dropped value is <= every kept value, the dropped set is a prefix of the
    sample's ascending influence order: :meth:`DropSweep.statistic_at_counts` with these
    counts equals ``masked_statistic(terms, percentile_threshold_mask(influence, p))``.
    """
    inf = _as_real_array(influence, "influence", ndim=4, layout="(N, C, h, w)")
    p = _check_percent(drop_percent)
    flat = inf.reshape(inf.shape[0], -1)
    _check_finite(flat, "influence")
    if p == 0.0:
        return np.zeros(flat.shape[0], dtype=np.int64)
    thr = np.percentile(flat, p, axis=1, keepdims=True)
    return np.count_nonzero(~(flat > thr), axis=1).astype(np.int64)


def threshold_drop_counts_many(influence: Any, percents: Sequence[float]) -> np.ndarray:
    """:func:`threshold_drop_counts` at several percentages at once -> int64 (K, N).

    Row k equals ``threshold_drop_counts(influence, percents[k])``; each sample's influence is
    sorted once (in blocks of samples), so K percentages cost about one sort, not K partitions.
    """
    inf = _as_real_array(influence, "influence", ndim=4, layout="(N, C, h, w)")
    ps = [_check_percent(p) for p in percents]
    if not ps:
        raise EmptyInputError("percents must hold at least one drop percentage; got none")
    n = inf.shape[0]
    d = int(np.prod(inf.shape[1:]))
    flat = inf.reshape(n, d)
    out = np.zeros((len(ps), n), dtype=np.int64)
    nonzero = [k for k, p in enumerate(ps) if p != 0.0]
    if not nonzero:
        return out
    block = _block_size(d)
    for start in range(0, n, block):
        srt = np.sort(np.asarray(flat[start : start + block]), axis=1)
        _check_finite(srt, "influence")
        # the same order statistics, hence the same interpolated thresholds, as on the raw rows
        thr = np.percentile(srt, [ps[k] for k in nonzero], axis=1)  # (K', b)
        for i in range(srt.shape[0]):
            out[nonzero, start + i] = np.searchsorted(srt[i], thr[:, i], side="right")
    return out


def percentile_threshold_mask(influence: Any, drop_percent: float) -> np.ndarray:
    """Keep-mask of the percentile-threshold rule (see :func:`threshold_drop_counts`).

    ``influence`` (N, C, h, w) -> bool (N, C, h, w): True where the influence is strictly above
    the sample's ``np.percentile(..., drop_percent)``; all True for ``drop_percent == 0``.
    """
    inf = _as_real_array(influence, "influence", ndim=4, layout="(N, C, h, w)")
    p = _check_percent(drop_percent)
    flat = inf.reshape(inf.shape[0], -1)
    _check_finite(flat, "influence")
    if p == 0.0:
        return np.ones(inf.shape, dtype=bool)
    thr = np.percentile(flat, p, axis=1, keepdims=True)
    return (flat > thr).reshape(inf.shape)


def random_drop_mask(
    shape: Sequence[int], drop_percent: float, *, seed: int = 0, n_drop: int | None = None
) -> np.ndarray:
    """Keep-mask dropping, per sample, ``drop_count(C*h*w, drop_percent)`` random coordinates.

    ``shape`` = (N, C, h, w) -> bool (N, C, h, w). Each sample gets its own uniformly
    random set of exactly that many dropped coordinates; the sets are reproducible from
    ``seed`` and the same as those of ``DropSweep.random(terms, seed=seed)``. ``n_drop``
    overrides the count (e.g. :func:`paper_drop_count`); ``drop_percent`` is then ignored.
    """
    try:
        dims = tuple(shape)
    except TypeError as exc:
        raise ShapeError(f"shape must be (N, C, h, w); got {shape!r}") from exc
    if len(dims) != 4:
        raise ShapeError(f"shape must be (N, C, h, w); got {shape!r}")
    n = _check_int(dims[0], "shape[0] (number of samples N)", minimum=1)
    latent = _check_latent_shape(dims[1:], "shape[1:] (latent shape)")
    d = int(np.prod(latent))
    if n_drop is None:
        n_drop = drop_count(d, drop_percent)
    else:
        n_drop = _check_int(n_drop, "n_drop", minimum=0)
        if n_drop > d:
            raise LdminvError(f"n_drop must be at most d = {d}; got {n_drop}")
    seed = _check_int(seed, "seed", minimum=0)
    return _keep_from_orders(_random_orders(n, d, seed), n, d, n_drop).reshape((n, *latent))


def global_drop_mask(ranking: Any, drop_percent: float, *, n: int) -> np.ndarray:
    """Keep-mask shared by ``n`` samples, dropping the lowest-ranked coordinates.

    ``ranking`` (C, h, w): a per-coordinate importance shared by all samples (higher =
    more important, e.g. the mean influence over samples). The ``drop_count(C*h*w,
    drop_percent)`` lowest values are dropped (ties: lower flat index first).
    Returns bool (n, C, h, w), the same mask for every sample.
    """
    r = _as_real_array(ranking, "ranking", ndim=3, layout="(C, h, w)")
    order = _ranking_order(r)
    latent = r.shape
    n = _check_int(n, "n", minimum=1)
    d = order.shape[0]
    keep = np.ones(d, dtype=bool)
    keep[order[: drop_count(d, drop_percent)]] = False
    return np.repeat(keep.reshape(1, *latent), n, axis=0)


def _indices(values: Any, name: str, upper: int) -> np.ndarray:
    """Validate an iterable of integer indices in [0, upper) -> int64 array."""
    if isinstance(values, (str, bytes)):
        raise LdminvError(f"{name} must be an iterable of integers; got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
            raise LdminvError(f"{name} must hold integers; got {v!r}")
        if not 0 <= int(v) < upper:
            raise LdminvError(f"{name} value {int(v)} is out of range; valid values are 0..{upper - 1}")
        out.append(int(v))
    return np.asarray(out, dtype=np.int64)


def manual_mask(
    latent_shape: Sequence[int],
    *,
    channels: Iterable[int] | None = None,
    positions: Iterable[tuple[int, int]] | None = None,
    coords: Iterable[int] | None = None,
) -> np.ndarray:
    """Keep-mask of user-picked coordinates: bool (C, h, w) for ``latent_shape`` (C, h, w).

    A coordinate (c, row, col) is kept when ``c`` is in ``channels``, ``(row, col)`` is
    in ``positions`` and its flat index ``(c * h + row) * w + col`` is in ``coords``;
    an option left as None does not restrict (all None keeps everything, an empty list
    keeps nothing). Out-of-range values raise :class:`LdminvError` naming the value and
    the valid range.
    """
    c_, h, w = _check_latent_shape(latent_shape, "latent_shape")
    keep = np.ones((c_, h, w), dtype=bool)
    if channels is not None:
        sel = np.zeros(c_, dtype=bool)
        sel[_indices(channels, "channels", c_)] = True
        keep &= sel[:, None, None]
    if positions is not None:
        sel2 = np.zeros((h, w), dtype=bool)
        for pos in positions:
            try:
                row, col = pos
            except (TypeError, ValueError) as exc:
                raise LdminvError(f"positions must hold (row, col) pairs; got {pos!r}") from exc
            r_i = _indices([row], "positions row", h)[0]
            c_i = _indices([col], "positions column", w)[0]
            sel2[r_i, c_i] = True
        keep &= sel2[None]
    if coords is not None:
        sel3 = np.zeros(c_ * h * w, dtype=bool)
        sel3[_indices(coords, "coords", c_ * h * w)] = True
        keep &= sel3.reshape(c_, h, w)
    return keep


# --------------------------------------------------------------------------- statistics


def _check_mask(mask: Any, terms_shape: tuple[int, ...]) -> np.ndarray:
    """Validate a keep-mask against terms (N, T, C, h, w) -> float64 (C*h*w,) or (N, C*h*w)."""
    m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
    latent = terms_shape[2:]
    if m.shape == latent:
        flat = m.reshape(-1)
    elif m.shape == (terms_shape[0], *latent):
        flat = m.reshape(terms_shape[0], -1)
    else:
        raise ShapeError(
            f"mask must have shape (C, h, w) = {latent} or (N, C, h, w) = {(terms_shape[0], *latent)} "
            f"to match terms of shape {terms_shape}; got mask of shape {m.shape}"
        )
    if m.dtype != bool:
        if m.dtype.kind not in "iuf" or not ((m == 0) | (m == 1)).all():
            raise LdminvError(f"mask must be boolean (or 0/1); got dtype {m.dtype} with other values")
    return flat.astype(np.float64)


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


def masked_statistic(terms: Any, mask: Any = None) -> np.ndarray:
    """Attack statistic ``sum_i mask_i * terms[n, t, i]`` -> float64 (N, T).

    ``terms`` (N, T, C, h, w), float16/float32/float64 (a memmap is read in blocks of
    samples, so it never sits in memory whole as float64). ``mask``: bool keep-mask of
    shape (C, h, w) (one for all samples), (N, C, h, w) (per sample) or None (all kept).
    A shared mask keeping at most half of the coordinates sums only those (their terms are
    gathered in the stored dtype first), so a sparse manual mask costs in proportion to what
    it keeps.
    """
    t_arr = _check_terms(terms)
    n, t_count = t_arr.shape[:2]
    d = int(np.prod(t_arr.shape[2:]))
    m = None if mask is None else _check_mask(mask, t_arr.shape)
    out = np.empty((n, t_count), dtype=np.float64)
    kept = None
    if m is not None and m.ndim == 1 and np.count_nonzero(m) <= d // 2:
        kept = np.flatnonzero(m)
    block = _block_size(t_count * d)
    for start in range(0, n, block):
        stop = min(n, start + block)
        raw = _read_block(t_arr, start, stop)
        chunk16 = raw.reshape(stop - start, t_count, d)
        if kept is not None:
            if not np.isfinite(chunk16).all():  # the dropped coordinates must be finite too
                _check_finite(chunk16, f"terms (samples {start}..{stop - 1})")
            out[start:stop] = np.asarray(chunk16[:, :, kept], dtype=np.float64).sum(axis=2) if kept.size else 0.0
            continue
        chunk = np.asarray(chunk16, dtype=np.float64)
        del raw, chunk16
        _check_finite(chunk, f"terms (samples {start}..{stop - 1})")
        if m is None:
            out[start:stop] = chunk.sum(axis=2)
        elif m.ndim == 1:
            out[start:stop] = chunk @ m
        else:
            out[start:stop] = np.einsum("ntd,nd->nt", chunk, m[start:stop])
    return out


def _check_t_index(t_index: Any, t_count: int) -> tuple[list[int], bool]:
    """Validate ``t_index`` -> (list of timestep indices, whether to squeeze the T axis)."""
    if t_index is None:
        return list(range(t_count)), False
    if isinstance(t_index, (numbers.Integral, np.integer)) and not isinstance(t_index, bool):
        return [int(_indices([t_index], "t_index", t_count)[0])], True
    idx = _indices(t_index, "t_index", t_count)
    if idx.size == 0:
        raise EmptyInputError("t_index must select at least one timestep; got an empty list")
    return idx.tolist(), False


class DropSweep:
    """Attack statistics at every drop percentage, from cumulative sums computed once.

    ``terms`` (N, T, C, h, w); ``order`` (N, d) int, each row a permutation of range(d)
    listing that sample's coordinates in drop order (first = dropped first, e.g.
    ascending influence). The terms are gathered in that order and their float64
    cumulative sums from the end kept, so ``statistic(p)`` is one lookup per sample and
    timestep: it equals ``masked_statistic(terms, keep)`` where ``keep`` drops the first
    ``drop_count(d, p)`` coordinates of each row of ``order``.

    ``t_index`` (None = all timesteps, an int, or a list of ints) restricts the sweep
    to some timesteps; memory is N * T_selected * (d + 1) float64. With an int the
    timestep axis is dropped from the results ((N,) and (K, N)); otherwise results are
    (N, T_selected) and (K, N, T_selected).
    """

    def __init__(self, terms: Any, order: Any, *, t_index: int | Sequence[int] | None = None) -> None:
        t_arr = _check_terms(terms)
        o = np.asarray(order)
        n = t_arr.shape[0]
        d = int(np.prod(t_arr.shape[2:]))
        if o.shape != (n, d):
            raise ShapeError(
                f"order must have shape (N, d) = {(n, d)} for terms of shape {t_arr.shape}; got shape {o.shape}"
            )
        if o.dtype.kind not in "iu":
            raise LdminvError(f"order must hold integer coordinate indices; got dtype {o.dtype}")
        expected = np.arange(d)
        block = _block_size(d)
        for start in range(0, n, block):
            if not (np.sort(o[start : start + block], axis=1) == expected).all():
                raise LdminvError(f"every row of order must be a permutation of 0..{d - 1}; rows {start}.. are not")
        self._build(t_arr, [(0, n, o)], t_index)

    @classmethod
    def _from_orders(
        cls, terms: np.ndarray, orders: Iterable[tuple[int, int, np.ndarray]], t_index: Any
    ) -> "DropSweep":
        self = cls.__new__(cls)
        self._build(terms, orders, t_index)
        return self

    def _build(self, terms: np.ndarray, orders: Iterable[tuple[int, int, np.ndarray]], t_index: Any) -> None:
        n, t_count = terms.shape[:2]
        d = int(np.prod(terms.shape[2:]))
        t_sel, squeeze = _check_t_index(t_index, t_count)
        ts = len(t_sel)
        contiguous = t_sel == list(range(t_sel[0], t_sel[0] + ts))
        t_slice: slice | list[int] = slice(t_sel[0], t_sel[0] + ts) if contiguous else t_sel
        # suffix[n, t, k] = sum of the terms of order[n, k:] (k = 0..d); suffix[..., d] = 0
        suffix = np.zeros((n, ts, d + 1), dtype=np.float64)
        block = _block_size(ts * d)
        for start, stop, order in orders:
            order = np.asarray(order)
            for b0 in range(start, stop, block):
                b1 = min(stop, b0 + block)
                if order.ndim == 1:
                    o = np.broadcast_to(order, (b1 - b0, d))
                else:
                    o = order[b0 - start : b1 - start]
                chunk = np.asarray(terms[b0:b1, t_slice], dtype=np.float64).reshape(b1 - b0, ts, d)
                _check_finite(chunk, f"terms (samples {b0}..{b1 - 1})")
                gathered = np.take_along_axis(chunk, o[:, None, :], axis=2)
                # cumulative sums from the end: no cancellation when most is dropped
                np.cumsum(gathered[:, :, ::-1], axis=2, out=suffix[b0:b1, :, d - 1 :: -1])
        self._suffix = suffix
        self._squeeze = squeeze
        self.n_samples = n
        self.d = d
        self.t_index: list[int] = t_sel
        self.latent_shape: tuple[int, int, int] = tuple(terms.shape[2:])  # type: ignore[assignment]

    # ---- constructors

    @classmethod
    def by_influence(
        cls, terms: Any, influence: Any, *, t_index: int | Sequence[int] | None = None
    ) -> "DropSweep":
        """Sweep dropping each sample's lowest-influence coordinates first.

        ``terms`` (N, T, C, h, w), ``influence`` (N, C, h, w); ties by flat index, so
        ``statistic(p)`` equals ``masked_statistic(terms, percentile_drop_mask(influence, p))``.
        """
        t_arr = _check_terms(terms)
        inf = _as_real_array(influence, "influence", ndim=4, layout="(N, C, h, w)")
        if inf.shape != (t_arr.shape[0], *t_arr.shape[2:]):
            raise ShapeError(
                f"influence must have shape (N, C, h, w) = {(t_arr.shape[0], *t_arr.shape[2:])} "
                f"to match terms of shape {t_arr.shape}; got influence of shape {inf.shape}"
            )
        return cls._from_orders(t_arr, [(0, inf.shape[0], _influence_order(inf))], t_index)

    @classmethod
    def random(cls, terms: Any, *, seed: int = 0, t_index: int | Sequence[int] | None = None) -> "DropSweep":
        """Sweep dropping uniformly random coordinates, per sample, seeded.

        ``terms`` (N, T, C, h, w). ``statistic(p)`` equals
        ``masked_statistic(terms, random_drop_mask((N, C, h, w), p, seed=seed))``.
        """
        t_arr = _check_terms(terms)
        seed = _check_int(seed, "seed", minimum=0)
        d = int(np.prod(t_arr.shape[2:]))
        return cls._from_orders(t_arr, _random_orders(t_arr.shape[0], d, seed), t_index)

    @classmethod
    def by_ranking(
        cls, terms: Any, ranking: Any, *, t_index: int | Sequence[int] | None = None
    ) -> "DropSweep":
        """Sweep dropping the coordinates of lowest ``ranking`` (C, h, w), the same for all samples.

        ``statistic(p)`` equals ``masked_statistic(terms, global_drop_mask(ranking, p, n=N))``.
        """
        t_arr = _check_terms(terms)
        r = _as_real_array(ranking, "ranking", ndim=3, layout="(C, h, w)")
        if r.shape != t_arr.shape[2:]:
            raise ShapeError(
                f"ranking must have shape (C, h, w) = {t_arr.shape[2:]} to match terms of shape "
                f"{t_arr.shape}; got ranking of shape {r.shape}"
            )
        return cls._from_orders(t_arr, [(0, t_arr.shape[0], _ranking_order(r))], t_index)

    # ---- queries

    def statistic(self, drop_percent: float) -> np.ndarray:
        """Statistic with ``drop_percent`` of the coordinates dropped -> float64 (N, T_selected).

        (N,) when the sweep was built with an int ``t_index``.
        """
        out = self._suffix[:, :, drop_count(self.d, drop_percent)]
        return np.ascontiguousarray(out[:, 0] if self._squeeze else out)

    def statistic_at_counts(self, counts: Any) -> np.ndarray:
        """Statistic with a per-sample number of coordinates dropped.

        ``counts``: an int (the same for every sample), int (N,) (one per sample) or int (K, N)
        (K settings). Returns float64 (N, T_selected) / (K, N, T_selected), or (N,) / (K, N)
        when the sweep was built with an int ``t_index``. Counts must lie in 0..d.
        """
        c = np.asarray(counts)
        if c.dtype.kind not in "iu":
            raise LdminvError(f"counts must be integers; got dtype {c.dtype}")
        if c.ndim == 0:
            c = np.full(self.n_samples, int(c), dtype=np.int64)
        if c.ndim not in (1, 2) or c.shape[-1] != self.n_samples:
            raise ShapeError(f"counts must have shape (N,) or (K, N) with N = {self.n_samples}; got {c.shape}")
        if c.size and (c.min() < 0 or c.max() > self.d):
            raise LdminvError(f"counts must lie in 0..{self.d}; got values from {int(c.min())} to {int(c.max())}")
        rows = np.arange(self.n_samples)
        if c.ndim == 1:
            res = self._suffix[rows, :, c]  # (N, T_sel)
        else:
            res = np.stack([self._suffix[rows, :, ck] for ck in c])  # (K, N, T_sel)
        return np.ascontiguousarray(res[..., 0] if self._squeeze else res)

    def statistics(self, percents: Iterable[float]) -> np.ndarray:
        """Statistics at several drop percentages -> float64 (K, N, T_selected) for K percents.

        (K, N) when the sweep was built with an int ``t_index``.
        """
        counts = [drop_count(self.d, p) for p in percents]
        if not counts:
            raise EmptyInputError("percents must hold at least one drop percentage; got none")
        out = np.moveaxis(self._suffix[:, :, counts], 2, 0)
        return np.ascontiguousarray(out[:, :, 0] if self._squeeze else out)


# --------------------------------------------------------------------------- grid of drop settings

#: The drop percentages a :class:`DropGrid` of the evaluation layer holds: 0, 1, ..., 99.
GRID_PERCENTS: tuple[int, ...] = tuple(range(100))

_ORDER_KINDS = ("influence", "random", "ranking")


@dataclass(frozen=True)
class OrderSpec:
    """One drop order of :func:`build_drop_grids` and the drop counts to evaluate it at.

    Attributes:
        kind: ``"influence"`` (``values`` (N, C, h, w): each sample drops its lowest values
            first, ties by flat index, as :func:`percentile_drop_mask`), ``"random"`` (each sample
            a uniformly random order from ``numpy.random.default_rng(seed)``, the same sets as
            :func:`random_drop_mask` with that seed) or ``"ranking"`` (``values`` (C, h, w): one
            order shared by every sample, as :func:`global_drop_mask`).
        counts: int (K,) (the same counts for every sample) or (K, N) (per sample, e.g.
            :func:`threshold_drop_counts` rows): setting k drops ``counts[k, n]`` coordinates
            of sample n, 0 <= count <= d.
        values: the influence or ranking (None for ``"random"``).
        seed: the seed of ``"random"``.
    """

    kind: str
    counts: Any
    values: Any = None
    seed: int = 0


class DropGrid:
    """Attack statistics at K fixed drop settings of one order: float64 (K, N, T_selected).

    ``stats[k, n, j]`` = ``masked_statistic(terms, keep_k)[n, t_index[j]]`` where ``keep_k``
    drops the first ``counts[k, n]`` coordinates of sample n's order. Built by
    :func:`build_drop_grids` in one chunked pass over the terms (several orders at once), so
    it holds K * N * T_selected numbers, never N * T * d (compare :class:`DropSweep`).

    Attributes:
        stats: float64 (K, N, T_selected).
        counts: int64 (K, N), the drop counts of every setting and sample.
        t_index: the timestep indices of the last axis.
        kind, seed: of the order (see :class:`OrderSpec`).
    """

    def __init__(self, stats: np.ndarray, counts: np.ndarray, t_index: list[int], kind: str, seed: int) -> None:
        self.stats = stats
        self.counts = counts
        self.t_index = list(t_index)
        self.kind = kind
        self.seed = int(seed)

    @property
    def nbytes(self) -> int:
        return int(self.stats.nbytes)

    def statistic(self, k: int) -> np.ndarray:
        """(N, T_selected) statistic of setting ``k`` (a view; do not modify)."""
        if not 0 <= int(k) < self.stats.shape[0]:
            raise LdminvError(f"setting index must be 0..{self.stats.shape[0] - 1}; got {k!r}")
        return self.stats[int(k)]

    def at(self, k: int, t_index: int) -> np.ndarray:
        """(N,) statistic of setting ``k`` at the timestep index ``t_index`` (an index into T)."""
        if int(t_index) not in self.t_index:
            raise LdminvError(f"t_index {t_index!r} is not in this grid's timesteps {self.t_index}")
        return self.statistic(k)[:, self.t_index.index(int(t_index))]


def _spec_counts(spec: OrderSpec, n: int, d: int) -> np.ndarray:
    c = np.asarray(spec.counts)
    if c.dtype.kind not in "iu":
        raise LdminvError(f"counts must be integers; got dtype {c.dtype}")
    if c.ndim == 1:
        c = np.broadcast_to(c[:, None], (c.shape[0], n))
    if c.ndim != 2 or c.shape[1] != n or c.shape[0] == 0:
        raise ShapeError(f"counts must have shape (K,) or (K, N) with N = {n}; got {np.shape(spec.counts)}")
    if c.min() < 0 or c.max() > d:
        raise LdminvError(f"counts must lie in 0..{d}; got values from {int(c.min())} to {int(c.max())}")
    return np.ascontiguousarray(c, dtype=np.int64)


class _Segmenter:
    """Bucket of every coordinate of a block of samples under one order and its drop counts."""

    def __init__(self, spec: OrderSpec, terms_shape: tuple[int, ...]) -> None:
        if spec.kind not in _ORDER_KINDS:
            raise LdminvError(f"kind must be one of {_ORDER_KINDS}; got {spec.kind!r}")
        n = terms_shape[0]
        latent = terms_shape[2:]
        self.d = d = int(np.prod(latent))
        self.kind = spec.kind
        self.seed = 0
        self.counts = _spec_counts(spec, n, d)
        if spec.kind == "influence":
            inf = _as_real_array(spec.values, "influence", ndim=4, layout="(N, C, h, w)")
            if inf.shape != (n, *latent):
                raise ShapeError(f"influence must have shape {(n, *latent)} to match terms of shape {terms_shape}; "
                                 f"got influence of shape {inf.shape}")
            self.values = inf.reshape(n, d)
            _check_finite(self.values, "influence")
        elif spec.kind == "ranking":
            r = _as_real_array(spec.values, "ranking", ndim=3, layout="(C, h, w)")
            if r.shape != tuple(latent):
                raise ShapeError(f"ranking must have shape {tuple(latent)}; got {r.shape}")
            self.values = r.reshape(1, d)
            _check_finite(self.values, "ranking")
        else:
            self.seed = _check_int(spec.seed, "seed", minimum=0)
            self.rng = np.random.default_rng(self.seed)
            self.values = None
        # per-sample bucket starts: 0, then the distinct counts strictly between 0 and d
        self.shared = bool((self.counts == self.counts[:, :1]).all())
        self._shared_seg: np.ndarray | None = None
        uniq = [np.unique(self.counts[:, i]) for i in (range(1) if self.shared else range(n))]
        self.n_buckets = max(int(((u > 0) & (u < d)).sum()) + 1 for u in uniq)

    def _inner(self, counts_row: np.ndarray) -> np.ndarray:
        u = np.unique(counts_row)
        return u[(u > 0) & (u < self.d)]

    def _row_seg(self, v: np.ndarray, srt: np.ndarray, inner: np.ndarray) -> np.ndarray:
        if inner.size and (srt[inner - 1] == srt[inner]).any():
            order = np.argsort(v, kind="stable")  # a tie at a bucket edge: ranks by flat index
            rank = np.empty(self.d, dtype=np.int64)
            rank[order] = np.arange(self.d)
            return np.searchsorted(inner, rank, side="right")
        return np.searchsorted(srt[inner], v, side="right")

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(bucket (b, d) int64 in 0..n_buckets-1, position (K, b) of every setting's first kept
        bucket; n_buckets = nothing kept)."""
        b = stop - start
        counts = self.counts[:, start:stop]
        pos = np.empty(counts.shape, dtype=np.int64)
        if self.kind == "ranking":
            if self._shared_seg is None or not self.shared:
                srt = np.sort(self.values[0])
                self._ranking_sorted = srt
            seg = np.empty((b, self.d), dtype=np.int64)
            for i in range(b):
                inner = self._inner(counts[:, i])
                if self.shared and self._shared_seg is not None:
                    seg[i] = self._shared_seg
                else:
                    seg[i] = self._row_seg(self.values[0], self._ranking_sorted, inner)
                    if self.shared:
                        self._shared_seg = seg[i].copy()
                pos[:, i] = self._positions(counts[:, i], inner)
            return seg, pos
        values = self.rng.random((b, self.d)) if self.kind == "random" else np.asarray(self.values[start:stop])
        # an unstable (fast) sort gives the ranks; a row with a tie across a bucket edge, where
        # the flat-index rule decides, is ranked again by a stable sort
        order = np.argsort(values, axis=1)
        srt = np.take_along_axis(values, order, axis=1)
        seg = np.empty((b, self.d), dtype=np.int64)
        ranks = np.arange(self.d)
        inner_shared = self._inner(counts[:, 0]) if self.shared else None
        bucket_shared = np.searchsorted(inner_shared, ranks, side="right") if self.shared else None
        rows = np.arange(b)
        for i in range(b):
            inner = inner_shared if inner_shared is not None else self._inner(counts[:, i])
            if inner.size and (srt[i, inner - 1] == srt[i, inner]).any():
                order[i] = np.argsort(values[i], kind="stable")
            bucket = bucket_shared if bucket_shared is not None else np.searchsorted(inner, ranks, side="right")
            seg[i, order[i]] = bucket
            pos[:, i] = self._positions(counts[:, i], inner)
        del rows
        return seg, pos

    def _positions(self, counts_col: np.ndarray, inner: np.ndarray) -> np.ndarray:
        starts = np.concatenate([[0], inner])
        p = np.searchsorted(starts, counts_col, side="left")
        return np.where(counts_col >= self.d, self.n_buckets, p)


def build_drop_grids(
    terms: Any,
    specs: Sequence[OrderSpec],
    *,
    t_index: int | Sequence[int] | None = None,
    block_samples: int | None = None,
    totals: bool = False,
    channel_totals: bool = False,
    progress: Any = None,
) -> list[DropGrid] | tuple:
    """Statistics of several drop orders at fixed drop counts, in one chunked pass over ``terms``.

    Args:
        terms: (N, T, C, h, w) float16/32/64, e.g. a memory-mapped run array: read once, one
            block of ``block_samples`` samples at a time (default: about 64 MiB as float64).
        specs: the orders and their counts (:class:`OrderSpec`).
        t_index: timesteps to evaluate (None = all, an int or a list of indices into T).
        block_samples: samples per block (a memory knob; results do not depend on it).
        totals: also return the unmasked statistic (N, T_selected), the same numbers as
            ``masked_statistic(terms)`` at those timesteps.
        channel_totals: also return the statistic of every latent channel alone, float64
            (N, T_selected, C) (``masked_statistic`` of a mask keeping channel c, up to the order
            of the additions): what :func:`decomposed_statistic` builds channel masks from.
        progress: optional callable, called with the share of samples done after each block.

    Returns:
        One :class:`DropGrid` per spec, in order (and the totals when asked). Memory: the
        results (sum of K * N * T_selected float64) plus one block; the terms are summed in
        float64 by bucket of the order (``numpy.bincount``), so ``grid.stats[k]`` equals
        ``masked_statistic(terms, keep_k)`` up to the order of the float64 additions.

    Raises:
        ShapeError, LdminvError, NonFiniteError: bad shapes, counts, kinds or NaN values.
    """
    t_arr = _check_terms(terms)
    if not specs:
        raise EmptyInputError("specs must hold at least one OrderSpec; got none")
    n, t_count = t_arr.shape[:2]
    d = int(np.prod(t_arr.shape[2:]))
    t_sel, _ = _check_t_index(t_index, t_count)
    ts = len(t_sel)
    segs = [_Segmenter(spec, t_arr.shape) for spec in specs]
    if block_samples is None:
        block = _block_size(ts * d)
    else:
        block = _check_int(block_samples, "block_samples", minimum=1)
    outs = [np.empty((sg.counts.shape[0], n, ts), dtype=np.float64) for sg in segs]
    total = np.empty((n, ts), dtype=np.float64) if totals else None
    c_count = int(t_arr.shape[2])
    chan = np.empty((n, ts, c_count), dtype=np.float64) if channel_totals else None
    contiguous = t_sel == list(range(t_sel[0], t_sel[0] + ts))
    t_pick: Any = slice(t_sel[0], t_sel[0] + ts) if contiguous else t_sel
    for start in range(0, n, block):
        stop = min(n, start + block)
        b = stop - start
        raw = _read_block(t_arr, start, stop, (slice(None), t_pick))
        # (T_sel, b, d) float64: one contiguous row of weights per timestep for bincount
        chunk = np.ascontiguousarray(raw.reshape(b, ts, d).transpose(1, 0, 2), dtype=np.float64)
        del raw
        _check_finite(chunk, f"terms (samples {start}..{stop - 1})")
        if total is not None:
            total[start:stop] = chunk.sum(axis=2).T
        if chan is not None:
            chan[start:stop] = chunk.reshape(ts, b, c_count, d // c_count).sum(axis=3).transpose(1, 0, 2)
        for sg, out in zip(segs, outs):
            seg, pos = sg.block(start, stop)
            nb = sg.n_buckets
            idx = (seg + nb * np.arange(b, dtype=np.int64)[:, None]).ravel()
            buckets = np.empty((ts, b, nb), dtype=np.float64)
            for j in range(ts):
                buckets[j] = np.bincount(idx, weights=chunk[j].ravel(), minlength=b * nb).reshape(b, nb)
            # suffix sums over buckets (from the end: nothing cancels when most is dropped), then 0
            suffix = np.zeros((ts, b, nb + 1), dtype=np.float64)
            np.cumsum(buckets[:, :, ::-1], axis=2, out=suffix[:, :, nb - 1 :: -1])
            picked = np.take_along_axis(suffix, np.broadcast_to(pos.T[None], (ts, b, pos.shape[0])), axis=2)
            out[:, start:stop, :] = picked.transpose(2, 1, 0)
        if progress is not None:
            progress(stop / n)
    grids = [DropGrid(out, sg.counts, t_sel, sg.kind, sg.seed) for sg, out in zip(segs, outs)]
    extra = tuple(x for x, want in ((total, totals), (chan, channel_totals)) if want)
    return (grids, *extra) if extra else grids


# --------------------------------------------------------------------------- sparse and decomposed masks

#: A mask is summed from gathered coordinates when it touches at most this share of d.
SPARSE_SHARE = 0.125
#: Coordinates closer than this (flat index) are read as one slice by :func:`gathered_statistic`.
_GATHER_GAP = 64


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
        _check_int(block_samples, "block_samples", minimum=1) * t_count
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


def read_timestep(terms: Any, t_index: int) -> np.ndarray:
    """``terms[:, t_index]`` (N, C, h, w) as an in-memory copy in the stored dtype, read in blocks of
    samples and releasing the memory-mapped pages read (the process keeps 1/T of the file, not
    the neighbourhoods of pages the kernel maps around each read)."""
    t_arr = _check_terms(terms)
    ti = _check_int(t_index, "t_index", minimum=0)
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


def decomposed_statistic(terms: Any, mask: Any, channel_totals: np.ndarray, *,
                         sparse_share: float = SPARSE_SHARE) -> np.ndarray | None:
    """``masked_statistic(terms, mask)`` for a shared (C, h, w) ``mask`` from the per-channel
    statistics ``channel_totals`` (N, T, C) and the few coordinates that differ from them: each
    channel is taken whole, left out, or summed from its kept (or minus its dropped)
    coordinates, whichever reads fewer. None when more than ``sparse_share`` of d would be read
    (then a full pass is cheaper). Equal to ``masked_statistic`` up to the order of additions."""
    t_arr = _check_terms(terms)
    m = _check_mask(mask, t_arr.shape) > 0.5
    if m.ndim != 1:
        raise ShapeError("decomposed_statistic needs one mask shared by every sample, of shape (C, h, w)")
    c_count = int(t_arr.shape[2])
    d = m.size
    per = d // c_count
    ct = np.asarray(channel_totals, dtype=np.float64)
    if ct.shape != (t_arr.shape[0], t_arr.shape[1], c_count):
        raise ShapeError(f"channel_totals must have shape {(t_arr.shape[0], t_arr.shape[1], c_count)}; got {ct.shape}")
    out = np.zeros(ct.shape[:2], dtype=np.float64)
    coords, weights = [], []
    for c in range(c_count):
        kc = m[c * per:(c + 1) * per]
        k = int(np.count_nonzero(kc))
        if k == 0:
            continue
        if k == per:
            out += ct[:, :, c]
        elif k <= per - k:
            coords.append(c * per + np.flatnonzero(kc))
            weights.append(np.ones(k))
        else:
            out += ct[:, :, c]
            coords.append(c * per + np.flatnonzero(~kc))
            weights.append(-np.ones(per - k))
    n_read = sum(x.size for x in coords)
    if n_read > sparse_share * d:
        return None
    if n_read:
        out += gathered_statistic(t_arr, np.concatenate(coords), np.concatenate(weights))
    return out
