"""Stable Diffusion 3 / 3.5 as a :class:`~ldminv_core.models.noise_prediction.NoisePrediction` family.

SD3's denoiser is an ``SD3Transformer2DModel`` (MMDiT) trained by rectified flow
(``FlowMatchEulerDiscreteScheduler``); its output is the velocity ``v = e - z0``, converted to
eps_hat by :class:`~ldminv_core.models.schedules.FlowMatchSchedule` (METHOD.md section 5:
``sigma = t / T`` unshifted, ``eps_hat = z_t + (1 - sigma) o``, the network given float32
``sigma * T`` as the pipeline's timesteps are).

It is conditioned here as ``StableDiffusion3Pipeline.encode_prompt`` conditions it for one prompt
with classifier-free guidance off (``pipeline_stable_diffusion_3.py``):

- ``encoder_hidden_states``: the penultimate hidden states of CLIP-L (``text_encoder``) and
  CLIP-G (``text_encoder_2``), both padded to the first tokenizer's ``model_max_length``,
  concatenated on the feature axis and zero-padded (or cut) to the T5 width, followed on the
  token axis by T5's last hidden states (``text_encoder_3``, ``max_sequence_length`` = 256
  tokens) or, when the folder has no T5, by zeros (B, 256, ``joint_attention_dim``) as the
  pipeline uses;
- ``pooled_projections``: both CLIP encoders' ``text_embeds`` concatenated (B, 2 x projection).

The attacks pass one conditioning tensor per batch; the pooled projection travels in extra rows
of it (:func:`~ldminv_core.models.sdxl.pack_pooled`). The VAE is the 16-channel AutoencoderKL
with ``shift_factor``; ``LoadedModel`` encodes ``(E(x).mean - shift_factor) * scaling_factor``
and decodes ``D(z / scaling_factor + shift_factor)`` for every family alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from .._validation import check_int
from ..errors import EmptyInputError, LdminvError
from .noise_prediction import NoisePrediction
from .noise_prediction import _place as _place_module
from .schedules import FLOW_PREDICTION, is_flow_scheduler
from .sdxl import pack_pooled, unpack_pooled

__all__ = ["SD3_PIPELINE_CLASSES", "SD3_MAX_SEQUENCE_LENGTH", "SD3NoisePredictor", "check_sd3_transformer",
           "build_sd3"]

SD3_PIPELINE_CLASSES: tuple[str, ...] = (
    "StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "StableDiffusion3InpaintPipeline",
)
"""``model_index.json`` ``_class_name`` values of an SD3 / SD3.5 folder."""

SD3_MAX_SEQUENCE_LENGTH = 256
"""T5 tokens of the pipeline's default ``max_sequence_length`` (also the zeros' length without T5)."""


def check_sd3_transformer(transformer: Any) -> None:
    """LdminvError unless ``transformer`` is a diffusers ``SD3Transformer2DModel``."""
    from diffusers import SD3Transformer2DModel

    if not isinstance(transformer, SD3Transformer2DModel):
        raise LdminvError(
            f"transformer: expected a diffusers SD3Transformer2DModel, got {type(transformer).__name__}"
        )


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """``module`` on ``device`` in ``dtype`` (:func:`noise_prediction._place`), eval mode, and
    without parameter gradients."""
    _place_module(module, device, dtype)
    module.requires_grad_(False)


def place_flow_components(scheduler: Any, modules: Sequence[Any], *, family: str, device: str | torch.device,
                          dtype: torch.dtype) -> torch.device:
    """The checks and placement a rectified-flow family's ``from_components`` shares (SD3, Flux):
    LdminvError unless ``scheduler`` is a FlowMatch scheduler and ``dtype`` a floating dtype; each
    module of ``modules`` that is not None is placed (:func:`_place`). Returns the device."""
    if not is_flow_scheduler(scheduler):
        raise LdminvError(
            "scheduler: expected a rectified-flow scheduler (FlowMatchEulerDiscreteScheduler) for "
            f"{family} transformer, got {type(scheduler).__name__}"
        )
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise LdminvError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    device = torch.device(device)
    for module in modules:
        if module is not None:
            _place(module, device, dtype)
    return device


def _clip_length(tokenizer: Any, encoder: Any) -> int:
    """The first CLIP tokenizer's model_max_length (the pipeline's ``tokenizer_max_length``),
    capped at the encoder's position embeddings."""
    length = int(min(tokenizer.model_max_length, 1 << 30))
    te_max = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    return int(te_max) if te_max is not None and length > te_max else length


