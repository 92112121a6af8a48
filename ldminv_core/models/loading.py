"""Loading a latent diffusion model from a diffusers pipeline folder or a hub id.

:func:`load_model` opens a diffusers pipeline folder (``vae/`` AutoencoderKL, ``unet/``
UNet2DModel or UNet2DConditionModel, ``scheduler/`` any diffusers scheduler with
``alphas_cumprod``, plus ``text_encoder/`` and ``tokenizer/`` for text-conditioned UNets),
which is exactly what ``StableDiffusionPipeline.save_pretrained`` writes, or a Hugging Face
hub id (:mod:`ldminv_core.models.sources`), in numbered steps, and returns a
:class:`LoadedModel`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from .build_lock import MODEL_BUILD_LOCK
from ..errors import ModelLoadError, ShapeError, TracedExportError
from .lora_files import check_lora
from .families import Family, TextPart, detect_family
from .noise_prediction import NoisePrediction
from .schedules import is_flow_scheduler
from .single_file import resolve_single_file
from .sources import Source, check_folder_layout, locate
from .configs import read_checked_configs

if TYPE_CHECKING:  # pragma: no cover
    from .lora_files import LoraAdapter

__all__ = ["LoadedModel", "load_model", "resolve_device", "idle_cpu_threads"]

_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")


@dataclass
class LoadedModel:
    """A latent diffusion model ready for analysis (eval mode, no parameter gradients).

    Attributes:
        vae: diffusers AutoencoderKL.
        unet: diffusers UNet2DModel or UNet2DConditionModel.
        scheduler: diffusers scheduler exposing ``alphas_cumprod``.
        text_encoder, tokenizer: CLIP text model and tokenizer, or None (unconditional).
        predictor: :class:`~ldminv_core.models.noise_prediction.NoisePredictor` wrapping unet + scheduler
            (+ text encoder).
        scaling_factor: ``vae.config.scaling_factor`` (1.0 when absent).
        image_channels: channels of the VAE's images (1 grayscale, 3 RGB).
        resolution: side of the square images the VAE expects.
        latent_shape: (C, h, w) of one latent.
        is_conditional: True for text-conditioned UNets.
        source: absolute folder path, or the hub id.
        device, dtype: where and in which precision the modules live.
        lora: one record per LoRA adapter applied by :func:`ldminv_core.models.lora_apply.apply_lora`
            (path, file, sha256, scale, adapter_name, targets, n_tensors, fused); empty when none.
        family: the :class:`~ldminv_core.models.families.Family` the folder was recognised as.
        text_encoder_2, tokenizer_2: SDXL's second text encoder (CLIPTextModelWithProjection) and
            its tokenizer, else None.
        single_file: for a single-file checkpoint, its record (file, SHA-256, config folder, the
            converted folder: :func:`ldminv_core.models.single_file.resolve_single_file`), else None.
        export: for a model loaded from its TorchScript export (:mod:`ldminv_core.models.traced`),
            what run.json records of it (format, folder, the class traced, the check made), else None.
    """

    vae: Any
    unet: Any
    scheduler: Any
    text_encoder: Any
    tokenizer: Any
    predictor: NoisePrediction
    scaling_factor: float
    image_channels: int
    resolution: int
    latent_shape: tuple[int, int, int]
    is_conditional: bool
    source: str
    device: torch.device
    dtype: torch.dtype
    shift_factor: float = 0.0
    lora: tuple[dict, ...] = ()
    family: Family | None = None
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    single_file: dict | None = None
    export: dict | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the images the VAE takes."""
        return (self.image_channels, self.resolution, self.resolution)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Scaled encoder means of ``images``.

        Args:
            images: (N, C, H, W) in [-1, 1] with C = image_channels, H = W = resolution.

        Returns:
            (N, *latent_shape) tensor on ``device`` in ``dtype``:
            ``(E(x).mean - shift_factor) * scaling_factor`` (shift_factor is 0 unless the VAE
            config sets one).
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ShapeError(f"images: expected a tensor (N, {', '.join(map(str, self.image_shape))}), got {got}")
        x = images.to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            mean = self.vae.encode(x).latent_dist.mean
        return (mean - self.shift_factor) * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) (roughly in [-1, 1]) decoded from scaled latents z (N, C, h, w)."""
        if not isinstance(z, torch.Tensor) or z.ndim != 4 or tuple(z.shape[1:]) != self.latent_shape:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ShapeError(f"z: expected a tensor (N, {', '.join(map(str, self.latent_shape))}), got {got}")
        with torch.no_grad():
            return self.decoder_fn()(z.to(device=self.device, dtype=self.dtype))

    def decoder_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The differentiable decoder of scaled latents, ``z -> vae.decode(z / sf).sample``
        (plus the VAE's shift_factor when it has one), as :mod:`ldminv_core.geometry` takes it: a
        :class:`~ldminv_core.geometry.tangents.VaeDecoder`, whose layer-by-layer JVPs the geometry uses."""
        from ..geometry.tangents import VaeDecoder

        if self.export is not None:
            raise TracedExportError(f"{self.export.get('folder')}: a model loaded from its TorchScript export has "
                                    "no decoder; load the diffusers model to decode latents or compute the geometry")
        return VaeDecoder(self.vae, scaling_factor=self.scaling_factor, shift_factor=self.shift_factor)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; other names are checked and returned."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"device: expected 'auto', 'cpu' or 'cuda[:i]', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device: {device!r} was asked for but this machine has no usable CUDA GPU")
    return dev


