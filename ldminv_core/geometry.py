"""Geometry of a decoder: how much it stretches latent space, per sample and per coordinate.

For a decoder ``D`` taking a latent batch ``z`` of shape (N, C, h, w) to images of shape
(N, *image), the Jacobian of one sample is ``J = dD/dz`` of shape (P, d) with
``P = prod(image)`` and ``d = C*h*w``. This module computes, without ever asking the user
for more than the callable ``decode``:

- :func:`log_volume`: ``sum_{i<=k} log sigma_i(J)`` (the top-k singular values), shape (N,);
- :func:`dim_influence`: ``0.5 * log(diag(J^T J) + 1e-12)``, shape (N, C, h, w);
- :func:`decoder_geometry`: both at once, sharing one Jacobian on the exact path;
- :func:`influence_map` / :func:`influence_heatmap`: per-position maps for display.

Two paths: the *exact* path builds J column by column with forward-mode JVPs (one per latent
coordinate); the *matrix-free* path only multiplies by J (JVPs) and J^T (VJPs): randomized
subspace iteration for the top-k singular values and Hutchinson probes for diag(J^T J). Both
are batched with ``torch.func.vmap`` over up to ``chunk_size`` directions of a sample per
decoder call (the sample's primal pass is shared by its directions), so memory is bounded
by ``chunk_size`` decoder evaluations.

Random draws (probes, start subspaces) are seeded per sample id, so a batch split never
changes a result. Attention runs through the math SDPA kernel, the only one with forward-mode
derivatives.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch.func import jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from .errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError, UnknownNameError

__all__ = [
    "Geometry",
    "log_volume",
    "dim_influence",
    "decoder_geometry",
    "jacobian",
    "influence_map",
    "influence_heatmap",
    "resolve_influence_method",
    "resolve_log_volume_method",
    "AUTO_EXACT_MAX_DIM",
    "EXACT_MAX_JACOBIAN_BYTES",
    "INFLUENCE_EPS",
]

Decode = Callable[[torch.Tensor], torch.Tensor]

#: ``method="auto"`` uses the exact influence path up to this many latent coordinates.
AUTO_EXACT_MAX_DIM = 1024
#: The exact log-volume path materialises one (P, d) Jacobian per sample; above this many
#: bytes per sample ``method="auto"`` switches to the matrix-free path.
EXACT_MAX_JACOBIAN_BYTES = 512 * 2**20
#: Added to diag(J^T J) before the log.
INFLUENCE_EPS = 1e-12
#: Matrix-free log-volume without ``iters``: power iterations continue until every sample's
#: top-k log-sum changes by at most this much (relative to max(1, |value|)) from one iteration
#: to the next, between :data:`MATRIX_FREE_MIN_ITERS` and :data:`MATRIX_FREE_MAX_ITERS`.
MATRIX_FREE_TOL = 1e-4
MATRIX_FREE_MIN_ITERS = 2
MATRIX_FREE_MAX_ITERS = 40

_GEOMETRY_STREAM_PROBES = 11
_GEOMETRY_STREAM_SUBSPACE = 12
_INFLUENCE_METHODS = ("auto", "exact", "hutchinson")
_LOG_VOLUME_METHODS = ("auto", "exact", "matrix_free")


@dataclass(frozen=True)
class Geometry:
    """Decoder geometry of a latent batch.

    Attributes:
        log_volume: (N,) sum of log of the top-k singular values of J.
        influence: (N, C, h, w) ``0.5 * log(diag(J^T J) + 1e-12)``.
        log_volume_method: "exact" or "matrix_free", the path actually used.
        influence_method: "exact" or "hutchinson", the path actually used.
    """

    log_volume: torch.Tensor
    influence: torch.Tensor
    log_volume_method: str
    influence_method: str


# ----------------------------------------------------------------------------- validation


def _check_latents(z: torch.Tensor) -> torch.Tensor:
    if not isinstance(z, torch.Tensor):
        raise ShapeError(f"z: expected a torch.Tensor of shape (N, C, h, w), got {type(z).__name__}")
    if z.ndim != 4:
        raise ShapeError(f"z: expected a latent batch of shape (N, C, h, w), got shape {tuple(z.shape)}")
    if z.numel() == 0:
        raise EmptyInputError(f"z: expected at least one latent with non-empty (C, h, w), got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise LdminvError(f"z: expected a floating-point tensor, got dtype {z.dtype}")
    bad = ~torch.isfinite(z)
    if bool(bad.any()):
        rows = torch.nonzero(bad.flatten(1).any(1)).flatten().tolist()
        raise NonFiniteError(f"z: latents hold NaN or inf values (samples {rows[:10]})")
    return z.contiguous()


def _auto_chunk(p: int) -> int:
    """Default directions per decoder call: about 4M output values, between 4 and 256."""
    return int(min(256, max(4, 2**22 // max(1, p))))


def _check_chunk(chunk_size: int | None, p: int) -> int:
    if chunk_size is None:
        return _auto_chunk(p)
    if int(chunk_size) < 1:
        raise LdminvError(f"chunk_size: expected an integer >= 1, got {chunk_size}")
    return int(chunk_size)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or int(k) < 1:
        raise LdminvError(f"k: expected an integer >= 1 (number of singular values), got {k!r}")
    return int(k)


def _sample_ids(sample_ids: Sequence[int] | None, n: int) -> list[int]:
    if sample_ids is None:
        return list(range(n))
    ids = [int(i) for i in sample_ids]
    if len(ids) != n:
        raise ShapeError(f"sample_ids: expected {n} ids (one per latent), got {len(ids)}")
    return ids


def _generator(seed: int, sample_id: int, stream: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), int(sample_id), int(stream)]).generate_state(1)[0]
    return torch.Generator("cpu").manual_seed(int(state))


def _probe_decoder(decode: Decode, z: torch.Tensor) -> tuple[int, ...]:
    """Run the decoder on one sample and return its per-sample output shape."""
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            out = decode(z[:1])
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ShapeError(
            f"decode: the decoder cannot take latents of shape {tuple(z.shape[1:])} "
            f"(per sample): {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(
            f"decode: expected a batch of one image for a batch of one latent, got {shape}"
        )
    return tuple(out.shape[1:])


def resolve_influence_method(method: str, d: int) -> Literal["exact", "hutchinson"]:
    """Return the influence path ``method`` means for ``d`` latent coordinates."""
    if method not in _INFLUENCE_METHODS:
        raise UnknownNameError(f"method: expected one of {_INFLUENCE_METHODS}, got {method!r}")
    if method == "auto":
        return "exact" if d <= AUTO_EXACT_MAX_DIM else "hutchinson"
    return method  # type: ignore[return-value]


def _subspace_size(k: int, d: int, oversample: int | None) -> int:
    p = max(10, k // 2) if oversample is None else int(oversample)
    if p < 0:
        raise LdminvError(f"oversample: expected an integer >= 0, got {oversample}")
    return min(d, k + p)


def _default_iters(iters: int | None) -> int:
    """``iters`` checked; None (adaptive) counts as 4, the typical number, for cost estimates."""
    if iters is None:
        return 4
    if int(iters) < 0:
        raise LdminvError(f"iters: expected an integer >= 0, got {iters}")
    return int(iters)


def resolve_log_volume_method(
    method: str, *, d: int, p: int, k: int, oversample: int | None = None, iters: int | None = None,
    influence_method: str | None = None,
) -> Literal["exact", "matrix_free"]:
    """Return the log-volume path ``method`` means.

    "auto" is exact when k >= d (the whole spectrum is needed); when the influence is exact
    (``influence_method="exact"``: its d JVPs build the Jacobian anyway, so the exact
    log-volume costs no further decoder product) and one (p, d) float64 Jacobian fits in
    :data:`EXACT_MAX_JACOBIAN_BYTES`; or when building the Jacobian costs no more products
    than the subspace iteration and fits; otherwise matrix-free.
    """
    if method not in _LOG_VOLUME_METHODS:
        raise UnknownNameError(f"method: expected one of {_LOG_VOLUME_METHODS}, got {method!r}")
    if method != "auto":
        return method  # type: ignore[return-value]
    fits = p * d * 4 <= EXACT_MAX_JACOBIAN_BYTES
    if k >= d:
        return "exact"
    if influence_method == "exact" and p * d * 8 <= EXACT_MAX_JACOBIAN_BYTES:
        return "exact"  # the exact influence's JVPs are the Jacobian's columns: share them
    l = _subspace_size(k, d, oversample)
    matrix_free_products = l * (2 * _default_iters(iters) + 1)
    return "exact" if fits and d <= matrix_free_products else "matrix_free"


# ----------------------------------------------------------------------------- products


class _Products:
    """Batched J v and J^T u products of a per-sample decoder, chunked over pairs.

    Pairs come grouped by sample (``rows`` sorted). Each chunk holds directions of one sample
    and shares that sample's primal (vmap over the directions only: the forward pass is
    evaluated once per chunk, not once per direction).
    """

    def __init__(self, decode: Decode, z: torch.Tensor, chunk_size: int, image_shape: tuple[int, ...]) -> None:
        self.z = z
        self.latent_shape = tuple(z.shape[1:])
        self.image_shape = image_shape
        self.chunk = chunk_size

        def single(z1: torch.Tensor) -> torch.Tensor:
            return decode(z1.unsqueeze(0)).squeeze(0)

        def jvp_one(z1: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
            return jvp(single, (z1,), (v1,))[1]

        def vjp_shared(z1: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            pullback = vjp(single, z1)[1]
            return vmap(lambda u1: pullback(u1)[0])(u)

        self._shared = {"jvp": vmap(jvp_one, in_dims=(None, 0)), "vjp": vjp_shared}

    def _chunks(self, rows: torch.Tensor):
        """(start, stop, sample) of each decoder call."""
        samples, counts = torch.unique_consecutive(rows.cpu(), return_counts=True)
        start = 0
        for sample, count in zip(samples.tolist(), counts.tolist()):
            for s in range(start, start + count, self.chunk):
                yield s, min(start + count, s + self.chunk), sample
            start += count

    def _run(self, kind: str, rows: torch.Tensor, vectors: torch.Tensor, reduce=None) -> torch.Tensor:
        outs = []
        for start, stop, sample in self._chunks(rows):
            vec = vectors[start:stop].contiguous()
            with sdpa_kernel(SDPBackend.MATH):
                out = self._shared[kind](self.z[sample].contiguous(), vec).detach()
            outs.append(out if reduce is None else reduce(out))
        return torch.cat(outs, 0)

    def jvp(self, rows: torch.Tensor, tangents: torch.Tensor, reduce=None) -> torch.Tensor:
        """J(z[rows[j]]) @ tangents[j] for every j: (M, C, h, w) -> (M, *image).

        ``reduce`` maps each chunk's output before concatenation (to avoid keeping it whole).
        """
        return self._run("jvp", rows, tangents, reduce)

    def vjp(self, rows: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
        """J(z[rows[j]])^T @ cotangents[j] for every j: (M, *image) -> (M, C, h, w)."""
        return self._run("vjp", rows, cotangents)


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


def _subspace_singular_values(
    prod: _Products, n: int, d: int, k: int, l: int, iters: int | None, seed: int, ids: list[int]
) -> torch.Tensor:
    """Top singular values of each sample's J by randomized subspace iteration, (N, l).

    ``iters`` fixed: that many power iterations, then Rayleigh-Ritz. ``iters`` None: adaptive,
    the Ritz values of ``J q`` (computed from the product every iteration needs anyway) are
    checked after each iteration and the loop stops once every sample's top-k log-sum has
    converged to :data:`MATRIX_FREE_TOL`, after at least :data:`MATRIX_FREE_MIN_ITERS` and at
    most :data:`MATRIX_FREE_MAX_ITERS` iterations.
    """
    z = prod.z
    shape = prod.latent_shape
    omega = torch.stack([torch.randn(d, l, generator=_generator(seed, i, _GEOMETRY_STREAM_SUBSPACE)) for i in ids])
    q = torch.linalg.qr(omega.to(torch.float64)).Q  # (n, d, l)
    rows = torch.arange(n, device=z.device).repeat_interleave(l)

    def apply_j(basis: torch.Tensor) -> torch.Tensor:  # (n, d, l) -> (n, P, l)
        tang = basis.transpose(1, 2).reshape(n * l, *shape).to(device=z.device, dtype=z.dtype)
        return prod.jvp(rows, tang).reshape(n, l, -1).transpose(1, 2).to(torch.float64).cpu()

    def apply_jt(y: torch.Tensor) -> torch.Tensor:  # (n, P, l) -> (n, d, l)
        cot = y.transpose(1, 2).reshape(n * l, *prod.image_shape).to(device=z.device, dtype=z.dtype)
        return prod.vjp(rows, cot).reshape(n, l, d).transpose(1, 2).to(torch.float64).cpu()

    previous: torch.Tensor | None = None
    done = 0
    while True:
        y = apply_j(q)
        if iters is not None:
            if done >= iters:
                return torch.linalg.svdvals(y)
        else:
            sv = torch.linalg.svdvals(y)
            current = _topk_log_sum(sv, k)
            if previous is not None and done >= MATRIX_FREE_MIN_ITERS:
                change = (current - previous).abs() / current.abs().clamp_min(1.0)
                if bool((change <= MATRIX_FREE_TOL).all()):
                    return sv
            if done >= MATRIX_FREE_MAX_ITERS:
                return sv
            previous = current
        q = torch.linalg.qr(apply_jt(torch.linalg.qr(y).Q)).Q
        done += 1


# ----------------------------------------------------------------------------- public API


def jacobian(decode: Decode, z: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Exact decoder Jacobian of every sample.

    Args:
        decode: callable from a latent batch (B, C, h, w) to an image batch (B, *image).
        z: latents (N, C, h, w).
        chunk_size: (sample, coordinate) pairs per batched JVP call (default: see
            :func:`decoder_geometry`).

    Returns:
        (N, P, d) tensor with P = prod(image), d = C*h*w, in z's dtype and device; column j
        is dD/dz_j with coordinates in C-order of (C, h, w).
    """
    z = _check_latents(z)
    image_shape = _probe_decoder(decode, z)
    chunk = _check_chunk(chunk_size, math.prod(image_shape))
    prod = _Products(decode, z, chunk, image_shape)
    d = math.prod(z.shape[1:])
    return _jacobian_block(prod, z.shape[0], d)


