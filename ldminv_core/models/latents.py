"""Which latent of an image an analysis uses: the encoder mean or a seeded posterior sample.

The VAE encoder gives a diagonal Gaussian posterior q(z | x) = N(mean, std^2). METHOD.md
defines the analysed latent as the scaled *mean* (the paper's small-LDM code does the same);
the paper's Stable Diffusion code encodes with ``latent_dist.sample()``, a draw from that
posterior. :func:`encode_latents` offers both:

- ``latent="mean"``:   ``(mean - shift_factor) * scaling_factor``;
- ``latent="sample"``: ``(mean + std * e - shift_factor) * scaling_factor`` with the standard
  normal draw ``e`` of sample id ``s`` taken from a CPU ``torch.Generator`` seeded by
  ``(seed, s, LATENT_STREAM)``, so a sample's latent never depends on the batch it is in, on
  the device, or on how the samples are split across processes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .._validation import check_choice, check_int
from ..choices import LATENT_KINDS
from ..errors import ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from .loading import LoadedModel

__all__ = ["LATENT_KINDS", "LATENT_STREAM", "encode_latents", "posterior_noise"]

#: Stream constant keying the posterior noise (distinct from the attacks' and geometry's).
LATENT_STREAM = 21


def posterior_noise(shape: Sequence[int], *, seed: int, sample_ids: Sequence[int]) -> torch.Tensor:
    """Standard normal noise of each sample id, float32 on CPU.

    Args:
        shape: (C, h, w) of one latent.
        seed: the analysis seed (>= 0).
        sample_ids: (N,) sample ids; row i depends only on (seed, sample_ids[i]).

    Returns:
        (N, C, h, w) float32 tensor.
    """
    shape = tuple(int(s) for s in shape)
    rows = []
    for sid in sample_ids:
        state = np.random.SeedSequence([int(seed), int(sid), LATENT_STREAM]).generate_state(1)[0]
        gen = torch.Generator("cpu").manual_seed(int(state))
        rows.append(torch.randn(shape, generator=gen, dtype=torch.float32))
    if not rows:
        return torch.empty((0, *shape), dtype=torch.float32)
    return torch.stack(rows)


def encode_latents(
    model: "LoadedModel", images: torch.Tensor, *, latent: str = "mean", seed: int = 0, sample_ids: Sequence[int] | None = None
) -> torch.Tensor:
    """Scaled latents of ``images`` under ``model``'s VAE.

    Args:
        model: a :class:`ldminv_core.models.loading.LoadedModel`.
        images: (N, C, H, W) in [-1, 1] with the model's image channels and resolution.
        latent: "mean" (the encoder mean) or "sample" (one posterior sample per image, seeded
            per sample id).
        seed: seed of the posterior noise (only used by "sample").
        sample_ids: (N,) ids keying each image's noise; default 0..N-1.

    Returns:
        (N, *latent_shape) tensor on ``model.device`` in ``model.dtype``.

    Raises:
        UnknownNameError: ``latent`` is not one of :data:`LATENT_KINDS`.
        ShapeError: ``images`` or ``sample_ids`` have the wrong shape.
    """
    check_choice(latent, "latent", LATENT_KINDS)
    if latent == "mean":
        return model.encode(images)
    seed = check_int(seed, "seed", minimum=0)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != model.image_shape:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ShapeError(f"images: expected a tensor (N, {', '.join(map(str, model.image_shape))}), got {got}")
    n = images.shape[0]
    ids = list(range(n)) if sample_ids is None else [int(i) for i in sample_ids]
    if len(ids) != n:
        raise ShapeError(f"sample_ids: expected {n} ids (one per image), got {len(ids)}")
    x = images.to(device=model.device, dtype=model.dtype)
    with torch.no_grad():
        dist = model.vae.encode(x).latent_dist
        e = posterior_noise(model.latent_shape, seed=seed, sample_ids=ids).to(dist.mean.device, dist.mean.dtype)
        z = dist.mean + dist.std * e
    return (z - model.shift_factor) * model.scaling_factor