def _sample_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            return None
        value = value[0]
    return int(value)


@dataclass
class _Plan:
    """What the configs say, checked before any weights are read."""

    unet_class: str
    is_conditional: bool
    latent_channels: int
    scheduler_class: Any
    scheduler_name: str
    text: tuple[TextPart, ...] = ()
    denoiser: str = "unet"


def _plan(src: Source, vae_cfg: dict, unet_cfg: dict, sched_cfg: dict, family: Family) -> _Plan:
    """The classes to load, after checking they fit together (ModelLoadError otherwise)."""
    from diffusers import SchedulerMixin
    import diffusers

    where = src.describe()
    vae_class = vae_cfg.get("_class_name", "AutoencoderKL")
    if vae_class != "AutoencoderKL":
        raise ModelLoadError(f"{where}: vae/config.json: expected _class_name 'AutoencoderKL', got {vae_class!r}")
    unet_class = unet_cfg.get("_class_name")
    if unet_class not in _UNET_CLASSES and family.denoiser == "unet":
        raise ModelLoadError(f"{where}: unet/config.json: expected _class_name in {_UNET_CLASSES}, got {unet_class!r}")
    latent_channels = int(vae_cfg.get("latent_channels", 4))
    unet_in = int(unet_cfg.get("in_channels", 4))
    patch = family.latent_patch  # Flux packs 2x2 latent patches into its input channels
    if unet_in != latent_channels * patch * patch:
        if patch == 1:
            raise ModelLoadError(
                f"{where}: unet in_channels = {unet_in} but vae latent_channels = {latent_channels}; "
                "the UNet must take the VAE's latents"
            )
        raise ModelLoadError(
            f"{where}: {family.denoiser}/config.json in_channels = {unet_in} but the {family.name} family packs "
            f"{patch}x{patch} patches of the VAE's {latent_channels} latent channels, so it expects "
            f"{latent_channels * patch * patch}"
        )
    # text-conditioned: SD-style UNets, and transformers of a family with text encoders (SD3, Flux)
    is_conditional = unet_class == "UNet2DConditionModel" or (family.denoiser == "transformer" and bool(family.text))
    text = family.text if is_conditional else ()
    folders = ", ".join(f"{p.encoder}/, {p.tokenizer}/" for p in text)
    for part in text:
        for sub, name in ((part.encoder, "config.json"), (part.tokenizer, "tokenizer_config.json")):
            found = src.has(sub, name) or (sub == part.tokenizer and src.has(sub, "tokenizer.json"))
            if part.required and not found:
                raise ModelLoadError(
                    f"{where}: the UNet is text-conditioned (UNet2DConditionModel, {family.label}) but "
                    f"{sub}/{name} is missing; expected {folders} as written by its diffusers pipeline"
                )
    text = tuple(p for p in text if p.required or src.has(p.encoder, "config.json"))
    sched_class_name = sched_cfg.get("_class_name")
    sched_class = getattr(diffusers, str(sched_class_name), None)
    if not (isinstance(sched_class, type) and issubclass(sched_class, SchedulerMixin)):
        raise ModelLoadError(
            f"{where}: scheduler/scheduler_config.json: _class_name {sched_class_name!r} is not a diffusers scheduler"
        )
    return _Plan(unet_class, is_conditional, latent_channels, sched_class, sched_class_name, text, family.denoiser)


