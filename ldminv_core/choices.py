"""The fixed choices of the analysis options, kept free of heavy imports so that the command line
can build its parser (and answer ``--help``) without importing torch."""
from __future__ import annotations

__all__ = ["INFLUENCE_METHODS", "RESIDUAL_DTYPES"]

#: Per-coordinate influence paths of ``analyze --influence``.
INFLUENCE_METHODS: tuple[str, ...] = ("auto", "exact", "hutchinson")
#: Stored dtypes of ``residuals/<attack>.npy`` (``analyze --residual-dtype``).
RESIDUAL_DTYPES: tuple[str, ...] = ("float32", "float16")
