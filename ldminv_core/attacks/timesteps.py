"""Timestep grids of the attacks: the default grid, the command line's spec ("0:300:10" or
"0,10,50") and the check of a grid against a scheduler's number of training timesteps."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validation import check_int
from ..errors import EmptyInputError, LdminvError

__all__ = ["DEFAULT_TIMESTEPS", "parse_timesteps", "check_timesteps"]

DEFAULT_TIMESTEPS: tuple[int, ...] = tuple(range(0, 300, 10))
"""Default timestep grid of the maskable attacks: 0, 10, ..., 290."""


def parse_timesteps(spec: str) -> list[int]:
    """Parse a timestep spec: "start:stop[:step]" (Python range) or a comma list "0,10,50".

    Returns a non-empty, strictly increasing list of non-negative ints, e.g.
    "0:300:10" -> [0, 10, ..., 290]. LdminvError quoting the spec otherwise.
    """
    expected = "expected 'start:stop:step' (e.g. '0:300:10') or a comma list (e.g. '0,10,50')"
    if not isinstance(spec, str):
        raise LdminvError(f"timesteps spec: {expected}, got {spec!r} ({type(spec).__name__})")
    text = spec.strip()
    try:
        if ":" in text:
            parts = [int(part) for part in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError("wrong number of fields")
            values = list(range(*parts))
        else:
            values = [int(part) for part in text.split(",")]
    except ValueError as err:
        raise LdminvError(f"timesteps spec {spec!r}: {expected} ({err})") from None
    if not values:
        raise LdminvError(f"timesteps spec {spec!r}: selects no timesteps; {expected}")
    if values[0] < 0 or any(v < 0 for v in values):
        raise LdminvError(f"timesteps spec {spec!r}: timesteps must be non-negative, got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise LdminvError(f"timesteps spec {spec!r}: timesteps must be strictly increasing, got {values}")
    return values


def check_timesteps(timesteps: Any, num_train_timesteps: int, *, name: str = "timesteps") -> list[int]:
    """A strictly increasing list of integer timesteps in [0, num_train_timesteps).

    Args:
        timesteps: a sequence, a tensor / array (T,), or a :func:`parse_timesteps` spec.
        num_train_timesteps: the scheduler's number of training timesteps.
        name: the argument's name in error messages.
    """
    if isinstance(timesteps, str):
        timesteps = parse_timesteps(timesteps)
    if isinstance(timesteps, (torch.Tensor, np.ndarray)):
        timesteps = timesteps.tolist()
    try:
        values = list(timesteps)
    except TypeError:
        raise LdminvError(
            f"{name}: expected a sequence of integer timesteps, got {type(timesteps).__name__}"
        ) from None
    if not values:
        raise EmptyInputError(f"{name}: expected at least one timestep, got an empty sequence")
    ints = [check_int(v, f"{name}[{i}]") for i, v in enumerate(values)]
    bad = [t for t in ints if not 0 <= t < num_train_timesteps]
    if bad:
        raise LdminvError(
            f"{name}: every timestep must lie in [0, {num_train_timesteps}) "
            f"(the scheduler's num_train_timesteps), got {bad[:5]}"
        )
    if any(b <= a for a, b in zip(ints, ints[1:])):
        raise LdminvError(f"{name}: expected strictly increasing timesteps, got {ints}")
    return ints
