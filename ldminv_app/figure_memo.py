"""Built figures, remembered by what they were built from: a chart whose inputs have not
changed since it was last drawn (a control moved back, a page visited again, a rerun that changes other
parts of the page) is not built again.

:func:`figure` calls a builder of :mod:`ldminv_app.figures` with its arguments, or returns the
figure it built from equal arguments before. Arguments are compared by content: numpy arrays by
dtype, shape and bytes, mappings and sequences element by element, dataclasses field by field, numbers and strings by value;
an argument of another kind makes the call uncached (the builder runs every time). The store is
server-wide, bounded (:data:`CAPACITY` figures, least recently used dropped first) and
thread-safe. A remembered figure is shared: callers draw it (``st.plotly_chart`` copies it into
its message) and never change it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = ["CAPACITY", "figure", "content_key", "clear", "stats"]

#: Figures kept (a page draws at most a dozen; a few pages and control positions fit).
CAPACITY = 192

_LOCK = threading.Lock()
_STORE: OrderedDict[tuple, Any] = OrderedDict()
_STATS = {"hits": 0, "misses": 0, "uncached": 0}


class _Unhashable(Exception):
    """An argument whose content cannot be compared cheaply: the call is not cached."""


def _feed(h: Any, value: Any) -> None:
    """Feed ``value``'s content (and its kind) into the hash ``h``."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        h.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, np.ndarray):
        arr = np.ascontiguousarray(value)
        if arr.dtype.hasobject:
            _feed(h, arr.tolist())
            return
        h.update(f"nd:{arr.dtype.str}:{arr.shape};".encode())
        h.update(arr.view(np.uint8).reshape(-1).data if arr.size else b"")
    elif isinstance(value, np.generic):
        _feed(h, value.item())
    elif isinstance(value, Mapping):
        h.update(f"map{len(value)}(".encode())
        for k, v in value.items():
            _feed(h, k)
            _feed(h, v)
        h.update(b")")
    elif isinstance(value, (list, tuple)):
        h.update(f"seq{len(value)}(".encode())
        for v in value:
            _feed(h, v)
        h.update(b")")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(f"dc:{type(value).__qualname__}(".encode())
        for f in dataclasses.fields(value):
            _feed(h, f.name)
            _feed(h, getattr(value, f.name))
        h.update(b")")
    else:
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is a dependency
            raise _Unhashable(type(value).__name__) from None
        if isinstance(value, (pd.DataFrame, pd.Series)):
            h.update(f"pd:{type(value).__name__}:{value.shape}:{list(map(str, getattr(value, 'columns', [])))};"
                     .encode())
            h.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
            return
        raise _Unhashable(type(value).__name__)


def content_key(builder: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]) -> tuple | None:
    """(builder's module and name, digest of the arguments' content), or None when an argument's
    content cannot be compared (:func:`figure` then builds without caching)."""
    h = hashlib.blake2b(digest_size=20)
    try:
        _feed(h, args)
        _feed(h, dict(sorted(kwargs.items())))
    except _Unhashable:
        return None
    return (getattr(builder, "__module__", ""), getattr(builder, "__qualname__", repr(builder)), h.hexdigest())


def figure(builder: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``builder(*args, **kwargs)``, or the figure built before from arguments of equal content."""
    key = content_key(builder, args, kwargs)
    if key is None:
        with _LOCK:
            _STATS["uncached"] += 1
        return builder(*args, **kwargs)
    with _LOCK:
        fig = _STORE.get(key)
        if fig is not None:
            _STORE.move_to_end(key)
            _STATS["hits"] += 1
            return fig
    fig = builder(*args, **kwargs)
    with _LOCK:
        _STATS["misses"] += 1
        _STORE[key] = fig
        _STORE.move_to_end(key)
        while len(_STORE) > CAPACITY:
            _STORE.popitem(last=False)
    return fig


def clear() -> None:
    """Forget every remembered figure (and the counts of :func:`stats`)."""
    with _LOCK:
        _STORE.clear()
        for k in _STATS:
            _STATS[k] = 0


def stats() -> dict[str, int]:
    """How many calls found their figure (hits), built it (misses) or could not be cached (uncached)."""
    with _LOCK:
        return {**_STATS, "size": len(_STORE)}
