"""Membership-inference attacks on latent diffusion models.

Every attack works on clean latents ``z0`` (the scaled encoder means) and a noise
predictor ``eps_hat(z_t, t [, text])`` wrapped by :class:`NoisePredictor`:

- ``sima``:  term(t) = |eps_hat(z0, t)|^p
- ``pia``:   e0 = eps_hat(z0, 0); z_t = sqrt(a_t) z0 + sqrt(1 - a_t) e0;
             term(t) = |e0 - eps_hat(z_t, t)|^p
- ``loss``:  e ~ N(0, I) per (sample, t), seeded; term(t) = |e - eps_hat(z_t, t)|^p
- ``secmi``: deterministic DDIM inversion over the timestep grid, then one DDIM step back;
             term(t) = |denoised - inverted|^p  (p = 2)
- ``pfami``: one score per sample, the mean loss increase from the latent to its
             centre-crop neighbours (higher = member).

The first four are *maskable*: :func:`attack_terms` returns the per-coordinate terms
(N, T, C, h, w) whose (masked) sum over coordinates is the attack statistic; the
membership score is minus that statistic. :func:`pfami_scores` returns (N,) scores.

Seeded noise: the noise of sample id ``s`` comes from a CPU ``torch.Generator`` seeded
with ``SeedSequence([seed, s, stream])`` (stream 1 for ``loss``, 2 for ``pfami``) and is
drawn in one call per sample, so results do not depend on the batch size or on which
samples share a batch, and resuming a run reproduces the same arrays.
"""
from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import (
    EmptyInputError,
    LdminvError,
    NonFiniteError,
    ShapeError,
    UnknownNameError,
)

__all__ = [
    "ATTACKS",
    "MASKABLE_ATTACKS",
    "DEFAULT_P",
    "DEFAULT_TIMESTEPS",
    "PFAMI_TIMESTEPS",
    "PFAMI_STRENGTHS",
    "NOISE_STREAMS",
    "PREDICTION_TYPES",
    "NoisePredictor",
    "attack_terms",
    "pfami_scores",
    "pfami_neighbour",
    "parse_timesteps",
]

ATTACKS: tuple[str, ...] = ("sima", "pia", "loss", "secmi", "pfami")
"""Every attack name known to the project."""

MASKABLE_ATTACKS: tuple[str, ...] = ("sima", "pia", "loss", "secmi")
"""Attacks with per-coordinate terms (:func:`attack_terms`)."""

DEFAULT_P: dict[str, float] = {"sima": 4, "pia": 4, "loss": 4, "secmi": 2}
"""Default exponent p of each maskable attack's term |.|^p."""

DEFAULT_TIMESTEPS: tuple[int, ...] = tuple(range(0, 300, 10))
"""Default timestep grid of the maskable attacks: 0, 10, ..., 290."""

PFAMI_TIMESTEPS: tuple[int, ...] = tuple(range(0, 500, 50))
"""PFAMI's timesteps: 0, 50, ..., 450."""

PFAMI_STRENGTHS: tuple[float, ...] = tuple(float(s) for s in np.linspace(0.95, 0.70, 10))
"""PFAMI's neighbour strengths (fraction of the latent kept by the centre crop)."""

NOISE_STREAMS: dict[str, int] = {"loss": 1, "pfami": 2}
"""Seed stream of each attack that draws noise."""

PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction", "sample")
"""Scheduler prediction types the noise predictor converts to eps."""

ProgressCallback = Callable[[int], Any]


# --------------------------------------------------------------------------- helpers


def _as_int(value: Any, name: str) -> int:
    """``value`` as a Python int; LdminvError naming ``name`` if it is not integral."""
    if isinstance(value, (bool, np.bool_)):
        raise LdminvError(f"{name}: expected an integer, got the boolean {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise LdminvError(
            f"{name}: expected an integer, got {value!r} ({type(value).__name__})"
        ) from None


