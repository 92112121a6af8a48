"""Exception types raised by ldminv_core.

Every error a user can cause is a ``ValueError`` subclass whose message names the
argument or file at fault, what was expected and what arrived.
"""
from __future__ import annotations

__all__ = [
    "LdminvError",
    "ShapeError",
    "NonFiniteError",
    "UnknownNameError",
    "EmptyInputError",
    "ModelLoadError",
    "TracedExportError",
    "ModelKindError",
    "DataLoadError",
    "RunError",
    "NonFiniteRunError",
]


class LdminvError(ValueError):
    """Base class of every input error raised by ldminv."""


class ShapeError(LdminvError):
    """An array or a model output has a shape other than the one required."""


class NonFiniteError(LdminvError):
    """An input holds NaN or infinite values."""


class UnknownNameError(LdminvError):
    """A method, attack or option name is not one of the known choices."""


class EmptyInputError(LdminvError):
    """An input that must hold at least one element is empty."""


class ModelLoadError(LdminvError):
    """A model folder or hub id cannot be loaded as a latent diffusion model."""


class TracedExportError(ModelLoadError):
    """A model's TorchScript export (:mod:`ldminv_core.models.traced`) cannot stand for the model:
    missing, of another format, out of date with the model's files, or asked for what it lacks
    (the decoder)."""


class ModelKindError(LdminvError):
    """An attack or option needs a kind of model (e.g. text-conditioned) that the given model is
    not; the message names the attack, the kind it needs and the model's kind."""


class DataLoadError(LdminvError):
    """An image folder, image file or caption file cannot be used."""


class RunError(LdminvError):
    """A run folder is missing, unfinished or inconsistent."""


class NonFiniteRunError(RunError, NonFiniteError):
    """A run folder's stored numbers (log-volumes, influence, attack terms or scores) hold NaN or
    infinite values; the message names the file (and column) and the first sample ids. Both a
    :class:`RunError` and a :class:`NonFiniteError`."""
