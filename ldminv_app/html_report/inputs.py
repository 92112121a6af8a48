"""The arguments of the exports, checked (with :mod:`ldminv_core._validation`'s wording: the
argument's name, what was expected, what arrived), and the evaluation every export starts from."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ldminv_core._validation import check_int, check_percent, describe
from ldminv_core.errors import LdminvError, ShapeError, UnknownNameError
from ldminv_core.evaluation import Evaluation, make_protocol
from ldminv_core.runs import Run

from .markup import CI_LEVEL

__all__ = ["DEFAULT_DROP_PERCENT", "DEFAULT_SEED", "BOOTSTRAP_SEED", "as_run", "check_attack", "check_t",
           "check_drop", "check_nonneg_int", "check_manual", "evaluation"]

DEFAULT_DROP_PERCENT = 40.0
DEFAULT_SEED = 0
#: Seed of the bootstrap intervals (the dashboard's metrics table uses the same one).
BOOTSTRAP_SEED = 0


def as_run(run: Run | str | Path) -> Run:
    """``run`` itself, or the run opened from its folder."""
    if isinstance(run, Run):
        return run
    if isinstance(run, (str, Path)):
        return Run.open(run)
    raise LdminvError(f"run: expected a Run or the path of a run folder, got {describe(run)}")


def check_attack(run: Run, attack: Any) -> str:
    """``attack`` when it is one of the run's attacks, else UnknownNameError naming them."""
    if not isinstance(attack, str) or attack not in run.attacks:
        raise UnknownNameError(f"attack: expected one of {run.attacks} (the attacks of run {run.path}), "
                               f"got {describe(attack)}")
    return attack


def check_t(run: Run, attack: str, t: Any) -> int | None:
    """Index of timestep ``t`` in the attack's timesteps (None for attacks without one)."""
    if not run.is_maskable(attack):
        if t is not None:
            raise LdminvError(
                f"t: attack {attack!r} gives one score per sample and has no timestep; expected None, "
                f"got {describe(t)}"
            )
        return None
    timesteps = run.timesteps(attack)
    try:
        value = check_int(t, "t", error=UnknownNameError)
    except UnknownNameError:
        value = None
    if value is None or value not in timesteps:
        raise UnknownNameError(f"t: expected one of the timesteps of {attack!r} in this run {timesteps}, "
                               f"got {describe(t)}")
    return timesteps.index(value)


def check_drop(drop_percent: Any) -> float:
    """A drop percentage in [0, 100)."""
    return check_percent(drop_percent, "drop_percent")


def check_nonneg_int(value: Any, name: str) -> int:
    """An integer >= 0 (a seed, a number of replicates)."""
    return check_int(value, name, minimum=0)


def check_manual(run: Run, manual_mask: Any) -> np.ndarray | None:
    """A boolean keep-mask of the run's latent shape (C, h, w), or None."""
    if manual_mask is None:
        return None
    keep = np.asarray(manual_mask)
    if keep.dtype != bool:
        raise LdminvError(f"manual_mask: expected a boolean keep-mask, got dtype {keep.dtype}")
    if keep.shape != tuple(run.latent_shape):
        raise ShapeError(f"manual_mask: expected shape {tuple(run.latent_shape)} (the run's latent shape), "
                         f"got {keep.shape}")
    return keep


def evaluation(run: Run, attack: str, protocol: str, folds: int | None, seed: int, n_boot: int) -> Evaluation:
    """The :class:`~ldminv_core.evaluation.Evaluation` of one attack under one protocol."""
    return Evaluation(run, attack, make_protocol(protocol, folds=folds, seed=seed), n_boot=n_boot, level=CI_LEVEL,
                      seed=seed)
