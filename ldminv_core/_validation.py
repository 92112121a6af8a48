"""The one set of argument checkers of ldminv_core.

Every public function validates its options with these, so that every error a user can cause reads
the same way: ``"<name>: expected <what>, got <value> (<type>)"``, raised as an
:class:`~ldminv_core.errors.LdminvError` subclass (a ``ValueError``). A module passes its own
subclass (``error=DataLoadError``) where the error belongs to a file or folder.

Kept free of torch and pandas so that light modules (the command line's parser, the run folder)
can use it.
"""
from __future__ import annotations

import math
import numbers
import operator
from typing import Any, Sequence

import numpy as np

from .errors import LdminvError, NonFiniteError, UnknownNameError

__all__ = [
    "describe",
    "check_int",
    "check_real",
    "check_percent",
    "check_bool",
    "check_choice",
    "check_finite",
]


def describe(value: Any) -> str:
    """``value`` as an error message shows it: its repr (cut at 80 characters) and its type."""
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _is_integral(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None,
              error: type[LdminvError] = LdminvError) -> int:
    """``value`` as a Python int, or ``error`` naming ``name``. Booleans are refused.

    Args:
        value: the argument as given (int, numpy integer, or anything with ``__index__``).
        name: the argument's name, as the caller knows it (``"batch_size"``, ``"--folds"``).
        minimum / maximum: inclusive bounds; None = unbounded.
        error: the ``LdminvError`` subclass to raise.
    """
    if not _is_integral(value):
        raise error(f"{name}: expected {_int_range(minimum, maximum)}, got {describe(value)}")
    v = operator.index(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise error(f"{name}: expected {_int_range(minimum, maximum)}, got {describe(value)}")
    return int(v)


def _int_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer in [{minimum}, {maximum}]"
    if minimum is not None:
        return f"an integer >= {minimum}"
    if maximum is not None:
        return f"an integer <= {maximum}"
    return "an integer"


def check_real(value: Any, name: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, what: str | None = None,
               error: type[LdminvError] = LdminvError) -> float:
    """``value`` as a finite float within the given bounds, or ``error`` naming ``name``.

    Args:
        low / high: bounds (None = unbounded); ``low_open`` / ``high_open`` exclude them.
        what: how the message describes what was expected (default: "a finite number" and the
            interval).
    """
    expected = what or _real_range(low, high, low_open, high_open)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise error(f"{name}: expected {expected}, got {describe(value)}")
    v = float(value)
    bad = not math.isfinite(v)
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        raise error(f"{name}: expected {expected}, got {describe(value)}")
    return v


def _real_range(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is None and high is None:
        return "a finite number"
    if high is None:
        return f"a finite number {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"a finite number {'<' if high_open else '<='} {high:g}"
    return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_percent(value: Any, name: str = "drop_percent", *,
                  error: type[LdminvError] = LdminvError) -> float:
    """A drop percentage: a finite number in [0, 100)."""
    return check_real(value, name, low=0.0, high=100.0, high_open=True,
                      what="a percentage in [0, 100)", error=error)


def check_bool(value: Any, name: str, *, error: type[LdminvError] = LdminvError) -> bool:
    """``value`` as a bool; only ``True`` / ``False`` (and numpy booleans) are accepted."""
    if not isinstance(value, (bool, np.bool_)):
        raise error(f"{name}: expected True or False, got {describe(value)}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[str], *,
                 error: type[LdminvError] = UnknownNameError) -> str:
    """``value`` if it is one of ``choices`` (strings), else ``error`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise error(f"{name}: expected one of {tuple(choices)}, got {describe(value)}")
    return value


def check_finite(arr: np.ndarray, name: str, *, error: type[LdminvError] = NonFiniteError) -> np.ndarray:
    """``arr`` unchanged if every value is finite, else ``error`` naming ``name``, the count of
    non-finite values and the first flat indices."""
    a = np.asarray(arr)
    if a.dtype.kind in "fc":
        bad = ~np.isfinite(a)
        if bad.any():
            first = np.flatnonzero(bad)[:5].tolist()
            raise error(f"{name}: expected finite values, got {int(bad.sum())} NaN or infinite "
                        f"value(s) (first flat indices {first})")
    return arr
