"""Public API of the decoder geometry: log-volume and per-coordinate influence of latents.

For a decoder ``D`` taking a latent batch ``z`` of shape (N, C, h, w) to images of shape
(N, *image), the Jacobian of one sample is ``J = dD/dz`` of shape (P, d) with
``P = prod(image)`` and ``d = C*h*w``; ``G = J^T J`` is the pullback metric.

- :func:`log_volume`: ``sum_{i<=k} log sigma_i(J)`` (``kind="topk"``) or ``0.5 * log det G``
  (``kind="logdet"``), shape (N,);
- :func:`dim_influence`: ``0.5 * log(diag(G) + 1e-12)``, shape (N, C, h, w);
- :func:`decoder_geometry`: both at once, sharing one Jacobian on the exact path;
- :func:`jacobian`: the exact (N, P, d) Jacobians.

All four run :func:`_geometry`, which checks the arguments, resolves the paths (:mod:`.paths`)
and runs them block by block of samples on :class:`~.products._Products`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .checks import (
    _check_chunk,
    _check_count,
    _check_engine,
    _check_iters,
    _check_k,
    _check_kind,
    _check_latents,
    _probe_decoder,
    _sample_ids,
    _warn_plain_callable,
)
from .constants import INFLUENCE_EPS, SLQ_PROBES, SLQ_STEPS, Decode
from .heap import retained_heap
from .krylov import _krylov_top_eigenvalues, _slq_logdet
from .paths import _block_size, log_volume_products, resolve_influence_method, resolve_log_volume_method
from .products import (
    _exact_block_size,
    _exact_diag,
    _gram,
    _hutchinson_diag,
    _jacobian_block,
    _Products,
    _singular_values,
    _topk_log_sum,
)

if TYPE_CHECKING:
    from .plan import GeometryPlan

__all__ = ["Geometry", "jacobian", "decoder_geometry", "log_volume", "dim_influence"]


@dataclass(frozen=True)
class Geometry:
    """Decoder geometry of a latent batch.

    Attributes:
        log_volume: (N,) sum of log of the top-k singular values of J (``log_volume_kind``
            "topk"), or 0.5 * log det(J^T J) ("logdet").
        influence: (N, C, h, w) ``0.5 * log(diag(J^T J) + 1e-12)``.
        log_volume_method: "exact", "matrix_free" or "slq", the path actually used.
        influence_method: "exact" or "hutchinson", the path actually used.
        log_volume_kind: "topk" or "logdet".
        engine: how the decoder products were taken, "layerwise" or "torch.func" (:data:`ENGINES`).
        log_volume_error: (N,) float64 error estimate in log-volume units: zeros on the exact
            path; the a-posteriori residual bound of the matrix-free top-k (the estimate is a
            lower bound, the true value lies in [lv, lv + error] unless the start block missed
            a top-k direction); the standard error over probes of the SLQ log-det (NaN with one
            probe; the quadrature bias is not included).
    """

    log_volume: torch.Tensor | None
    influence: torch.Tensor | None
    log_volume_method: str | None
    influence_method: str | None
    log_volume_kind: str = "topk"
    log_volume_error: torch.Tensor | None = None
    engine: str | None = None



def jacobian(decode: Decode, z: torch.Tensor, *, chunk_size: int | None = None, engine: str = "auto") -> torch.Tensor:
    """Exact decoder Jacobian of every sample.

    Args:
        decode: callable from a latent batch (B, C, h, w) to an image batch (B, *image).
        z: latents (N, C, h, w).
        chunk_size: (sample, coordinate) pairs per batched JVP call (default: see
            :func:`decoder_geometry`).
        engine: how the JVPs are taken (:data:`ENGINES`; see :func:`decoder_geometry`).

    Returns:
        (N, P, d) tensor with P = prod(image), d = C*h*w, in z's dtype and device; column j
        is dD/dz_j with coordinates in C-order of (C, h, w).
    """
    z = _check_latents(z)
    engine = _check_engine(engine)
    image_shape = _probe_decoder(decode, z)
    chunk = _check_chunk(chunk_size, math.prod(image_shape))
    _warn_plain_callable(decode, engine)
    prod = _Products(decode, z, chunk, image_shape, engine)
    d = math.prod(z.shape[1:])
    return _jacobian_block(prod, z.shape[0], d)


@dataclass(frozen=True)
class _Setup:
    """The checked arguments of one :func:`_geometry` call and the paths they resolve to."""

    z: torch.Tensor
    kind: str
    engine: str
    k: int | None
    probes: int
    slq_probes: int
    slq_steps: int
    iters: int | None
    oversample: int | None
    seed: int
    ids: list[int]
    image_shape: tuple[int, ...]
    chunk: int
    infl_method: str | None
    lv_method: str | None
    block_width: int

    @property
    def n(self) -> int:
        return int(self.z.shape[0])

    @property
    def d(self) -> int:
        return math.prod(self.z.shape[1:])


@dataclass
class _Outputs:
    """float64 accumulators filled block by block of samples (None where not asked for)."""

    lv: torch.Tensor | None
    lv_err: torch.Tensor | None
    diag: torch.Tensor | None
    engine: str | None = None


def _setup(decode: Decode, z: torch.Tensor, *, k: int | None, influence: str | None, log_volume_method: str,
           kind: str, probes: int, slq_probes: int, slq_steps: int, seed: int, sample_ids: Sequence[int] | None,
           chunk_size: int | None, oversample: int | None, iters: int | None, engine: str) -> _Setup:
    """Check every argument (in the order the errors are reported), probe the decoder's output
    shape on z[:1] and resolve the influence and log-volume paths."""
    z = _check_latents(z)
    kind = _check_kind(kind)
    engine = _check_engine(engine)
    if k is not None:
        k = _check_k(k)
    probes = _check_count(probes, "probes")
    slq_probes = _check_count(slq_probes, "slq_probes")
    slq_steps = _check_count(slq_steps, "slq_steps")
    n_iters = _check_iters(iters)  # None: adaptive (bound <= MATRIX_FREE_TOL)
    n, d = z.shape[0], math.prod(z.shape[1:])
    ids = _sample_ids(sample_ids, n)
    infl_method = None if influence is None else resolve_influence_method(influence, d)
    image_shape = _probe_decoder(decode, z)
    p = math.prod(image_shape)
    chunk = _check_chunk(chunk_size, p)
    _warn_plain_callable(decode, engine)
    lv_method = None
    b = 1
    if k is not None:
        lv_method = resolve_log_volume_method(
            log_volume_method, d=d, p=p, k=k, log_volume=kind, oversample=oversample, iters=n_iters,
            influence_method=infl_method, slq_probes=slq_probes, slq_steps=slq_steps,
        )
        b = _block_size(k, d, oversample)
    return _Setup(z=z, kind=kind, engine=engine, k=k, probes=probes, slq_probes=slq_probes, slq_steps=slq_steps,
                  iters=n_iters, oversample=oversample, seed=seed, ids=ids, image_shape=image_shape, chunk=chunk,
                  infl_method=infl_method, lv_method=lv_method, block_width=b)


def _empty_outputs(s: _Setup) -> _Outputs:
    """Accumulators for the paths asked for: log-volume and its error (N,), diag(J^T J) (N, d)."""
    asked_lv = s.k is not None
    return _Outputs(
        lv=torch.empty(s.n, dtype=torch.float64) if asked_lv else None,
        lv_err=torch.zeros(s.n, dtype=torch.float64) if asked_lv else None,
        diag=torch.empty(s.n, s.d, dtype=torch.float64) if s.infl_method is not None else None,
    )


def _run_block(prod: _Products, s: _Setup, out: _Outputs, start: int, stop: int) -> None:
    """Both paths on samples start..stop-1 (the samples of ``prod``), written into ``out``."""
    nb, d, ids = stop - start, s.d, s.ids[start:stop]
    jac = _jacobian_block(prod, nb, d).to(torch.float64).cpu() if s.lv_method == "exact" else None
    gram = None
    if s.lv_method == "exact":
        sv_kind = "logdet" if s.kind == "logdet" or s.k >= d else "topk"
        # the top-k path and the exact influence share J^T J (its diagonal: the column norms)
        gram = _gram(jac) if sv_kind == "topk" and jac.shape[1] > d else None
        sv = _singular_values(jac, sv_kind, s.k, gram=gram)
        out.lv[start:stop] = _topk_log_sum(sv, d if s.kind == "logdet" else s.k)
    elif s.lv_method == "matrix_free":
        out.lv[start:stop], out.lv_err[start:stop] = _krylov_top_eigenvalues(
            prod, nb, d, s.k, s.block_width, s.iters, s.seed, ids)
    elif s.lv_method == "slq":
        out.lv[start:stop], out.lv_err[start:stop] = _slq_logdet(prod, nb, d, s.slq_probes, s.slq_steps, s.seed, ids)
    if s.infl_method == "exact":
        if gram is not None:
            out.diag[start:stop] = torch.diagonal(gram, dim1=-2, dim2=-1)
        else:
            out.diag[start:stop] = jac.square().sum(1) if jac is not None else _exact_diag(prod, nb, d)
    elif s.infl_method == "hutchinson":
        out.diag[start:stop] = _hutchinson_diag(prod, nb, s.image_shape, s.probes, s.seed, ids).cpu()


def _result(s: _Setup, out: _Outputs) -> Geometry:
    """The :class:`Geometry` of the accumulators: influence 0.5 * log(diag + eps), in z's dtype."""
    lv_out = None if out.lv is None else out.lv.to(s.z.dtype)
    infl_out = None if out.diag is None else \
        (0.5 * torch.log(out.diag + INFLUENCE_EPS)).reshape(tuple(s.z.shape)).to(s.z.dtype)
    return Geometry(log_volume=lv_out, influence=infl_out, log_volume_method=s.lv_method,
                    influence_method=s.infl_method, log_volume_kind=s.kind, log_volume_error=out.lv_err,
                    engine=out.engine)


