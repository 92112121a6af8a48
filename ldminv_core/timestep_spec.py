"""Timestep specs: the default grid and the command line's spec ("0:300:10" or "0,10,50").

Plain Python (no torch): the dashboard's server reads the first start's timesteps with it before
anything heavy is imported. :mod:`ldminv_core.attacks.timesteps` re-exports both and checks a
grid against a scheduler.
"""
from __future__ import annotations

from .errors import LdminvError

__all__ = ["DEFAULT_TIMESTEPS", "parse_timesteps"]

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
