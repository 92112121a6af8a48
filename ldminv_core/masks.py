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

``terms`` may be a float16 or float32 ``np.memmap`` larger than memory: it is read in blocks
of samples (:mod:`ldminv_core.term_blocks`). :class:`DropSweep` keeps the statistic at *every*
drop count (N * T * (d + 1) float64: fine for small latents, 13 GB at N = 5000, T = 20,
d = 16384); the drop grids of :mod:`ldminv_core.evaluation.grid_engine` keep it at fixed drop
counts only, never in proportion to d.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._validation import check_int, check_percent, describe
from .errors import EmptyInputError, LdminvError, ShapeError
from .term_blocks import (  # noqa: F401  (read_timestep, gathered_statistic: re-exported)
    _as_real_array,
    _block_size,
    _check_finite,
    _check_terms,
    _read_block,
    gathered_statistic,
    read_timestep,
)

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
    "read_timestep",
    "DropSweep",
]


# --------------------------------------------------------------------------- helpers


def _check_latent_shape(shape: Any, name: str) -> tuple[int, int, int]:
    """``shape`` as (C, h, w), three positive integers, or ShapeError naming ``name``."""
    try:
        dims = tuple(shape)
    except TypeError as exc:
        raise ShapeError(f"{name}: expected (C, h, w), got {describe(shape)}") from exc
    if len(dims) != 3 or not all(
        isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) and int(v) > 0 for v in dims
    ):
        raise ShapeError(f"{name}: expected three positive integers (C, h, w), got {describe(shape)}")
    return tuple(int(v) for v in dims)  # type: ignore[return-value]


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
    d = check_int(d, "d", minimum=1)
    p = check_percent(drop_percent)
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
    d = check_int(d, "d", minimum=1)
    p = check_percent(drop_percent)
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
    p = check_percent(drop_percent)
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
    ps = [check_percent(p) for p in percents]
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
    p = check_percent(drop_percent)
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
        raise ShapeError(f"shape: expected (N, C, h, w), got {describe(shape)}") from exc
    if len(dims) != 4:
        raise ShapeError(f"shape: expected (N, C, h, w), got {describe(shape)}")
    n = check_int(dims[0], "shape[0] (number of samples N)", minimum=1)
    latent = _check_latent_shape(dims[1:], "shape[1:] (latent shape)")
    d = int(np.prod(latent))
    if n_drop is None:
        n_drop = drop_count(d, drop_percent)
    else:
        n_drop = check_int(n_drop, "n_drop", minimum=0, maximum=d)
    seed = check_int(seed, "seed", minimum=0)
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
    n = check_int(n, "n", minimum=1)
    d = order.shape[0]
    keep = np.ones(d, dtype=bool)
    keep[order[: drop_count(d, drop_percent)]] = False
    return np.repeat(keep.reshape(1, *latent), n, axis=0)


def _indices(values: Any, name: str, upper: int) -> np.ndarray:
    """Validate an iterable of integer indices in [0, upper) -> int64 array."""
    if isinstance(values, (str, bytes)):
        raise LdminvError(f"{name}: expected an iterable of integers, got {describe(values)}")
    return np.asarray([check_int(v, name, minimum=0, maximum=upper - 1) for v in values], dtype=np.int64)


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
        seed = check_int(seed, "seed", minimum=0)
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