def _geometry(
    decode: Decode,
    z: torch.Tensor,
    *,
    k: int | None,
    influence: str | None,
    log_volume_method: str,
    kind: str,
    probes: int,
    slq_probes: int,
    slq_steps: int,
    seed: int,
    sample_ids: Sequence[int] | None,
    chunk_size: int | None,
    oversample: int | None,
    iters: int | None,
    progress: Callable[[float], None] | None,
    counts: dict | None = None,
    engine: str = "auto",
) -> Geometry:
    """Shared driver: log-volume when k is given, influence when ``influence`` is given.

    z (N, C, h, w) -> :class:`Geometry` (log_volume (N,), influence (N, C, h, w)).
    """
    # 1. check the arguments, probe the decoder, resolve the paths
    s = _setup(decode, z, k=k, influence=influence, log_volume_method=log_volume_method, kind=kind, probes=probes,
               slq_probes=slq_probes, slq_steps=slq_steps, seed=seed, sample_ids=sample_ids, chunk_size=chunk_size,
               oversample=oversample, iters=iters, engine=engine)
    # 2. the accumulators, and how many samples a block holds (the exact path: a byte budget)
    out = _empty_outputs(s)
    block = _exact_block_size(s.n, math.prod(s.image_shape), s.d) if s.lv_method == "exact" else max(1, s.chunk)
    per_sample = _products_per_sample(s.lv_method, s.infl_method, d=s.d, k=s.k, kind=s.kind, probes=s.probes,
                                      oversample=s.oversample, iters=s.iters, slq_probes=s.slq_probes,
                                      slq_steps=s.slq_steps)
    # 3. the paths, block by block of samples (counting products, reporting progress), with
    #    freed activations kept in the heap for the next product (:mod:`.heap`)
    with retained_heap():
        for start in range(0, s.n, block):
            stop = min(s.n, start + block)
            prod = _Products(decode, s.z[start:stop], s.chunk, s.image_shape, s.engine)
            out.engine = prod.engine
            if progress is not None:
                prod.on_chunk = _block_progress(progress, start=start, samples=stop - start,
                                                products=per_sample * (stop - start))
            _run_block(prod, s, out, start, stop)
            if counts is not None:
                for key, value in prod.counts.items():
                    counts[key] = counts.get(key, 0) + value
            if progress is not None:
                progress(stop)
    # 4. the result in z's dtype
    return _result(s, out)


