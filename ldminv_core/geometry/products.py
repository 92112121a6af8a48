"""Decoder products of the geometry: batched J v and J^T u per sample, and what is built from them.

:class:`_Products` takes forward-mode (JVP) and reverse-mode (VJP) products of a per-sample
decoder, chunked over (sample, direction) pairs, through the layer-by-layer engine of
:mod:`.tangents` when the decoder has one, else ``torch.func`` (vmap of jvp / vjp, sharing each
sample's primal pass between its directions). On top of it:

- the exact path: each sample's Jacobian (N, P, d), one JVP per latent coordinate
  (:func:`_jacobian_block`), or only its squared column norms (:func:`_exact_diag`), and the
  float64 singular values of a Jacobian (:func:`_singular_values`);
- Hutchinson's estimate of diag(J^T J) from Gaussian cotangents (:func:`_hutchinson_diag`).

The Krylov and SLQ log-volume paths, which also run on :class:`_Products`, are in :mod:`.krylov`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch.func import jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..errors import UnknownNameError
from . import tangents as _tangents
from .checks import _generator
from .constants import _GEOMETRY_STREAM_PROBES, EXACT_MAX_JACOBIAN_BYTES, Decode

__all__ = ["_Products"]

#: Samples linearised together (one primal pass of their batch) hold at most this many output
#: values: all the samples of a block on the demo decoder (1x32x32 images; 5.5 ms per sample
#: batch by batch against 1.4-1.8 ms in batches of 8-32, 1 thread), one at a time from
#: 256x256 RGB images on (where a primal pass costs more than its per-layer overhead).
LINEARIZE_VALUES = 2**16


class _Products:
    """Batched J v, J^T u and J^T J v products of a per-sample decoder, chunked over pairs.

    Pairs come grouped by sample (``rows`` sorted). Each chunk holds directions of one sample
    and shares that sample's primal (vmap over the directions only: the forward pass is
    evaluated once per chunk, not once per direction).
    """

    def __init__(self, decode: Decode, z: torch.Tensor, chunk_size: int, image_shape: tuple[int, ...],
                 engine: str = "auto") -> None:
        self.z = z
        self.latent_shape = tuple(z.shape[1:])
        self.image_shape = image_shape
        self.chunk = chunk_size
        self.counts = {"jvp": 0, "vjp": 0}
        layerwise, self.engine_note = (None, "torch.func asked for") if engine == "torch.func" else \
            _tangents.engine_for(decode, z[:1])
        if engine == "layerwise" and layerwise is None:
            raise UnknownNameError(f"engine: 'layerwise' asked for, but this decoder has no layer-by-layer JVPs: "
                                   f"{self.engine_note}")
        self.engine = "layerwise" if layerwise is not None else "torch.func"
        self._layerwise = layerwise
        self._lin: dict[int, object] | None = None
        #: called with the number of decoder products of each chunk once it is done (progress)
        self.on_chunk: Callable[[int], None] | None = None

        def single(z1: torch.Tensor) -> torch.Tensor:
            return decode(z1.unsqueeze(0)).squeeze(0)

        def jvp_one(z1: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
            return jvp(single, (z1,), (v1,))[1]

        jvp_many = vmap(jvp_one, in_dims=(None, 0))

        def vjp_shared(z1: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            pullback = vjp(single, z1)[1]
            return vmap(lambda u1: pullback(u1)[0])(u)

        def gram_shared(z1: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            pullback = vjp(single, z1)[1]
            jv = jvp_many(z1, v).contiguous()
            return vmap(lambda u1: pullback(u1)[0])(jv)

        self._shared = {"jvp": jvp_many, "vjp": vjp_shared, "gram": gram_shared}

    def _chunks(self, rows: torch.Tensor):
        """(start, stop, sample) of each decoder call."""
        samples, counts = torch.unique_consecutive(rows.cpu(), return_counts=True)
        start = 0
        for sample, count in zip(samples.tolist(), counts.tolist()):
            for s in range(start, start + count, self.chunk):
                yield s, min(start + count, s + self.chunk), sample
            start += count

    def _linearization(self, sample: int):
        """The layer-by-layer linearisation at z[sample]: made with those of the next samples in
        one primal pass (:data:`LINEARIZE_VALUES` output values at most; the last group is kept)."""
        if self._lin is None or sample not in self._lin:
            group = max(1, LINEARIZE_VALUES // max(1, math.prod(self.image_shape)))
            stop = min(int(self.z.shape[0]), sample + group)
            lins = self._layerwise.linearize_many(self.z[sample:stop])
            self._lin = dict(zip(range(sample, stop), lins))
        return self._lin[sample]

    def _layerwise_call(self, kind: str, sample: int, vec: torch.Tensor) -> torch.Tensor:
        lin = self._linearization(sample)
        if kind == "jvp":
            return lin.jvp(vec)
        if kind == "vjp":
            return lin.vjp(vec)
        return lin.vjp(lin.jvp(vec))

    def _run(self, kind: str, rows: torch.Tensor, vectors: torch.Tensor, reduce=None) -> torch.Tensor:
        outs = []
        for start, stop, sample in self._chunks(rows):
            vec = vectors[start:stop].contiguous()
            if self._layerwise is not None:
                out = self._layerwise_call(kind, sample, vec)
            else:
                with sdpa_kernel(SDPBackend.MATH):
                    out = self._shared[kind](self.z[sample].contiguous(), vec).detach()
            outs.append(out if reduce is None else reduce(out))
            if self.on_chunk is not None:
                self.on_chunk((stop - start) * (2 if kind == "gram" else 1))
        m = int(rows.shape[0])
        if kind == "gram":
            self.counts["jvp"] += m
            self.counts["vjp"] += m
        else:
            self.counts[kind] += m
        return torch.cat(outs, 0)

    def jvp(self, rows: torch.Tensor, tangents: torch.Tensor, reduce=None) -> torch.Tensor:
        """J(z[rows[j]]) @ tangents[j] for every j: (M, C, h, w) -> (M, *image).

        ``reduce`` maps each chunk's output before concatenation (to avoid keeping it whole).
        """
        return self._run("jvp", rows, tangents, reduce)

    def vjp(self, rows: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
        """J(z[rows[j]])^T @ cotangents[j] for every j: (M, *image) -> (M, C, h, w)."""
        return self._run("vjp", rows, cotangents)

    def gram(self, rows: torch.Tensor, tangents: torch.Tensor) -> torch.Tensor:
        """J^T J v for every (row, v): (M, C, h, w) -> (M, C, h, w); one JVP + one VJP each,
        chunk by chunk (the (M, *image) intermediate is never whole)."""
        return self._run("gram", rows, tangents)


def _basis_pairs(prod: _Products, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample row, one-hot tangent) pairs covering every coordinate of n samples."""
    eye = torch.eye(d, dtype=prod.z.dtype, device=prod.z.device).reshape(d, *prod.latent_shape)
    rows = torch.arange(n, device=prod.z.device).repeat_interleave(d)
    return rows, eye.repeat(n, *([1] * len(prod.latent_shape)))


