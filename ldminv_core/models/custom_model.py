"""A custom PyTorch model, as the rest of ldminv sees it: a checked adapter
(:mod:`.custom_adapter`) wrapped as a :class:`~.loading.LoadedModel` whose predictor is a
:class:`~.noise_prediction.NoisePrediction`, so the attacks, the geometry, the runs and the
evaluation run unchanged (METHOD.md section 5, last bullet).

- :class:`AdapterPrediction`: eps_hat from the adapter's ``model_output`` under its
  :mod:`.schedules` schedule (DDPM family or rectified flow), unconditional or text-conditioned
  (the adapter's ``encode_prompts``);
- :class:`AdapterClassPrediction`: the same for class-conditional models, with the labels and
  null class of :class:`~.class_conditional.ClassConditionalPrediction`;
- :class:`AdapterDecoder`: ``z -> decode(z / scaling_factor + shift_factor)``, a plain callable,
  so the decoder geometry takes its products with ``torch.func`` (the layer-by-layer engine only
  knows diffusers' AutoencoderKL); run.json "geometry" records the engine;
- :class:`CustomLoadedModel`: the ``LoadedModel`` of family :data:`CUSTOM_FAMILY` ("custom").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..errors import EmptyInputError, LdminvError, ShapeError
from .class_conditional import ClassConditionalPrediction
from .custom_checks import AdapterError, AdapterSpec, check_output
from .families import Family
from .loading import LoadedModel
from .noise_prediction import NoisePrediction
from .schedules import DDPMSchedule

if TYPE_CHECKING:  # pragma: no cover
    from .custom_adapter import ModelAdapter

__all__ = ["CUSTOM_FAMILY", "AdapterPrediction", "AdapterClassPrediction", "AdapterDecoder", "CustomLoadedModel",
           "build_custom_model"]

CUSTOM_FAMILY = Family(
    name="custom",
    label="Custom PyTorch model (adapter file)",
    conditioning="as the adapter gives it: none, the image's class label (metadata column 'label'), or the "
                 "caption through the adapter's encode_prompts; guidance off",
    pipeline_classes=(),
    denoiser="adapter",
    recognise=lambda info: False,  # never recognised in a pipeline folder: only --model-adapter makes one
)
"""The family of every model loaded through ``--model-adapter``; run.json records ``"custom"``."""


class AdapterNetwork(torch.nn.Module):
    """Stands for the adapter's network where it names no ``denoiser`` module (run.json's
    model_class, messages); calling it calls ``model_output``."""

    def __init__(self, model_output: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model_output = model_output

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        return self.model_output(z_t, t, cond)


def _init_adapter_schedule(pred: NoisePrediction, spec: AdapterSpec) -> None:
    if isinstance(spec.schedule, DDPMSchedule):
        pred._init_schedule(spec.schedule.alphas_cumprod)
    else:
        pred._init_flow_schedule(spec.schedule.num_train_timesteps)


class AdapterPrediction(NoisePrediction):
    """eps_hat(z_t, t [, text]) of an adapter's ``model_output`` (unconditional, or conditioned on
    the (B, L, D) states of its ``encode_prompts``); the network gets the timesteps its schedule
    gives (int64 t for the DDPM family, float32 sigma * T for rectified flow)."""

    family = "custom"

    def __init__(self, adapter: "ModelAdapter", spec: AdapterSpec, *, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.adapter, self.spec = adapter, spec
        self.device, self.dtype = torch.device(device), dtype
        self.prediction_type = spec.prediction_type
        self.is_conditional = spec.conditioning == "caption"
        _init_adapter_schedule(self, spec)

    @property
    def in_channels(self) -> int:
        """Latent channels of the adapter's latents."""
        return self.spec.latent_shape[0]

    @torch.no_grad()
    def encode_prompts(self, captions: Sequence[str | None]) -> torch.Tensor | None:
        """The adapter's ``encode_prompts`` states (B, L, D) of the captions (None -> ""), or None
        for an unconditional adapter."""
        if not self.is_conditional:
            return None
        if isinstance(captions, str):
            raise LdminvError("captions: expected a sequence of strings (or None), got a single string")
        texts = ["" if c is None else c for c in captions]
        if not texts:
            raise EmptyInputError("captions: expected at least one caption, got an empty sequence")
        bad = [i for i, c in enumerate(texts) if not isinstance(c, str)]
        if bad:
            raise LdminvError(f"captions[{bad[0]}]: expected a string or None, got {type(texts[bad[0]]).__name__}")
        out = self.adapter.encode_prompts(texts)
        if not (isinstance(out, torch.Tensor) and out.ndim == 3 and out.shape[0] == len(texts)):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise AdapterError(f"encode_prompts: expected a tensor ({len(texts)}, L, D), got {got}")
        return out.to(self.device, self.dtype)

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        ts = self.schedule.model_timesteps(t, x.shape[0], self.device)
        return _checked_output(self.adapter.model_output(x, ts, cond), x)


@dataclass(eq=False)
class AdapterClassPrediction(ClassConditionalPrediction):
    """A class-conditional adapter: ``model_output(z_t, t, labels (B,) int64)``, labels from the
    images' metadata ``label`` column, else the adapter's null class (refused without one)."""

    adapter: Any = field(default=None, repr=False)
    spec: Any = field(default=None, repr=False)

    family = "custom"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        self.is_conditional = True
        _init_adapter_schedule(self, self.spec)

    @property
    def in_channels(self) -> int:
        """Latent channels of the adapter's latents."""
        return self.spec.latent_shape[0]

    def _forward(self, x: torch.Tensor, t: int, cond: torch.Tensor | None) -> torch.Tensor:
        ts = self.schedule.model_timesteps(t, x.shape[0], self.device)
        return _checked_output(self.adapter.model_output(x, ts, self._labels(cond, x.shape[0])), x)


