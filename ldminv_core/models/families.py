"""The model families ldminv loads, and how a pipeline folder is recognised as one of them.

A :class:`Family` record says how a family is recognised (the ``_class_name`` of the folder's
``model_index.json`` and the class and config of its denoiser), which text components it loads
(sub-folders and transformers classes), how its conditioning reads in words, and how its
:class:`~ldminv_core.models.noise_prediction.NoisePrediction` is built from the loaded parts.
:func:`detect_family` picks the family of a folder (or a hub id); ``models.loading.load_model``
calls it before any weights are read, and run.json records ``Family.name``.

Recognition is by the denoiser's config first (so a folder without ``model_index.json``, as
older ldminv folders are, still loads), with the pipeline class breaking ties; a folder that no
family recognises is refused naming its pipeline class and its denoiser.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..errors import ModelLoadError
from .class_conditional import class_conditional_kind, class_conditional_predictor
from .noise_prediction import NoisePrediction, NoisePredictor
from .sdxl import SDXLNoisePredictor
from .sd3 import SD3_PIPELINE_CLASSES, build_sd3
from .flux import FLUX_GUIDANCE_SCALE, FLUX_PATCH, FLUX_PIPELINE_CLASSES, build_flux

if TYPE_CHECKING:  # pragma: no cover
    from .sources import Source

__all__ = ["Family", "FolderInfo", "TextPart", "FAMILIES", "family_by_name", "detect_family", "read_folder_info"]

_DENOISER_FOLDERS = ("unet", "transformer")


@dataclass(frozen=True)
class FolderInfo:
    """What a pipeline folder says about itself, read from JSON only (no weights).

    Attributes:
        where: the folder or hub id, for messages.
        pipeline_class: ``model_index.json``'s ``_class_name``, or None without that file.
        denoisers: config of each denoiser sub-folder present (``"unet"``, ``"transformer"``).
        components: ``model_index.json``'s component entries (name -> [library, class]).
    """

    where: str
    pipeline_class: str | None
    denoisers: dict[str, dict] = field(default_factory=dict)
    components: dict[str, Any] = field(default_factory=dict)

    def denoiser_class(self, folder: str) -> str | None:
        cfg = self.denoisers.get(folder)
        return None if cfg is None else cfg.get("_class_name")

    def describe_denoiser(self) -> str:
        if not self.denoisers:
            return "no unet/ or transformer/ config"
        parts = []
        for folder, cfg in self.denoisers.items():
            extra = {k: cfg[k] for k in ("addition_embed_type", "class_embed_type", "num_class_embeds") if cfg.get(k)}
            parts.append(f"{folder}/ {cfg.get('_class_name')!r}" + (f" {extra}" if extra else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class TextPart:
    """One text encoder of a family: its sub-folders and the transformers class to load."""

    encoder: str
    tokenizer: str
    encoder_class: str
    required: bool = True


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: short id recorded in run.json (``"sd"``, ``"sdxl"``, ``"unconditional"``).
        label: the family in words, for the CLI and the dashboard.
        conditioning: how the denoiser is conditioned (guidance off), in words.
        pipeline_classes: ``model_index.json`` ``_class_name`` values of this family.
        denoiser: the denoiser's sub-folder (``"unet"`` or ``"transformer"``).
        recognise: whether a folder's :class:`FolderInfo` fits this family (denoiser config).
        text: the text encoders to load (empty for unconditional families); whether any is
            loaded at all may depend on the denoiser (``text_when``).
        build: ``(unet, scheduler, text, *, vae_scale_factor, device, dtype) -> NoisePrediction``;
            ``text`` maps ``TextPart.encoder`` / ``TextPart.tokenizer`` names to the loaded parts.
        latent_patch: side of the latent patches the denoiser packs into its input channels (Flux:
            2, so its ``in_channels`` is 4 x the VAE's latent channels and latent h, w must be
            multiples of 2); 1 for denoisers that take the latents as they are.
    """

    name: str
    label: str
    conditioning: str
    pipeline_classes: tuple[str, ...]
    denoiser: str
    recognise: Callable[[FolderInfo], bool] = field(repr=False)
    text: tuple[TextPart, ...] = ()
    build: Callable[..., NoisePrediction] = field(default=None, repr=False)  # type: ignore[assignment]
    latent_patch: int = 1