def _jacobian_block(prod: _Products, n: int, d: int) -> torch.Tensor:
    """Exact Jacobians of the first n samples of ``prod`` as (n, P, d)."""
    cols = prod.jvp(*_basis_pairs(prod, n, d))  # (n*d, *image)
    return cols.reshape(n, d, -1).transpose(1, 2)


def _exact_diag(prod: _Products, n: int, d: int) -> torch.Tensor:
    """diag(J^T J) = squared column norms of each sample's J, (n, d) float64, J never kept."""
    sq = prod.jvp(*_basis_pairs(prod, n, d), reduce=lambda c: c.flatten(1).to(torch.float64).square().sum(1).cpu())
    return sq.reshape(n, d)


def _exact_block_size(n: int, p: int, d: int) -> int:
    """Samples per block so that the stacked Jacobians stay near the byte budget."""
    return max(1, min(n, EXACT_MAX_JACOBIAN_BYTES // max(1, p * d * 4)))


def _singular_values(jac: torch.Tensor, kind: str, k: int | None = None,
                     gram: torch.Tensor | None = None) -> torch.Tensor:
    """Singular values (descending) of each float64 (P, d) Jacobian in ``jac`` (n, P, d).

    Top-k with P > d: square roots of the eigenvalues of the float64 Gram matrix J^T J (d x d),
    about 2x faster than the SVD at P = 3d and as accurate for the top values (the error of
    sigma_i^2 is about eps64 * sigma_max^2, below the float32 rounding of J itself for any
    sigma_i > 1e-4 sigma_max). Log-det (``kind="logdet"``, also k >= d), which needs the
    smallest values too: the SVD; so do samples whose k-th value (``k``) is below 1e-4 sigma_max.
    ``gram``: J^T J (n, d, d) when the caller has it (:func:`_gram`).
    """
    if kind == "topk" and jac.shape[-2] > jac.shape[-1]:
        ev = torch.linalg.eigvalsh(_gram(jac) if gram is None else gram).flip(-1).clamp_min(0.0)
        kk = min(int(k or 1), ev.shape[-1]) - 1
        small = ev[:, kk] < 1e-8 * ev[:, 0]
        sv = ev.sqrt()
        if bool(small.any()):
            sv[small] = torch.linalg.svdvals(jac[small])
        return sv
    return torch.linalg.svdvals(jac)


def _gram(jac: torch.Tensor) -> torch.Tensor:
    """J^T J (n, d, d) of Jacobians (n, P, d); its diagonal is diag(J^T J), the influence's."""
    return jac.transpose(-1, -2) @ jac


def _topk_log_sum(sv: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of log of the k largest values in each row of ``sv`` (rows sorted descending)."""
    top = sv[:, :k].to(torch.float64).clamp_min(torch.finfo(torch.float64).tiny)
    return top.log().sum(1)


def _hutchinson_diag(
    prod: _Products, n: int, image_shape: tuple[int, ...], probes: int, seed: int, ids: list[int]
) -> torch.Tensor:
    """Hutchinson estimate of diag(J^T J) per sample, (N, d), float64."""
    z = prod.z
    p = math.prod(image_shape)
    vs = torch.stack(
        [torch.randn(probes, p, generator=_generator(seed, i, _GEOMETRY_STREAM_PROBES)) for i in ids]
    )  # (n, probes, P) on CPU, drawn in a split-independent order
    rows = torch.arange(n, device=z.device).repeat_interleave(probes)
    cot = vs.reshape(n * probes, *image_shape).to(device=z.device, dtype=z.dtype)
    jtv = prod.vjp(rows, cot).reshape(n, probes, -1).to(torch.float64)
    return jtv.square().mean(1)

