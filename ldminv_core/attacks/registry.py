"""The attacks the project knows, in one table: for each name, what it returns (per-coordinate
terms or one score per sample), its batch kernel, its default exponent p and its noise stream.

A new attack registers here (and its name in :data:`ldminv_core.choices.ATTACK_NAMES`, which the
command line and the run folder read without importing torch); the derived tuples and dicts
below are what the rest of the code reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..choices import ATTACK_NAMES
from .pfami import PFAMI_STREAM, pfami_batch
from .residual import LOSS_STREAM, loss_batch, pia_batch, sima_batch
from .secmi import secmi_batch

__all__ = ["AttackSpec", "REGISTRY", "ATTACKS", "MASKABLE_ATTACKS", "DEFAULT_P", "NOISE_STREAMS"]


@dataclass(frozen=True)
class AttackSpec:
    """One attack.

    Attributes:
        name: its machine name ("sima", ...).
        kind: "terms" (per-coordinate terms (N, T, C, h, w), maskable) or "scores" ((N,)).
        kernel: its batch kernel (:mod:`ldminv_core.attacks.common`).
        default_p: the default exponent of its terms |.|^p (None for "scores").
        noise_stream: the seed stream of its noise, None when it draws none.
    """

    name: str
    kind: str
    kernel: Callable
    default_p: int | None = None
    noise_stream: int | None = None


REGISTRY: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("sima", "terms", sima_batch, default_p=4),
        AttackSpec("pia", "terms", pia_batch, default_p=4),
        AttackSpec("loss", "terms", loss_batch, default_p=4, noise_stream=LOSS_STREAM),
        AttackSpec("secmi", "terms", secmi_batch, default_p=2),
        AttackSpec("pfami", "scores", pfami_batch, noise_stream=PFAMI_STREAM),
    )
}

ATTACKS: tuple[str, ...] = ATTACK_NAMES
"""Every attack name known to the project."""
assert set(ATTACKS) == set(REGISTRY), "choices.ATTACK_NAMES and the attack registry must name the same attacks"

MASKABLE_ATTACKS: tuple[str, ...] = tuple(n for n in ATTACKS if REGISTRY[n].kind == "terms")
"""Attacks with per-coordinate terms (:func:`ldminv_core.attacks.attack_terms`)."""

DEFAULT_P: dict[str, float] = {n: REGISTRY[n].default_p for n in MASKABLE_ATTACKS}
"""Default exponent p of each maskable attack's term |.|^p."""

NOISE_STREAMS: dict[str, int] = {n: REGISTRY[n].noise_stream for n in ATTACKS if REGISTRY[n].noise_stream is not None}
"""Seed stream of each attack that draws noise."""
