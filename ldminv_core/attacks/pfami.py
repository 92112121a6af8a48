"""PFAMI: one score per sample, the mean loss increase from the latent to its centre-crop
neighbours (higher = member).

loss(x) = mean over timesteps t of mean over coordinates of (e_t - eps_hat(x_t, t))^2, with
x_t = sqrt(a_t) x + sqrt(1 - a_t) e_t and each sample's seeded noise e_t (stream
:data:`PFAMI_STREAM`) shared by x and all its neighbours.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_int, check_real
from ..errors import EmptyInputError
from ..models.noise_prediction import NoisePrediction
from .common import (
    ProgressCallback,
    check_batch_size,
    check_captions,
    check_predictor,
    check_sample_ids,
    check_seed,
    check_z0,
    run_batches,
)
from .timesteps import check_timesteps

__all__ = ["PFAMI_TIMESTEPS", "PFAMI_STRENGTHS", "PFAMI_STREAM", "pfami_neighbour", "pfami_scores"]

PFAMI_TIMESTEPS: tuple[int, ...] = tuple(range(0, 500, 50))
"""PFAMI's timesteps: 0, 50, ..., 450."""

PFAMI_STRENGTHS: tuple[float, ...] = tuple(float(s) for s in np.linspace(0.95, 0.70, 10))
"""PFAMI's neighbour strengths (fraction of the latent kept by the centre crop)."""

#: Seed stream of PFAMI's noise.
PFAMI_STREAM = 2


def pfami_neighbour(z: torch.Tensor, strength: float) -> torch.Tensor:
    """PFAMI neighbour (N, C, h, w) of latents z (N, C, h, w) at a strength in (0, 1].

    Centre crop to (round(strength * h), round(strength * w)) (at least 1; offsets
    floor((h - ch) / 2), floor((w - cw) / 2)), resized back to (h, w) by bilinear
    interpolation (align_corners=False).
    """
    h, w = z.shape[-2:]
    ch = max(1, round(strength * h))
    cw = max(1, round(strength * w))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = z[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def pfami_batch(pred: NoisePrediction, z: torch.Tensor, cond: torch.Tensor | None, timesteps: list[int],
                strengths: list[float], noise: torch.Tensor, variants_per_call: int = 1) -> torch.Tensor:
    """PFAMI scores (B,) float64 on CPU for one batch; ``variants_per_call`` of the 1 + len(strengths)
    variants (the latent, then its neighbours) share each denoiser call."""
    b = z.shape[0]
    variants = torch.cat([z] + [pfami_neighbour(z, s) for s in strengths])  # (V * B, C, h, w)
    n_var = len(strengths) + 1
    losses = torch.empty((n_var, len(timesteps), b), dtype=torch.float32, device=z.device)
    for g0 in range(0, n_var, variants_per_call):
        g1 = min(n_var, g0 + variants_per_call)
        x = variants[g0 * b:g1 * b]
        c = None if cond is None else cond.repeat(g1 - g0, *([1] * (cond.ndim - 1)))
        for k, t in enumerate(timesteps):
            e = noise[:, k].repeat(g1 - g0, 1, 1, 1)
            x_t = torch.add(x * pred._a[t], e, alpha=pred._b[t])
            losses[g0:g1, k] = torch.sub(e, pred._eps(x_t, t, c)).square_().mean(dim=(1, 2, 3)).view(g1 - g0, b)
    loss = losses.cpu().double().mean(dim=1)  # (V, B): mean over timesteps
    return (loss[1:] - loss[0]).mean(dim=0)


def _check_strengths(strengths: Sequence[float]) -> list[float]:
    if isinstance(strengths, (torch.Tensor, np.ndarray)):
        strengths = strengths.tolist()
    strengths = list(strengths)
    if not strengths:
        raise EmptyInputError("strengths: expected at least one neighbour strength, got none")
    for i, s in enumerate(strengths):
        check_real(s, f"strengths[{i}]", low=0.0, low_open=True, high=1.0, what="a crop fraction in (0, 1]")
    return [float(s) for s in strengths]


def pfami_scores(
    predictor: NoisePrediction,
    z0: torch.Tensor,
    *,
    captions: Sequence[str | None] | None = None,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 32,
    timesteps: Sequence[int] = PFAMI_TIMESTEPS,
    strengths: Sequence[float] = PFAMI_STRENGTHS,
    progress: ProgressCallback | None = None,
    variants_per_call: int | None = 1,
) -> torch.Tensor:
    """PFAMI membership scores (N,) float32 CPU; higher = member.

    loss(x) = mean over timesteps t of mean over coordinates of (e_t - eps_hat(x_t, t))^2,
    x_t = sqrt(a_t) x + sqrt(1 - a_t) e_t, with each sample's seeded noise e_t (stream 2)
    shared by x and all its neighbours; score = mean over strengths s of
    loss(pfami_neighbour(x, s)) - loss(x). Costs (1 + len(strengths)) * len(timesteps)
    UNet forwards per batch of ``batch_size`` samples. ``variants_per_call`` of the 1 + len(strengths)
    variants of a batch share each forward (``variants_per_call * batch_size`` samples; None: all of
    them, so len(timesteps) forwards per batch): fewer, larger calls are faster on a CPU, at the cost
    of memory; the denoiser's float32 rounding depends on its batch, so scores differ in the last
    digits (about 1e-6 relative) between settings, and are reproducible for each. Other arguments
    as in :func:`ldminv_core.attacks.attack_terms`; z0 is (N, C, h, w).
    """
    check_predictor(predictor)
    z0 = check_z0(predictor, z0)
    n = z0.shape[0]
    ts = check_timesteps(timesteps, predictor.num_train_timesteps)
    strengths = _check_strengths(strengths)
    caps = check_captions(captions, n)
    ids = check_sample_ids(sample_ids, n)
    seed = check_seed(seed)
    batch_size = check_batch_size(batch_size)
    per_call = len(strengths) + 1 if variants_per_call is None else check_int(
        variants_per_call, "variants_per_call", minimum=1)

    out = torch.empty((n,), dtype=torch.float32)
    return run_batches(
        predictor,
        z0,
        out,
        pfami_batch,
        captions=caps,
        sample_ids=ids,
        seed=seed,
        stream=PFAMI_STREAM,
        noise_steps=len(ts),
        batch_size=batch_size,
        progress=progress,
        timesteps=ts,
        strengths=strengths,
        variants_per_call=per_call,
    )
