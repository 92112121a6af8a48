"""The attacks the project knows, in one table: for each name, what it returns (per-coordinate
terms or one score per sample), its batch kernel, its default exponent p, its noise stream, and
for a text-only attack (CLiD) the timestep window it averages into one stored step.

A new attack registers here (and its name in :data:`ldminv_core.choices.ATTACK_NAMES`, which the
command line and the run folder read without importing torch); the derived tuples and dicts
below are what the rest of the code reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..choices import ATTACK_NAMES, SCORE_ONLY_ATTACKS
from .clid import CLID_STREAM, CLID_WINDOW, clid_batch
from .pfami import PFAMI_STREAM, pfami_batch
from .residual import LOSS_STREAM, loss_batch, pia_batch, sima_batch
from .secmi import secmi_batch

__all__ = ["AttackSpec", "REGISTRY", "ATTACKS", "MASKABLE_ATTACKS", "DEFAULT_P", "NOISE_STREAMS",
           "TEXT_ONLY_ATTACKS", "evaluated_timesteps", "stored_timesteps", "window_centre"]


@dataclass(frozen=True)
class AttackSpec:
    """One attack.

    Attributes:
        name: its machine name ("sima", ...).
        kind: "terms" (per-coordinate terms (N, T, C, h, w), maskable) or "scores" ((N,)).
        kernel: its batch kernel (:mod:`ldminv_core.attacks.common`).
        default_p: the default exponent of its terms |.|^p (None for "scores").
        noise_stream: the seed stream of its noise, None when it draws none.
        window: the attack's own timesteps, averaged into ONE stored step recorded at the
            window's centre (CLiD); None: one stored step per timestep of the run's grid.
        text_only: needs a text-conditioned model and every sample's own caption; its kernel
            also receives the batch's captions (``captions=``).
    """

    name: str
    kind: str
    kernel: Callable
    default_p: int | None = None
    noise_stream: int | None = None
    window: tuple[int, ...] | None = None
    text_only: bool = False


REGISTRY: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        AttackSpec("sima", "terms", sima_batch, default_p=4),
        AttackSpec("pia", "terms", pia_batch, default_p=4),
        AttackSpec("loss", "terms", loss_batch, default_p=4, noise_stream=LOSS_STREAM),
        AttackSpec("secmi", "terms", secmi_batch, default_p=2),
        AttackSpec("pfami", "scores", pfami_batch, noise_stream=PFAMI_STREAM),
        AttackSpec("clid", "terms", clid_batch, default_p=2, noise_stream=CLID_STREAM,
                   window=CLID_WINDOW, text_only=True),
    )
}

ATTACKS: tuple[str, ...] = ATTACK_NAMES
"""Every attack name known to the project."""
assert set(ATTACKS) == set(REGISTRY), "choices.ATTACK_NAMES and the attack registry must name the same attacks"

MASKABLE_ATTACKS: tuple[str, ...] = tuple(n for n in ATTACKS if REGISTRY[n].kind == "terms")
assert set(ATTACKS) - set(MASKABLE_ATTACKS) == set(SCORE_ONLY_ATTACKS), "choices.SCORE_ONLY_ATTACKS is out of date"
"""Attacks with per-coordinate terms (:func:`ldminv_core.attacks.attack_terms`)."""

DEFAULT_P: dict[str, float] = {n: REGISTRY[n].default_p for n in MASKABLE_ATTACKS}
"""Default exponent p of each maskable attack's term |.|^p."""

NOISE_STREAMS: dict[str, int] = {n: REGISTRY[n].noise_stream for n in ATTACKS if REGISTRY[n].noise_stream is not None}
"""Seed stream of each attack that draws noise."""

TEXT_ONLY_ATTACKS: tuple[str, ...] = tuple(n for n in ATTACKS if REGISTRY[n].text_only)
"""Attacks that need a text-conditioned model and a caption per sample (CLiD)."""


def evaluated_timesteps(name: str, grid: Sequence[int]) -> list[int]:
    """The timesteps maskable attack ``name`` evaluates: its own window, else the run's ``grid``."""
    window = REGISTRY[name].window
    return list(grid if window is None else window)


def stored_timesteps(name: str, grid: Sequence[int]) -> list[int]:
    """The timesteps of the T axis of maskable attack ``name``'s stored terms (run.json
    ``attacks.<name>.timesteps``): the run's ``grid``, or a windowed attack's centre timestep."""
    window = REGISTRY[name].window
    return list(grid) if window is None else [window_centre(window)]


def window_centre(window: Sequence[int]) -> int:
    """The timestep an averaged window is recorded at: its middle entry (CLiD: 495)."""
    return int(window[len(window) // 2])
