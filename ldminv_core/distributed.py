"""Moved to ldminv_core.pipeline.distributed; this module only re-exports it for one release."""
from __future__ import annotations

from .pipeline.distributed import (  # noqa: F401
    DIST_TIMEOUT_S,
    RANKS_DIR,
    DistContext,
    RankLedger,
    _env_int,
    _peak_rss_mb,
    _RANK_FILE,
)

__all__ = ["DistContext", "RankLedger", "RANKS_DIR", "DIST_TIMEOUT_S"]