def _products_per_sample(lv_method: str | None, infl_method: str | None, *, d: int, k: int | None, kind: str,
                         probes: int, oversample: int | None, iters: int | None, slq_probes: int,
                         slq_steps: int) -> int:
    """Decoder products (JVPs + VJPs) one sample is expected to take on these paths (the
    matrix-free top-k: its typical adaptive count), for progress within a block."""
    total = 0
    if lv_method is not None:
        counts = log_volume_products(lv_method, d=d, k=k, log_volume=kind, oversample=oversample, iters=iters,
                                     slq_probes=slq_probes, slq_steps=slq_steps)
        total += counts["jvp"] + counts["vjp"]
    if infl_method == "exact" and lv_method != "exact":
        total += d
    elif infl_method == "hutchinson":
        total += probes
    return max(1, total)


def _block_progress(progress: Callable[[float], None], *, start: int, samples: int,
                    products: int) -> Callable[[int], None]:
    """A chunk callback reporting ``start`` + the block's samples finished, estimated from the
    decoder products done so far (kept below the whole block until it has returned)."""
    done = 0

    def on_chunk(m: int) -> None:
        nonlocal done
        done += m
        progress(start + samples * min(done / products, 0.99))

    return on_chunk


def decoder_geometry(
    decode: Decode,
    z: torch.Tensor,
    *,
    k: int = 50,
    influence: str = "auto",
    log_volume_method: str = "auto",
    log_volume: str = "topk",
    probes: int = 16,
    slq_probes: int = SLQ_PROBES,
    slq_steps: int = SLQ_STEPS,
    seed: int = 0,
    sample_ids: Sequence[int] | None = None,
    chunk_size: int | None = None,
    oversample: int | None = None,
    iters: int | None = None,
    progress: Callable[[float], None] | None = None,
    plan: "GeometryPlan | None" = None,
    engine: str = "auto",
) -> Geometry:
    """Log-volume and per-coordinate influence of each latent, sharing work between them.

    On the exact path both come from one Jacobian per sample (d JVPs), built for a block of
    samples at a time so that the stacked Jacobians stay within
    :data:`EXACT_MAX_JACOBIAN_BYTES`.

    Args:
        decode: callable from latents (B, C, h, w) to images (B, *image); decode(z[i:i+1])
            must depend on sample i only (true of VAE decoders in eval mode).
        z: latents (N, C, h, w), float32 by default.
        k: number of top singular values in the top-k log-volume (>= 1; k >= d uses all d);
            ignored by ``log_volume="logdet"``.
        influence: "auto" | "exact" | "hutchinson" (see :func:`dim_influence`).
        log_volume_method: "auto" | "exact" | "matrix_free" (top-k) | "slq" (log-det), see
            :func:`resolve_log_volume_method`.
        log_volume: "topk" (sum of the top-k log singular values) or "logdet"
            (0.5 * log det J^T J, the whole spectrum).
        probes: Hutchinson probes per sample.
        slq_probes, slq_steps: SLQ Rademacher probes per sample and Lanczos steps per probe.
        seed: seed of the random probes and start blocks.
        sample_ids: (N,) ids keying each sample's random draws; default 0..N-1.
        chunk_size: (sample, direction) pairs per batched decoder call; bounds memory.
            Default: about 200k output values per call, between 4 and 64 directions.
        oversample, iters: matrix-free top-k: Krylov block width k + oversample (default
            max(8, ceil(k / 2))) and number of blocks after the start block (default:
            adaptive, until the residual bound meets MATRIX_FREE_TOL).
        progress: called with the number of samples finished (a float): after every decoder
            call, fractional while a block of samples is under way (estimated from the decoder
            products done against the paths' expected count), whole at the end of each block.
        plan: a :class:`GeometryPlan` from :func:`plan_geometry`; its influence and
            log-volume paths, kind, k and probe counts replace the keywords above.
        engine: how decoder products are taken (:data:`ENGINES`): "auto" uses the
            layer-by-layer JVPs / VJPs of :mod:`ldminv_core.geometry.tangents` for a
            :class:`~ldminv_core.geometry.tangents.VaeDecoder` it knows (checked against torch.func at
            the first latent), torch.func otherwise; ``Geometry.engine`` says which ran. A plain
            callable under "auto" runs on torch.func with a ``UserWarning`` naming the fast path:
            ``decode=geometry.vae_decoder(vae)`` (or ``LoadedModel.decoder_fn()``) instead of
            ``lambda z: vae.decode(z / sf).sample``; "torch.func" asks for it without the warning.

    Returns:
        :class:`Geometry` with log_volume (N,), log_volume_error (N,) float64 and influence
        (N, C, h, w) in z's dtype, on CPU.
    """
    if plan is not None:
        k, influence, log_volume_method = plan.k, plan.influence_method, plan.log_volume_method
        log_volume, probes = plan.log_volume_kind, plan.probes
        slq_probes, slq_steps = plan.slq_probes, plan.slq_steps
        chunk_size = plan.chunk_size if chunk_size is None else chunk_size
    return _geometry(
        decode, z, k=k, influence=influence, log_volume_method=log_volume_method, kind=log_volume,
        probes=probes, slq_probes=slq_probes, slq_steps=slq_steps, seed=seed, sample_ids=sample_ids,
        chunk_size=chunk_size, oversample=oversample, iters=iters, progress=progress, engine=engine,
    )


