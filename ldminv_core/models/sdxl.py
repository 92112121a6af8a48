"""Stable Diffusion XL as a :class:`~ldminv_core.models.noise_prediction.NoisePrediction` family.

SDXL conditions its ``UNet2DConditionModel`` (``addition_embed_type="text_time"``) on three
things, built here the way diffusers' ``StableDiffusionXLPipeline`` builds them for one prompt
with classifier-free guidance off (``encode_prompt`` and ``_get_add_time_ids`` of
``pipeline_stable_diffusion_xl.py``):

- ``encoder_hidden_states``: the penultimate hidden states of both CLIP text encoders
  (``text_encoder`` then ``text_encoder_2``), concatenated on the feature axis, (B, L, D1 + D2);
- ``added_cond_kwargs["text_embeds"]``: the pooled projection of ``text_encoder_2``
  (``CLIPTextModelWithProjection``'s ``text_embeds``), (B, P);
- ``added_cond_kwargs["time_ids"]``: original size + crop top-left + target size, with
  original = target = the analysed image size and crop (0, 0) (METHOD.md section 5).

The attacks pass one conditioning tensor (B, L', D) per batch; :func:`pack_pooled` keeps the
pooled embedding in extra rows of that tensor (zero-padded to D) so it travels with the hidden
states through batching and expansion unchanged, and :func:`unpack_pooled` splits it again.
The time ids depend only on the latent size and are built at each call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..errors import EmptyInputError, LdminvError, ShapeError, UnknownNameError
from .noise_prediction import PREDICTION_TYPES, NoisePrediction

__all__ = ["SDXLNoisePredictor", "pack_pooled", "unpack_pooled", "sdxl_time_ids"]


def pack_pooled(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """(B, L + r, D): ``hidden`` (B, L, D) followed by ``pooled`` (B, P) written row-major into
    r = ceil(P / D) zero-padded rows."""
    b, _, d = hidden.shape
    p = pooled.shape[-1]
    rows = math.ceil(p / d)
    extra = hidden.new_zeros(b, rows * d)
    extra[:, :p] = pooled.to(hidden.dtype)
    return torch.cat([hidden, extra.view(b, rows, d)], dim=1)


def unpack_pooled(cond: torch.Tensor, n_tokens: int, pooled_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack_pooled`: (hidden (B, n_tokens, D), pooled (B, pooled_dim))."""
    hidden = cond[:, :n_tokens]
    pooled = cond[:, n_tokens:].reshape(cond.shape[0], -1)[:, :pooled_dim]
    return hidden, pooled


