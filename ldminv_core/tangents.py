"""Moved to ldminv_core.geometry.tangents; this module only re-exports it for one release."""
from __future__ import annotations

from .geometry.tangents import (  # noqa: F401
    VERIFY_RTOL,
    DecoderLinearization,
    TangentEngine,
    VaeDecoder,
    engine_for,
    unsupported_reason,
    verify,
)

__all__ = ["VaeDecoder", "TangentEngine", "DecoderLinearization", "unsupported_reason", "verify", "engine_for",
           "VERIFY_RTOL"]