# ---------------------------------------------------------------------------- the families

def _unet_cfg(info: FolderInfo, cls: str) -> dict | None:
    cfg = info.denoisers.get("unet")
    return cfg if cfg is not None and cfg.get("_class_name") == cls else None


def _is_sd(info: FolderInfo) -> bool:
    cfg = _unet_cfg(info, "UNet2DConditionModel")
    return cfg is not None and cfg.get("addition_embed_type") is None


def _is_sdxl(info: FolderInfo) -> bool:
    cfg = _unet_cfg(info, "UNet2DConditionModel")
    return cfg is not None and cfg.get("addition_embed_type") == "text_time"


def _is_unconditional(info: FolderInfo) -> bool:
    cfg = _unet_cfg(info, "UNet2DModel")
    return cfg is not None and class_conditional_kind("UNet2DModel", cfg) is None


def _is_class_unet(info: FolderInfo) -> bool:
    cfg = _unet_cfg(info, "UNet2DModel")
    return cfg is not None and class_conditional_kind("UNet2DModel", cfg) == "class_unet"


def _is_dit(info: FolderInfo) -> bool:
    cfg = info.denoisers.get("transformer")
    return cfg is not None and class_conditional_kind(cfg.get("_class_name"), cfg) == "dit"


def _build_class(unet: Any, scheduler: Any, text: dict[str, Any], *, vae_scale_factor: int,
                 device: torch.device, dtype: torch.dtype) -> NoisePrediction:
    return class_conditional_predictor(unet, scheduler, device=device, dtype=dtype)


def _is_sd3(info: FolderInfo) -> bool:
    return info.denoiser_class("transformer") == "SD3Transformer2DModel"


def _is_flux(info: FolderInfo) -> bool:
    return info.denoiser_class("transformer") == "FluxTransformer2DModel"


def _build_unet(unet: Any, scheduler: Any, text: dict[str, Any], *, vae_scale_factor: int,
                device: torch.device, dtype: torch.dtype) -> NoisePrediction:
    return NoisePredictor.from_components(unet, scheduler, text_encoder=text.get("text_encoder"),
                                          tokenizer=text.get("tokenizer"), device=device, dtype=dtype)


def _build_sdxl(unet: Any, scheduler: Any, text: dict[str, Any], *, vae_scale_factor: int,
                device: torch.device, dtype: torch.dtype) -> NoisePrediction:
    return SDXLNoisePredictor.from_components(unet, scheduler, text=text, vae_scale_factor=vae_scale_factor,
                                              device=device, dtype=dtype)


