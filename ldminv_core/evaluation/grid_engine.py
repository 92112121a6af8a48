"""The drop-grid engine behind the dashboard's drop slider: attack statistics of several drop orders
at fixed drop counts, from one chunked pass over an attack's terms.

:class:`DropSweep <ldminv_core.masks.DropSweep>` keeps the statistic at *every* drop count
(N * T * (d + 1) float64); a :class:`DropGrid` keeps it at a fixed set of per-sample drop counts
(e.g. 0..99 percent under each counting rule) for several orders at once (influence, seeded
random, a shared ranking), built by :func:`build_drop_grids` in one chunked pass over the terms:
memory K * N * T float64 for K settings, never proportional to d. Each statistic equals
:func:`~ldminv_core.masks.masked_statistic` of the matching mask of :mod:`ldminv_core.masks`
(up to the order of the float64 additions).

:func:`decomposed_statistic` sums a shared manual mask from the grids' per-channel totals and the
few coordinates that differ from them. :mod:`ldminv_core.evaluation.grids` builds, stores and
shares the grids of a run; this module only computes them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_choice, check_int
from ..errors import EmptyInputError, LdminvError, ShapeError
# the mask helpers the grid engine uses
from ..masks import _check_mask, _check_t_index
from ..term_blocks import _as_real_array, _block_size, _check_finite, _check_terms, _read_block, gathered_statistic

__all__ = [
    "GRID_PERCENTS",
    "OrderSpec",
    "DropGrid",
    "build_drop_grids",
    "decomposed_statistic",
    "SPARSE_SHARE",
]


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
        check_choice(spec.kind, "kind", _ORDER_KINDS)
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
            self.seed = check_int(spec.seed, "seed", minimum=0)
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


def _check_specs(t_arr: np.ndarray, specs: Sequence[OrderSpec], t_index: Any,
                 block_samples: int | None) -> tuple[list[int], list[_Segmenter], int]:
    """(selected timesteps, one segmenter per spec, samples per block), every argument checked."""
    if not specs:
        raise EmptyInputError("specs must hold at least one OrderSpec; got none")
    t_sel, _ = _check_t_index(t_index, t_arr.shape[1])
    segs = [_Segmenter(spec, t_arr.shape) for spec in specs]
    d = int(np.prod(t_arr.shape[2:]))
    if block_samples is None:
        block = _block_size(len(t_sel) * d)
    else:
        block = check_int(block_samples, "block_samples", minimum=1)
    return t_sel, segs, block


def _read_chunk(t_arr: np.ndarray, start: int, stop: int, t_sel: list[int]) -> np.ndarray:
    """Terms of samples start..stop-1 at the selected timesteps as float64 (T_sel, b, d): one
    contiguous row of weights per timestep for bincount; NaN or inf raise."""
    ts, d = len(t_sel), int(np.prod(t_arr.shape[2:]))
    contiguous = t_sel == list(range(t_sel[0], t_sel[0] + ts))
    t_pick: Any = slice(t_sel[0], t_sel[0] + ts) if contiguous else t_sel
    raw = _read_block(t_arr, start, stop, (slice(None), t_pick))
    chunk = np.ascontiguousarray(raw.reshape(stop - start, ts, d).transpose(1, 0, 2), dtype=np.float64)
    del raw
    _check_finite(chunk, f"terms (samples {start}..{stop - 1})")
    return chunk


def _block_statistics(sg: _Segmenter, chunk: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Statistics (K, b, T_sel) of one order's K settings on one block (``chunk`` (T_sel, b, d)):
    the terms summed by bucket of the order, then suffix sums over the buckets."""
    ts, b = chunk.shape[:2]
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
    return picked.transpose(2, 1, 0)


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
    # 1. check the arguments; one segmenter (bucket of every coordinate) per order
    t_arr = _check_terms(terms)
    t_sel, segs, block = _check_specs(t_arr, specs, t_index, block_samples)
    n, ts, c_count, d = t_arr.shape[0], len(t_sel), int(t_arr.shape[2]), int(np.prod(t_arr.shape[2:]))
    # 2. the results: K x N x T_sel per order, and the totals asked for
    outs = [np.empty((sg.counts.shape[0], n, ts), dtype=np.float64) for sg in segs]
    total = np.empty((n, ts), dtype=np.float64) if totals else None
    chan = np.empty((n, ts, c_count), dtype=np.float64) if channel_totals else None
    # 3. one pass over the terms, block by block of samples
    for start in range(0, n, block):
        stop = min(n, start + block)
        chunk = _read_chunk(t_arr, start, stop, t_sel)
        if total is not None:
            total[start:stop] = chunk.sum(axis=2).T
        if chan is not None:
            chan[start:stop] = chunk.reshape(ts, stop - start, c_count, d // c_count).sum(axis=3).transpose(1, 0, 2)
        for sg, out in zip(segs, outs):
            out[:, start:stop, :] = _block_statistics(sg, chunk, start, stop)
        if progress is not None:
            progress(stop / n)
    # 4. the grids, and the totals asked for
    grids = [DropGrid(out, sg.counts, t_sel, sg.kind, sg.seed) for sg, out in zip(segs, outs)]
    extra = tuple(x for x, want in ((total, totals), (chan, channel_totals)) if want)
    return (grids, *extra) if extra else grids


# --------------------------------------------------------------------------- decomposed masks

#: A mask is summed from gathered coordinates when it touches at most this share of d.
SPARSE_SHARE = 0.125
#: Coordinates closer than this (flat index) are read as one slice by :func:`gathered_statistic`.


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