def sdxl_time_ids(height: int, width: int, *, batch: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(batch, 6) ``add_time_ids`` = original (h, w) + crop (0, 0) + target (h, w)."""
    ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=dtype, device=device)
    return ids.expand(batch, -1)


def _max_tokens(tokenizer: Any, encoder: Any) -> int:
    """The tokenizer's model_max_length, capped at the encoder's position embeddings."""
    length = int(min(tokenizer.model_max_length, 1 << 30))
    te_max = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    return int(te_max) if te_max is not None and length > te_max else length


def _check_sdxl_unet(unet: Any) -> None:
    from diffusers import UNet2DConditionModel

    if not isinstance(unet, UNet2DConditionModel) or unet.config.get("addition_embed_type") != "text_time":
        got = unet.config.get("addition_embed_type") if isinstance(unet, UNet2DConditionModel) else None
        raise LdminvError(
            "unet: expected an SDXL UNet2DConditionModel with addition_embed_type='text_time', "
            f"got {type(unet).__name__} (addition_embed_type={got!r})"
        )


@dataclass(eq=False)
class SDXLNoisePredictor(NoisePrediction):
    """eps_hat of an SDXL UNet, conditioned as ``StableDiffusionXLPipeline`` conditions it
    (guidance off).

    Attributes:
        unet: SDXL ``UNet2DConditionModel`` (``addition_embed_type="text_time"``).
        alphas_cumprod: float64 CPU tensor, the scheduler's a_t.
        text_encoder, tokenizer: the first CLIP text encoder (``CLIPTextModel``), or None (the
            refiner layout: ``text_encoder_2`` only).
        text_encoder_2, tokenizer_2: ``CLIPTextModelWithProjection`` and its tokenizer.
        vae_scale_factor: image pixels per latent pixel (the time ids are in image pixels).
        prediction_type, device, dtype: as :class:`~ldminv_core.models.noise_prediction.NoisePredictor`.
    """

    unet: torch.nn.Module = field(repr=False)
    alphas_cumprod: torch.Tensor = field(repr=False)
    text_encoder_2: torch.nn.Module = field(repr=False)
    tokenizer_2: Any = field(repr=False)
    text_encoder: torch.nn.Module | None = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    vae_scale_factor: int = 8
    prediction_type: str = "epsilon"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        _check_sdxl_unet(self.unet)
        if self.text_encoder_2 is None or self.tokenizer_2 is None:
            raise LdminvError("text_encoder_2/tokenizer_2: an SDXL model needs both (CLIPTextModelWithProjection)")
        if (self.text_encoder is None) != (self.tokenizer is None):
            raise LdminvError("text_encoder/tokenizer: give both or neither")
        if self.prediction_type not in PREDICTION_TYPES:
            raise UnknownNameError(f"prediction_type: expected one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        self.is_conditional = True
        self.device = torch.device(self.device)
        self._init_schedule(self.alphas_cumprod)
        self.pooled_dim = int(self.text_encoder_2.config.projection_dim)
        self.n_tokens = _max_tokens(self.tokenizer_2, self.text_encoder_2)
        time_dim = int(self.unet.config.addition_time_embed_dim)
        expected = self.unet.add_embedding.linear_1.in_features
        if time_dim * 6 + self.pooled_dim != expected:
            raise LdminvError(
                f"unet: add_embedding expects {expected} features but 6 time ids x addition_time_embed_dim "
                f"{time_dim} + text_encoder_2 projection_dim {self.pooled_dim} = {time_dim * 6 + self.pooled_dim}"
                + (" (an SDXL refiner with an aesthetic score in its time ids is not supported)"
                   if time_dim * 5 + self.pooled_dim == expected else "")
            )
        hidden = sum(int(enc.config.hidden_size) for _, enc in self._encoders())
        self._packed_shape = (self.n_tokens + math.ceil(self.pooled_dim / hidden), hidden)

    @classmethod
    def from_components(cls, unet: Any, scheduler: Any, *, text: dict[str, Any], vae_scale_factor: int,
                        device: torch.device, dtype: torch.dtype) -> "SDXLNoisePredictor":
        """Wrap the loaded SDXL components (``text``: text_encoder, tokenizer, text_encoder_2,
        tokenizer_2; the first pair may be None); modules are moved to device/dtype, eval mode."""
        alphas = getattr(scheduler, "alphas_cumprod", None)
        if alphas is None:
            raise LdminvError(f"scheduler: expected alphas_cumprod, got {type(scheduler).__name__} without it")
        for module in (unet, text.get("text_encoder"), text.get("text_encoder_2")):
            if module is not None:
                module.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(
            unet=unet,
            alphas_cumprod=torch.as_tensor(alphas).detach().to("cpu", torch.float64),
            text_encoder_2=text.get("text_encoder_2"),
            tokenizer_2=text.get("tokenizer_2"),
            text_encoder=text.get("text_encoder"),
            tokenizer=text.get("tokenizer"),
            vae_scale_factor=int(vae_scale_factor),
            prediction_type=str(scheduler.config.get("prediction_type") or "epsilon"),
            device=device,
            dtype=dtype,
        )

    @property
    def in_channels(self) -> int:
        """Latent channels the UNet expects."""
        return int(self.unet.config.in_channels)

    def _encoders(self) -> list[tuple[Any, Any]]:
        pairs = [(self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)]
        return [(tok, enc) for tok, enc in pairs if enc is not None]

    @torch.no_grad()
    def encode_prompts(self, captions: Sequence[str | None]) -> torch.Tensor:
        """Packed conditioning (B, L + r, D) of the captions (None -> empty prompt): both encoders'
        penultimate hidden states (B, L, D) and text_encoder_2's pooled ``text_embeds`` (see
        :func:`pack_pooled`)."""
        if isinstance(captions, str):
            raise LdminvError("captions: expected a sequence of strings (or None), got a single string")
        texts = ["" if c is None else c for c in captions]
        if not texts:
            raise EmptyInputError("captions: expected at least one caption, got an empty sequence")
        bad = [i for i, c in enumerate(texts) if not isinstance(c, str)]
        if bad:
            raise LdminvError(f"captions[{bad[0]}]: expected a string or None, got {type(texts[bad[0]]).__name__}")
        states, pooled = [], None
        for tokenizer, encoder in self._encoders():
            ids = tokenizer(texts, padding="max_length", max_length=self.n_tokens, truncation=True,
                            return_tensors="pt").input_ids
            out = encoder(ids.to(self.device), output_hidden_states=True)
            if out[0].ndim == 2:  # CLIPTextModelWithProjection: text_embeds, the pooled projection
                pooled = out[0]
            states.append(out.hidden_states[-2])
        hidden = torch.cat(states, dim=-1).to(self.dtype)
        return pack_pooled(hidden, pooled.to(self.dtype))

    def _check_cond(self, cond: Any, b: int) -> torch.Tensor | None:
        """The base checks, plus: ``cond`` is packed as :meth:`encode_prompts` packs it."""
        out = super()._check_cond(cond, b)
        if tuple(out.shape[1:]) != self._packed_shape:
            raise ShapeError(
                f"cond: expected SDXL conditioning packed by encode_prompts, shape ({b}, "
                f"{self._packed_shape[0]}, {self._packed_shape[1]}) ({self.n_tokens} token states + the pooled "
                f"embedding), got {tuple(out.shape)}"
            )
        return out

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        """The SDXL UNet's output at timestep ``t`` with the packed conditioning ``cond``."""
        hidden, pooled = unpack_pooled(cond, self.n_tokens, self.pooled_dim)
        b, _, h, w = x.shape
        f = self.vae_scale_factor
        time_ids = sdxl_time_ids(h * f, w * f, batch=b, dtype=hidden.dtype, device=self.device)
        ts = torch.full((b,), t, dtype=torch.long, device=self.device)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        return self.unet(x, ts, encoder_hidden_states=hidden, added_cond_kwargs=added, return_dict=False)[0]