def _load_components(src: Source, plan: _Plan, dtype: torch.dtype) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(vae, unet, scheduler, text parts by sub-folder name), safetensors weights only; one load at
    a time in the process (:data:`~.build_lock.MODEL_BUILD_LOCK`)."""
    with MODEL_BUILD_LOCK:
        return _load_components_unlocked(src, plan, dtype)


def _load_components_unlocked(src: Source, plan: _Plan, dtype: torch.dtype) -> tuple[Any, Any, Any, dict[str, Any]]:
    """:func:`_load_components` without the lock."""
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel

    where = src.describe()
    safe = dict(use_safetensors=True)  # never unpickle weights (see sources.check_folder_layout)
    vae = src.load("the VAE (AutoencoderKL)", AutoencoderKL.from_pretrained, "vae", torch_dtype=dtype, **safe)
    unet_cls = UNet2DConditionModel if plan.is_conditional else UNet2DModel
    if plan.denoiser != "unet":  # transformer/ (DiT, ...): the class its config names, checked by the family
        import diffusers

        unet_cls = getattr(diffusers, plan.unet_class)
    what = f"the UNet ({plan.unet_class})" if plan.denoiser == "unet" else f"the denoiser ({plan.unet_class})"
    unet = src.load(what, unet_cls.from_pretrained, plan.denoiser, torch_dtype=dtype, **safe)
    scheduler = src.load(f"the scheduler ({plan.scheduler_name})", plan.scheduler_class.from_pretrained, "scheduler")
    if getattr(scheduler, "alphas_cumprod", None) is None and not is_flow_scheduler(scheduler):
        raise ModelLoadError(
            f"{where}: scheduler {plan.scheduler_name} has no alphas_cumprod (not a DDPM-family scheduler) "
            "and is not a rectified-flow FlowMatch scheduler"
        )
    text: dict[str, Any] = {}
    hidden_total = 0
    for part in plan.text:
        import transformers
        from transformers import AutoTokenizer

        encoder_cls = getattr(transformers, part.encoder_class)
        encoder = src.load(f"the text encoder ({part.encoder_class})", encoder_cls.from_pretrained, part.encoder,
                           dtype=dtype, **safe)
        text[part.encoder] = encoder
        text[part.tokenizer] = src.load(f"the tokenizer of {part.encoder}", AutoTokenizer.from_pretrained,
                                        part.tokenizer)
        hidden_total += int(getattr(encoder.config, "hidden_size", 0) or 0)
    cross = unet.config.get("cross_attention_dim")
    if plan.text and hidden_total and isinstance(cross, int) and hidden_total != cross:
        names = " + ".join(f"{p.encoder} hidden_size" for p in plan.text)
        raise ModelLoadError(f"{where}: {names} = {hidden_total} but unet cross_attention_dim = {cross}")
    return vae, unet, scheduler, text


def _place(modules: Sequence[Any], dev: torch.device, dtype: torch.dtype) -> None:
    """Each module on ``dev`` in ``dtype``, in eval mode, without parameter gradients."""
    for module in modules:
        if module is not None:
            if module.dtype != dtype:
                module.to(dtype=dtype)
            module.to(device=dev)
            module.eval()
            module.requires_grad_(False)


def _geometry(where: str, vae: Any, unet: Any, latent_channels: int) -> tuple[float, float, int, tuple[int, int, int]]:
    """(scaling_factor, shift_factor, resolution, latent_shape) from the VAE (and UNet) configs."""
    sf = vae.config.get("scaling_factor", None) if hasattr(vae.config, "get") else None
    scaling_factor = float(sf) if sf is not None else 1.0
    shift = vae.config.get("shift_factor", None) if hasattr(vae.config, "get") else None
    shift_factor = float(shift) if shift is not None else 0.0
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = _sample_size(vae.config.get("sample_size", None))
    if resolution is None:
        unet_size = _sample_size(unet.config.sample_size)
        if unet_size is None:
            raise ModelLoadError(f"{where}: neither vae nor unet config gives a square sample_size")
        resolution = unet_size * factor
    if resolution % factor:
        raise ModelLoadError(
            f"{where}: vae sample_size {resolution} is not a multiple of the VAE downsampling factor {factor}"
        )
    return scaling_factor, shift_factor, int(resolution), (latent_channels, resolution // factor, resolution // factor)


def _check_latent_patches(where: str, family: Family, latent_shape: tuple[int, int, int]) -> None:
    """ModelLoadError unless the latent h, w are multiples of the family's packed patch side."""
    patch = family.latent_patch
    if latent_shape[1] % patch or latent_shape[2] % patch:
        raise ModelLoadError(
            f"{where}: the {family.name} family packs {patch}x{patch} latent patches, so the latent height "
            f"and width must be multiples of {patch}; the VAE's sample_size gives latents "
            f"{latent_shape[1]}x{latent_shape[2]}"
        )