def log_volume(
    decode: Decode,
    z: torch.Tensor,
    *,
    k: int = 50,
    method: str = "auto",
    kind: str = "topk",
    chunk_size: int | None = None,
    oversample: int | None = None,
    iters: int | None = None,
    slq_probes: int = SLQ_PROBES,
    slq_steps: int = SLQ_STEPS,
    seed: int = 0,
    sample_ids: Sequence[int] | None = None,
) -> torch.Tensor:
    """Decoder distortion of each sample: sum of log of the top-k singular values of J, or
    0.5 * log det(J^T J) (``kind="logdet"``; also what k >= d gives).

    Args:
        decode: callable from latents (B, C, h, w) to images (B, *image).
        z: latents (N, C, h, w).
        k: number of singular values (>= 1); ignored by ``kind="logdet"``.
        method: "exact" (full Jacobian by d JVPs, then a float64 SVD), "matrix_free" (top-k:
            block Krylov with products by J and J^T only; the values are lower bounds within
            :data:`MATRIX_FREE_TOL` relative of the exact ones with the adaptive default),
            "slq" (log-det: stochastic Lanczos quadrature, ``slq_probes`` Rademacher probes x
            ``slq_steps`` Lanczos steps; relative error :data:`SLQ_RTOL` measured at the
            defaults), or "auto" (see :func:`resolve_log_volume_method`).
        kind: "topk" or "logdet".
        chunk_size: (sample, direction) pairs per batched decoder call.
        oversample, iters: matrix-free settings (see :func:`decoder_geometry`).
        slq_probes, slq_steps: SLQ settings.
        seed, sample_ids: seed the random start blocks / probes per sample id.

    Returns:
        (N,) tensor in z's dtype, on CPU (:func:`decoder_geometry` also returns the
        per-sample error estimate).
    """
    g = _geometry(
        decode, z, k=k, influence=None, log_volume_method=method, kind=kind, probes=1,
        slq_probes=slq_probes, slq_steps=slq_steps, seed=seed, sample_ids=sample_ids,
        chunk_size=chunk_size, oversample=oversample, iters=iters, progress=None,
    )
    return g.log_volume


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
        probes: Hutchinson probes per sample (relative std of G_ii is sqrt(2 / probes); the
            rank target, median Spearman >= 0.98, needed :data:`HUTCHINSON_RANK_PROBES`).
        seed, sample_ids: seed the probes per sample id.
        chunk_size: (sample, direction) pairs per batched decoder call.

    Returns:
        (N, C, h, w) tensor in z's dtype, on CPU.
    """
    g = _geometry(
        decode, z, k=None, influence=method, log_volume_method="auto", kind="topk", probes=probes,
        slq_probes=SLQ_PROBES, slq_steps=SLQ_STEPS, seed=seed, sample_ids=sample_ids,
        chunk_size=chunk_size, oversample=None, iters=None, progress=None,
    )
    return g.influence