FAMILIES: tuple[Family, ...] = (
    Family(
        name="flux",
        label="Flux (rectified flow; dev-style guidance embedding or schnell-style without)",
        conditioning="CLIP pooled output and T5 states (512 tokens), latents packed 2x2 with their position "
                     f"ids; unshifted sigma = t / T (the network is given sigma * T / 1000); embedded guidance "
                     f"{FLUX_GUIDANCE_SCALE} (FluxPipeline's default guidance_scale) when the transformer has "
                     "guidance_embeds, none otherwise; true CFG off",
        pipeline_classes=FLUX_PIPELINE_CLASSES,
        denoiser="transformer",
        recognise=_is_flux,
        text=(TextPart("text_encoder", "tokenizer", "CLIPTextModel"),
              TextPart("text_encoder_2", "tokenizer_2", "T5EncoderModel")),
        build=build_flux,
        latent_patch=FLUX_PATCH,
    ),
    Family(
        name="sd3",
        label="Stable Diffusion 3 / 3.5 (rectified flow)",
        conditioning="CLIP-L + CLIP-G penultimate states and T5 states (zeros without T5), pooled CLIP "
                     "projections; unshifted sigma = t / T; guidance off",
        pipeline_classes=SD3_PIPELINE_CLASSES,
        denoiser="transformer",
        recognise=_is_sd3,
        text=(TextPart("text_encoder", "tokenizer", "CLIPTextModelWithProjection"),
              TextPart("text_encoder_2", "tokenizer_2", "CLIPTextModelWithProjection"),
              TextPart("text_encoder_3", "tokenizer_3", "T5EncoderModel", required=False)),
        build=build_sd3,
    ),
    Family(
        name="sdxl",
        label="Stable Diffusion XL",
        conditioning="two CLIP text encoders (hidden states + pooled projection) and add_time_ids "
                     "(original = target = the analysed size, crop (0, 0)); guidance off",
        pipeline_classes=("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"),
        denoiser="unet",
        recognise=_is_sdxl,
        text=(TextPart("text_encoder", "tokenizer", "CLIPTextModel", required=False),
              TextPart("text_encoder_2", "tokenizer_2", "CLIPTextModelWithProjection")),
        build=_build_sdxl,
    ),
    Family(
        name="sd",
        label="Stable Diffusion 1.x / 2.x",
        conditioning="CLIP text hidden states of the caption (empty prompt without one); guidance off",
        pipeline_classes=("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
        denoiser="unet",
        recognise=_is_sd,
        text=(TextPart("text_encoder", "tokenizer", "AutoModel"),),
        build=_build_unet,
    ),
    Family(
        name="class_unet",
        label="Class-conditional latent diffusion (UNet2DModel with class embeddings)",
        conditioning="the image's class label (metadata column 'label'); refused without one (no null class)",
        pipeline_classes=(),
        denoiser="unet",
        recognise=_is_class_unet,
        build=_build_class,
    ),
    Family(
        name="dit",
        label="DiT (class-conditional latent transformer)",
        conditioning="the image's class label (metadata column 'label'), else the null class num_classes; "
                     "guidance off",
        pipeline_classes=("DiTPipeline",),
        denoiser="transformer",
        recognise=_is_dit,
        build=_build_class,
    ),
    Family(
        name="unconditional",
        label="Unconditional latent diffusion (UNet2DModel)",
        conditioning="none",
        pipeline_classes=("LDMPipeline", "DDPMPipeline", "DDIMPipeline"),
        denoiser="unet",
        recognise=_is_unconditional,
        build=_build_unet,
    ),
)
"""Every family, most specific first (the first that recognises a folder wins a tie)."""


def family_by_name(name: str) -> Family:
    """The family called ``name`` (ModelLoadError naming the known ones otherwise)."""
    for fam in FAMILIES:
        if fam.name == name:
            return fam
    raise ModelLoadError(f"family: expected one of {[f.name for f in FAMILIES]}, got {name!r}")


# ---------------------------------------------------------------------------- detection

def read_folder_info(src: "Source") -> FolderInfo:
    """The pipeline class and denoiser configs of ``src`` (JSON files only)."""
    pipeline_class, components = None, {}
    if src.has("", "model_index.json"):
        index = src.config("", "model_index.json")
        name = index.get("_class_name")
        pipeline_class = name if isinstance(name, str) else None
        components = {k: v for k, v in index.items() if not k.startswith("_")}
    denoisers = {sub: src.config(sub, "config.json") for sub in _DENOISER_FOLDERS if src.has(sub, "config.json")}
    return FolderInfo(where=src.describe(), pipeline_class=pipeline_class, denoisers=denoisers, components=components)


def _family_of(info: FolderInfo) -> Family:
    candidates = [fam for fam in FAMILIES if fam.recognise(info)]
    for fam in candidates:
        if info.pipeline_class in fam.pipeline_classes:
            return fam
    if candidates:
        return candidates[0]
    named = (f"model_index.json names the pipeline class {info.pipeline_class!r}" if info.pipeline_class
             else "it has no model_index.json")
    known = ", ".join(f"{fam.name} ({', '.join(fam.pipeline_classes)})" for fam in FAMILIES)
    raise ModelLoadError(
        f"{info.where}: no ldminv model family recognises this pipeline: {named}, and its denoiser is "
        f"{info.describe_denoiser()}; known families (pipeline classes): {known}"
    )


def detect_family(folder: "str | os.PathLike | Source") -> Family:
    """The :class:`Family` of a diffusers pipeline folder (or hub id, or a located ``Source``).

    Reads ``model_index.json`` (when present) and the denoiser's ``config.json``; no weights.

    Raises:
        ModelLoadError: no family recognises the folder (the message names model_index.json's
            ``_class_name`` and the denoiser's class), or the folder cannot be read.
    """
    from .sources import Source, check_source_arg, locate

    if isinstance(folder, Source):
        src = folder
    else:
        check_source_arg(folder)
        src = locate(Path(folder) if isinstance(folder, os.PathLike) else folder)
    return _family_of(read_folder_info(src))
