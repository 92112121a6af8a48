"""A run's membership scores without a mask: the attack's statistic of its full per-coordinate
terms, negated so that higher means member, at every timestep or at one (stored scores, such as
PFAMI's, as they are). The run reader (:class:`ldminv_core.runs.Run`) only hands out the arrays;
this is the arithmetic on them."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import UnknownNameError
from ..masks import masked_statistic

if TYPE_CHECKING:
    from ..runs.reader import Run

__all__ = ["run_scores"]


def run_scores(run: "Run", attack: str, *, t_index: int | None = None) -> np.ndarray:
    """Membership scores (higher = member): -statistic of the full (unmasked) terms.

    Args:
        run: an opened run (complete, or partial with ``attack`` finished).
        attack: one of ``run.attacks``.
        t_index: one timestep (an index into ``run.timesteps(attack)``, negative from the end);
            None = every timestep.

    Returns:
        (N, T) float64 for maskable attacks, or (N,) when ``t_index`` is given; PFAMI (and
        other stored-score attacks) always (N,).

    Raises:
        UnknownNameError: ``attack`` is not in the run, or ``t_index`` is out of range.
    """
    if not run.is_maskable(attack):
        return run.stored_scores(attack)
    terms = run.terms(attack)
    if t_index is None:
        return -masked_statistic(terms, None)
    t_count = terms.shape[1]
    if not -t_count <= int(t_index) < t_count:
        raise UnknownNameError(f"t_index: expected an index into {t_count} timesteps, got {t_index}")
    i = int(t_index) % t_count
    return -masked_statistic(terms[:, i : i + 1], None)[:, 0]
