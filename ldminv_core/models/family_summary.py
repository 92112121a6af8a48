"""What a model folder is, read before anything runs: its family, conditioning, schedule,
latent shape and the decoder-geometry engine the analysis will use.

:func:`summarize_model` reads JSON only (``model_index.json`` and the component configs) and
builds the VAE's modules on the ``meta`` device (no weights, no memory) so that the geometry's
own decision, :func:`ldminv_core.geometry.tangents.unsupported_reason`, says whether the
layer-by-layer engine covers the decoder (the "auto" engine then uses it, once its products
agree with torch.func's at the first latent) or torch.func runs. The checks are the loader's:
the layout and config types (:func:`~ldminv_core.models.sources.checked_source`), the family
(:func:`~ldminv_core.models.families.detect_family`) and the classes and channels that must fit
together (``models.loading``), so a folder the loader would refuse is refused here with the
same message. :func:`check_model_family` is the preflight's model check (``check_config``).

A single-file checkpoint with its config folder is summarised as the config folder's family plus
the file's name and SHA-256 (checked as the loader checks it, nothing converted);
:func:`summarize_adapter` summarises a custom model from its adapter file (family ``"custom"``:
it imports and runs the file, as ``analyze --model-adapter`` does). :func:`conditioning_text`
is the conditioning in words that run.json records next to the family.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ModelLoadError
from .families import Family, detect_family
from .loading import _check_latent_patches
from .loading import _geometry as _latent_geometry
from .loading import _plan as _loader_plan
from .schedules import FLOW_PREDICTION, is_flow_scheduler
from .single_file import _file_sha256, check_single_file, is_single_file, single_file_cache_root
from .sources import checked_source

if TYPE_CHECKING:  # pragma: no cover
    from .loading import LoadedModel
    from .sources import Source

__all__ = ["FamilySummary", "summarize_model", "summarize_adapter", "conditioning_text", "check_model_family",
           "ENGINE_LAYERWISE", "ENGINE_TORCH_FUNC"]

ENGINE_LAYERWISE = "layerwise"
ENGINE_TORCH_FUNC = "torch.func"

_PREDICTION_WORDS = {
    "epsilon": "epsilon (noise) prediction",
    "v_prediction": "v-prediction, eps_hat = a·v + b·z_t",
    "sample": "sample (x0) prediction, eps_hat = (z_t - a·x0) / b",
    FLOW_PREDICTION: "velocity prediction, eps_hat = z_t + (1 - σ)·v at unshifted σ = t / T",
}

#: A custom adapter's conditioning (``AdapterSpec.conditioning``) in words, guidance off.
_ADAPTER_CONDITIONING = {
    "none": "none (unconditional)",
    "label": "the image's class label (metadata column 'label'; the adapter's null class without one)",
    "caption": "the caption (metadata column 'text', \"\" without one) through the adapter's encode_prompts",
}


@dataclass(frozen=True)
class FamilySummary:
    """A model folder as the analysis will see it (from its JSON files; no weights read).

    Attributes:
        source: the resolved folder (absolute) or hub id.
        family: ``Family.name`` (recorded in run.json), e.g. ``"sd3"``.
        label: the family in words.
        conditioning: how the denoiser is conditioned, guidance off (``Family.conditioning``).
        denoiser_class: the denoiser's ``_class_name``, e.g. ``"SD3Transformer2DModel"``.
        denoiser_folder: ``"unet"`` or ``"transformer"``.
        text_encoders: the text-encoder sub-folders that will be loaded (empty: none).
        scheduler_class: the scheduler's ``_class_name``.
        schedule: ``"flow"`` (rectified flow) or ``"ddpm"`` (:attr:`NoiseSchedule.kind`).
        prediction_type: ``"epsilon"``, ``"v_prediction"``, ``"sample"`` or ``"flow"``.
        latent_shape: (C, h, w) of one latent.
        image_shape: (C, H, W) of the images the VAE takes.
        geometry_engine: ``"layerwise"`` or ``"torch.func"``: the engine the "auto" decoder
            geometry will use.
        geometry_note: why (the reason torch.func is used, or the layerwise engine's check).
        extra: further (what, value) rows: the adapter file, or the single-file checkpoint's name
            and SHA-256.
    """

    source: str
    family: str
    label: str
    conditioning: str
    denoiser_class: str
    denoiser_folder: str
    text_encoders: tuple[str, ...]
    scheduler_class: str
    schedule: str
    prediction_type: str
    latent_shape: tuple[int, int, int]
    image_shape: tuple[int, int, int]
    geometry_engine: str
    geometry_note: str
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def schedule_text(self) -> str:
        """The schedule and prediction type in words."""
        head = ("rectified flow" if self.schedule == "flow" else "DDPM family") + f" ({self.scheduler_class})"
        step = "Euler on the velocity" if self.schedule == "flow" else "DDIM"
        words = _PREDICTION_WORDS.get(self.prediction_type, self.prediction_type)
        return f"{head}: {words}; SecMI steps with {step}"

    @property
    def engine_text(self) -> str:
        """The geometry engine in words."""
        return f"{self.geometry_engine} ({self.geometry_note})"

    def rows(self) -> list[tuple[str, str]]:
        """(what, value) pairs for a two-column table: family, conditioning, denoiser, schedule,
        latents, geometry engine."""
        denoiser = self.denoiser_class + (f" ({self.denoiser_folder}/)" if self.denoiser_folder else "")
        if self.text_encoders:
            denoiser += "; text encoders " + ", ".join(f"{t}/" for t in self.text_encoders)
        shape = lambda s: "×".join(map(str, s))  # noqa: E731
        return [
            ("family", f"{self.label} [{self.family}]"),
            ("conditioning", self.conditioning),
            ("denoiser", denoiser),
            ("schedule", self.schedule_text),
            ("latents", f"{shape(self.latent_shape)} from {shape(self.image_shape)} images"),
            ("geometry engine", self.engine_text),
            *self.extra,
        ]


def check_model_family(source: str | os.PathLike) -> tuple[str, Family]:
    """The cheap model checks of :func:`~ldminv_core.models.sources.check_model` (layout,
    safetensors weights, config types), then the family (:func:`detect_family`): a folder
    that no family recognises is refused here, before anything is loaded.

    Returns:
        (the resolved folder or hub id, its :class:`Family`).

    Raises:
        ModelLoadError: naming the folder and what is wrong (the family's message for an
            unrecognised pipeline).
    """
    src, _ = checked_source(source)
    return src.ref, detect_family(src)


def summarize_model(source: str | os.PathLike, *, model_config: str | os.PathLike | None = None) -> FamilySummary:
    """The :class:`FamilySummary` of a diffusers pipeline folder (or cached hub id), or of a
    single-file checkpoint with its config folder ``model_config``.

    Reads JSON only (and a checkpoint's safetensors header and bytes for its SHA-256); the VAE
    is built on the meta device to ask the geometry which engine covers its decoder. The checks
    are the loader's (module docstring).

    Raises:
        ModelLoadError: the loader would refuse the folder (the message names the file at
            fault, or the family's message for an unrecognised pipeline); a single-file
            checkpoint without a fitting config folder (the message names the command that converts).
    """
    if is_single_file(source):  # a checkpoint file needs its config folder: the message names the convert command
        plan = check_single_file(source, model_config=model_config)
        sha = _file_sha256(plan.file, single_file_cache_root())
        parts = f"{', '.join(plan.from_file)} from the file" + (
            f"; {', '.join(plan.from_config)} from the config folder" if plan.from_config else "")
        row = ("checkpoint", f"{plan.file.name} (SHA-256 {sha[:12]}…), {parts}; configs from {plan.config}")
        return replace(_summarize_folder(plan.config), source=str(plan.file), extra=(row,))
    return _summarize_folder(source)


def _summarize_folder(source: str | os.PathLike) -> FamilySummary:
    """:func:`summarize_model` of a pipeline folder or hub id."""
    src, (vae_cfg, unet_cfg, sched_cfg) = checked_source(source)
    family = detect_family(src)
    plan = _loader_plan(src, vae_cfg, unet_cfg, sched_cfg, family)
    schedule, prediction = _schedule(src, plan.scheduler_class, sched_cfg)
    vae = _meta_vae(src, vae_cfg)
    denoiser = SimpleNamespace(config=SimpleNamespace(sample_size=unet_cfg.get("sample_size")))
    scaling, shift, resolution, latent_shape = _latent_geometry(src.describe(), vae, denoiser, plan.latent_channels)
    _check_latent_patches(src.describe(), family, latent_shape)  # Flux: even latent height and width
    engine, note = _geometry_engine(vae, scaling, shift)
    return FamilySummary(
        source=src.ref,
        family=family.name,
        label=family.label,
        conditioning=family.conditioning,
        denoiser_class=str(plan.unet_class),
        denoiser_folder=plan.denoiser,
        text_encoders=tuple(p.encoder for p in plan.text),
        scheduler_class=plan.scheduler_name,
        schedule=schedule,
        prediction_type=prediction,
        latent_shape=tuple(int(v) for v in latent_shape),  # type: ignore[arg-type]
        image_shape=(int(vae.config.in_channels), int(resolution), int(resolution)),
        geometry_engine=engine,
        geometry_note=note,
    )


def _schedule(src: "Source", scheduler_class: Any, sched_cfg: dict) -> tuple[str, str]:
    """("flow" | "ddpm", prediction type) of the scheduler built from its config (no weights),
    refused as the loader refuses a scheduler that is neither."""
    scheduler = scheduler_class.from_config(sched_cfg)
    if is_flow_scheduler(scheduler):
        return "flow", FLOW_PREDICTION
    if getattr(scheduler, "alphas_cumprod", None) is None:
        raise ModelLoadError(
            f"{src.describe()}: scheduler {type(scheduler).__name__} has no alphas_cumprod (not a DDPM-family "
            "scheduler) and is not a rectified-flow FlowMatch scheduler"
        )
    return "ddpm", str(scheduler.config.get("prediction_type") or "epsilon")


def _meta_vae(src: "Source", vae_cfg: dict) -> Any:
    """The AutoencoderKL of ``vae_cfg`` with its parameters on the meta device, in eval mode."""
    from diffusers import AutoencoderKL

    try:
        with torch.device("meta"):
            vae = AutoencoderKL.from_config(vae_cfg)
    except Exception as exc:  # noqa: BLE001 - a config diffusers cannot build is the folder's fault
        raise ModelLoadError(
            f"{src.describe()}: vae/config.json does not build an AutoencoderKL ({type(exc).__name__}: {exc})"
        ) from exc
    return vae.eval()


def _geometry_engine(vae: Any, scaling_factor: float, shift_factor: float) -> tuple[str, str]:
    """(engine, why) of the "auto" decoder geometry on this VAE's decoder, as the run will
    decide it (``geometry.tangents.unsupported_reason`` on the loader's ``VaeDecoder``)."""
    from ..geometry.tangents import VaeDecoder, unsupported_reason

    reason = unsupported_reason(VaeDecoder(vae, scaling_factor=scaling_factor, shift_factor=shift_factor))
    if reason is None:
        return ENGINE_LAYERWISE, ("layer-by-layer JVPs of the AutoencoderKL decoder, checked against torch.func "
                                  "at the first latent")
    return ENGINE_TORCH_FUNC, f"the layer-by-layer engine does not cover this decoder: {reason}"


def summarize_adapter(adapter_file: str | os.PathLike, *, model_path: str | os.PathLike | None = None) -> FamilySummary:
    """The :class:`FamilySummary` of a custom model built by its adapter file (family ``"custom"``).

    Imports the file and calls its ``build_adapter(model_path, ...)`` on the CPU, checking every
    declaration and probing every callable, exactly as ``analyze --model-adapter`` loads it
    (:func:`~.custom_adapter.load_custom_model`): this RUNS the user's code. The geometry engine
    is torch.func (the adapter's decoder is a plain callable).

    Raises:
        AdapterError (a ModelLoadError): the loader's refusal, naming the file and the function.
    """
    from .custom_adapter import load_custom_model

    model = load_custom_model(adapter_file, model_path=model_path, device="cpu")
    spec, record = model.predictor.spec, model.adapter_record
    flow = spec.prediction_type == FLOW_PREDICTION
    scheduler = (f"flow_timesteps T = {model.predictor.num_train_timesteps}" if flow
                 else f"alphas_cumprod, T = {model.predictor.num_train_timesteps}")
    given = (f"model path handed to build_adapter: {record['model_path']}" if record["model_path"]
             else "no model path (build_adapter gets None)")
    return FamilySummary(
        source=str(record["path"]),
        family=model.family.name,
        label=model.family.label,
        conditioning=conditioning_text(model),
        denoiser_class=type(model.unet).__name__,
        denoiser_folder="",
        text_encoders=(),
        scheduler_class=f"the adapter's {scheduler}",
        schedule="flow" if flow else "ddpm",
        prediction_type=spec.prediction_type,
        latent_shape=tuple(int(v) for v in model.latent_shape),  # type: ignore[arg-type]
        image_shape=tuple(int(v) for v in model.image_shape),  # type: ignore[arg-type]
        geometry_engine=ENGINE_TORCH_FUNC,
        geometry_note="the adapter's decode is a plain callable; the layer-by-layer engine only covers "
                      "diffusers' AutoencoderKL",
        extra=(("adapter", f"{record['file']} (SHA-256 {record['sha256'][:12]}…); {given}"),),
    )


def conditioning_text(model: "LoadedModel") -> str | None:
    """How ``model``'s denoiser is conditioned, guidance off, in words: ``Family.conditioning``, or
    for a custom adapter what it declares (none, class label, caption); None without a family."""
    spec = getattr(model.predictor, "spec", None) if getattr(model, "adapter", None) is not None else None
    if spec is not None:
        return _ADAPTER_CONDITIONING.get(spec.conditioning, spec.conditioning)
    return model.family.conditioning if model.family is not None else None
