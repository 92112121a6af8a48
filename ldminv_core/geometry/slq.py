"""Stochastic Lanczos quadrature (SLQ): tr f(A) of a symmetric PSD operator known only by A v.

For a probe v, ``m`` Lanczos steps started at v / |v| give a tridiagonal T (m x m) with
eigenpairs (theta_j, y_j); Gauss quadrature then gives
``v^T f(A) v ~= |v|^2 * sum_j y_j[0]^2 f(theta_j)`` (exact for polynomials of degree < 2m), and
the mean of that over random probes with E[v v^T] = I is an unbiased estimate of tr f(A) up
to the quadrature error. Here f = log, so tr log A = log det A.

Everything is batched over B independent (operator, probe) pairs: ``matvec`` maps a (B, d)
float64 block to (B, d), row b by operator b. The recurrences run in float64 with full
reorthogonalisation against every earlier Lanczos vector (classical Gram-Schmidt, twice),
which costs O(B m^2 d) flops and B m d floats of memory, nothing next to the m operator
products at the sizes this project uses (m = 30). A row whose Krylov space is exhausted
(breakdown, e.g. m >= d) stops contributing: its later Lanczos vectors are zero, so the
trailing block of T is decoupled and carries zero quadrature weight.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["lanczos", "quadrature_log", "slq_log_quadratic_forms", "rademacher"]

MatVec = Callable[[torch.Tensor], torch.Tensor]

#: A Lanczos step whose new residual norm is below this fraction of the largest residual norm
#: seen so far in its row counts as a breakdown (the Krylov space is invariant).
BREAKDOWN_RTOL = 1e-10
#: Ritz values below this fraction of the row's largest Ritz value are clamped to it before the
#: log: the operator products run in float32, so smaller eigenvalues are rounding noise.
RITZ_FLOOR_RTOL = 1e-14


def rademacher(shape: tuple[int, ...], *, generator: torch.Generator) -> torch.Tensor:
    """Random signs (+1 / -1 with probability 1/2 each), float64, of ``shape``."""
    bits = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64)
    return (2 * bits - 1).to(torch.float64)


def lanczos(matvec: MatVec, v0: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``steps`` Lanczos steps with full reorthogonalisation, batched over rows.

    Args:
        matvec: (B, d) float64 -> (B, d) float64, row b multiplied by symmetric operator b.
        v0: (B, d) start vectors (any nonzero norm).
        steps: number of steps m (>= 1); each step costs one ``matvec`` call.

    Returns:
        (alpha (B, m), beta (B, m - 1), basis (B, m, d)): T = tridiag(beta, alpha, beta) and
        the orthonormal Lanczos vectors (rows after a breakdown are zero, with beta = 0).
    """
    v0 = v0.to(torch.float64)
    b, d = v0.shape
    basis = torch.zeros(b, steps, d, dtype=torch.float64, device=v0.device)
    alpha = torch.zeros(b, steps, dtype=torch.float64, device=v0.device)
    beta = torch.zeros(b, max(0, steps - 1), dtype=torch.float64, device=v0.device)
    q = v0 / v0.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    scale = torch.zeros(b, dtype=torch.float64, device=v0.device)
    alive = torch.ones(b, dtype=torch.bool, device=v0.device)
    for j in range(steps):
        basis[:, j] = q
        w = matvec(q).to(torch.float64)
        alpha[:, j] = (q * w).sum(1)
        if j == steps - 1:
            break
        prev = basis[:, : j + 1]  # (B, j+1, d)
        for _ in range(2):  # classical Gram-Schmidt, twice is enough
            w = w - torch.einsum("bj,bjd->bd", torch.einsum("bjd,bd->bj", prev, w), prev)
        norm = w.norm(dim=1)
        scale = torch.maximum(scale, torch.maximum(norm, alpha[:, j].abs()))
        alive = alive & (norm > BREAKDOWN_RTOL * scale)
        beta[:, j] = torch.where(alive, norm, torch.zeros_like(norm))
        q = torch.where(alive[:, None], w / norm.clamp_min(torch.finfo(torch.float64).tiny)[:, None],
                        torch.zeros_like(w))
    return alpha, beta, basis


def _tridiagonal(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    t = torch.diag_embed(alpha)
    if beta.shape[-1]:
        t = t + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    return t


def quadrature_log(alpha: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gauss quadrature of log from Lanczos coefficients.

    Args:
        alpha: (B, m), beta: (B, m - 1) as returned by :func:`lanczos`.

    Returns:
        (e1^T log(T) e1 (B,), Ritz values theta (B, m) ascending, Ritz vectors y (B, m, m)).
    """
    theta, y = torch.linalg.eigh(_tridiagonal(alpha, beta))
    top = theta.amax(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    logs = theta.clamp_min(0.0).maximum(RITZ_FLOOR_RTOL * top).log()
    weights = y[:, 0, :].square()
    return (weights * logs).sum(1), theta, y


def slq_log_quadratic_forms(matvec: MatVec, probes: torch.Tensor, steps: int) -> torch.Tensor:
    """``v^T log(A) v`` estimated by ``steps``-point Gauss quadrature for each probe row v.

    Args:
        matvec: (B, d) float64 -> (B, d) float64 (operator b on row b).
        probes: (B, d) probe vectors; E[v v^T] = I makes the mean an unbiased tr log A.
        steps: Lanczos steps (operator products) per probe.

    Returns:
        (B,) float64: |v|^2 * e1^T log(T_v) e1.
    """
    alpha, beta, _ = lanczos(matvec, probes, steps)
    quad, _, _ = quadrature_log(alpha, beta)
    return probes.to(torch.float64).square().sum(1) * quad
