"""Flux (FLUX.1 dev-style with a guidance embedding, schnell-style without) as a
:class:`~ldminv_core.models.noise_prediction.NoisePrediction` family.

Flux's denoiser is a ``FluxTransformer2DModel`` trained by rectified flow
(``FlowMatchEulerDiscreteScheduler``); its output is the velocity ``v = e - z0``, converted to
eps_hat by :class:`~ldminv_core.models.schedules.FlowMatchSchedule` (METHOD.md section 5: unshifted
``sigma = t / T``, ``eps_hat = z_t + (1 - sigma) o``).

It is conditioned here as ``FluxPipeline`` (``pipeline_flux.py``) conditions it for one prompt
with true classifier-free guidance off:

- ``pooled_projections``: the ``pooler_output`` of CLIP (``text_encoder``, a ``CLIPTextModel``),
  its tokens padded to the tokenizer's ``model_max_length``;
- ``encoder_hidden_states``: T5's last hidden states (``text_encoder_2``, ``T5EncoderModel``),
  padded to ``max_sequence_length`` = 512 tokens; ``txt_ids`` zeros (512, 3);
- the latents (B, C, h, w) packed into 2x2 patches (B, h/2 * w/2, 4C) (:func:`pack_latents`),
  ``img_ids`` the patch grid's (0, row, column) (:func:`latent_image_ids`), the output unpacked
  again (:func:`unpack_latents`); h and w must be even;
- the timestep: float32 ``sigma * T`` as the scheduler gives it, in the latents' dtype, divided
  by 1000 (the pipeline's ``timestep / 1000``);
- ``guidance``: a guidance-distilled (dev-style, ``guidance_embeds`` True) transformer gets
  ``FluxPipeline.__call__``'s default ``guidance_scale`` :data:`FLUX_GUIDANCE_SCALE` = 3.5 as
  float32, one per row; a schnell-style transformer gets None.

The attacks pass one conditioning tensor per batch; the pooled projection travels in extra rows
of it (:func:`~ldminv_core.models.sdxl.pack_pooled`). The VAE is the 16-channel AutoencoderKL with
``shift_factor``, which ``LoadedModel`` handles for every family alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .._validation import check_int
from ..errors import LdminvError, ShapeError
from .noise_prediction import NoisePrediction
from .schedules import FLOW_PREDICTION, is_flow_scheduler
from .sd3 import _check_captions, _clip_length, place_flow_components
from .sdxl import pack_pooled, unpack_pooled

__all__ = ["FLUX_PIPELINE_CLASSES", "FLUX_MAX_SEQUENCE_LENGTH", "FLUX_GUIDANCE_SCALE", "FLUX_PATCH",
           "FluxNoisePredictor", "check_flux_transformer", "pack_latents", "unpack_latents",
           "latent_image_ids", "build_flux"]

FLUX_PIPELINE_CLASSES: tuple[str, ...] = ("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline")
"""``model_index.json`` ``_class_name`` values of a Flux folder (text-to-image transformer, 64 inputs)."""

FLUX_MAX_SEQUENCE_LENGTH = 512
"""T5 tokens of ``FluxPipeline.encode_prompt``'s default ``max_sequence_length``."""

FLUX_GUIDANCE_SCALE = 3.5
"""``FluxPipeline.__call__``'s default ``guidance_scale``: the embedded guidance of a dev-style model."""

FLUX_PATCH = 2
"""Side of the latent patches Flux packs into tokens (latent h and w must be multiples of it)."""


def check_flux_transformer(transformer: Any) -> None:
    """LdminvError unless ``transformer`` is a diffusers ``FluxTransformer2DModel`` taking packed
    2x2 patches of its latents (``in_channels`` a multiple of 4)."""
    from diffusers import FluxTransformer2DModel

    if not isinstance(transformer, FluxTransformer2DModel):
        raise LdminvError(
            f"transformer: expected a diffusers FluxTransformer2DModel, got {type(transformer).__name__}"
        )
    n_in = int(transformer.config.in_channels)
    if n_in % (FLUX_PATCH * FLUX_PATCH):
        raise LdminvError(
            f"transformer: in_channels = {n_in}; expected a multiple of 4 (2x2 packed latent patches)"
        )