def load_model(
    source: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    lora: Sequence[LoraAdapter] | None = None,
    model_config: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a latent diffusion model from a diffusers pipeline folder or a hub id.

    Args:
        source: folder with vae/, unet/, scheduler/ (+ text_encoder/, tokenizer/ for
            UNet2DConditionModel), or a hub id such as ``"CompVis/stable-diffusion-v1-4"``
            (local cache first; online download only when huggingface.co is reachable).
        device: "cpu", "cuda", "cuda:i" or "auto".
        dtype: parameter dtype (float32 by default).
        lora: LoRA adapters (:class:`~ldminv_core.models.lora_files.LoraAdapter`) fused into the
            UNet (and the text encoder) after loading, with
            :func:`~ldminv_core.models.lora_apply.apply_lora`; their records go to
            ``LoadedModel.lora``.
        model_config: the config folder of a single-file checkpoint ``source`` (:mod:`.single_file`).

    Returns:
        :class:`LoadedModel`, all modules in eval mode with ``requires_grad`` False; images
        (N, C, resolution, resolution), latents (N, *latent_shape).

    Raises:
        ModelLoadError: missing path; folder missing a sub-folder or file (named); unknown
            VAE/UNet/scheduler class; UNet in_channels != VAE latent_channels; conditional
            UNet without text_encoder/ or tokenizer/; hub id neither cached nor reachable;
            a LoRA adapter that cannot be applied (see :func:`~ldminv_core.models.lora_apply.apply_lora`).
            a refused single-file checkpoint (:func:`~ldminv_core.models.single_file.check_single_file`).
    """
    # 1. where the model is (a single-file checkpoint: its converted folder), its layout and configs
    source, single_file = resolve_single_file(source, model_config=model_config)  # checks the argument
    dev = resolve_device(device)
    src = locate(source)
    if not src.hub:
        check_folder_layout(src)
    vae_cfg, unet_cfg, sched_cfg = read_checked_configs(src)
    if lora is not None:
        check_lora(lora)  # fail on a bad adapter path before any weights are loaded
    # 2. the family (models.families) and the classes to load, checked against each other
    family = detect_family(src)
    plan = _plan(src, vae_cfg, unet_cfg, sched_cfg, family)
    # 3. the weights (one load at a time in the process: .build_lock), placed on the device in eval mode
    vae, unet, scheduler, text = _load_components(src, plan, dtype)
    _place((vae, unet, text.get("text_encoder"), text.get("text_encoder_2")), dev, dtype)
    # 4. the latent geometry and the family's noise-prediction view
    scaling_factor, shift_factor, resolution, latent_shape = _geometry(src.describe(), vae, unet, plan.latent_channels)
    _check_latent_patches(src.describe(), family, latent_shape)
    vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    predictor = family.build(unet, scheduler, text, vae_scale_factor=vae_scale_factor, device=dev, dtype=dtype)
    model = LoadedModel(
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        text_encoder=text.get("text_encoder"),
        tokenizer=text.get("tokenizer"),
        predictor=predictor,
        scaling_factor=scaling_factor,
        image_channels=int(vae.config.in_channels),
        resolution=resolution,
        latent_shape=latent_shape,
        is_conditional=predictor.is_conditional,
        source=src.ref,
        device=dev,
        dtype=dtype,
        shift_factor=shift_factor,
        family=family,
        text_encoder_2=text.get("text_encoder_2"),
        tokenizer_2=text.get("tokenizer_2"),
        single_file=single_file,
    )
    # 5. the LoRA adapters, fused into the weights
    if lora is not None:
        from .lora_apply import apply_lora

        apply_lora(model, lora)
    return model


def idle_cpu_threads() -> int:
    """Cores not already busy: cpu count minus the 1-minute load average (at least 1, at most
    torch's default). Intra-op threads that compete with other processes for cores spin in
    barriers and can make torch many times slower than one thread."""
    default = torch.get_num_threads()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return default
    cores = os.cpu_count() or default
    return max(1, min(default, round(cores - load)))
