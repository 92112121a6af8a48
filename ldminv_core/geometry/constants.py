"""The decoder geometry's shared constants: default settings, stated tolerances, path names.

Kept in one small module that every other module of :mod:`ldminv_core.geometry` imports (the
cost model in :mod:`.plan` and the driver in :mod:`.api` alike), so that none of them imports
another only for a number.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..choices import HUTCHINSON_RANK_PROBES as _HUTCHINSON_RANK_PROBES

__all__ = [
    "Decode",
    "AUTO_EXACT_MAX_DIM",
    "EXACT_MAX_JACOBIAN_BYTES",
    "INFLUENCE_EPS",
    "LOG_VOLUME_KINDS",
    "MATRIX_FREE_TOL",
    "MATRIX_FREE_MIN_ITERS",
    "MATRIX_FREE_MAX_ITERS",
    "MATRIX_FREE_TYPICAL_ITERS",
    "SLQ_PROBES",
    "SLQ_STEPS",
    "SLQ_RTOL",
    "HUTCHINSON_RANK_PROBES",
    "ENGINES",
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

#: How decoder products are taken: "layerwise" (:mod:`ldminv_core.geometry.tangents`, diffusers'
#: AutoencoderKL decoder), "torch.func" (vmap of jvp / vjp, any callable), "auto" (layerwise
#: when the decoder has it and it agrees with torch.func at the first latent).
ENGINES = ("auto", "layerwise", "torch.func")
