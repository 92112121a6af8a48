"""Geometry of a decoder: how much it stretches latent space, per sample and per coordinate.

For a decoder ``D`` taking a latent batch ``z`` of shape (N, C, h, w) to images of shape
(N, *image), the Jacobian of one sample is ``J = dD/dz`` of shape (P, d) with
``P = prod(image)`` and ``d = C*h*w``; ``G = J^T J`` is the pullback metric. Computed from the
callable ``decode`` alone:

- :func:`log_volume`: ``sum_{i<=k} log sigma_i(J)`` (``kind="topk"``) or ``0.5 * log det G``
  (``kind="logdet"``), shape (N,); :func:`dim_influence`: ``0.5 * log(diag(G) + 1e-12)``, shape
  (N, C, h, w); :func:`decoder_geometry`: both, sharing one Jacobian on the exact path
  (:mod:`.api`);
- :func:`plan_geometry`: which path "auto" takes, its decoder products and measured cost
  (:mod:`.plan`);
- :func:`influence_map` / :func:`influence_heatmap`: per-position maps for display (:mod:`.maps`).

Paths. *Exact*: J built column by column with forward-mode JVPs; log-volume from its float64
singular values, influence from its column norms (:mod:`.products`). *Matrix-free* (top-k):
block Krylov on G with an a-posteriori residual bound; *SLQ* (log-det): stochastic Lanczos
quadrature with Rademacher probes (:mod:`.krylov`, :mod:`.slq`). *Hutchinson* (influence):
G_ii ~ mean over Gaussian probes v of (J^T v)_i^2. Products are batched over up to
``chunk_size`` directions of a sample per decoder call, through the layer-by-layer engine of
:mod:`.tangents` for a diffusers AutoencoderKL decoder passed as :func:`vae_decoder` (``vae``),
else ``torch.func`` (a plain callable: with a warning naming that change). Random draws are
seeded per sample id, so a batch split never changes a result. :mod:`.precomputed` stores a
computed geometry for reuse (the demo's).

Modules: :mod:`.constants` (settings and tolerances), :mod:`.checks` (argument checks),
:mod:`.paths` (which path an option means, products per path), :mod:`.products`,
:mod:`.krylov`, :mod:`.api`, :mod:`.plan`, :mod:`.maps`, :mod:`.tangents`, :mod:`.slq`,
:mod:`.precomputed`. This package re-exports the names of the former ``geometry`` module.
"""
from __future__ import annotations

from . import slq as _slq  # noqa: F401
from . import tangents as _tangents  # noqa: F401
from .api import (  # noqa: F401
    Geometry,
    _block_progress,
    _empty_outputs,
    _geometry,
    _products_per_sample,
    _result,
    _run_block,
    _setup,
    decoder_geometry,
    dim_influence,
    jacobian,
    log_volume,
)
from .checks import (  # noqa: F401
    _auto_chunk,
    _check_chunk,
    _check_count,
    _check_engine,
    _check_iters,
    _check_k,
    _check_kind,
    _check_latents,
    _generator,
    _probe_decoder,
    _sample_ids,
)
from .constants import (  # noqa: F401
    _GEOMETRY_STREAM_PROBES,
    _GEOMETRY_STREAM_SLQ,
    _GEOMETRY_STREAM_SUBSPACE,
    _INFLUENCE_METHODS,
    _LOG_VOLUME_METHODS,
    AUTO_EXACT_MAX_DIM,
    ENGINES,
    EXACT_MAX_JACOBIAN_BYTES,
    HUTCHINSON_RANK_PROBES,
    INFLUENCE_EPS,
    LOG_VOLUME_KINDS,
    MATRIX_FREE_MAX_ITERS,
    MATRIX_FREE_MIN_ITERS,
    MATRIX_FREE_TOL,
    MATRIX_FREE_TYPICAL_ITERS,
    SLQ_PROBES,
    SLQ_RTOL,
    SLQ_STEPS,
    Decode,
)
from .krylov import _krylov_top_eigenvalues, _orthonormalize, _ritz_bound, _slq_logdet  # noqa: F401
from .maps import _REDUCTIONS, _as_tensor, influence_heatmap, influence_map  # noqa: F401
from .paths import (  # noqa: F401
    _block_size,
    _krylov_blocks,
    log_volume_products,
    resolve_influence_method,
    resolve_log_volume_method,
)
from .plan import GeometryPlan, plan_geometry  # noqa: F401
from .tangents import VaeDecoder, vae_decoder  # noqa: F401
from .products import (  # noqa: F401
    _basis_pairs,
    _exact_block_size,
    _exact_diag,
    _hutchinson_diag,
    _jacobian_block,
    _Products,
    _singular_values,
    _topk_log_sum,
)

__all__ = [
    "Geometry",
    "GeometryPlan",
    "log_volume",
    "dim_influence",
    "decoder_geometry",
    "plan_geometry",
    "vae_decoder",
    "VaeDecoder",
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
