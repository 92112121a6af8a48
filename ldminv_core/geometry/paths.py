"""Which path each geometry option means, and the decoder products a path takes per sample.

- :func:`resolve_influence_method`: "auto" -> "exact" | "hutchinson" by the latent size;
- :func:`resolve_log_volume_method`: "auto" -> "exact" | "matrix_free" | "slq" by the Jacobian's
  bytes, the influence path and the products each would take;
- :func:`log_volume_products`: JVPs and VJPs per sample of a resolved log-volume path (what the
  cost model in :mod:`.plan` and the progress of :mod:`.api` count).
"""
from __future__ import annotations

from typing import Literal

from .._validation import check_choice, check_int
from ..errors import UnknownNameError
from .checks import _check_iters, _check_kind
from .constants import (
    _INFLUENCE_METHODS,
    _LOG_VOLUME_METHODS,
    AUTO_EXACT_MAX_DIM,
    EXACT_MAX_JACOBIAN_BYTES,
    MATRIX_FREE_TYPICAL_ITERS,
    SLQ_PROBES,
    SLQ_STEPS,
)

__all__ = ["resolve_influence_method", "resolve_log_volume_method", "log_volume_products"]


def resolve_influence_method(method: str, d: int) -> Literal["exact", "hutchinson"]:
    """Return the influence path ``method`` means for ``d`` latent coordinates."""
    check_choice(method, "method", _INFLUENCE_METHODS)
    if method == "auto":
        return "exact" if d <= AUTO_EXACT_MAX_DIM else "hutchinson"
    return method  # type: ignore[return-value]


def _block_size(k: int, d: int, oversample: int | None) -> int:
    """Krylov block width: ``k + oversample`` when given, else max(8, ceil(k / 2)) (measured
    to need the fewest products for a 1e-3 bound at k = 10 and 50), at most d."""
    if oversample is None:
        b = max(8, -(-k // 2))
    else:
        b = k + check_int(oversample, "oversample", minimum=0)
    return max(1, min(d, b))



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
    check_choice(method, "method", _LOG_VOLUME_METHODS)
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

