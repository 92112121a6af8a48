"""SecMI: deterministic inversion over the timestep grid, then one step back, with the model
family's own ODE step (``NoisePrediction._step``: DDIM for the DDPM family, Euler on the
velocity for rectified flow); term(t_j) = |denoised(t_j) - inverted(t_j)|^p (p = 2 by default).

The grid is extended by one interval past its last timestep (:func:`secmi_grid`), so the
largest timestep must leave room for it.
"""
from __future__ import annotations

import torch

from ..errors import LdminvError
from ..models.noise_prediction import NoisePrediction
from .common import power

__all__ = ["secmi_grid", "secmi_batch"]


def secmi_grid(timesteps: list[int], num_train_timesteps: int) -> list[int]:
    """timesteps extended by one step: t_T = t_{T-1} + (t_{T-1} - t_{T-2}) (T == 1: t_0 + max(t_0, 1))."""
    if len(timesteps) >= 2:
        t_next = timesteps[-1] + (timesteps[-1] - timesteps[-2])
    else:
        t_next = timesteps[0] + max(timesteps[0], 1)
    if t_next >= num_train_timesteps:
        raise LdminvError(
            f"timesteps: secmi steps one grid interval past the last timestep, to {t_next}, "
            f"which must be < num_train_timesteps = {num_train_timesteps}; got timesteps ending "
            f"at {timesteps[-1]}"
        )
    return [*timesteps, t_next]


def secmi_batch(pred: NoisePrediction, z: torch.Tensor, cond: torch.Tensor | None, timesteps: list[int], p: float,
                noise: torch.Tensor | None) -> torch.Tensor:
    """SecMI terms (B, T, C, h, w) of one batch."""
    b = z.shape[0]
    grid = secmi_grid(timesteps, pred.num_train_timesteps)
    terms = torch.empty((b, len(timesteps), *z.shape[1:]), dtype=torch.float32, device=z.device)
    x_cur = z
    if grid[0] != 0:  # z0 is taken as the sample at timestep 0
        x_cur = pred._step(z, pred._eps(z, 0, cond), 0, grid[0])
    eps_cur = pred._eps(x_cur, grid[0], cond)
    for j in range(len(timesteps)):
        # eps_hat(inv(t_{j+1}), t_{j+1}) both continues the inversion and denoises back to t_j.
        x_next = pred._step(x_cur, eps_cur, grid[j], grid[j + 1])
        eps_next = pred._eps(x_next, grid[j + 1], cond)
        denoised = pred._step(x_next, eps_next, grid[j + 1], grid[j])
        terms[:, j] = power(denoised.sub_(x_cur), p)
        x_cur, eps_cur = x_next, eps_next
    return terms
