"""The per-coordinate terms of a maskable attack (sima, pia, loss, secmi, clid): the one entry
point that checks its inputs and runs the attack's kernel over batches."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import UnknownNameError
from ..models.noise_prediction import NoisePrediction
from .common import (
    ProgressCallback,
    check_batch_size,
    check_captions,
    check_p,
    check_predictor,
    check_sample_ids,
    check_seed,
    check_z0,
    run_batches,
)
from .clid import check_clid_captions, check_clid_model
from .registry import MASKABLE_ATTACKS, REGISTRY
from .secmi import secmi_grid
from .timesteps import DEFAULT_TIMESTEPS, check_timesteps

__all__ = ["attack_terms"]


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise UnknownNameError(f"name: expected an attack name in {MASKABLE_ATTACKS}, got {name!r}")
    key = name.strip().lower()
    if key not in MASKABLE_ATTACKS:
        if key == "pfami":
            raise UnknownNameError(
                "name: 'pfami' gives one score per sample, not per-coordinate terms; call "
                f"pfami_scores() instead. attack_terms() takes one of {MASKABLE_ATTACKS}"
            )
        raise UnknownNameError(f"name: unknown attack {name!r}; expected one of {MASKABLE_ATTACKS}")
    return key


def attack_terms(
    name: str,
    predictor: NoisePrediction,
    z0: torch.Tensor,
    *,
    timesteps: Sequence[int] | str | None = None,
    captions: Sequence[str | None] | None = None,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    p: float | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Per-coordinate terms (N, T, C, h, w) float32 CPU of a maskable attack.

    Args:
        name: one of :data:`MASKABLE_ATTACKS` ("sima", "pia", "loss", "secmi", "clid").
        predictor: the model's :class:`~ldminv_core.models.noise_prediction.NoisePredictor`.
        z0: clean scaled latents (N, C, h, w), tensor or numpy array (batches are moved to
            the predictor's device as float32).
        timesteps: T strictly increasing integers in [0, num_train_timesteps), or a
            :func:`parse_timesteps` spec; None: the attack's default (:data:`DEFAULT_TIMESTEPS`,
            CLiD's window :data:`~ldminv_core.attacks.clid.CLID_WINDOW`). For "clid" they are
            the window averaged into ONE stored step: the result is (N, 1, C, h, w).
        captions: N captions (None entries -> empty prompt) for conditional models; None
            means the empty prompt for every sample. Ignored by unconditional models. "clid"
            needs a text-conditioned model and a non-empty caption per sample (refused before
            any model call otherwise).
        sample_ids: N non-negative ids seeding each sample's noise (default arange(N)).
        p: exponent of |.|^p (default :data:`DEFAULT_P`).
        seed: global seed of the noise (attacks "loss" and "clid").
        batch_size: samples per UNet forward.
        progress: called with the number of samples done after each batch.

    The statistic of sample n at timestep index k is sum(terms[n, k]); membership
    score = -statistic.
    """
    key = _check_name(name)
    spec = REGISTRY[key]
    check_predictor(predictor)
    if spec.text_only:
        check_clid_model(predictor)
    z0 = check_z0(predictor, z0)
    n = z0.shape[0]
    default = DEFAULT_TIMESTEPS if spec.window is None else spec.window
    ts = check_timesteps(default if timesteps is None else timesteps, predictor.num_train_timesteps)
    if key == "secmi":
        secmi_grid(ts, predictor.num_train_timesteps)  # fail before any work
    p_val = check_p(spec.default_p if p is None else p, key)
    caps = check_captions(captions, n)
    if spec.text_only:
        caps = check_clid_captions(caps, n)
    ids = check_sample_ids(sample_ids, n)
    seed = check_seed(seed)
    batch_size = check_batch_size(batch_size)

    stored = len(ts) if spec.window is None else 1  # a window is averaged into one stored step
    out = torch.empty((n, stored, *z0.shape[1:]), dtype=torch.float32)
    return run_batches(
        predictor,
        z0,
        out,
        spec.kernel,
        captions=caps,
        sample_ids=ids,
        seed=seed,
        stream=spec.noise_stream,
        noise_steps=len(ts),
        batch_size=batch_size,
        progress=progress,
        pass_captions=spec.text_only,
        timesteps=ts,
        p=p_val,
    )
