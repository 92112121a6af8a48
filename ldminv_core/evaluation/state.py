"""What every part of :class:`~.evaluator.Evaluation` reads: the attributes the evaluator sets in
its constructor and the memo its parts share, declared once for the mixins (source, scoring,
measure, quartiles, findings, blind findings, curves) that make up the evaluation."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..runs import Run
    from .protocols import Protocol


class EvaluationState:
    """The evaluator's shared attributes (set by ``Evaluation.__init__``), typed for its parts."""

    protocol: Protocol
    run: Run
    attack: str
    labels: np.ndarray
    maskable: bool
    timesteps: tuple[int, ...]
    seeds: tuple[int, ...]
    n: int
    n_boot: int
    level: float
    seed: int
    _memo: dict[tuple, Any]
    _cached: Callable[[tuple, Callable[[], Any]], Any]
