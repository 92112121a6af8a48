"""Membership-inference attacks on latent diffusion models.

Every attack works on clean latents ``z0`` (the scaled encoder means) and a noise predictor
``eps_hat(z_t, t [, text])`` (:class:`~ldminv_core.models.noise_prediction.NoisePredictor`):

- ``sima``, ``pia``, ``loss``: noise residuals (:mod:`.residual`);
- ``secmi``: deterministic DDIM inversion and one step back (:mod:`.secmi`);
- ``pfami``: one score per sample, the loss increase to centre-crop neighbours (:mod:`.pfami`);
- ``clid``: text-conditioned models only, the denoising error under the image's caption minus
  that under degraded captions, averaged over a timestep window (:mod:`.clid`).

All but ``pfami`` are *maskable*: :func:`attack_terms` (:mod:`.terms`) returns the per-coordinate
terms (N, T, C, h, w) whose (masked) sum over coordinates is the attack statistic; the
membership score is minus that statistic. :func:`pfami_scores` returns (N,) scores. The table
of attacks is :mod:`.registry`; shared checks, seeded noise and batching are :mod:`.common`;
timestep grids are :mod:`.timesteps`.
"""
from __future__ import annotations

from ..models.noise_prediction import PREDICTION_TYPES, NoisePrediction, NoisePredictor
from .clid import (
    CLID_DEGRADATIONS,
    CLID_UNET_CALLS,
    CLID_WINDOW,
    check_clid_model,
    degraded_captions,
    refuse_clid_model,
)
from .common import ProgressCallback
from .pfami import PFAMI_STRENGTHS, PFAMI_TIMESTEPS, pfami_neighbour, pfami_scores
from .registry import (
    ATTACKS,
    DEFAULT_P,
    MASKABLE_ATTACKS,
    NOISE_STREAMS,
    REGISTRY,
    TEXT_ONLY_ATTACKS,
    AttackSpec,
    evaluated_timesteps,
    stored_timesteps,
)
from .secmi import secmi_grid as _secmi_grid  # noqa: F401 - read by the analysis as attacks._secmi_grid
from .terms import attack_terms
from .timesteps import DEFAULT_TIMESTEPS, parse_timesteps

__all__ = [
    "ATTACKS",
    "MASKABLE_ATTACKS",
    "TEXT_ONLY_ATTACKS",
    "CLID_WINDOW",
    "CLID_DEGRADATIONS",
    "CLID_UNET_CALLS",
    "DEFAULT_P",
    "DEFAULT_TIMESTEPS",
    "PFAMI_TIMESTEPS",
    "PFAMI_STRENGTHS",
    "NOISE_STREAMS",
    "PREDICTION_TYPES",
    "REGISTRY",
    "AttackSpec",
    "NoisePrediction",
    "NoisePredictor",
    "ProgressCallback",
    "attack_terms",
    "pfami_scores",
    "pfami_neighbour",
    "parse_timesteps",
    "degraded_captions",
    "check_clid_model",
    "refuse_clid_model",
    "evaluated_timesteps",
    "stored_timesteps",
]
