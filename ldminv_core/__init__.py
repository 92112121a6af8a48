"""ldminv_core: the compute core of ldminv.

Decoder geometry (:mod:`ldminv_core.geometry`), membership-inference attacks
(:mod:`ldminv_core.attacks`), dimension masks (:mod:`ldminv_core.masks`), metrics
(:mod:`ldminv_core.metrics`), model and data loading, and the run folder that the
``python -m ldminv_core`` command line and the dashboard share. Importing it guards ``ast.parse`` against a CPython < 3.13 bug with
threads (:mod:`ldminv_core.threadsafe_ast`). Submodules are imported on
use so that ``import ldminv_core`` stays light; nothing here imports streamlit.
"""
from __future__ import annotations

from . import threadsafe_ast
from .errors import (
    DataLoadError,
    EmptyInputError,
    LdminvError,
    ModelLoadError,
    NonFiniteError,
    RunError,
    ShapeError,
    UnknownNameError,
)

__version__ = "0.1.0"

# numpy, torch and Streamlit parse Python on the dashboard's threads; CPython < 3.13 cannot
# build two ASTs at once (see threadsafe_ast)
threadsafe_ast.install()

__all__ = [
    "__version__",
    "LdminvError",
    "ShapeError",
    "NonFiniteError",
    "UnknownNameError",
    "EmptyInputError",
    "ModelLoadError",
    "DataLoadError",
    "RunError",
]