def _checked_output(out: Any, x: torch.Tensor) -> torch.Tensor:
    """The adapter's model_output when it is a tensor (B, c or 2c, h, w) (shapes are re-checked by
    the caller; this names the function when something else comes back)."""
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != x.shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AdapterError(f"model_output: expected a tensor of shape {tuple(x.shape)} (or twice the channels), "
                           f"got {got}")
    return out


class AdapterDecoder:
    """The differentiable decoder of scaled latents, ``z -> decode(z / scaling_factor + shift_factor)``
    (z (B, c, h, w) -> images (B, C, H, W)). A plain callable: the geometry uses torch.func."""

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], *, scaling_factor: float,
                 shift_factor: float) -> None:
        self.decode = decode
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z / self.scaling_factor + self.shift_factor)


class _AdapterVae:
    """What :func:`~.latents.encode_latents` reads of ``LoadedModel.vae``: ``encode(x).latent_dist``
    with the adapter's unscaled mean and (when it gives ``posterior_std``) standard deviation."""

    def __init__(self, adapter: "ModelAdapter", where: str) -> None:
        self.adapter, self.where = adapter, where

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        if self.adapter.posterior_std is None:
            raise AdapterError(f"{self.where}: latent='sample' draws from the encoder's posterior, but the adapter "
                               "gives no posterior_std; add it to the adapter or analyze the encoder mean "
                               "(--latent mean)")
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=self.adapter.encode(x),
                                                           std=self.adapter.posterior_std(x)))


@dataclass
class CustomLoadedModel(LoadedModel):
    """A :class:`~.loading.LoadedModel` built from an adapter file (family ``"custom"``).

    ``vae`` reads the adapter's encoder for :mod:`.latents`; ``unet`` is the adapter's
    ``denoiser`` module (or an :class:`AdapterNetwork` around ``model_output``); ``scheduler``,
    ``text_encoder`` and ``tokenizer`` are None.

    Attributes:
        adapter: the checked :class:`~.custom_adapter.ModelAdapter`.
        adapter_record: run.json's "adapter": path, file, sha256, function, model_path.
    """

    adapter: Any = field(default=None, repr=False)
    adapter_record: dict = field(default_factory=dict)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(encode(images) - shift_factor) * scaling_factor`` for images (N, *image_shape) in
        [-1, 1]; (N, *latent_shape) in ``dtype`` on ``device``."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ShapeError(f"images: expected a tensor (N, {', '.join(map(str, self.image_shape))}), got {got}")
        x = images.to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            mean = self.adapter.encode(x)
        call = f"encode(images {tuple(x.shape)})"
        check_output(mean, call=call, shapes=[(x.shape[0], *self.latent_shape)], dtype=self.dtype,
                     device=self.device, where=self.adapter_record.get("path", "adapter"))
        return (mean - self.shift_factor) * self.scaling_factor

    def decoder_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """:class:`AdapterDecoder` of scaled latents (geometry engine: torch.func)."""
        return AdapterDecoder(self.adapter.decode, scaling_factor=self.scaling_factor, shift_factor=self.shift_factor)


def _place_modules(adapter: "ModelAdapter", where: str) -> None:
    """The adapter's named modules in eval mode without parameter gradients."""
    for name in ("vae", "denoiser"):
        module = getattr(adapter, name, None)
        if module is None:
            continue
        if not isinstance(module, torch.nn.Module):
            raise AdapterError(f"{where}: {name}: expected a torch.nn.Module or None, got {type(module).__name__}")
        module.eval()
        module.requires_grad_(False)


def build_custom_model(adapter: "ModelAdapter", spec: AdapterSpec, *, record: dict, source: str,
                       device: torch.device, dtype: torch.dtype) -> CustomLoadedModel:
    """The :class:`CustomLoadedModel` of a checked adapter (its modules already placed)."""
    network = adapter.denoiser if adapter.denoiser is not None else AdapterNetwork(adapter.model_output)
    if spec.conditioning == "label":
        predictor: NoisePrediction = AdapterClassPrediction(
            model=network, alphas_cumprod=getattr(spec.schedule, "alphas_cumprod", None),
            prediction_type=spec.prediction_type, device=device, dtype=dtype, num_classes=adapter.num_classes,
            null_class=adapter.null_class, adapter=adapter, spec=spec)
    else:
        predictor = AdapterPrediction(adapter, spec, device=device, dtype=dtype)
    channels, side, _ = spec.image_shape
    return CustomLoadedModel(
        vae=_AdapterVae(adapter, record.get("path", "adapter")), unet=network, scheduler=None, text_encoder=None,
        tokenizer=None, predictor=predictor, scaling_factor=spec.scaling_factor, image_channels=channels,
        resolution=side, latent_shape=spec.latent_shape, is_conditional=predictor.is_conditional, source=source,
        device=device, dtype=dtype, shift_factor=spec.shift_factor, family=CUSTOM_FAMILY, adapter=adapter,
        adapter_record=dict(record),
    )