def _check_timesteps(timesteps: Any, num_train_timesteps: int, name: str = "timesteps") -> list[int]:
    """Validate a strictly increasing sequence of integer timesteps in [0, num_train_timesteps)."""
    if isinstance(timesteps, str):
        timesteps = parse_timesteps(timesteps)
    if isinstance(timesteps, (torch.Tensor, np.ndarray)):
        timesteps = timesteps.tolist()
    try:
        values = list(timesteps)
    except TypeError:
        raise LdminvError(
            f"{name}: expected a sequence of integer timesteps, got {type(timesteps).__name__}"
        ) from None
    if not values:
        raise EmptyInputError(f"{name}: expected at least one timestep, got an empty sequence")
    ints = [_as_int(v, f"{name}[{i}]") for i, v in enumerate(values)]
    bad = [t for t in ints if not 0 <= t < num_train_timesteps]
    if bad:
        raise LdminvError(
            f"{name}: every timestep must lie in [0, {num_train_timesteps}) "
            f"(the scheduler's num_train_timesteps), got {bad[:5]}"
        )
    if any(b <= a for a, b in zip(ints, ints[1:])):
        raise LdminvError(f"{name}: expected strictly increasing timesteps, got {ints}")
    return ints


def _check_batch_size(batch_size: Any) -> int:
    b = _as_int(batch_size, "batch_size")
    if b < 1:
        raise LdminvError(f"batch_size: expected a positive integer, got {b}")
    return b


def _check_seed(seed: Any) -> int:
    s = _as_int(seed, "seed")
    if s < 0:
        raise LdminvError(f"seed: expected a non-negative integer, got {s}")
    return s


