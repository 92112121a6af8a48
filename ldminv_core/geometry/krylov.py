"""Matrix-free log-volumes on decoder products: block Krylov (top-k) and SLQ (log-det).

- :func:`_krylov_top_eigenvalues`: block Lanczos on G = J^T J with full reorthogonalisation,
  stopped per sample by the a-posteriori residual bound of its Rayleigh-Ritz values
  (:func:`_ritz_bound`), :data:`~ldminv_core.geometry.MATRIX_FREE_TOL`;
- :func:`_slq_logdet`: stochastic Lanczos quadrature of tr log G with Rademacher probes
  (:mod:`.slq`), with the standard error over probes.

Both take one JVP and one VJP per direction and step (``_Products.gram``) and seed their random
draws per sample id.
"""
from __future__ import annotations

import math

import torch

from . import slq as _slq
from .checks import _generator
from .constants import (
    _GEOMETRY_STREAM_SLQ,
    _GEOMETRY_STREAM_SUBSPACE,
    MATRIX_FREE_MAX_ITERS,
    MATRIX_FREE_MIN_ITERS,
    MATRIX_FREE_TOL,
)
from .products import _Products

__all__ = ["_krylov_top_eigenvalues", "_slq_logdet"]


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

