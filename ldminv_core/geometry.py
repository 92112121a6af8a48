"""Geometry of a decoder: how much it stretches latent space, per sample and per coordinate.

For a decoder ``D`` taking a latent batch ``z`` of shape (N, C, h, w) to images of shape
(N, *image), the Jacobian of one sample is ``J = dD/dz`` of shape (P, d) with
``P = prod(image)`` and ``d = C*h*w``; ``G = J^T J`` is the pullback metric. This module
computes, without ever asking the user for more than the callable ``decode``:

- :func:`log_volume`: ``sum_{i<=k} log sigma_i(J)`` (``kind="topk"``, the top-k singular
  values) or ``0.5 * log det G`` (``kind="logdet"``, the whole spectrum), shape (N,);
- :func:`dim_influence`: ``0.5 * log(diag(G) + 1e-12)``, shape (N, C, h, w);
- :func:`decoder_geometry`: both at once, sharing one Jacobian on the exact path;
- :func:`plan_geometry` (:mod:`ldminv_core.geometry_plan`): which path "auto" takes, its
  decoder products and measured cost;
- :func:`influence_map` / :func:`influence_heatmap`: per-position maps for display.

Paths. *Exact*: J built column by column with forward-mode JVPs (one per latent coordinate);
log-volume from its float64 singular values, influence from its column norms. *Matrix-free*
(top-k): block Krylov (block Lanczos) on G with full reorthogonalisation, each block costing
one JVP and one VJP per direction, stopped by an a-posteriori residual bound. *SLQ*
(log-det): stochastic Lanczos quadrature of tr log G with Rademacher probes
(:mod:`ldminv_core.slq`), one JVP + one VJP per probe and Lanczos step. *Hutchinson*
(influence): G_ii ~ mean over Gaussian probes v of (J^T v)_i^2, one VJP per probe. All
products are batched with ``torch.func.vmap`` over up to ``chunk_size`` directions of a
sample per decoder call (the sample's primal pass is shared by its directions), so memory is
bounded by ``chunk_size`` decoder evaluations.

Random draws (probes, start blocks) are seeded per sample id, so a batch split never changes
a result. Attention runs through the math SDPA kernel, the only one with forward-mode
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

from . import slq as _slq
from .choices import HUTCHINSON_RANK_PROBES as _HUTCHINSON_RANK_PROBES
from . import tangents as _tangents
from .errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError, UnknownNameError

__all__ = [
    "Geometry",
    "GeometryPlan",
    "log_volume",
    "dim_influence",
    "decoder_geometry",
    "plan_geometry",
    "jacobian",
    "influence_map",
    "influence_heatmap",
    "resolve_influence_method",
    "resolve_log_volume_method",
    "AUTO_EXACT_MAX_DIM",
    "EXACT_MAX_JACOBIAN_BYTES",
    "INFLUENCE_EPS",
    "LOG_VOLUME_KINDS",
    "ENGINES",
    "MATRIX_FREE_TOL",
    "SLQ_PROBES",
    "SLQ_STEPS",
    "SLQ_RTOL",
    "HUTCHINSON_RANK_PROBES",
]

Decode = Callable[[torch.Tensor], torch.Tensor]

#: ``influence="auto"`` uses the exact influence path up to this many latent coordinates.
AUTO_EXACT_MAX_DIM = 1024
#: The exact log-volume path materialises one (P, d) Jacobian per sample; above this many
#: bytes per sample ``method="auto"`` switches to a matrix-free path.
EXACT_MAX_JACOBIAN_BYTES = 512 * 2**20
#: Added to diag(J^T J) before the log.
INFLUENCE_EPS = 1e-12
#: What the log-volume sums: the top-k log singular values, or the whole spectrum
#: (0.5 * log det J^T J, the paper's Stable Diffusion setting).
LOG_VOLUME_KINDS = ("topk", "logdet")

#: Matrix-free top-k log-volume without ``iters``: block Krylov steps continue until every
#: sample's a-posteriori error bound (``Geometry.log_volume_error``, see
#: :func:`_krylov_top_eigenvalues`) is at most this fraction of max(1, |log-volume|), for at
#: most :data:`MATRIX_FREE_MAX_ITERS` block steps. This is the stated relative tolerance of
#: the matrix-free path; the tests hold it against the SVD of the autograd Jacobian.
MATRIX_FREE_TOL = 1e-3
MATRIX_FREE_MIN_ITERS = 1
MATRIX_FREE_MAX_ITERS = 40
#: Block steps the cost model assumes for the adaptive matrix-free path (measured: 5 to 11 on
#: the benchmark decoders at k = 50 and block size 25, see benchmarks/README.md).
MATRIX_FREE_TYPICAL_ITERS = 10

#: SLQ defaults: Rademacher probes per sample and Lanczos steps per probe (each step is one
#: JVP + one VJP). The paper's code uses 16 Gaussian probes and 30 steps. Rademacher probes
#: have the lower variance for the same count (their quadratic-form variance lacks the
#: diagonal term; 1.1 to 5x lower standard error on the benchmark decoders). Gauss quadrature
#: overestimates tr log, and 30 steps left an upward bias of 1.3 % (d = 1024) to 11 % (tiny
#: VAE, d = 256, cond(J) ~ 800); 50 steps 0.3 % to 1.5-5 % (benchmarks/README.md).
SLQ_PROBES = 16
SLQ_STEPS = 50
#: Stated relative error |SLQ - slogdet| / |slogdet| at the defaults, for d >= ~100: on the
#: oracle decoders of the tests and benchmarks (d = 108 to 256) the worst sample measured
#: 5.6 %. It is the probes' sampling error (reported per sample in Geometry.log_volume_error,
#: 1 to 2.5 % of |log det| there; it shrinks as 1/sqrt(d * probes), so d = 64 reaches 13 %)
#: plus the quadrature bias, which grows with cond(J) (44 % on a random decoder with
#: cond(J) = 4e5 even at 30 steps): use the exact path where J fits.
SLQ_RTOL = 1e-1
#: Hutchinson probes that keep the median per-sample Spearman rank correlation between
#: estimated and exact influence >= 0.98 on the benchmark decoders (table in
#: benchmarks/README.md); what :func:`plan_geometry` uses for ``probes="auto"`` (defined in
#: :mod:`ldminv_core.choices`, so that ``analyze --help`` can state it without importing torch).
HUTCHINSON_RANK_PROBES = _HUTCHINSON_RANK_PROBES

_GEOMETRY_STREAM_PROBES = 11
_GEOMETRY_STREAM_SUBSPACE = 12
_GEOMETRY_STREAM_SLQ = 13
_INFLUENCE_METHODS = ("auto", "exact", "hutchinson")
_LOG_VOLUME_METHODS = ("auto", "exact", "matrix_free", "slq")

#: How decoder products are taken: "layerwise" (:mod:`ldminv_core.tangents`, diffusers'
#: AutoencoderKL decoder), "torch.func" (vmap of jvp / vjp, any callable), "auto" (layerwise
#: when the decoder has it and it agrees with torch.func at the first latent).
ENGINES = ("auto", "layerwise", "torch.func")


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
    """Default directions per decoder call: about 260k output values, between 4 and 64
    (up to 256 for images of at most 2048 values).

    Measured on the benchmark decoders (2 CPU threads): per-direction cost is flat from about
    16 to 64 directions and grows 4-6x at 256 (the batch no longer fits the caches); on the
    demo decoder (1x32x32 images, 1 thread) 128-256 directions per call are about 20 % faster
    than 64 (benchmarks/bench_geometry_paths.py).
    """
    cap = 256 if p <= 2048 else 64
    return int(min(cap, max(4, 2**18 // max(1, p))))


def _check_chunk(chunk_size: int | None, p: int) -> int:
    if chunk_size is None:
        return _auto_chunk(p)
    if isinstance(chunk_size, bool) or int(chunk_size) < 1:
        raise LdminvError(f"chunk_size: expected an integer >= 1, got {chunk_size}")
    return int(chunk_size)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or int(k) < 1:
        raise LdminvError(f"k: expected an integer >= 1 (number of singular values), got {k!r}")
    return int(k)


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise LdminvError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise UnknownNameError(f"engine: expected one of {ENGINES}, got {engine!r}")
    return engine


def _check_kind(kind: str, name: str = "log_volume") -> str:
    if kind not in LOG_VOLUME_KINDS:
        raise UnknownNameError(f"{name}: expected one of {LOG_VOLUME_KINDS}, got {kind!r}")
    return kind


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


def _block_size(k: int, d: int, oversample: int | None) -> int:
    """Krylov block width: ``k + oversample`` when given, else max(8, ceil(k / 2)) (measured
    to need the fewest products for a 1e-3 bound at k = 10 and 50), at most d."""
    if oversample is None:
        b = max(8, -(-k // 2))
    else:
        if isinstance(oversample, bool) or int(oversample) < 0:
            raise LdminvError(f"oversample: expected an integer >= 0, got {oversample!r}")
        b = k + int(oversample)
    return max(1, min(d, b))


def _check_iters(iters: int | None) -> int | None:
    if iters is None:
        return None
    if isinstance(iters, bool) or int(iters) < 0:
        raise LdminvError(f"iters: expected an integer >= 0, got {iters!r}")
    return int(iters)


def _krylov_blocks(k: int, d: int, b: int, iters: int | None) -> int:
    """Blocks (one JVP + one VJP per direction each) the top-k path runs or, when adaptive,
    is expected to run: at least enough for k + 1 Ritz values, at most d / b."""
    need = -(-min(d, k + 1) // b)
    planned = max(need, (MATRIX_FREE_TYPICAL_ITERS if iters is None else iters) + 1)
    return int(min(planned, -(-d // b)))


def log_volume_products(
    method: str, *, d: int, k: int, log_volume: str = "topk", oversample: int | None = None,
    iters: int | None = None, slq_probes: int = SLQ_PROBES, slq_steps: int = SLQ_STEPS,
) -> dict[str, int]:
    """Decoder products per sample of one resolved log-volume path: {"jvp": n, "vjp": n}.

    "exact": d JVPs (the Jacobian's columns); "matrix_free": block Krylov, b directions per
    block (:func:`_block_size`), a JVP and a VJP each (adaptive: the typical
    :data:`MATRIX_FREE_TYPICAL_ITERS` + 1 blocks); "slq": probes x min(steps, d) JVP + VJP pairs.
    """
    if method == "exact":
        return {"jvp": d, "vjp": 0}
    if method == "slq":
        n = int(slq_probes) * min(int(slq_steps), d)
        return {"jvp": n, "vjp": n}
    b = _block_size(k, d, oversample)
    n = b * _krylov_blocks(k, d, b, _check_iters(iters))
    n = min(n, d) if k >= d else n
    return {"jvp": n, "vjp": n}


def resolve_log_volume_method(
    method: str, *, d: int, p: int, k: int, log_volume: str = "topk", oversample: int | None = None,
    iters: int | None = None, influence_method: str | None = None, slq_probes: int = SLQ_PROBES,
    slq_steps: int = SLQ_STEPS,
) -> Literal["exact", "matrix_free", "slq"]:
    """Return the log-volume path ``method`` means.

    ``log_volume="topk"``: "exact" | "matrix_free" (block Krylov); ``"logdet"``: "exact" |
    "slq" ("matrix_free" means "slq" there). "auto" is exact when one (p, d) float32 Jacobian
    fits :data:`EXACT_MAX_JACOBIAN_BYTES` and either the exact influence builds it anyway
    (``influence_method="exact"``: its d JVPs are the Jacobian's columns, so the exact
    log-volume costs no further product), or k >= d (top-k), or its d JVPs are no more than
    the matrix-free path's products (:func:`log_volume_products`); otherwise the matrix-free
    path of the kind.
    """
    _check_kind(log_volume)
    if method not in _LOG_VOLUME_METHODS:
        raise UnknownNameError(f"method: expected one of {_LOG_VOLUME_METHODS}, got {method!r}")
    free = "slq" if log_volume == "logdet" else "matrix_free"
    if method == "slq" and log_volume != "logdet":
        raise UnknownNameError(
            "method: 'slq' estimates the whole-spectrum log-det (log_volume='logdet'); with "
            "log_volume='topk' expected 'auto', 'exact' or 'matrix_free'"
        )
    if method != "auto":
        return free if method == "matrix_free" else method  # type: ignore[return-value]
    if log_volume == "topk" and k >= d:
        return "exact"  # the whole spectrum is needed
    if p * d * 4 > EXACT_MAX_JACOBIAN_BYTES:
        return free  # type: ignore[return-value]
    if influence_method == "exact":
        return "exact"
    mf = log_volume_products(free, d=d, k=k, log_volume=log_volume, oversample=oversample, iters=iters,
                             slq_probes=slq_probes, slq_steps=slq_steps)
    return "exact" if d <= mf["jvp"] + mf["vjp"] else free  # type: ignore[return-value]


# ----------------------------------------------------------------------------- products


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
        self._lin: tuple[int, object] | None = None
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
        """The layer-by-layer linearisation at z[sample] (the last one is kept)."""
        if self._lin is None or self._lin[0] != sample:
            self._lin = (sample, self._layerwise.linearize(self.z[sample : sample + 1]))
        return self._lin[1]

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


def _singular_values(jac: torch.Tensor, kind: str, k: int | None = None) -> torch.Tensor:
    """Singular values (descending) of each float64 (P, d) Jacobian in ``jac`` (n, P, d).

    Top-k with P > d: square roots of the eigenvalues of the float64 Gram matrix J^T J (d x d),
    about 2x faster than the SVD at P = 3d and as accurate for the top values (the error of
    sigma_i^2 is about eps64 * sigma_max^2, below the float32 rounding of J itself for any
    sigma_i > 1e-4 sigma_max). Log-det (``kind="logdet"``, also k >= d), which needs the
    smallest values too: the SVD; so do samples whose k-th value (``k``) is below 1e-4 sigma_max.
    """
    if kind == "topk" and jac.shape[-2] > jac.shape[-1]:
        ev = torch.linalg.eigvalsh(jac.transpose(-1, -2) @ jac).flip(-1).clamp_min(0.0)
        kk = min(int(k or 1), ev.shape[-1]) - 1
        small = ev[:, kk] < 1e-8 * ev[:, 0]
        sv = ev.sqrt()
        if bool(small.any()):
            sv[small] = torch.linalg.svdvals(jac[small])
        return sv
    return torch.linalg.svdvals(jac)


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


def _orthonormalize(basis: torch.Tensor | None, v: torch.Tensor) -> torch.Tensor:
    """Columns of ``v`` (d, b) made orthonormal and orthogonal to ``basis`` (d, m), float64."""
    for _ in range(2):  # classical Gram-Schmidt twice, then QR, then once more for safety
        if basis is not None:
            v = v - basis @ (basis.T @ v)
    q = torch.linalg.qr(v).Q
    if basis is not None:
        q = q - basis @ (basis.T @ q)
        q = torch.linalg.qr(q).Q
    return q


def _ritz_bound(basis: torch.Tensor, g_basis: torch.Tensor, k: int, complete: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rayleigh-Ritz of G on span(basis): (top-k log-volume, its error bound), float64 scalars.

    Ritz values theta_i of H = K^T G K (descending) are lower bounds of G's top eigenvalues
    (Cauchy interlacing). Residual r_i = |G x_i - theta_i x_i| of Ritz vector x_i = K c_i
    (G K is known, so it costs no product); the error of theta_i is at most
    min(r_i, r_i^2 / gap_i) with gap_i = theta_i - theta_{k+1} (Weyl / quadratic residual
    bounds; theta_{k+1} stands for the rest of the spectrum). Log-volume
    0.5 * sum_{i<=k} log theta_i, bound 0.5 * sum log(1 + e_i / theta_i).
    """
    h = basis.T @ g_basis
    h = 0.5 * (h + h.T)
    theta, c = torch.linalg.eigh(h)
    theta, c = theta.flip(0), c.flip(1)
    kk = min(k, theta.shape[0])
    top = theta[:kk].clamp_min(torch.finfo(torch.float64).tiny)
    lv = 0.5 * top.log().sum()
    if complete:  # the Krylov space is the whole space: Rayleigh-Ritz is exact up to rounding
        return lv, torch.zeros((), dtype=torch.float64)
    ck = c[:, :kk]
    resid = (g_basis @ ck - (basis @ ck) * theta[:kk]).norm(dim=0)
    rest = theta[kk] if theta.shape[0] > kk else torch.zeros((), dtype=torch.float64)
    gap = (theta[:kk] - rest).clamp_min(torch.finfo(torch.float64).tiny)
    err = torch.minimum(resid, resid.square() / gap)
    return lv, 0.5 * torch.log1p(err / top).sum()


def _krylov_top_eigenvalues(
    prod: _Products, n: int, d: int, k: int, b: int, iters: int | None, seed: int, ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k log-volume of each sample by block Krylov on G = J^T J: ((N,), bound (N,)).

    Block Lanczos with full reorthogonalisation in float64: K_0 = orth(Omega) (a Gaussian
    (d, b) start block seeded per sample id), K_{j+1} = orth(G K_j against K_0..K_j); after
    each block, Rayleigh-Ritz on span(K_0..K_j) and its residual bound
    (:func:`_ritz_bound`). ``iters`` fixed: that many blocks after the start block (raised
    to the fewest giving k + 1 Ritz values). ``iters`` None: a sample stops once its bound
    is at most :data:`MATRIX_FREE_TOL` * max(1, |value|), after at least
    :data:`MATRIX_FREE_MIN_ITERS` blocks and at most :data:`MATRIX_FREE_MAX_ITERS`. Every
    block costs one JVP + one VJP per direction for the samples still running.
    """
    z = prod.z
    shape = prod.latent_shape
    need = -(-min(d, k + 1) // b)  # blocks before k + 1 Ritz values exist
    stop_at = None if iters is None else max(need, iters + 1)
    bases: list[torch.Tensor] = []
    g_bases: list[torch.Tensor | None] = []
    for i in ids:
        omega = torch.randn(d, b, generator=_generator(seed, i, _GEOMETRY_STREAM_SUBSPACE), dtype=torch.float64)
        bases.append(_orthonormalize(None, omega))
        g_bases.append(None)
    lv = torch.zeros(n, dtype=torch.float64)
    err = torch.zeros(n, dtype=torch.float64)
    active = list(range(n))
    blocks = 0
    while active:
        # the newest block of every running sample, one batched J^T J product
        new = [bases[s][:, (g_bases[s].shape[1] if g_bases[s] is not None else 0):] for s in active]
        widths = [v.shape[1] for v in new]
        rows = torch.cat([torch.full((w,), s, dtype=torch.long) for s, w in zip(active, widths)]).to(z.device)
        tang = torch.cat([v.T for v in new]).reshape(-1, *shape).to(device=z.device, dtype=z.dtype)
        gv = prod.gram(rows, tang).reshape(-1, d).to(torch.float64).cpu()
        blocks += 1
        still = []
        offset = 0
        for s, w in zip(active, widths):
            g_new = gv[offset : offset + w].T
            offset += w
            g_bases[s] = g_new if g_bases[s] is None else torch.cat([g_bases[s], g_new], 1)
            dim = bases[s].shape[1]
            complete = dim >= d
            if dim > k or complete:
                lv[s], err[s] = _ritz_bound(bases[s], g_bases[s], k, complete)
            if complete:
                continue
            if stop_at is not None:
                if blocks >= stop_at:
                    continue
            elif dim > k and blocks >= max(need, MATRIX_FREE_MIN_ITERS + 1) and (
                float(err[s]) <= MATRIX_FREE_TOL * max(1.0, abs(float(lv[s])))
            ):
                continue
            elif blocks > MATRIX_FREE_MAX_ITERS:
                continue
            width = min(b, d - dim)
            nxt = _orthonormalize(bases[s], g_new[:, :width] if width < g_new.shape[1] else g_new)
            bases[s] = torch.cat([bases[s], nxt[:, :width]], 1)
            still.append(s)
        active = still
    return lv, err


def _slq_logdet(
    prod: _Products, n: int, d: int, probes: int, steps: int, seed: int, ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * log det(J^T J) per sample by SLQ with Rademacher probes: (estimate (N,), standard
    error over probes (N,)), float64. Costs probes x min(steps, d) JVP + VJP pairs per sample."""
    z = prod.z
    shape = prod.latent_shape
    v = torch.stack([_slq.rademacher((probes, d), generator=_generator(seed, i, _GEOMETRY_STREAM_SLQ)) for i in ids])
    rows = torch.arange(n, device=z.device).repeat_interleave(probes)

    def matvec(x: torch.Tensor) -> torch.Tensor:
        tang = x.reshape(n * probes, *shape).to(device=z.device, dtype=z.dtype)
        return prod.gram(rows, tang).reshape(n * probes, d).to(torch.float64).cpu()

    forms = _slq.slq_log_quadratic_forms(matvec, v.reshape(n * probes, d), min(int(steps), d))
    half = 0.5 * forms.reshape(n, probes)
    est = half.mean(1)
    if probes > 1:
        se = half.std(1, correction=1) / math.sqrt(probes)
    else:
        se = torch.full((n,), float("nan"), dtype=torch.float64)
    return est, se


# ----------------------------------------------------------------------------- public API


def jacobian(decode: Decode, z: torch.Tensor, *, chunk_size: int | None = None, engine: str = "auto") -> torch.Tensor:
    """Exact decoder Jacobian of every sample.

    Args:
        decode: callable from a latent batch (B, C, h, w) to an image batch (B, *image).
        z: latents (N, C, h, w).
        chunk_size: (sample, coordinate) pairs per batched JVP call (default: see
            :func:`decoder_geometry`).
        engine: how the JVPs are taken (:data:`ENGINES`).

    Returns:
        (N, P, d) tensor with P = prod(image), d = C*h*w, in z's dtype and device; column j
        is dD/dz_j with coordinates in C-order of (C, h, w).
    """
    z = _check_latents(z)
    image_shape = _probe_decoder(decode, z)
    chunk = _check_chunk(chunk_size, math.prod(image_shape))
    prod = _Products(decode, z, chunk, image_shape, _check_engine(engine))
    d = math.prod(z.shape[1:])
    return _jacobian_block(prod, z.shape[0], d)


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
    """Shared driver: log-volume when k is given, influence when ``influence`` is given."""
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
    lv_method = None
    b = 1
    if k is not None:
        lv_method = resolve_log_volume_method(
            log_volume_method, d=d, p=p, k=k, log_volume=kind, oversample=oversample, iters=n_iters,
            influence_method=infl_method, slq_probes=slq_probes, slq_steps=slq_steps,
        )
        b = _block_size(k, d, oversample)

    need_jac = lv_method == "exact"
    lv = torch.empty(n, dtype=torch.float64) if k is not None else None
    lv_err = torch.zeros(n, dtype=torch.float64) if k is not None else None
    diag = torch.empty(n, d, dtype=torch.float64) if infl_method is not None else None
    block = _exact_block_size(n, p, d) if need_jac else max(1, chunk)
    used_engine = None
    per_sample = _products_per_sample(lv_method, infl_method, d=d, k=k, kind=kind, probes=probes,
                                      oversample=oversample, iters=n_iters, slq_probes=slq_probes, slq_steps=slq_steps)
    for start in range(0, n, block):
        stop = min(n, start + block)
        prod = _Products(decode, z[start:stop], chunk, image_shape, engine)
        used_engine = prod.engine
        nb = stop - start
        if progress is not None:
            prod.on_chunk = _block_progress(progress, start=start, samples=nb, products=per_sample * nb)
        jac = _jacobian_block(prod, nb, d).to(torch.float64).cpu() if need_jac else None
        if lv_method == "exact":
            sv = _singular_values(jac, "logdet" if kind == "logdet" or k >= d else "topk", k)
            lv[start:stop] = _topk_log_sum(sv, d if kind == "logdet" else k)
        elif lv_method == "matrix_free":
            lv[start:stop], lv_err[start:stop] = _krylov_top_eigenvalues(prod, nb, d, k, b, n_iters, seed, ids[start:stop])
        elif lv_method == "slq":
            lv[start:stop], lv_err[start:stop] = _slq_logdet(prod, nb, d, slq_probes, slq_steps, seed, ids[start:stop])
        if infl_method == "exact":
            diag[start:stop] = jac.square().sum(1) if jac is not None else _exact_diag(prod, nb, d)
        elif infl_method == "hutchinson":
            diag[start:stop] = _hutchinson_diag(prod, nb, image_shape, probes, seed, ids[start:stop]).cpu()
        if counts is not None:
            for key, value in prod.counts.items():
                counts[key] = counts.get(key, 0) + value
        if progress is not None:
            progress(stop)
    lv_out = None if lv is None else lv.to(z.dtype)
    infl_out = None if diag is None else (0.5 * torch.log(diag + INFLUENCE_EPS)).reshape(tuple(z.shape)).to(z.dtype)
    return Geometry(log_volume=lv_out, influence=infl_out, log_volume_method=lv_method, influence_method=infl_method,
                    log_volume_kind=kind, log_volume_error=lv_err, engine=used_engine)


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
            layer-by-layer JVPs / VJPs of :mod:`ldminv_core.tangents` for a
            :class:`~ldminv_core.tangents.VaeDecoder` it knows (checked against torch.func at
            the first latent), torch.func otherwise; ``Geometry.engine`` says which ran.

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


from .geometry_plan import GeometryPlan, plan_geometry  # noqa: E402  (the cost model builds on this module)