def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """2x2 patches of latents as tokens, in ``FluxPipeline``'s order.

    Args:
        z: (B, C, h, w) latents, h and w even.

    Returns:
        (B, h/2 * w/2, 4C): token (i, j) in row-major order over the patch grid holds, for each
        channel c, the patch's values z[c, 2i + di, 2j + dj] in the order (c, di, dj).
    """
    if z.ndim != 4 or z.shape[2] % FLUX_PATCH or z.shape[3] % FLUX_PATCH:
        raise ShapeError(f"z: expected latents (B, C, h, w) with h and w even, got shape {tuple(z.shape)}")
    b, c, h, w = z.shape
    patches = z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`.

    Args:
        tokens: (B, height/2 * width/2, 4C).
        height, width: the latent size h, w (even).

    Returns:
        (B, C, height, width).
    """
    b, n, d = tokens.shape
    if height % 2 or width % 2 or n != (height // 2) * (width // 2) or d % 4:
        raise ShapeError(
            f"tokens: expected (B, {height // 2} * {width // 2}, 4C) for latents of size {height}x{width} "
            f"(even), got shape {tuple(tokens.shape)}"
        )
    grid = tokens.reshape(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, d // 4, height, width)


def latent_image_ids(height: int, width: int, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(height/2 * width/2, 3) position ids of the packed tokens of (.., height, width) latents:
    (0, row, column) of each 2x2 patch, row-major (the rotary embedding's image positions)."""
    rows, cols = height // 2, width // 2
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows, dtype=ids.dtype)[:, None]
    ids[..., 2] = torch.arange(cols, dtype=ids.dtype)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


@dataclass(eq=False)
class FluxNoisePredictor(NoisePrediction):
    """eps_hat of a Flux transformer, conditioned as ``FluxPipeline`` conditions it (true CFG off,
    embedded guidance at the pipeline's default for a dev-style model), on the unshifted
    rectified-flow schedule.

    Attributes:
        transformer: ``FluxTransformer2DModel``.
        text_encoder, tokenizer: CLIP (``CLIPTextModel``, pooled output) and its tokenizer.
        text_encoder_2, tokenizer_2: T5 (``T5EncoderModel``) and its tokenizer.
        flow_timesteps: the scheduler's T (``scheduler.config.num_train_timesteps``).
        max_sequence_length: T5 tokens (the pipeline's default 512).
        guidance_scale: the embedded guidance given to a ``guidance_embeds`` transformer
            (:data:`FLUX_GUIDANCE_SCALE`); set to None after construction when the transformer has
            no guidance embedding (schnell-style). Read it to see what was used.
        device, dtype: where and in which floating dtype the transformer runs.
    """

    transformer: torch.nn.Module = field(repr=False)
    text_encoder: torch.nn.Module = field(repr=False)
    tokenizer: Any = field(repr=False)
    text_encoder_2: torch.nn.Module = field(repr=False)
    tokenizer_2: Any = field(repr=False)
    flow_timesteps: int = 1000
    max_sequence_length: int = FLUX_MAX_SEQUENCE_LENGTH
    guidance_scale: float | None = FLUX_GUIDANCE_SCALE
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        check_flux_transformer(self.transformer)
        for enc, tok, what in ((self.text_encoder, self.tokenizer, "text_encoder/tokenizer (CLIP)"),
                               (self.text_encoder_2, self.tokenizer_2, "text_encoder_2/tokenizer_2 (T5)")):
            if enc is None or tok is None:
                raise LdminvError(f"{what}: a Flux model needs both, got encoder={type(enc).__name__}, "
                                  f"tokenizer={type(tok).__name__}")
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise LdminvError(f"dtype: expected a floating torch.dtype, got {self.dtype!r}")
        self.max_sequence_length = check_int(self.max_sequence_length, "max_sequence_length", minimum=1)
        self.prediction_type = FLOW_PREDICTION
        self.is_conditional = True
        self.device = torch.device(self.device)
        self._init_flow_schedule(self.flow_timesteps)
        cfg = self.transformer.config
        self.guidance_embeds = bool(cfg.get("guidance_embeds", False))
        self.guidance_scale = self._checked_guidance(self.guidance_scale) if self.guidance_embeds else None
        self.pooled_dim = int(cfg.pooled_projection_dim)
        self.joint_dim = int(cfg.joint_attention_dim)
        self.clip_tokens = _clip_length(self.tokenizer, self.text_encoder)
        self.n_tokens = self.max_sequence_length
        for enc, key, need, what in ((self.text_encoder, "hidden_size", self.pooled_dim, "pooled_projection_dim"),
                                     (self.text_encoder_2, "d_model", self.joint_dim, "joint_attention_dim")):
            width = getattr(enc.config, key, None)
            if width is not None and int(width) != need:
                raise LdminvError(
                    f"transformer: {what} = {need} but {type(enc).__name__}'s {key} is {width}; the text "
                    "encoders do not fit this transformer"
                )

    @staticmethod
    def _checked_guidance(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise LdminvError(f"guidance_scale: expected a finite number for a guidance-distilled Flux "
                              f"transformer (guidance_embeds True), got {value!r}")
        return float(value)

    @classmethod
    def from_components(cls, transformer: Any, scheduler: Any, *, text: dict[str, Any],
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        max_sequence_length: int = FLUX_MAX_SEQUENCE_LENGTH,
                        guidance_scale: float = FLUX_GUIDANCE_SCALE) -> "FluxNoisePredictor":
        """Wrap the loaded Flux components (``text``: text_encoder, tokenizer, text_encoder_2,
        tokenizer_2); modules are moved to device/dtype, eval mode, no parameter gradients.
        ``guidance_scale`` is used only when the transformer has a guidance embedding."""
        if is_flow_scheduler(scheduler):
            check_flux_transformer(transformer)
        device = place_flow_components(scheduler, (transformer, text.get("text_encoder"), text.get("text_encoder_2")),
                                       family="a Flux", device=device, dtype=dtype)
        return cls(
            transformer=transformer,
            text_encoder=text.get("text_encoder"),
            tokenizer=text.get("tokenizer"),
            text_encoder_2=text.get("text_encoder_2"),
            tokenizer_2=text.get("tokenizer_2"),
            flow_timesteps=int(scheduler.config.num_train_timesteps),
            max_sequence_length=max_sequence_length,
            guidance_scale=guidance_scale,
            device=device,
            dtype=dtype,
        )

    @property
    def in_channels(self) -> int:
        """Latent channels (the transformer's ``in_channels`` / 4: it takes 2x2 packed patches)."""
        return int(self.transformer.config.in_channels) // (FLUX_PATCH * FLUX_PATCH)

    @torch.no_grad()
    def encode_prompts(self, captions: Sequence[str | None]) -> torch.Tensor:
        """Packed conditioning (B, max_sequence_length + r, joint_attention_dim) of the captions
        (None -> empty prompt): T5's states and CLIP's pooled output
        (see :func:`~ldminv_core.models.sdxl.pack_pooled`)."""
        texts = _check_captions(captions)
        clip_ids = self.tokenizer(texts, padding="max_length", max_length=self.clip_tokens, truncation=True,
                                  return_tensors="pt").input_ids
        pooled = self.text_encoder(clip_ids.to(self.device), output_hidden_states=False).pooler_output
        t5_ids = self.tokenizer_2(texts, padding="max_length", max_length=self.max_sequence_length,
                                  truncation=True, return_tensors="pt").input_ids
        states = self.text_encoder_2(t5_ids.to(self.device), output_hidden_states=False)[0]
        return pack_pooled(states.to(self.dtype), pooled.to(self.dtype))

    def model_inputs(self, x: torch.Tensor, t: int, cond: torch.Tensor) -> dict[str, Any]:
        """The transformer's keyword arguments for latents x (B, C, h, w) at timestep t with the
        packed ``cond``: hidden_states (B, h/2 * w/2, 4C), encoder_hidden_states (B, L, D),
        pooled_projections (B, P), timestep (B,) = float32 sigma T / 1000, img_ids, txt_ids and
        guidance (B,) float32 or None."""
        b, _, h, w = x.shape
        hidden, pooled = unpack_pooled(cond, self.n_tokens, self.pooled_dim)
        ts = self.schedule.model_timesteps(t, b, self.device).to(x.dtype) / 1000
        guidance = None
        if self.guidance_scale is not None:
            guidance = torch.full([1], self.guidance_scale, device=self.device, dtype=torch.float32).expand(b)
        return dict(hidden_states=pack_latents(x), encoder_hidden_states=hidden, pooled_projections=pooled,
                    timestep=ts, img_ids=latent_image_ids(h, w, device=self.device, dtype=x.dtype),
                    txt_ids=torch.zeros(hidden.shape[1], 3, device=self.device, dtype=hidden.dtype),
                    guidance=guidance)

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        """The transformer's velocity (B, C, h, w) at timestep ``t`` with the packed ``cond``."""
        out = self.transformer(**self.model_inputs(x, t, cond), return_dict=False)[0]
        return unpack_latents(out, x.shape[2], x.shape[3])


def build_flux(transformer: Any, scheduler: Any, text: dict[str, Any], *, vae_scale_factor: int,
               device: torch.device, dtype: torch.dtype) -> FluxNoisePredictor:
    """The family registry's builder (``Family.build``) of a Flux predictor."""
    return FluxNoisePredictor.from_components(transformer, scheduler, text=text, device=device, dtype=dtype)
