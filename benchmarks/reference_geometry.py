"""A straightforward implementation of the paper's released geometry algorithm, for comparison.

Per sample, one at a time:

1. the full decoder Jacobian J (P x d) with ``torch.autograd.functional.jacobian``
   (default settings: one reverse-mode pass per output pixel);
2. the top-k singular values of J by ``iters`` rounds of power iteration on J^T J, the
   block of k vectors re-orthonormalised by a QR decomposition after every product, then
   sigma_i = sqrt of the Rayleigh quotient q_i^T (J^T J) q_i;
   log-volume = sum_i log sigma_i;
3. diag(J^T J) by Hutchinson's estimator, one vector-Jacobian product per probe
   (``probes`` Gaussian probes v ~ N(0, I_P), G_ii ~ mean (J^T v)_i^2), in a loop;
   influence = 0.5 * log(G_ii + 1e-12).

This is the baseline the benchmarks time ldminv_core.geometry against; :func:`exact_geometry`
gives the exact values (float64 SVD and column norms of the Jacobian) both are scored on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ["ReferenceGeometry", "reference_geometry", "exact_geometry", "INFLUENCE_EPS"]

#: Added to diag(J^T J) before the log, as in ldminv_core.geometry.
INFLUENCE_EPS = 1e-12


@dataclass(frozen=True)
class ReferenceGeometry:
    """Output of :func:`reference_geometry` for N latents.

    Attributes:
        log_volume: (N,) float64, sum of log of the power-iteration singular values.
        influence: (N, C, h, w) float64, 0.5 * log(Hutchinson diag(J^T J) + 1e-12).
        jacobians: (N, P, d) float32 autograd Jacobians when kept, else None.
    """

    log_volume: torch.Tensor
    influence: torch.Tensor
    jacobians: torch.Tensor | None


def _power_iteration_log_volume(jac: torch.Tensor, k: int, iters: int, gen: torch.Generator) -> torch.Tensor:
    """Sum of log of the top-k singular values of ``jac`` (P, d) by block power iteration."""
    d = jac.shape[1]
    k = min(k, d)
    gram = jac.T @ jac  # (d, d), J^T J
    q = torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=jac.dtype)).Q
    for _ in range(iters):
        q = torch.linalg.qr(gram @ q).Q
    rayleigh = (q * (gram @ q)).sum(0)  # q_i^T G q_i = sigma_i^2
    return 0.5 * torch.log(rayleigh.double().clamp_min(torch.finfo(torch.float64).tiny)).sum()


def _hutchinson_influence(
    decode_one: Callable[[torch.Tensor], torch.Tensor], z1: torch.Tensor, probes: int, gen: torch.Generator
) -> torch.Tensor:
    """0.5 * log(Hutchinson diag(J^T J) + eps) of one latent (C, h, w), one VJP per probe."""
    x = z1.detach().clone().requires_grad_(True)
    out = decode_one(x)
    acc = torch.zeros_like(x, dtype=torch.float64)
    for _ in range(probes):
        v = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        (jtv,) = torch.autograd.grad(out, x, v, retain_graph=True)
        acc += jtv.double().square()
    return 0.5 * torch.log(acc / probes + INFLUENCE_EPS)


def reference_geometry(
    decode: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    *,
    k: int = 50,
    iters: int = 30,
    probes: int = 16,
    seed: int = 0,
    keep_jacobians: bool = False,
) -> ReferenceGeometry:
    """Log-volume and influence of each latent by the reference algorithm (module docstring).

    Args:
        decode: callable from latents (B, C, h, w) to images (B, *image).
        z: latents (N, C, h, w) float32.
        k: number of singular values (capped at d).
        iters: power-iteration rounds.
        probes: Hutchinson probes per sample.
        seed: seed of the start blocks and probes (one CPU generator for the whole call).
        keep_jacobians: also return the (N, P, d) Jacobians (for the exact values).

    Returns:
        :class:`ReferenceGeometry` (log_volume (N,), influence (N, C, h, w), float64).
    """
    if z.ndim != 4:
        raise ValueError(f"z: expected latents of shape (N, C, h, w), got shape {tuple(z.shape)}")
    gen = torch.Generator().manual_seed(seed)

    def decode_one(x: torch.Tensor) -> torch.Tensor:
        return decode(x.unsqueeze(0)).squeeze(0)

    lvs, infl, jacs = [], [], []
    with sdpa_kernel(SDPBackend.MATH):
        for i in range(z.shape[0]):
            jac = torch.autograd.functional.jacobian(decode_one, z[i])  # (*image, C, h, w)
            jac = jac.reshape(-1, z[i].numel())
            lvs.append(_power_iteration_log_volume(jac, k, iters, gen))
            infl.append(_hutchinson_influence(decode_one, z[i], probes, gen))
            if keep_jacobians:
                jacs.append(jac)
    return ReferenceGeometry(
        log_volume=torch.stack(lvs),
        influence=torch.stack(infl),
        jacobians=torch.stack(jacs) if keep_jacobians else None,
    )


def exact_geometry(jacobians: torch.Tensor, latent_shape: tuple[int, ...], *, k: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact log-volume (N,) and influence (N, *latent_shape), float64, from Jacobians (N, P, d).

    log-volume = sum of log of the top-k singular values (float64 SVD); influence =
    0.5 * log(squared column norm + 1e-12).
    """
    jac = jacobians.to(torch.float64)
    sv = torch.linalg.svdvals(jac)[:, : min(k, jac.shape[-1])]
    lv = sv.clamp_min(torch.finfo(torch.float64).tiny).log().sum(1)
    infl = 0.5 * torch.log(jac.square().sum(1) + INFLUENCE_EPS)
    return lv, infl.reshape(jac.shape[0], *latent_shape)
