"""Moved to ldminv_core.geometry.plan; this module only re-exports it for one release."""
from __future__ import annotations

from .geometry.plan import CHOICE_MARGIN, GeometryPlan, plan_geometry, probes_reason  # noqa: F401

__all__ = ["GeometryPlan", "plan_geometry", "probes_reason"]
