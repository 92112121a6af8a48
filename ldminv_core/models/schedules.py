"""The forward process of a model family (METHOD.md section 5): z_t = a(t) z0 + b(t) e, the
conversion of the network's output to eps_hat, the timestep the network is given, and the
deterministic step SecMI inverts and denoises with.

- :class:`DDPMSchedule`: schedulers with ``alphas_cumprod`` (DDPM, DDIM, PNDM, Euler, ...):
  ``a = sqrt(abar_t)``, ``b = sqrt(1 - abar_t)``; the network's output is epsilon, v or x0;
  SecMI's step is DDIM; the network is given the integer t.
- :class:`FlowMatchSchedule`: rectified flow (``FlowMatchEulerDiscreteScheduler``: SD3 / SD3.5,
  Flux): ``sigma = t / T`` unshifted, ``a = 1 - sigma``, ``b = sigma``; the network's output is the
  velocity ``v = e - z0`` and ``eps_hat = z_t + (1 - sigma) o``; SecMI's step is Euler on the
  velocity; the network is given ``sigma * T`` computed as the pipeline computes its timesteps
  (float32 ``sigmas * num_train_timesteps``).

Coefficients are Python floats (float64) so that each is exact before the float32 tensor maths.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from .._validation import check_int
from ..errors import LdminvError, ShapeError, UnknownNameError

__all__ = ["PREDICTION_TYPES", "FLOW_PREDICTION", "NoiseSchedule", "DDPMSchedule", "FlowMatchSchedule",
           "is_flow_scheduler"]

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
"""Prediction types of the DDPM family that :class:`DDPMSchedule` converts to eps."""

FLOW_PREDICTION = "flow"
"""The prediction type of a rectified-flow network: the velocity e - z0."""


def is_flow_scheduler(scheduler: Any) -> bool:
    """True for a diffusers rectified-flow scheduler (``FlowMatch*``: sigmas, no ``alphas_cumprod``)."""
    return type(scheduler).__name__.startswith("FlowMatch") and getattr(scheduler, "alphas_cumprod", None) is None


class NoiseSchedule(ABC):
    """a(t), b(t) for integer t in [0, num_train_timesteps), eps from the network's output, the
    timestep value the network takes and the deterministic ODE step.

    Attributes:
        kind: "ddpm" or "flow" (recorded with a run).
        a, b: the forward-process coefficients, one Python float per timestep.
    """

    kind: str
    a: list[float]
    b: list[float]

    @property
    def num_train_timesteps(self) -> int:
        """Number of training timesteps T (t runs over 0..T-1)."""
        return len(self.a)

    @abstractmethod
    def eps_from_output(self, out: torch.Tensor, z: torch.Tensor, t: int, prediction_type: str) -> torch.Tensor:
        """eps_hat (float32) from the network's float32 output ``out`` at latents ``z``, timestep t."""

    @abstractmethod
    def step(self, x: torch.Tensor, eps: torch.Tensor, s: int, u: int) -> torch.Tensor:
        """The deterministic move of x from timestep s to u given eps = eps_hat(x, s)."""

    @abstractmethod
    def model_timesteps(self, t: int, batch: int, device: torch.device) -> torch.Tensor:
        """The timestep tensor (batch,) the family's pipeline passes its network at t."""


class DDPMSchedule(NoiseSchedule):
    """The DDPM family's schedule from ``alphas_cumprod`` (float64 CPU copy kept)."""

    kind = "ddpm"

    def __init__(self, alphas_cumprod: Any) -> None:
        a = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
        if a.ndim != 1 or a.numel() == 0:
            raise ShapeError(f"alphas_cumprod: expected a non-empty 1-D tensor, got shape {tuple(a.shape)}")
        if not torch.isfinite(a).all() or (a <= 0).any() or (a > 1).any():
            raise LdminvError("alphas_cumprod: expected finite values in (0, 1]")
        self.alphas_cumprod = a
        self.a = a.sqrt().tolist()
        self.b = (1.0 - a).sqrt().tolist()

    def eps_from_output(self, out: torch.Tensor, z: torch.Tensor, t: int, prediction_type: str) -> torch.Tensor:
        """epsilon: out; v_prediction: a out + b z; sample: (z - a out) / b."""
        if prediction_type == "epsilon":
            return out
        sa, s1a = self.a[t], self.b[t]
        if prediction_type == "v_prediction":
            return torch.add(out * sa, z, alpha=s1a)
        if prediction_type == "sample":
            return (z - sa * out) / s1a
        raise UnknownNameError(f"prediction_type: expected one of {PREDICTION_TYPES}, got {prediction_type!r}")

    def step(self, x: torch.Tensor, eps: torch.Tensor, s: int, u: int) -> torch.Tensor:
        """DDIM: x0 = (x - b_s eps) / a_s; returns a_u x0 + b_u eps."""
        sa_s, s1a_s = self.a[s], self.b[s]
        sa_u, s1a_u = self.a[u], self.b[u]
        c_x = sa_u / sa_s
        c_eps = s1a_u - sa_u * s1a_s / sa_s
        return torch.add(x * c_x, eps, alpha=c_eps)

    def model_timesteps(self, t: int, batch: int, device: torch.device) -> torch.Tensor:
        """The integer timestep t, int64."""
        return torch.full((batch,), t, dtype=torch.long, device=device)


class FlowMatchSchedule(NoiseSchedule):
    """Rectified flow at fixed, unshifted noise levels sigma = t / T.

    Args:
        num_train_timesteps: the scheduler's T (``scheduler.config.num_train_timesteps``, 1000).
    """

    kind = "flow"

    def __init__(self, num_train_timesteps: Any) -> None:
        n = check_int(num_train_timesteps, "num_train_timesteps", minimum=2)
        self.sigmas = [t / n for t in range(n)]
        self.a = [1.0 - s for s in self.sigmas]
        self.b = list(self.sigmas)

    def eps_from_output(self, out: torch.Tensor, z: torch.Tensor, t: int, prediction_type: str) -> torch.Tensor:
        """eps_hat = z_t + (1 - sigma) o for the velocity o = e - z0."""
        if prediction_type != FLOW_PREDICTION:
            raise UnknownNameError(
                f"prediction_type: a rectified-flow schedule takes {FLOW_PREDICTION!r} (velocity) outputs, "
                f"got {prediction_type!r}"
            )
        return torch.add(z, out, alpha=self.a[t])

    def step(self, x: torch.Tensor, eps: torch.Tensor, s: int, u: int) -> torch.Tensor:
        """Euler on the velocity: o = (eps - x) / (1 - sigma_s); returns x + (sigma_u - sigma_s) o."""
        c = (self.sigmas[u] - self.sigmas[s]) / self.a[s]
        return torch.add(x * (1.0 - c), eps, alpha=c)

    def model_timesteps(self, t: int, batch: int, device: torch.device) -> torch.Tensor:
        """float32 sigma * T, as ``FlowMatchEulerDiscreteScheduler.set_timesteps(sigmas=[sigma])`` with
        shift 1 gives it and the pipeline broadcasts it (``t.expand(batch)``)."""
        n = self.num_train_timesteps
        sigma = torch.tensor(self.sigmas[t], dtype=torch.float32, device=device)
        return (sigma * n).expand(batch)