def _check_p(p: Any, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not math.isfinite(p) or p <= 0:
        raise LdminvError(f"p: expected a positive finite exponent for attack {name!r}, got {p!r}")
    return float(p)


def _check_sample_ids(sample_ids: Any, n: int) -> np.ndarray:
    """sample_ids as an int64 array of length n (default arange(n))."""
    if sample_ids is None:
        return np.arange(n, dtype=np.int64)
    if isinstance(sample_ids, torch.Tensor):
        sample_ids = sample_ids.detach().cpu().numpy()
    ids = np.asarray(sample_ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ShapeError(f"sample_ids: expected shape ({n},) (one id per latent), got {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise LdminvError(f"sample_ids: expected integers, got dtype {ids.dtype}")
    if (ids < 0).any():
        raise LdminvError(f"sample_ids: expected non-negative ids, got {ids[ids < 0][:5].tolist()}")
    return ids.astype(np.int64)


def _check_captions(captions: Any, n: int) -> list[str | None] | None:
    if captions is None:
        return None
    if isinstance(captions, str):
        raise LdminvError("captions: expected a sequence of N strings (or None), got a single string")
    caps = list(captions)
    if len(caps) != n:
        raise ShapeError(f"captions: expected {n} captions (one per latent), got {len(caps)}")
    for i, c in enumerate(caps):
        if c is not None and not isinstance(c, str):
            raise LdminvError(f"captions[{i}]: expected a string or None, got {type(c).__name__}")
    return caps


def _noise_seed(seed: int, sample_id: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, sample_id, stream]).generate_state(1)[0])


def _sample_noise(seed: int, sample_ids: np.ndarray, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise (len(sample_ids), *shape), float32 on CPU, one generator per sample."""
    out = torch.empty((len(sample_ids), *shape), dtype=torch.float32)
    gen = torch.Generator()
    for i, sid in enumerate(sample_ids.tolist()):
        gen.manual_seed(_noise_seed(seed, sid, stream))
        torch.randn(shape, generator=gen, out=out[i])
    return out


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """Move ``module`` to device/dtype (casting only when needed) and set eval mode."""
    module.to(device)
    if any(prm.is_floating_point() and prm.dtype != dtype for prm in module.parameters()):
        module.to(dtype=dtype)
    module.eval()


def _power(diff: torch.Tensor, p: float) -> torch.Tensor:
    """|diff|^p, in place on ``diff``."""
    if p == 2.0:
        return diff.square_()
    if p == 4.0:
        return diff.square_().square_()
    return diff.abs_().pow_(p)


# --------------------------------------------------------------------------- predictor


@dataclass(eq=False)
class NoisePredictor:
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
        from diffusers import UNet2DConditionModel, UNet2DModel

        if not isinstance(self.unet, (UNet2DModel, UNet2DConditionModel)):
            raise LdminvError(
                "unet: expected a diffusers UNet2DModel or UNet2DConditionModel, "
                f"got {type(self.unet).__name__}"
            )
        cfg = self.unet.config
        if isinstance(self.unet, UNet2DModel):
            if cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
                raise LdminvError("unet: class-conditional UNet2DModel (class labels) is not supported")
        else:
            if cfg.get("addition_embed_type") is not None or cfg.get("class_embed_type") is not None:
                raise LdminvError(
                    "unet: UNet2DConditionModel with extra embeddings "
                    f"(addition_embed_type={cfg.get('addition_embed_type')!r}, "
                    f"class_embed_type={cfg.get('class_embed_type')!r}) is not supported; "
                    "expected a Stable Diffusion 1.x/2.x style text-conditioned UNet"
                )
        self.is_conditional: bool = isinstance(self.unet, UNet2DConditionModel)
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
        a = torch.as_tensor(self.alphas_cumprod).detach().to("cpu", torch.float64)
        if a.ndim != 1 or a.numel() == 0:
            raise ShapeError(f"alphas_cumprod: expected a non-empty 1-D tensor, got shape {tuple(a.shape)}")
        if not torch.isfinite(a).all() or (a <= 0).any() or (a > 1).any():
            raise LdminvError("alphas_cumprod: expected finite values in (0, 1]")
        self.alphas_cumprod = a
        # Python floats (float64) so that every coefficient is exact before the float32 math.
        self._sqrt_a: list[float] = a.sqrt().tolist()
        self._sqrt_1ma: list[float] = (1.0 - a).sqrt().tolist()
        self._empty_cond: torch.Tensor | None = None

    # ------------------------------------------------------------------ construction

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

    # ------------------------------------------------------------------ properties

    @property
    def num_train_timesteps(self) -> int:
        """Number of training timesteps, len(alphas_cumprod)."""
        return int(self.alphas_cumprod.shape[0])

    @property
    def in_channels(self) -> int:
        """Latent channels the UNet expects."""
        return int(self.unet.config.in_channels)

    # ------------------------------------------------------------------ text

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

    def _empty_prompt(self) -> torch.Tensor:
        """Cached hidden states (1, L, D) of the empty prompt."""
        if self._empty_cond is None:
            self._empty_cond = self.encode_prompts([""])
        return self._empty_cond

    # ------------------------------------------------------------------ prediction

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

        ``cond`` is the text encoder's hidden states (B or 1, L, D) for conditional UNets
        (None -> empty prompt); it must be None for unconditional ones.
        """
        if not isinstance(z_t, torch.Tensor):
            raise LdminvError(f"z_t: expected a torch.Tensor, got {type(z_t).__name__}")
        self.check_latents(z_t, "z_t")
        t = _as_int(t, "t")
        if not 0 <= t < self.num_train_timesteps:
            raise LdminvError(f"t: expected a timestep in [0, {self.num_train_timesteps}), got {t}")
        b = z_t.shape[0]
        if self.is_conditional:
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
        elif cond is not None:
            raise LdminvError("cond: the UNet is unconditional (UNet2DModel); expected cond=None")
        with torch.no_grad():
            return self._eps(z_t.to(self.device, torch.float32), t, cond)

    def _eps(self, z: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        """eps (B, C, h, w) float32 from float32 z on the device; no validation, no grad."""
        b, c = z.shape[0], z.shape[1]
        ts = torch.full((b,), t, dtype=torch.long, device=self.device)
        x = z if z.dtype == self.dtype else z.to(self.dtype)
        if cond is None:
            out = self.unet(x, ts, return_dict=False)[0]
        else:
            out = self.unet(x, ts, encoder_hidden_states=cond, return_dict=False)[0]
        if out.shape[1] == 2 * c:  # learned variance: first half is the mean prediction
            out = out[:, :c]
        if out.shape != z.shape:
            raise ShapeError(f"unet output: expected shape {tuple(z.shape)}, got {tuple(out.shape)}")
        out = out.float()
        if self.prediction_type == "epsilon":
            return out
        sa, s1a = self._sqrt_a[t], self._sqrt_1ma[t]
        if self.prediction_type == "v_prediction":
            return torch.add(out * sa, z, alpha=s1a)
        return (z - sa * out) / s1a  # "sample": out is the x0 prediction

    def _ddim_step(self, x: torch.Tensor, eps: torch.Tensor, s: int, u: int) -> torch.Tensor:
        """Deterministic DDIM move of x from timestep s to u given eps = eps_hat(x, s).

        x0 = (x - sqrt(1-a_s) eps) / sqrt(a_s); returns sqrt(a_u) x0 + sqrt(1-a_u) eps.
        """
        sa_s, s1a_s = self._sqrt_a[s], self._sqrt_1ma[s]
        sa_u, s1a_u = self._sqrt_a[u], self._sqrt_1ma[u]
        c_x = sa_u / sa_s
        c_eps = s1a_u - sa_u * s1a_s / sa_s
        return torch.add(x * c_x, eps, alpha=c_eps)


# --------------------------------------------------------------------------- batch kernels
# Each kernel takes one batch of float32 latents z (B, C, h, w) on the device and returns
# float32 results on the device; ``cond`` is (B, L, D) or None.


def _sima_batch(pred: NoisePredictor, z, cond, timesteps, p, noise):
    b = z.shape[0]
    terms = torch.empty((b, len(timesteps), *z.shape[1:]), dtype=torch.float32, device=z.device)
    for k, t in enumerate(timesteps):
        terms[:, k] = _power(pred._eps(z, t, cond), p)
    return terms


def _pia_batch(pred: NoisePredictor, z, cond, timesteps, p, noise):
    b = z.shape[0]
    terms = torch.empty((b, len(timesteps), *z.shape[1:]), dtype=torch.float32, device=z.device)
    e0 = pred._eps(z, 0, cond)
    for k, t in enumerate(timesteps):
        z_t = torch.add(z * pred._sqrt_a[t], e0, alpha=pred._sqrt_1ma[t])
        terms[:, k] = _power(torch.sub(e0, pred._eps(z_t, t, cond)), p)
    return terms


def _loss_batch(pred: NoisePredictor, z, cond, timesteps, p, noise):
    b = z.shape[0]
    terms = torch.empty((b, len(timesteps), *z.shape[1:]), dtype=torch.float32, device=z.device)
    for k, t in enumerate(timesteps):
        e = noise[:, k]
        z_t = torch.add(z * pred._sqrt_a[t], e, alpha=pred._sqrt_1ma[t])
        terms[:, k] = _power(torch.sub(e, pred._eps(z_t, t, cond)), p)
    return terms


def _secmi_grid(timesteps: list[int], num_train_timesteps: int) -> list[int]:
    """timesteps extended by one step: t_T = t_{T-1} + (t_{T-1} - t_{T-2}) (T == 1: t_0 + max(t_0, 1))."""
    if len(timesteps) >= 2:
        t_next = timesteps[-1] + (timesteps[-1] - timesteps[-2])
    else:
        t_next = timesteps[0] + max(timesteps[0], 1)
    if t_next >= num_train_timesteps:
        raise LdminvError(
            f"timesteps: secmi steps one grid interval past the last timestep, to {t_next}, "
            f"which must be < num_train_timesteps = {num_train_timesteps}; got timesteps ending "
            f"at {timesteps[-1]}"
        )
    return [*timesteps, t_next]


def _secmi_batch(pred: NoisePredictor, z, cond, timesteps, p, noise):
    b = z.shape[0]
    grid = _secmi_grid(timesteps, pred.num_train_timesteps)
    terms = torch.empty((b, len(timesteps), *z.shape[1:]), dtype=torch.float32, device=z.device)
    x_cur = z
    if grid[0] != 0:  # z0 is taken as the sample at timestep 0
        x_cur = pred._ddim_step(z, pred._eps(z, 0, cond), 0, grid[0])
    eps_cur = pred._eps(x_cur, grid[0], cond)
    for j in range(len(timesteps)):
        # eps_hat(inv(t_{j+1}), t_{j+1}) both continues the inversion and denoises back to t_j.
        x_next = pred._ddim_step(x_cur, eps_cur, grid[j], grid[j + 1])
        eps_next = pred._eps(x_next, grid[j + 1], cond)
        denoised = pred._ddim_step(x_next, eps_next, grid[j + 1], grid[j])
        terms[:, j] = _power(denoised.sub_(x_cur), p)
        x_cur, eps_cur = x_next, eps_next
    return terms


_KERNELS = {"sima": _sima_batch, "pia": _pia_batch, "loss": _loss_batch, "secmi": _secmi_batch}


def pfami_neighbour(z: torch.Tensor, strength: float) -> torch.Tensor:
    """PFAMI neighbour (N, C, h, w) of latents z (N, C, h, w) at a strength in (0, 1].

    Centre crop to (round(strength * h), round(strength * w)) (at least 1; offsets
    floor((h - ch) / 2), floor((w - cw) / 2)), resized back to (h, w) by bilinear
    interpolation (align_corners=False).
    """
    h, w = z.shape[-2:]
    ch = max(1, round(strength * h))
    cw = max(1, round(strength * w))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = z[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def _pfami_batch(pred: NoisePredictor, z, cond, timesteps, strengths, noise):
    """PFAMI scores (B,) float64 on CPU for one batch."""
    variants = [z] + [pfami_neighbour(z, s) for s in strengths]
    losses = torch.empty((len(variants), len(timesteps), z.shape[0]), dtype=torch.float32, device=z.device)
    for v, x in enumerate(variants):
        for k, t in enumerate(timesteps):
            e = noise[:, k]
            x_t = torch.add(x * pred._sqrt_a[t], e, alpha=pred._sqrt_1ma[t])
            losses[v, k] = torch.sub(e, pred._eps(x_t, t, cond)).square_().mean(dim=(1, 2, 3))
    loss = losses.cpu().double().mean(dim=1)  # (V, B): mean over timesteps
    return (loss[1:] - loss[0]).mean(dim=0)


# --------------------------------------------------------------------------- driver


def _run_batches(
    pred: NoisePredictor,
    z0: Any,
    out: torch.Tensor,
    kernel: Callable[..., torch.Tensor],
    *,
    captions: list[str | None] | None,
    sample_ids: np.ndarray,
    seed: int,
    stream: int | None,
    noise_steps: int,
    batch_size: int,
    progress: ProgressCallback | None,
    **kernel_kwargs: Any,
) -> torch.Tensor:
    """Run ``kernel`` over batches of z0, writing each batch's result into ``out`` (CPU)."""
    n = z0.shape[0]
    latent_shape = tuple(z0.shape[1:])
    shared_cond = pred._empty_prompt() if pred.is_conditional and captions is None else None
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if isinstance(z0, np.ndarray):  # e.g. a read-only memmap: copy just this batch
                zb = torch.tensor(np.asarray(z0[start:stop]), dtype=torch.float32, device=pred.device)
            else:
                zb = z0[start:stop].to(pred.device, torch.float32)
            if not pred.is_conditional:
                cond = None
            elif shared_cond is not None:
                cond = shared_cond.expand(stop - start, -1, -1)
            else:
                cond = pred.encode_prompts(captions[start:stop])
            noise = None
            if stream is not None:
                noise = _sample_noise(seed, sample_ids[start:stop], stream, (noise_steps, *latent_shape))
                noise = noise.to(pred.device)
            result = kernel(pred, zb, cond, noise=noise, **kernel_kwargs)
            out[start:stop] = result.to("cpu", out.dtype)
            if progress is not None:
                progress(stop)
    return out


def _check_predictor(predictor: Any) -> None:
    if not isinstance(predictor, NoisePredictor):
        raise LdminvError(f"predictor: expected a NoisePredictor, got {type(predictor).__name__}")


def _check_z0(predictor: NoisePredictor, z0: Any) -> Any:
    if not isinstance(z0, (torch.Tensor, np.ndarray)):
        raise LdminvError(f"z0: expected a torch.Tensor or numpy array (N, C, h, w), got {type(z0).__name__}")
    if isinstance(z0, np.ndarray) and z0.dtype.kind not in "fiu":
        raise LdminvError(f"z0: expected a numeric array, got dtype {z0.dtype}")
    predictor.check_latents(z0, "z0")
    return z0


def attack_terms(
    name: str,
    predictor: NoisePredictor,
    z0: torch.Tensor,
    *,
    timesteps: Sequence[int] | str = DEFAULT_TIMESTEPS,
    captions: Sequence[str | None] | None = None,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    p: float | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Per-coordinate terms (N, T, C, h, w) float32 CPU of a maskable attack.

    Args:
        name: one of :data:`MASKABLE_ATTACKS` ("sima", "pia", "loss", "secmi").
        predictor: the model's :class:`NoisePredictor`.
        z0: clean scaled latents (N, C, h, w), tensor or numpy array (batches are moved to
            the predictor's device as float32).
        timesteps: T strictly increasing integers in [0, num_train_timesteps), or a
            :func:`parse_timesteps` spec.
        captions: N captions (None entries -> empty prompt) for conditional models; None
            means the empty prompt for every sample. Ignored by unconditional models.
        sample_ids: N non-negative ids seeding each sample's noise (default arange(N)).
        p: exponent of |.|^p (default :data:`DEFAULT_P`).
        seed: global seed of the noise (attack "loss").
        batch_size: samples per UNet forward.
        progress: called with the number of samples done after each batch.

    The statistic of sample n at timestep index k is sum(terms[n, k]); membership
    score = -statistic.
    """
    if not isinstance(name, str):
        raise UnknownNameError(f"name: expected an attack name in {MASKABLE_ATTACKS}, got {name!r}")
    key = name.strip().lower()
    if key not in _KERNELS:
        if key == "pfami":
            raise UnknownNameError(
                "name: 'pfami' gives one score per sample, not per-coordinate terms; call "
                f"pfami_scores() instead. attack_terms() takes one of {MASKABLE_ATTACKS}"
            )
        raise UnknownNameError(f"name: unknown attack {name!r}; expected one of {MASKABLE_ATTACKS}")
    _check_predictor(predictor)
    z0 = _check_z0(predictor, z0)
    n = z0.shape[0]
    ts = _check_timesteps(timesteps, predictor.num_train_timesteps)
    if key == "secmi":
        _secmi_grid(ts, predictor.num_train_timesteps)  # fail before any work
    p_val = _check_p(DEFAULT_P[key] if p is None else p, key)
    caps = _check_captions(captions, n)
    ids = _check_sample_ids(sample_ids, n)
    seed = _check_seed(seed)
    batch_size = _check_batch_size(batch_size)

    out = torch.empty((n, len(ts), *z0.shape[1:]), dtype=torch.float32)
    return _run_batches(
        predictor,
        z0,
        out,
        _KERNELS[key],
        captions=caps,
        sample_ids=ids,
        seed=seed,
        stream=NOISE_STREAMS.get(key),
        noise_steps=len(ts),
        batch_size=batch_size,
        progress=progress,
        timesteps=ts,
        p=p_val,
    )


def pfami_scores(
    predictor: NoisePredictor,
    z0: torch.Tensor,
    *,
    captions: Sequence[str | None] | None = None,
    sample_ids: Sequence[int] | np.ndarray | None = None,
    seed: int = 0,
    batch_size: int = 32,
    timesteps: Sequence[int] = PFAMI_TIMESTEPS,
    strengths: Sequence[float] = PFAMI_STRENGTHS,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """PFAMI membership scores (N,) float32 CPU; higher = member.

    loss(x) = mean over timesteps t of mean over coordinates of (e_t - eps_hat(x_t, t))^2,
    x_t = sqrt(a_t) x + sqrt(1 - a_t) e_t, with each sample's seeded noise e_t (stream 2)
    shared by x and all its neighbours; score = mean over strengths s of
    loss(pfami_neighbour(x, s)) - loss(x). Costs (1 + len(strengths)) * len(timesteps)
    UNet forwards per batch of ``batch_size`` samples. Other arguments as in
    :func:`attack_terms`.
    """
    _check_predictor(predictor)
    z0 = _check_z0(predictor, z0)
    n = z0.shape[0]
    ts = _check_timesteps(timesteps, predictor.num_train_timesteps)
    if isinstance(strengths, (torch.Tensor, np.ndarray)):
        strengths = strengths.tolist()
    strengths = list(strengths)
    if not strengths:
        raise EmptyInputError("strengths: expected at least one neighbour strength, got none")
    for i, s in enumerate(strengths):
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not 0 < s <= 1:
            raise LdminvError(f"strengths[{i}]: expected a crop fraction in (0, 1], got {s!r}")
    caps = _check_captions(captions, n)
    ids = _check_sample_ids(sample_ids, n)
    seed = _check_seed(seed)
    batch_size = _check_batch_size(batch_size)

    out = torch.empty((n,), dtype=torch.float32)
    return _run_batches(
        predictor,
        z0,
        out,
        _pfami_batch,
        captions=caps,
        sample_ids=ids,
        seed=seed,
        stream=NOISE_STREAMS["pfami"],
        noise_steps=len(ts),
        batch_size=batch_size,
        progress=progress,
        timesteps=ts,
        strengths=[float(s) for s in strengths],
    )


# --------------------------------------------------------------------------- CLI specs


def parse_timesteps(spec: str) -> list[int]:
    """Parse a timestep spec: "start:stop[:step]" (Python range) or a comma list "0,10,50".

    Returns a non-empty, strictly increasing list of non-negative ints, e.g.
    "0:300:10" -> [0, 10, ..., 290]. LdminvError quoting the spec otherwise.
    """
    expected = "expected 'start:stop:step' (e.g. '0:300:10') or a comma list (e.g. '0,10,50')"
    if not isinstance(spec, str):
        raise LdminvError(f"timesteps spec: {expected}, got {spec!r} ({type(spec).__name__})")
    text = spec.strip()
    try:
        if ":" in text:
            parts = [int(part) for part in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError("wrong number of fields")
            values = list(range(*parts))
        else:
            values = [int(part) for part in text.split(",")]
    except ValueError as err:
        raise LdminvError(f"timesteps spec {spec!r}: {expected} ({err})") from None
    if not values:
        raise LdminvError(f"timesteps spec {spec!r}: selects no timesteps; {expected}")
    if values[0] < 0 or any(v < 0 for v in values):
        raise LdminvError(f"timesteps spec {spec!r}: timesteps must be non-negative, got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise LdminvError(f"timesteps spec {spec!r}: timesteps must be strictly increasing, got {values}")
    return values
