"""Moved to ldminv_core.models.latents; this module only re-exports it for one release."""
from __future__ import annotations

from .models.latents import LATENT_KINDS, LATENT_STREAM, encode_latents, posterior_noise

__all__ = ["LATENT_KINDS", "LATENT_STREAM", "encode_latents", "posterior_noise"]
