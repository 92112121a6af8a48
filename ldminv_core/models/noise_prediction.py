"""The noise-prediction view of a diffusion model: the one seam the attacks see of a model.

Every attack (:mod:`ldminv_core.attacks`) asks a model one question, "which noise eps do you
predict in the noisy latent z_t at timestep t (given this text)?", and moves latents along the
model's forward process z_t = a(t) z0 + b(t) e. :class:`NoisePrediction` is that view: its
schedule (:mod:`ldminv_core.models.schedules`: DDPM-family ``alphas_cumprod`` or rectified flow)
gives a(t), b(t), the deterministic step SecMI uses (DDIM or Euler) and the conversion of the
model's output (eps, v, x0 or flow velocity) to eps; the checks of its inputs and the learned
variance live here, once. A model family plugs
in by subclassing it and giving

- :meth:`NoisePrediction._forward`: the raw network output for a batch at one timestep,
- :meth:`NoisePrediction.encode_prompts`: the conditioning of a batch of captions (or None),
- ``in_channels`` and ``is_conditional``.

:class:`NoisePredictor` is today's family: a diffusers ``UNet2DModel`` (unconditional) or a
Stable Diffusion 1.x/2.x ``UNet2DConditionModel`` with its CLIP text encoder.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .._validation import check_int
from ..errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError, UnknownNameError
from .schedules import PREDICTION_TYPES, DDPMSchedule, FlowMatchSchedule, NoiseSchedule

__all__ = ["PREDICTION_TYPES", "NoisePrediction", "NoisePredictor"]


class NoisePrediction(ABC):
    """eps_hat(z_t, t [, cond]) of one model family, with its noise schedule.

    A subclass sets ``device``, ``dtype``, ``prediction_type`` and calls :meth:`_init_schedule`
    with the scheduler's ``alphas_cumprod`` (or :meth:`_init_flow_schedule` with a rectified-flow
    scheduler's T) when it is built; it implements :meth:`_forward`,
    :meth:`encode_prompts` and the properties ``in_channels`` / ``is_conditional``.
    """

    device: torch.device
    dtype: torch.dtype
    prediction_type: str
    alphas_cumprod: torch.Tensor | None
    is_conditional: bool
    schedule: NoiseSchedule

    # ------------------------------------------------------------------ the family's part

    @property
    @abstractmethod
    def in_channels(self) -> int:
        """Latent channels the network expects."""

    @abstractmethod
    def encode_prompts(self, captions: Sequence[str | None]) -> torch.Tensor | None:
        """Conditioning (B, L, D) of ``captions`` (None -> empty prompt), or None when the model
        is unconditional."""

    @abstractmethod
    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        """Raw network output (B, C or 2C, h, w) for latents x (B, C, h, w) in ``dtype`` on
        ``device`` at timestep ``t``; ``cond`` (B, L, D) or None. No grad, no validation."""

    # ------------------------------------------------------------------ schedule

    def _init_schedule(self, alphas_cumprod: Any) -> None:
        """The DDPM family's schedule: check and keep ``alphas_cumprod`` (float64 CPU)."""
        self._use_schedule(DDPMSchedule(alphas_cumprod))
        self.alphas_cumprod = self.schedule.alphas_cumprod

    def _init_flow_schedule(self, num_train_timesteps: Any) -> None:
        """Rectified flow's schedule (sigma = t / T, unshifted); no ``alphas_cumprod``."""
        self._use_schedule(FlowMatchSchedule(num_train_timesteps))
        self.alphas_cumprod = None

    def _use_schedule(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule
        # a(t), b(t) as Python floats (float64): every coefficient exact before the float32 math.
        self._a: list[float] = schedule.a
        self._b: list[float] = schedule.b
        self._empty_cond: Any = None

    @property
    def num_train_timesteps(self) -> int:
        """Number of training timesteps T of the schedule."""
        return self.schedule.num_train_timesteps

    def _step(self, x: torch.Tensor, eps: torch.Tensor, s: int, u: int) -> torch.Tensor:
        """The family's deterministic move of x from timestep s to u given eps = eps_hat(x, s)
        (DDIM for the DDPM family, Euler on the velocity for rectified flow)."""
        return self.schedule.step(x, eps, s, u)

    # ------------------------------------------------------------------ prediction

    def _empty_prompt(self) -> torch.Tensor:
        """Cached conditioning (1, L, D) of the empty prompt."""
        if self._empty_cond is None:
            self._empty_cond = self.encode_prompts([""])
        return self._empty_cond

    def check_latents(self, z: Any, name: str = "z") -> None:
        """Raise unless ``z`` is a finite, non-empty (N, in_channels, h, w) array or tensor."""
        shape = tuple(getattr(z, "shape", ()))
        if len(shape) != 4:
            raise ShapeError(f"{name}: expected a 4-D latent batch (N, C, h, w), got shape {shape}")
        if shape[0] == 0 or shape[2] == 0 or shape[3] == 0:
            raise EmptyInputError(f"{name}: expected at least one non-empty latent, got shape {shape}")
        if shape[1] != self.in_channels:
            raise ShapeError(
                f"{name}: has {shape[1]} latent channels (shape {shape}) but the UNet expects "
                f"unet.config.in_channels = {self.in_channels}"
            )
        finite = torch.isfinite(z).all() if isinstance(z, torch.Tensor) else np.isfinite(z).all()
        if not bool(finite):
            raise NonFiniteError(f"{name}: holds NaN or infinite values; expected finite latents")

    def __call__(self, z_t: torch.Tensor, t: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise eps (B, C, h, w) float32 for noisy latents z_t (B, C, h, w) at timestep t.

        ``cond`` is the text encoder's hidden states (B or 1, L, D) for conditional models
        (None -> empty prompt); it must be None for unconditional ones.
        """
        if not isinstance(z_t, torch.Tensor):
            raise LdminvError(f"z_t: expected a torch.Tensor, got {type(z_t).__name__}")
        self.check_latents(z_t, "z_t")
        t = check_int(t, "t")
        if not 0 <= t < self.num_train_timesteps:
            raise LdminvError(f"t: expected a timestep in [0, {self.num_train_timesteps}), got {t}")
        cond = self._check_cond(cond, z_t.shape[0])
        with torch.no_grad():
            return self._eps(z_t.to(self.device, torch.float32), t, cond)

    def _check_cond(self, cond: Any, b: int) -> torch.Tensor | None:
        """``cond`` on the device, expanded to ``b`` rows (the empty prompt when None)."""
        if not self.is_conditional:
            if cond is not None:
                raise LdminvError("cond: the UNet is unconditional (UNet2DModel); expected cond=None")
            return None
        if cond is None:
            cond = self._empty_prompt()
        if not isinstance(cond, torch.Tensor) or cond.ndim != 3 or cond.shape[0] not in (1, b):
            raise ShapeError(
                f"cond: expected encoder hidden states of shape ({b} or 1, L, D), "
                f"got {tuple(getattr(cond, 'shape', ()))}"
            )
        cond = cond.to(self.device, self.dtype)
        if cond.shape[0] != b:
            cond = cond.expand(b, -1, -1)
        return cond

    def _eps(self, z: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        """eps (B, C, h, w) float32 from float32 z on the device; no validation, no grad."""
        c = z.shape[1]
        x = z if z.dtype == self.dtype else z.to(self.dtype)
        out = self._forward(x, t, cond)
        if out.shape[1] == 2 * c:  # learned variance: first half is the mean prediction
            out = out[:, :c]
        if out.shape != z.shape:
            raise ShapeError(f"unet output: expected shape {tuple(z.shape)}, got {tuple(out.shape)}")
        return self.schedule.eps_from_output(out.float(), z, t, self.prediction_type)


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move ``module`` to device/dtype (casting only when needed) and set eval mode."""
    module.to(device)
    if any(prm.is_floating_point() and prm.dtype != dtype for prm in module.parameters()):
        module.to(dtype=dtype)
    module.eval()


def _check_unet(unet: Any) -> bool:
    """True for a text-conditioned UNet; LdminvError for a UNet this view does not support."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    if not isinstance(unet, (UNet2DModel, UNet2DConditionModel)):
        raise LdminvError(
            "unet: expected a diffusers UNet2DModel or UNet2DConditionModel, "
            f"got {type(unet).__name__}"
        )
    cfg = unet.config
    if isinstance(unet, UNet2DModel):
        if cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
            raise LdminvError(
                "unet: a class-conditional UNet2DModel (class labels) is not a NoisePredictor; use "
                "ldminv_core.models.class_conditional.class_conditional_predictor (load_model picks it)"
            )
    elif cfg.get("addition_embed_type") is not None or cfg.get("class_embed_type") is not None:
        raise LdminvError(
            "unet: UNet2DConditionModel with extra embeddings "
            f"(addition_embed_type={cfg.get('addition_embed_type')!r}, "
            f"class_embed_type={cfg.get('class_embed_type')!r}) is not supported; "
            "expected a Stable Diffusion 1.x/2.x style text-conditioned UNet"
        )
    return isinstance(unet, UNet2DConditionModel)


@dataclass(eq=False)
class NoisePredictor(NoisePrediction):
    """A diffusers UNet + its scheduler's alphas_cumprod, predicting eps for any prediction type.

    Build it with :meth:`from_components`. ``predictor(z_t, t, cond)`` returns eps (B, C, h, w)
    float32 whatever the UNet's prediction type (epsilon, v_prediction or sample) and dtype.

    Attributes:
        unet: ``diffusers.UNet2DModel`` (unconditional) or ``UNet2DConditionModel`` (text).
        alphas_cumprod: float64 CPU tensor (num_train_timesteps,), the scheduler's a_t.
        prediction_type: one of :data:`PREDICTION_TYPES`.
        text_encoder, tokenizer: CLIP text encoder and tokenizer (conditional models only).
        device, dtype: where and in which floating dtype the UNet runs.
    """

    unet: torch.nn.Module = field(repr=False)
    alphas_cumprod: torch.Tensor = field(repr=False)
    prediction_type: str = "epsilon"
    text_encoder: torch.nn.Module | None = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        self.is_conditional = _check_unet(self.unet)
        if self.is_conditional and (self.text_encoder is None or self.tokenizer is None):
            raise LdminvError(
                "text_encoder/tokenizer: a UNet2DConditionModel needs both a text encoder and a "
                f"tokenizer, got text_encoder={type(self.text_encoder).__name__}, "
                f"tokenizer={type(self.tokenizer).__name__}"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise UnknownNameError(
                f"prediction_type: expected one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise LdminvError(f"dtype: expected a floating torch.dtype, got {self.dtype!r}")
        self.device = torch.device(self.device)
        self._init_schedule(self.alphas_cumprod)

    @classmethod
    def from_components(
        cls,
        unet: torch.nn.Module,
        scheduler: Any,
        *,
        text_encoder: torch.nn.Module | None = None,
        tokenizer: Any = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "NoisePredictor":
        """Wrap a diffusers UNet, its scheduler and (for text models) a CLIP text encoder.

        The UNet and the text encoder are moved to ``device``/``dtype`` and put in eval mode.
        ``scheduler`` must expose ``alphas_cumprod`` (num_train_timesteps,) and may set
        ``config.prediction_type`` (default "epsilon").
        """
        alphas = getattr(scheduler, "alphas_cumprod", None)
        if alphas is None:
            raise LdminvError(
                f"scheduler: expected a scheduler with alphas_cumprod (e.g. DDPMScheduler), "
                f"got {type(scheduler).__name__} without it"
            )
        config = getattr(scheduler, "config", None)
        if hasattr(config, "get"):
            prediction_type = config.get("prediction_type")
        else:
            prediction_type = getattr(config, "prediction_type", None)
        if not isinstance(unet, torch.nn.Module):
            raise LdminvError(f"unet: expected a diffusers UNet module, got {type(unet).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise LdminvError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
        device = torch.device(device)
        _place(unet, device, dtype)
        if text_encoder is not None:
            _place(text_encoder, device, dtype)
        return cls(
            unet=unet,
            alphas_cumprod=torch.as_tensor(alphas).detach().to("cpu", torch.float64),
            prediction_type=str(prediction_type or "epsilon"),
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            device=device,
            dtype=dtype,
        )

    @property
    def in_channels(self) -> int:
        """Latent channels the UNet expects."""
        return int(self.unet.config.in_channels)

    @torch.no_grad()
    def encode_prompts(self, captions: Sequence[str | None]) -> torch.Tensor | None:
        """CLIP hidden states (B, L, D) of the captions (None -> empty prompt).

        Returns None for an unconditional UNet (captions ignored). L is the tokenizer's
        model_max_length (capped at the text encoder's max_position_embeddings).
        """
        if not self.is_conditional:
            return None
        if isinstance(captions, str):
            raise LdminvError("captions: expected a sequence of strings (or None), got a single string")
        caps = list(captions)
        if not caps:
            raise EmptyInputError("captions: expected at least one caption, got an empty sequence")
        for i, c in enumerate(caps):
            if c is not None and not isinstance(c, str):
                raise LdminvError(f"captions[{i}]: expected a string or None, got {type(c).__name__}")
        texts = ["" if c is None else c for c in caps]
        max_length = int(min(self.tokenizer.model_max_length, 1 << 30))
        te_max = getattr(getattr(self.text_encoder, "config", None), "max_position_embeddings", None)
        if te_max is not None and max_length > te_max:
            max_length = int(te_max)
        tokens = self.tokenizer(
            texts,
            padding="max_length",
            max_length=max_length,
            truncation=True,
            return_tensors="pt",
        )
        hidden = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return hidden.to(self.dtype)

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        """The UNet's output (B, C or 2C, h, w) at timestep ``t`` for all rows."""
        ts = torch.full((x.shape[0],), t, dtype=torch.long, device=self.device)
        if cond is None:
            return self.unet(x, ts, return_dict=False)[0]
        return self.unet(x, ts, encoder_hidden_states=cond, return_dict=False)[0]