def _geometry(
    decode: Decode,
    z: torch.Tensor,
    *,
    k: int | None,
    influence: str | None,
    log_volume_method: str,
    probes: int,
    seed: int,
    sample_ids: Sequence[int] | None,
    chunk_size: int | None,
    oversample: int | None,
    iters: int | None,
    progress: Callable[[int], None] | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, str | None, str | None]:
    """Shared driver: log-volume when k is given, influence when ``influence`` is given."""
    z = _check_latents(z)
    if k is not None:
        k = _check_k(k)
    if isinstance(probes, bool) or int(probes) < 1:
        raise LdminvError(f"probes: expected an integer >= 1, got {probes!r}")
    n, d = z.shape[0], math.prod(z.shape[1:])
    ids = _sample_ids(sample_ids, n)
    infl_method = None if influence is None else resolve_influence_method(influence, d)
    image_shape = _probe_decoder(decode, z)
    p = math.prod(image_shape)
    chunk = _check_chunk(chunk_size, p)
    lv_method = None
    if k is not None:
        lv_method = resolve_log_volume_method(log_volume_method, d=d, p=p, k=k, oversample=oversample, iters=iters,
                                              influence_method=infl_method)
    l = _subspace_size(k or 1, d, oversample)
    n_iters = None if iters is None else _default_iters(iters)  # None: adaptive (converged to MATRIX_FREE_TOL)

    need_jac = lv_method == "exact"
    lv = torch.empty(n, dtype=torch.float64) if k is not None else None
    diag = torch.empty(n, d, dtype=torch.float64) if infl_method is not None else None
    block = _exact_block_size(n, p, d) if need_jac else max(1, chunk)
    for start in range(0, n, block):
        stop = min(n, start + block)
        prod = _Products(decode, z[start:stop], chunk, image_shape)
        nb = stop - start
        jac = _jacobian_block(prod, nb, d).to(torch.float64).cpu() if need_jac else None
        if lv_method == "exact":
            lv[start:stop] = _topk_log_sum(torch.linalg.svdvals(jac), k)
        elif lv_method == "matrix_free":
            lv[start:stop] = _topk_log_sum(_subspace_singular_values(prod, nb, d, k, l, n_iters, seed, ids[start:stop]), k)
        if infl_method == "exact":
            diag[start:stop] = jac.square().sum(1) if jac is not None else _exact_diag(prod, nb, d)
        elif infl_method == "hutchinson":
            diag[start:stop] = _hutchinson_diag(prod, nb, image_shape, int(probes), seed, ids[start:stop]).cpu()
        if progress is not None:
            progress(stop)
    lv_out = None if lv is None else lv.to(z.dtype)
    infl_out = None if diag is None else (0.5 * torch.log(diag + INFLUENCE_EPS)).reshape(tuple(z.shape)).to(z.dtype)
    return lv_out, infl_out, lv_method, infl_method


