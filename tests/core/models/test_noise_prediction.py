"""Tests of ldminv_core.models.noise_prediction: the seam a model family plugs into.

A toy family (a linear "network" eps_hat(x, t) = c_t * x, unconditional) implements only
``_forward``, ``encode_prompts``, ``in_channels`` and ``is_conditional``; the attacks must run on
it unchanged, and their terms must equal the closed forms of that network.
"""
from __future__ import annotations

import pytest
import torch

from ldminv_core.attacks import attack_terms, pfami_scores
from ldminv_core.errors import LdminvError, ShapeError
from ldminv_core.models.noise_prediction import NoisePrediction


class LinearFamily(NoisePrediction):
    """eps_hat(x, t) = (t + 1) / 100 * x, on CPU in float32, with a linear beta schedule."""

    def __init__(self, *, channels: int = 2, prediction_type: str = "epsilon", out_channels: int | None = None):
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.prediction_type = prediction_type
        self.is_conditional = False
        self._channels = channels
        self._out = out_channels or channels
        betas = torch.linspace(1e-4, 0.02, 100, dtype=torch.float64)
        self._init_schedule(torch.cumprod(1 - betas, 0))

    @property
    def in_channels(self) -> int:
        return self._channels

    def encode_prompts(self, captions):
        return None

    def _forward(self, x, t, cond):
        out = (t + 1) / 100 * x
        return out if self._out == self._channels else torch.cat([out, out], dim=1)


def test_attacks_run_on_any_family_and_match_its_closed_form():
    pred = LinearFamily()
    z0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    terms = attack_terms("sima", pred, z0, timesteps=[0, 9, 49], p=2)
    expected = torch.stack([((t + 1) / 100 * z0) ** 2 for t in (0, 9, 49)], dim=1)
    torch.testing.assert_close(terms, expected, rtol=1e-6, atol=1e-7)
    assert pfami_scores(pred, z0, timesteps=[0, 10], strengths=[0.5]).shape == (3,)


def test_call_checks_and_converts_like_the_unet_family():
    pred = LinearFamily(out_channels=4)  # learned variance: the first half is the prediction
    z = torch.ones(1, 2, 3, 3)
    torch.testing.assert_close(pred(z, 9), 0.1 * z)
    with pytest.raises(LdminvError, match="t: expected a timestep in \\[0, 100\\)"):
        pred(z, 100)
    with pytest.raises(LdminvError, match="cond: the UNet is unconditional"):
        pred(z, 0, torch.zeros(1, 1, 1))
    with pytest.raises(ShapeError, match="3 latent channels"):
        pred(torch.ones(1, 3, 3, 3), 0)


def test_v_prediction_is_converted_to_eps():
    pred = LinearFamily(prediction_type="v_prediction")
    z = torch.ones(1, 2, 2, 2)
    t = 30
    sa, s1a = pred._a[t], pred._b[t]
    torch.testing.assert_close(pred(z, t), (t + 1) / 100 * z * sa + s1a * z)


def test_an_incomplete_family_cannot_be_built():
    class NoForward(NoisePrediction):
        in_channels = 2

        def encode_prompts(self, captions):
            return None

    with pytest.raises(TypeError, match="_forward"):
        NoForward()
