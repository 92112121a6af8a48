"""The noise-residual attacks: per-coordinate terms |eps_target - eps_hat(z_t, t)|^p.

- ``sima``: term(t) = |eps_hat(z0, t)|^p (the clean latent fed at every timestep);
- ``pia``:  e0 = eps_hat(z0, 0); z_t = sqrt(a_t) z0 + sqrt(1 - a_t) e0;
  term(t) = |e0 - eps_hat(z_t, t)|^p;
- ``loss``: e ~ N(0, I) per (sample, t), seeded (noise stream :data:`LOSS_STREAM`);
  term(t) = |e - eps_hat(z_t, t)|^p.

sqrt(a_t), sqrt(1 - a_t) stand for the model's forward-process coefficients a(t), b(t)
(``pred._a``, ``pred._b``; rectified flow: 1 - t/T, t/T; METHOD.md section 5).

Each kernel takes one batch (see :mod:`ldminv_core.attacks.common`) and returns the terms
(B, T, C, h, w) float32 on the device.
"""
from __future__ import annotations

import torch

from ..models.noise_prediction import NoisePrediction
from .common import power

__all__ = ["LOSS_STREAM", "sima_batch", "pia_batch", "loss_batch"]

#: Seed stream of the ``loss`` attack's noise.
LOSS_STREAM = 1


def _empty_terms(z: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    return torch.empty((z.shape[0], len(timesteps), *z.shape[1:]), dtype=torch.float32, device=z.device)


def sima_batch(pred: NoisePrediction, z: torch.Tensor, cond: torch.Tensor | None, timesteps: list[int], p: float,
               noise: torch.Tensor | None) -> torch.Tensor:
    """SimA terms (B, T, C, h, w): |eps_hat(z0, t)|^p."""
    terms = _empty_terms(z, timesteps)
    for k, t in enumerate(timesteps):
        terms[:, k] = power(pred._eps(z, t, cond), p)
    return terms


def pia_batch(pred: NoisePrediction, z: torch.Tensor, cond: torch.Tensor | None, timesteps: list[int], p: float,
              noise: torch.Tensor | None) -> torch.Tensor:
    """PIA terms (B, T, C, h, w): |e0 - eps_hat(z_t, t)|^p with z_t noised by e0 = eps_hat(z0, 0)."""
    terms = _empty_terms(z, timesteps)
    e0 = pred._eps(z, 0, cond)
    for k, t in enumerate(timesteps):
        z_t = torch.add(z * pred._a[t], e0, alpha=pred._b[t])
        terms[:, k] = power(torch.sub(e0, pred._eps(z_t, t, cond)), p)
    return terms


def loss_batch(pred: NoisePrediction, z: torch.Tensor, cond: torch.Tensor | None, timesteps: list[int], p: float,
               noise: torch.Tensor | None) -> torch.Tensor:
    """Loss terms (B, T, C, h, w): |e - eps_hat(z_t, t)|^p with the seeded noise e = noise[:, k]."""
    terms = _empty_terms(z, timesteps)
    for k, t in enumerate(timesteps):
        e = noise[:, k]
        z_t = torch.add(z * pred._a[t], e, alpha=pred._b[t])
        terms[:, k] = power(torch.sub(e, pred._eps(z_t, t, cond)), p)
    return terms