def decoder_geometry(
    decode: Decode,
    z: torch.Tensor,
    *,
    k: int = 50,
    influence: str = "auto",
    log_volume_method: str = "auto",
    probes: int = 16,
    seed: int = 0,
    sample_ids: Sequence[int] | None = None,
    chunk_size: int | None = None,
    oversample: int | None = None,
    iters: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Geometry:
    """Log-volume and per-coordinate influence of each latent, sharing work between them.

    On the exact path both come from one Jacobian per sample (d JVPs), built for a block of
    samples at a time so that the stacked Jacobians stay within
    :data:`EXACT_MAX_JACOBIAN_BYTES`.

    Args:
        decode: callable from latents (B, C, h, w) to images (B, *image); decode(z[i:i+1])
            must depend on sample i only (true of VAE decoders in eval mode).
        z: latents (N, C, h, w), float32 by default.
        k: number of top singular values in the log-volume (>= 1; k >= d uses all d).
        influence: "auto" | "exact" | "hutchinson" (see :func:`dim_influence`).
        log_volume_method: "auto" | "exact" | "matrix_free" (see :func:`log_volume`).
        probes: Hutchinson probes per sample.
        seed: seed of the random probes and start subspaces.
        sample_ids: (N,) ids keying each sample's random draws; default 0..N-1.
        chunk_size: (sample, direction) pairs per batched decoder call; bounds memory.
            Default: about 4M output values per call, between 4 and 256 directions.
        oversample, iters: subspace size k + oversample and power iterations of the
            matrix-free path (defaults max(10, k // 2), and iterations until the top-k log-sum
            converges to MATRIX_FREE_TOL, at most MATRIX_FREE_MAX_ITERS).
        progress: called with the number of samples finished after each block.

    Returns:
        :class:`Geometry` with log_volume (N,) and influence (N, C, h, w) in z's dtype, on CPU.
    """
    lv, infl, lv_method, infl_method = _geometry(
        decode, z, k=k, influence=influence, log_volume_method=log_volume_method, probes=probes,
        seed=seed, sample_ids=sample_ids, chunk_size=chunk_size, oversample=oversample,
        iters=iters, progress=progress,
    )
    return Geometry(log_volume=lv, influence=infl, log_volume_method=lv_method, influence_method=infl_method)


def log_volume(
    decode: Decode,
    z: torch.Tensor,
    *,
    k: int = 50,
    method: str = "auto",
    chunk_size: int | None = None,
    oversample: int | None = None,
    iters: int | None = None,
    seed: int = 0,
    sample_ids: Sequence[int] | None = None,
) -> torch.Tensor:
    """Decoder distortion of each sample: sum of log of the top-k singular values of J.

    With k >= d this is 0.5 * log det(J^T J).

    Args:
        decode: callable from latents (B, C, h, w) to images (B, *image).
        z: latents (N, C, h, w).
        k: number of singular values (>= 1).
        method: "exact" (full Jacobian by d JVPs, then an SVD), "matrix_free" (randomized
            subspace iteration with products by J and J^T only: k + oversample directions,
            ``iters`` power iterations, then Rayleigh-Ritz; never materialises J), or "auto"
            (see :func:`resolve_log_volume_method`). The matrix-free values are lower bounds
            that converge to the exact ones as ``iters`` grows; the tests hold them to a
            relative error of 1e-3 with the defaults.
        chunk_size: (sample, direction) pairs per batched decoder call.
        oversample, iters: matrix-free settings (defaults max(10, k // 2), and adaptive
            iterations converged to MATRIX_FREE_TOL).
        seed, sample_ids: seed the matrix-free start subspace per sample id.

    Returns:
        (N,) tensor in z's dtype, on CPU.
    """
    lv, _, _, _ = _geometry(
        decode, z, k=k, influence=None, log_volume_method=method, probes=1, seed=seed,
        sample_ids=sample_ids, chunk_size=chunk_size, oversample=oversample, iters=iters, progress=None,
    )
    return lv


def dim_influence(
    decode: Decode,
    z: torch.Tensor,
    *,
    method: str = "auto",
    probes: int = 16,
    seed: int = 0,
    sample_ids: Sequence[int] | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Influence of each latent coordinate on the decoded image.

    Influence_i = 0.5 * log(G_ii + 1e-12) with G = J^T J, i.e. the log-norm of dD/dz_i.

    Args:
        decode: callable from latents (B, C, h, w) to images (B, *image).
        z: latents (N, C, h, w).
        method: "exact" (one JVP per coordinate: G_ii = |J e_i|^2), "hutchinson"
            (G_ii ~ mean over ``probes`` Gaussian v of (J^T v)_i^2, one VJP per probe), or
            "auto" (exact when d <= :data:`AUTO_EXACT_MAX_DIM`).
        probes: Hutchinson probes per sample (relative std of G_ii is sqrt(2 / probes)).
        seed, sample_ids: seed the probes per sample id.
        chunk_size: (sample, direction) pairs per batched decoder call.

    Returns:
        (N, C, h, w) tensor in z's dtype, on CPU.
    """
    _, infl, _, _ = _geometry(
        decode, z, k=None, influence=method, log_volume_method="auto", probes=probes, seed=seed,
        sample_ids=sample_ids, chunk_size=chunk_size, oversample=None, iters=None, progress=None,
    )
    return infl


# ----------------------------------------------------------------------------- display maps

_REDUCTIONS = ("mean", "max", "total")


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.as_tensor(np.asarray(x)), True


def influence_map(influence, *, reduce: str = "mean"):
    """Aggregate influence over latent channels into a per-position map.

    Args:
        influence: (N, C, h, w) or (C, h, w) influence (0.5 * log G_ii), torch or numpy.
        reduce: "mean" (mean log-influence over channels), "max", or "total"
            (0.5 * log sum_c G_ii: the influence of the whole position).

    Returns:
        (N, h, w) or (h, w), the same array type as the input.
    """
    x, was_numpy = _as_tensor(influence)
    if x.ndim not in (3, 4):
        raise ShapeError(f"influence: expected shape (N, C, h, w) or (C, h, w), got {tuple(x.shape)}")
    if reduce not in _REDUCTIONS:
        raise UnknownNameError(f"reduce: expected one of {_REDUCTIONS}, got {reduce!r}")
    x = x.to(torch.float32)
    dim = x.ndim - 3
    if reduce == "mean":
        out = x.mean(dim)
    elif reduce == "max":
        out = x.amax(dim)
    else:
        out = 0.5 * torch.logsumexp(2.0 * x, dim)
    return out.numpy() if was_numpy else out


def influence_heatmap(influence, *, size: tuple[int, int], reduce: str | None = "mean"):
    """Upsample influence to image size for display over the image.

    Args:
        influence: (N, C, h, w) or (C, h, w), torch or numpy.
        size: (H, W) output size (bilinear, align_corners=False).
        reduce: channel aggregation as in :func:`influence_map`, or None to keep channels.

    Returns:
        (N, H, W) / (H, W) when reduced, (N, C, H, W) / (C, H, W) when ``reduce`` is None;
        the same array type as the input.
    """
    x, was_numpy = _as_tensor(influence)
    if x.ndim not in (3, 4):
        raise ShapeError(f"influence: expected shape (N, C, h, w) or (C, h, w), got {tuple(x.shape)}")
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise LdminvError(f"size: expected (H, W) with positive entries, got {size!r}")
    single = x.ndim == 3
    x = x.to(torch.float32)
    if single:
        x = x.unsqueeze(0)
    if reduce is not None:
        x = influence_map(x, reduce=reduce).unsqueeze(1)
    up = torch.nn.functional.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
    if reduce is not None:
        up = up[:, 0]
    if single:
        up = up[0]
    return up.numpy() if was_numpy else up