def _check_captions(captions: Sequence[str | None]) -> list[str]:
    if isinstance(captions, str):
        raise LdminvError("captions: expected a sequence of strings (or None), got a single string")
    texts = ["" if c is None else c for c in captions]
    if not texts:
        raise EmptyInputError("captions: expected at least one caption, got an empty sequence")
    bad = [i for i, c in enumerate(texts) if not isinstance(c, str)]
    if bad:
        raise LdminvError(f"captions[{bad[0]}]: expected a string or None, got {type(texts[bad[0]]).__name__}")
    return texts


@dataclass(eq=False)
class SD3NoisePredictor(NoisePrediction):
    """eps_hat of an SD3 / SD3.5 transformer, conditioned as ``StableDiffusion3Pipeline`` conditions
    it (guidance off), on the unshifted rectified-flow schedule.

    Attributes:
        transformer: ``SD3Transformer2DModel``.
        flow_timesteps: the scheduler's T (``scheduler.config.num_train_timesteps``).
        text_encoder, tokenizer: CLIP-L (``CLIPTextModelWithProjection``) and its tokenizer.
        text_encoder_2, tokenizer_2: CLIP-G (``CLIPTextModelWithProjection``) and its tokenizer.
        text_encoder_3, tokenizer_3: T5 (``T5EncoderModel``) and its tokenizer, or None (zeros).
        max_sequence_length: T5 tokens (the pipeline's default 256).
        device, dtype: where and in which floating dtype the transformer runs.
    """

    transformer: torch.nn.Module = field(repr=False)
    text_encoder: torch.nn.Module = field(repr=False)
    tokenizer: Any = field(repr=False)
    text_encoder_2: torch.nn.Module = field(repr=False)
    tokenizer_2: Any = field(repr=False)
    text_encoder_3: torch.nn.Module | None = field(default=None, repr=False)
    tokenizer_3: Any = field(default=None, repr=False)
    flow_timesteps: int = 1000
    max_sequence_length: int = SD3_MAX_SEQUENCE_LENGTH
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        check_sd3_transformer(self.transformer)
        for enc, tok, what in ((self.text_encoder, self.tokenizer, "text_encoder/tokenizer (CLIP-L)"),
                               (self.text_encoder_2, self.tokenizer_2, "text_encoder_2/tokenizer_2 (CLIP-G)")):
            if enc is None or tok is None:
                raise LdminvError(f"{what}: an SD3 model needs both, got encoder={type(enc).__name__}, "
                                  f"tokenizer={type(tok).__name__}")
        if (self.text_encoder_3 is None) != (self.tokenizer_3 is None):
            raise LdminvError("text_encoder_3/tokenizer_3 (T5): give both or neither")
        if not isinstance(self.dtype, torch.dtype) or not self.dtype.is_floating_point:
            raise LdminvError(f"dtype: expected a floating torch.dtype, got {self.dtype!r}")
        self.max_sequence_length = check_int(self.max_sequence_length, "max_sequence_length", minimum=1)
        self.prediction_type = FLOW_PREDICTION
        self.is_conditional = True
        self.device = torch.device(self.device)
        self._init_flow_schedule(self.flow_timesteps)
        cfg = self.transformer.config
        self.pooled_dim = int(cfg.pooled_projection_dim)
        self.joint_dim = int(cfg.joint_attention_dim)
        self.clip_tokens = _clip_length(self.tokenizer, self.text_encoder)
        self.n_tokens = self.clip_tokens + self.max_sequence_length
        clip_pooled = sum(int(e.config.projection_dim) for e in (self.text_encoder, self.text_encoder_2))
        if clip_pooled != self.pooled_dim:
            raise LdminvError(
                f"transformer: pooled_projection_dim = {self.pooled_dim} but the CLIP encoders' projection_dim "
                f"sum to {clip_pooled}"
            )

    @classmethod
    def from_components(cls, transformer: Any, scheduler: Any, *, text: dict[str, Any],
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        max_sequence_length: int = SD3_MAX_SEQUENCE_LENGTH) -> "SD3NoisePredictor":
        """Wrap the loaded SD3 components (``text``: text_encoder, tokenizer, text_encoder_2,
        tokenizer_2 and, when present, text_encoder_3, tokenizer_3); modules are moved to
        device/dtype, eval mode, no parameter gradients."""
        if is_flow_scheduler(scheduler):
            check_sd3_transformer(transformer)
        device = place_flow_components(
            scheduler, (transformer, text.get("text_encoder"), text.get("text_encoder_2"), text.get("text_encoder_3")),
            family="an SD3", device=device, dtype=dtype)
        return cls(
            transformer=transformer,
            text_encoder=text.get("text_encoder"),
            tokenizer=text.get("tokenizer"),
            text_encoder_2=text.get("text_encoder_2"),
            tokenizer_2=text.get("tokenizer_2"),
            text_encoder_3=text.get("text_encoder_3"),
            tokenizer_3=text.get("tokenizer_3"),
            flow_timesteps=int(scheduler.config.num_train_timesteps),
            max_sequence_length=max_sequence_length,
            device=device,
            dtype=dtype,
        )

    @property
    def in_channels(self) -> int:
        """Latent channels the transformer expects."""
        return int(self.transformer.config.in_channels)

    def _clip(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Both CLIP encoders' penultimate states concatenated (B, L, D_L + D_G) and their
        ``text_embeds`` concatenated (B, P)."""
        states, pooled = [], []
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(texts, padding="max_length", max_length=self.clip_tokens, truncation=True,
                            return_tensors="pt").input_ids
            out = encoder(ids.to(self.device), output_hidden_states=True)
            pooled.append(out[0])
            states.append(out.hidden_states[-2])
        return torch.cat(states, dim=-1), torch.cat(pooled, dim=-1)

    def _t5(self, texts: list[str]) -> torch.Tensor:
        """T5's last hidden states (B, max_sequence_length, D), or zeros of the transformer's
        ``joint_attention_dim`` without a T5 encoder."""
        if self.text_encoder_3 is None:
            return torch.zeros((len(texts), self.max_sequence_length, self.joint_dim),
                               device=self.device, dtype=self.dtype)
        ids = self.tokenizer_3(texts, padding="max_length", max_length=self.max_sequence_length,
                               truncation=True, add_special_tokens=True, return_tensors="pt").input_ids
        return self.text_encoder_3(ids.to(self.device))[0]

    @torch.no_grad()
    def encode_prompts(self, captions: Sequence[str | None]) -> torch.Tensor:
        """Packed conditioning (B, n_tokens + r, D) of the captions (None -> empty prompt): the
        joint text tokens (B, n_tokens, D) and the pooled projection (see
        :func:`~ldminv_core.models.sdxl.pack_pooled`)."""
        texts = _check_captions(captions)
        clip_states, pooled = self._clip(texts)
        t5_states = self._t5(texts)
        clip_states = torch.nn.functional.pad(clip_states, (0, t5_states.shape[-1] - clip_states.shape[-1]))
        hidden = torch.cat([clip_states.to(self.dtype), t5_states.to(self.dtype)], dim=-2)
        return pack_pooled(hidden, pooled.to(self.dtype))

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        """The transformer's velocity (B, C, h, w) at timestep ``t`` with the packed ``cond``."""
        hidden, pooled = unpack_pooled(cond, self.n_tokens, self.pooled_dim)
        ts = self.schedule.model_timesteps(t, x.shape[0], self.device)
        return self.transformer(hidden_states=x, timestep=ts, encoder_hidden_states=hidden,
                                pooled_projections=pooled, return_dict=False)[0]


def build_sd3(transformer: Any, scheduler: Any, text: dict[str, Any], *, vae_scale_factor: int,
              device: torch.device, dtype: torch.dtype) -> SD3NoisePredictor:
    """The family registry's builder (``Family.build``) of an SD3 predictor."""
    return SD3NoisePredictor.from_components(transformer, scheduler, text=text, device=device, dtype=dtype)
