"""The one home of display formatting: how every surface (the text report, the HTML export, the
dashboard) writes a number for a reader. One formatter per kind of number:

- :func:`format_rate`: a rate or AUROC in [0, 1] with ``digits`` decimals, "0.8105";
- :func:`format_rate_ci`: an interval "[0.7778, 0.8400]" (``signed=True``: "[+0.0100, +0.0300]",
  for intervals of differences);
- :func:`format_signed`: a signed difference, "+0.0123";
- :func:`format_percent`: a percentage as the settings write it, "40%" (``sep=" "``: "40 %");
- :func:`format_count`: a count "4 of 60 members" (``compact=True``: "4/60");
- :func:`timesteps_text`: a list of timesteps, "0, 10, …, 90 (every 10; 10 timesteps)".

An undefined value (None, NaN, infinite) reads "–" (an en dash). JSON keeps full precision and
never goes through this module. Pure Python; no numpy, torch or pandas.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "MISSING",
    "format_rate",
    "format_rate_ci",
    "format_signed",
    "format_percent",
    "format_count",
    "timesteps_text",
]

#: What an undefined number reads as.
MISSING = "–"


def _finite(x: Any) -> float | None:
    """float(x), or None for None / NaN / infinite."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def format_rate(x: float | None, digits: int = 4, *, none: str = MISSING) -> str:
    """A rate (AUROC, TPR, ASR, FPR) as every display shows it: a fraction in [0, 1] with
    ``digits`` decimals, "0.8105"; "–" for NaN / infinite, ``none`` (default "–") for None.

    ``none`` keeps the text report's convention: its table writes a missing entry (None in the
    JSON) as "-" while an undefined number (NaN) still reads "–"."""
    if x is None:
        return none
    v = float(x)
    return f"{v:.{digits}f}" if math.isfinite(v) else MISSING


def format_rate_ci(ci: Sequence[float | None], digits: int = 4, *, signed: bool = False) -> str:
    """An interval ``(lo, hi)`` as "[0.7778, 0.8400]"; "–" when a bound is None or NaN.

    ``signed=False`` (rates): an infinite bound is undefined too ("–"). ``signed=True``
    (differences, the dashboard's findings): "[+0.0100, +0.0300]"; only None / NaN bounds are
    undefined, an infinite one prints as "+inf" / "-inf" (the dashboard's behaviour)."""
    lo, hi = ci
    if signed:
        if lo is None or hi is None or math.isnan(float(lo)) or math.isnan(float(hi)):
            return MISSING
        return f"[{float(lo):+.{digits}f}, {float(hi):+.{digits}f}]"
    if _finite(lo) is None or _finite(hi) is None:
        return MISSING
    return f"[{format_rate(lo, digits)}, {format_rate(hi, digits)}]"


def format_signed(x: float | None, digits: int = 4) -> str:
    """A signed difference, "+0.0123" / "-0.0040"; "–" when undefined."""
    v = _finite(x)
    return MISSING if v is None else f"{v:+.{digits}f}"


def format_percent(x: float | None, *, sep: str = "") -> str:
    """A percentage (a drop percentage) as the settings write it: "40%" (``%g``), with ``sep``
    between number and sign ("40 %" with ``sep=" "``); "–" when undefined."""
    v = _finite(x)
    return MISSING if v is None else f"{v:g}{sep}%"


def format_count(k: int, n: int, *, unit: str = "", compact: bool = False) -> str:
    """A count of ``k`` out of ``n``: "4 of 60 members" (``unit`` appended after a space when
    given); ``compact=True``: "4/60" (the text report's column, ``unit`` ignored)."""
    if compact:
        return f"{k}/{n}"
    return f"{k} of {n}" + (f" {unit}" if unit else "")


def timesteps_text(ts: Sequence[int]) -> str:
    """Timesteps in words: "none"; "0, 10, …, 90 (every 10; 10 timesteps)" when four or more are
    evenly spaced; else "0, 5, 20 (3 timesteps)"."""
    ts = [int(t) for t in ts]
    if not ts:
        return "none"
    if len(ts) >= 4:
        steps = [b - a for a, b in zip(ts, ts[1:])]
        if all(s == steps[0] for s in steps):
            return f"{ts[0]}, {ts[1]}, …, {ts[-1]} (every {steps[0]}; {len(ts)} timesteps)"
    return ", ".join(map(str, ts)) + f" ({len(ts)} timestep{'s' if len(ts) != 1 else ''})"
