"""Moved to ldminv_core.geometry.slq; this module only re-exports it for one release."""
from __future__ import annotations

from .geometry.slq import lanczos, quadrature_log, rademacher, slq_log_quadratic_forms  # noqa: F401

__all__ = ["lanczos", "quadrature_log", "slq_log_quadratic_forms", "rademacher"]
