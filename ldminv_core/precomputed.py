"""Moved to ldminv_core.geometry.precomputed; this module only re-exports it for one release."""
from __future__ import annotations

from .geometry.precomputed import (  # noqa: F401
    LATENT_ATOL,
    SETTING_KEYS,
    PrecomputedGeometry,
    load_precomputed,
    save_precomputed,
    vae_digest,
)

__all__ = ["PrecomputedGeometry", "load_precomputed", "save_precomputed", "vae_digest", "LATENT_ATOL"]
