"""Timestep grids of the attacks: the default grid and the command line's spec ("0:300:10" or
"0,10,50"), both from :mod:`ldminv_core.timestep_spec`, and the check of a grid against a
scheduler's number of training timesteps."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validation import check_int
from ..errors import EmptyInputError, LdminvError
from ..timestep_spec import DEFAULT_TIMESTEPS, parse_timesteps

__all__ = ["DEFAULT_TIMESTEPS", "parse_timesteps", "check_timesteps"]


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
