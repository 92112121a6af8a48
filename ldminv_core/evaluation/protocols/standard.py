"""The ``standard`` protocol: members positive, TPR at FPR <= 1%, one t for everything.

The t of every arm is the best baseline AUROC on the evaluation set itself (optimistic); the
per-sample drop is ``round(d * p / 100)`` lowest-influence coordinates
(:func:`ldminv_core.masks.drop_count`), as is the random control's count; quartiles are a stable
sort split into four near-equal parts. All of it is :class:`~.base.Protocol`'s defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Protocol

__all__ = ["StandardProtocol"]


@dataclass(frozen=True, repr=False)
class StandardProtocol(Protocol):
    """``standard``: the base rules (see the module docstring)."""

    name: str = "standard"

    @property
    def description(self) -> str:
        return ("members positive, TPR at FPR <= 1%, one t for everything (the best baseline AUROC on "
                "these samples: optimistic)")

    def rule_settings(self) -> dict[str, Any]:
        return dict(best_t="argmax baseline AUROC over t (evaluation set)", drop_rule="round(d * p / 100)",
                    random_count="round(d * p / 100)", quartiles="stable sort, numpy.array_split")
