"""Loading latent diffusion models and image folders.

:func:`load_model` opens a diffusers pipeline folder (``vae/`` AutoencoderKL, ``unet/``
UNet2DModel or UNet2DConditionModel, ``scheduler/`` any diffusers scheduler with
``alphas_cumprod``, plus ``text_encoder/`` and ``tokenizer/`` for text-conditioned UNets),
which is exactly what ``StableDiffusionPipeline.save_pretrained`` writes, or a Hugging Face
hub id (from the local cache first; offline machines fail at once with a clear message).

:func:`load_image_folder` reads a folder of images (PNG, JPEG, WebP, BMP, TIFF, GIF; any size
or mode) into a float32 tensor in [-1, 1] at the model's channels and resolution, with
captions from ``metadata.jsonl`` / ``metadata.csv`` (columns ``file_name``, ``text``, the
Hugging Face ``imagefolder`` convention). Unreadable and non-image files are skipped and
reported, never fatal unless nothing usable remains.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import socket
import stat
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from .attacks import NoisePredictor
from .errors import DataLoadError, ModelLoadError, ShapeError

if TYPE_CHECKING:  # pragma: no cover
    from .lora import LoraAdapter

__all__ = [
    "LoadedModel",
    "idle_cpu_threads",
    "LoadReport",
    "ImageSet",
    "IMAGE_EXTENSIONS",
    "load_model",
    "check_model",
    "load_image_folder",
    "check_image_folder",
    "resolve_device",
    "MAX_IMAGE_PIXELS",
    "display_name",
    "pixel_hash",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
_HUB_HOST = ("huggingface.co", 443)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
#: Images whose header declares more pixels than this are skipped before decoding (a crafted
#: 100000x100000 PNG header would otherwise allocate tens of GB). 8192 x 8192.
MAX_IMAGE_PIXELS = 8192 * 8192


# ----------------------------------------------------------------------------- model


@dataclass
class LoadedModel:
    """A latent diffusion model ready for analysis (eval mode, no parameter gradients).

    Attributes:
        vae: diffusers AutoencoderKL.
        unet: diffusers UNet2DModel or UNet2DConditionModel.
        scheduler: diffusers scheduler exposing ``alphas_cumprod``.
        text_encoder, tokenizer: CLIP text model and tokenizer, or None (unconditional).
        predictor: :class:`ldminv_core.attacks.NoisePredictor` wrapping unet + scheduler
            (+ text encoder).
        scaling_factor: ``vae.config.scaling_factor`` (1.0 when absent).
        image_channels: channels of the VAE's images (1 grayscale, 3 RGB).
        resolution: side of the square images the VAE expects.
        latent_shape: (C, h, w) of one latent.
        is_conditional: True for text-conditioned UNets.
        source: absolute folder path, or the hub id.
        device, dtype: where and in which precision the modules live.
        lora: one record per LoRA adapter applied by :func:`ldminv_core.lora.apply_lora`
            (path, file, sha256, scale, adapter_name, targets, n_tensors, fused); empty when none.
    """

    vae: Any
    unet: Any
    scheduler: Any
    text_encoder: Any
    tokenizer: Any
    predictor: NoisePredictor
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
        :class:`~ldminv_core.tangents.VaeDecoder`, whose layer-by-layer JVPs the geometry uses."""
        from .tangents import VaeDecoder

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


class _Source:
    """Where the components come from: a local folder, or a hub repo (cached or online)."""

    def __init__(self, ref: str, *, hub: bool, local_only: bool) -> None:
        self.ref = ref
        self.hub = hub
        self.local_only = local_only

    def describe(self) -> str:
        return f"hub model {self.ref!r}" if self.hub else f"model folder {self.ref}"

    def has(self, subfolder: str, filename: str) -> bool:
        if not self.hub:
            return (Path(self.ref) / subfolder / filename).is_file()
        try:
            self._hub_file(subfolder, filename)
            return True
        except Exception:  # noqa: BLE001 - any miss means "not there"
            return False

    def _hub_file(self, subfolder: str, filename: str) -> str:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(self.ref, filename, subfolder=subfolder, local_files_only=self.local_only)

    def config(self, subfolder: str, filename: str) -> dict:
        if self.hub:
            try:
                path = Path(self._hub_file(subfolder, filename))
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(
                    f"{self.describe()}: cannot fetch {subfolder}/{filename} ({type(exc).__name__}: {exc})"
                ) from exc
        else:
            path = Path(self.ref) / subfolder / filename
        try:
            with open(path, encoding="utf-8") as fh:
                cfg = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{self.describe()}: cannot read {subfolder}/{filename}: {exc}") from exc
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"{self.describe()}: {subfolder}/{filename} is not a JSON object")
        return cfg

    def load(self, what: str, fn: Callable[..., Any], subfolder: str, **kwargs: Any) -> Any:
        try:
            return fn(self.ref, subfolder=subfolder, local_files_only=self.local_only, **kwargs)
        except Exception as exc:  # noqa: BLE001 - wrap library errors with the component name
            detail = " ".join(str(exc).split())
            if len(detail) > 400:
                detail = detail[:400] + " ..."
            raise ModelLoadError(
                f"{self.describe()}: cannot load {what} from {subfolder}/ ({type(exc).__name__}: {detail})"
            ) from exc


def _online(timeout: float = 2.0) -> bool:
    """Quick check that the hub is reachable (DNS + TCP within ``timeout`` seconds)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(_HUB_HOST, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def _locate(source: str | Path) -> _Source:
    """Resolve ``source`` to a local folder or a hub repo, failing early with specifics."""
    if isinstance(source, Path) or os.path.exists(str(source)):
        root = Path(source).expanduser()
        if not root.exists():
            raise ModelLoadError(f"model: folder {root} does not exist")
        if not root.is_dir():
            raise ModelLoadError(
                f"model: {root} is a file; expected a diffusers pipeline folder with vae/, unet/ and "
                "scheduler/ (convert single-file checkpoints with diffusers' from_single_file + save_pretrained)"
            )
        return _Source(str(root.resolve()), hub=False, local_only=True)
    text = str(source)
    looks_like_path = text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1
    if looks_like_path:
        raise ModelLoadError(f"model: folder {Path(text).expanduser()} does not exist")
    if not _HUB_ID.match(text):
        raise ModelLoadError(
            f"model: folder {Path(text).expanduser()} does not exist, and {text!r} is not a hub id (owner/name)"
        )
    cached = _Source(text, hub=True, local_only=True)
    if cached.has("unet", "config.json"):
        return cached
    if not _online():
        raise ModelLoadError(
            f"model: hub id {text!r} is not in the local Hugging Face cache and huggingface.co cannot be "
            f"reached (offline), and no local folder {Path(text).resolve()} exists; pass a local diffusers "
            "pipeline folder instead (e.g. one written by StableDiffusionPipeline.save_pretrained)"
        )
    return _Source(text, hub=True, local_only=False)


def _check_folder_layout(src: _Source) -> None:
    """Name the first missing sub-folder or file of a local pipeline folder."""
    root = Path(src.ref)
    if not (root / "vae").is_dir() and (root / "vqvae").is_dir():
        raise ModelLoadError(
            f"model folder {root}: has vqvae/ (a VQ autoencoder); only AutoencoderKL models in vae/ are supported"
        )
    required = [("vae", "config.json"), ("unet", "config.json"), ("scheduler", "scheduler_config.json")]
    for sub, name in required:
        if not (root / sub).is_dir():
            raise ModelLoadError(
                f"model folder {root} is not a diffusers latent diffusion model: sub-folder {sub}/ is missing "
                "(expected vae/, unet/, scheduler/ as written by save_pretrained)"
            )
        if not (root / sub / name).is_file():
            raise ModelLoadError(f"model folder {root}: {sub}/{name} is missing")
    for sub in ("vae", "unet"):
        _check_weights(root, sub, "diffusion_pytorch_model")
    if (root / "text_encoder").is_dir():
        _check_weights(root, "text_encoder", "model")


def _check_weights(root: Path, sub: str, stem: str) -> None:
    """``sub/`` must hold safetensors weights: pickled ``.bin``/``.pt``/``.ckpt`` files can run
    code when loaded, so a folder with only those is refused (convert it once with
    ``save_pretrained(..., safe_serialization=True)`` in a trusted environment)."""
    names = [p.name for p in (root / sub).iterdir()]
    if any(n.startswith(stem) and (n.endswith(".safetensors") or n.endswith(".safetensors.index.json"))
           for n in names):
        return
    pickles = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")))
    if pickles:
        raise ModelLoadError(
            f"model folder {root}: {sub}/ holds only pickled weights ({', '.join(pickles[:3])}); ldminv loads "
            f"safetensors only ({stem}.safetensors), because a pickle can run code when loaded; convert it in a "
            "trusted environment with from_pretrained(...) + save_pretrained(..., safe_serialization=True)"
        )
    raise ModelLoadError(f"model folder {root}: {sub}/ has no weights (expected {stem}.safetensors)")


# (key, kind) of config values the loader and diffusers rely on; kind: "int", "ints" (an int or a
# list of ints), "intlist" (a list of ints), "number", "number?" (a number or null), "strlist"
_VAE_KEYS = {
    "in_channels": "int", "out_channels": "int", "latent_channels": "int", "layers_per_block": "int",
    "norm_num_groups": "int", "sample_size": "ints", "block_out_channels": "intlist",
    "scaling_factor": "number", "shift_factor": "number?", "down_block_types": "strlist",
    "up_block_types": "strlist",
}
_UNET_KEYS = {
    "in_channels": "int", "out_channels": "int", "layers_per_block": "ints", "norm_num_groups": "int",
    "sample_size": "ints", "block_out_channels": "intlist", "cross_attention_dim": "ints",
    "attention_head_dim": "ints", "down_block_types": "strlist", "up_block_types": "strlist",
}
_SCHEDULER_KEYS = {"num_train_timesteps": "int", "beta_start": "number", "beta_end": "number"}
_KIND_TEXT = {
    "int": "an integer", "ints": "an integer or a list of integers", "intlist": "a list of integers",
    "number": "a number", "number?": "a number or null", "strlist": "a list of block names (strings)",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _value_ok(value: Any, kind: str) -> bool:
    if kind == "int":
        return _is_int(value)
    if kind == "ints":
        return _is_int(value) or (isinstance(value, list) and len(value) > 0 and all(_is_int(v) for v in value))
    if kind == "intlist":
        return isinstance(value, list) and len(value) > 0 and all(_is_int(v) for v in value)
    if kind in ("number", "number?"):
        if value is None:
            return kind == "number?"
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if kind == "strlist":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise AssertionError(kind)


def _check_config_values(where: str, name: str, cfg: dict, keys: dict[str, str]) -> None:
    """ModelLoadError naming ``name`` (e.g. "vae/config.json"), the key and the value when a
    value the loader or diffusers relies on has the wrong type (a string where an int is expected)."""
    for key, kind in keys.items():
        if key not in cfg:
            continue
        value = cfg[key]
        if key == "cross_attention_dim" and value is None:
            continue
        if not _value_ok(value, kind):
            raise ModelLoadError(
                f"{where}: {name}: {key!r} must be {_KIND_TEXT[kind]}, got {value!r} ({type(value).__name__})"
            )
        if kind in ("int", "ints", "intlist"):
            values = value if isinstance(value, list) else [value]
            if any(v < 1 for v in values) and key not in ("cross_attention_dim",):
                raise ModelLoadError(f"{where}: {name}: {key!r} must be positive, got {value!r}")


def _check_source_arg(source: Any) -> None:
    if isinstance(source, Path):
        return
    if not isinstance(source, str) or not source.strip():
        got = repr(source) if isinstance(source, str) else f"{source!r} ({type(source).__name__})"
        raise ModelLoadError(f"model: expected a diffusers pipeline folder or a hub id (a string), got {got}")


def _read_checked_configs(src: _Source) -> tuple[dict, dict, dict]:
    """The vae, unet and scheduler configs, each checked for the types of the values used."""
    where = src.describe()
    vae_cfg = src.config("vae", "config.json")
    unet_cfg = src.config("unet", "config.json")
    sched_cfg = src.config("scheduler", "scheduler_config.json")
    _check_config_values(where, "vae/config.json", vae_cfg, _VAE_KEYS)
    _check_config_values(where, "unet/config.json", unet_cfg, _UNET_KEYS)
    _check_config_values(where, "scheduler/scheduler_config.json", sched_cfg, _SCHEDULER_KEYS)
    return vae_cfg, unet_cfg, sched_cfg


def check_model(source: str | Path) -> str:
    """Cheap checks of a model before loading its weights: the folder (or cached hub id)
    exists, has the diffusers layout with safetensors weights, and its vae/unet/scheduler
    configs are JSON objects whose values have the types the loader needs. Returns the
    resolved reference (absolute folder or hub id).

    Raises:
        ModelLoadError: naming the folder, the config file and the key at fault.
    """
    _check_source_arg(source)
    src = _locate(source)
    if not src.hub:
        _check_folder_layout(src)
    _read_checked_configs(src)
    return src.ref


def _sample_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            return None
        value = value[0]
    return int(value)


def load_model(
    source: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    lora: Sequence[LoraAdapter] | None = None,
) -> LoadedModel:
    """Load a latent diffusion model from a diffusers pipeline folder or a hub id.

    Args:
        source: folder with vae/, unet/, scheduler/ (+ text_encoder/, tokenizer/ for
            UNet2DConditionModel), or a hub id such as ``"CompVis/stable-diffusion-v1-4"``
            (local cache first; online download only when huggingface.co is reachable).
        device: "cpu", "cuda", "cuda:i" or "auto".
        dtype: parameter dtype (float32 by default).
        lora: LoRA adapters (:class:`ldminv_core.lora.LoraAdapter`) fused into the UNet (and
            the text encoder) after loading, with :func:`ldminv_core.lora.apply_lora`; their
            records go to ``LoadedModel.lora``.

    Returns:
        :class:`LoadedModel`, all modules in eval mode with ``requires_grad`` False.

    Raises:
        ModelLoadError: missing path; folder missing a sub-folder or file (named); unknown
            VAE/UNet/scheduler class; UNet in_channels != VAE latent_channels; conditional
            UNet without text_encoder/ or tokenizer/; hub id neither cached nor reachable;
            a LoRA adapter that cannot be applied (see :func:`ldminv_core.lora.apply_lora`).
    """
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel, UNet2DModel
    import diffusers

    _check_source_arg(source)
    dev = resolve_device(device)
    src = _locate(source)
    if not src.hub:
        _check_folder_layout(src)
    where = src.describe()
    vae_cfg, unet_cfg, sched_cfg = _read_checked_configs(src)
    if lora is not None:
        from .lora import check_lora

        check_lora(lora)  # fail on a bad adapter path before any weights are loaded

    vae_class = vae_cfg.get("_class_name", "AutoencoderKL")
    if vae_class != "AutoencoderKL":
        raise ModelLoadError(f"{where}: vae/config.json: expected _class_name 'AutoencoderKL', got {vae_class!r}")
    unet_class = unet_cfg.get("_class_name")
    if unet_class not in _UNET_CLASSES:
        raise ModelLoadError(f"{where}: unet/config.json: expected _class_name in {_UNET_CLASSES}, got {unet_class!r}")
    latent_channels = int(vae_cfg.get("latent_channels", 4))
    unet_in = int(unet_cfg.get("in_channels", 4))
    if unet_in != latent_channels:
        raise ModelLoadError(
            f"{where}: unet in_channels = {unet_in} but vae latent_channels = {latent_channels}; "
            "the UNet must take the VAE's latents"
        )
    is_conditional = unet_class == "UNet2DConditionModel"
    if is_conditional:
        for sub, name in (("text_encoder", "config.json"), ("tokenizer", "tokenizer_config.json")):
            if not src.has(sub, name) and not (sub == "tokenizer" and src.has(sub, "tokenizer.json")):
                raise ModelLoadError(
                    f"{where}: the UNet is text-conditioned (UNet2DConditionModel) but {sub}/{name} is "
                    "missing; expected text_encoder/ and tokenizer/ as written by StableDiffusionPipeline"
                )
    sched_class_name = sched_cfg.get("_class_name")
    sched_class = getattr(diffusers, str(sched_class_name), None)
    if not (isinstance(sched_class, type) and issubclass(sched_class, SchedulerMixin)):
        raise ModelLoadError(
            f"{where}: scheduler/scheduler_config.json: _class_name {sched_class_name!r} is not a diffusers scheduler"
        )

    safe = dict(use_safetensors=True)  # never unpickle weights (see _check_weights)
    vae = src.load("the VAE (AutoencoderKL)", AutoencoderKL.from_pretrained, "vae", torch_dtype=dtype, **safe)
    unet_cls = UNet2DConditionModel if is_conditional else UNet2DModel
    unet = src.load(f"the UNet ({unet_class})", unet_cls.from_pretrained, "unet", torch_dtype=dtype, **safe)
    scheduler = src.load(f"the scheduler ({sched_class_name})", sched_class.from_pretrained, "scheduler")
    if getattr(scheduler, "alphas_cumprod", None) is None:
        raise ModelLoadError(f"{where}: scheduler {sched_class_name} has no alphas_cumprod (not a DDPM-family scheduler)")

    text_encoder = tokenizer = None
    if is_conditional:
        from transformers import AutoModel, AutoTokenizer

        text_encoder = src.load("the text encoder", AutoModel.from_pretrained, "text_encoder", dtype=dtype, **safe)
        tokenizer = src.load("the tokenizer", AutoTokenizer.from_pretrained, "tokenizer")
        hidden = getattr(text_encoder.config, "hidden_size", None)
        cross = unet.config.cross_attention_dim
        if hidden is not None and isinstance(cross, int) and hidden != cross:
            raise ModelLoadError(
                f"{where}: text_encoder hidden_size = {hidden} but unet cross_attention_dim = {cross}"
            )

    for module in (vae, unet, text_encoder):
        if module is not None:
            if module.dtype != dtype:
                module.to(dtype=dtype)
            module.to(device=dev)
            module.eval()
            module.requires_grad_(False)

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
    latent_shape = (latent_channels, resolution // factor, resolution // factor)

    predictor = NoisePredictor.from_components(
        unet, scheduler, text_encoder=text_encoder, tokenizer=tokenizer, device=dev, dtype=dtype
    )
    model = LoadedModel(
        vae=vae,
        unet=unet,
        scheduler=scheduler,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        predictor=predictor,
        scaling_factor=scaling_factor,
        image_channels=int(vae.config.in_channels),
        resolution=int(resolution),
        latent_shape=latent_shape,
        is_conditional=is_conditional,
        source=src.ref,
        device=dev,
        dtype=dtype,
        shift_factor=shift_factor,
    )
    if lora is not None:
        from .lora import apply_lora

        apply_lora(model, lora)
    return model


# ----------------------------------------------------------------------------- images


@dataclass
class LoadReport:
    """What :func:`load_image_folder` did.

    Attributes:
        read: images read.
        skipped: (file name, reason) of every entry not used: sub-folders, non-images, FIFOs,
            sockets, devices, broken symbolic links and link loops (never opened), unreadable,
            truncated or corrupt files, headers declaring more than :data:`MAX_IMAGE_PIXELS`,
            names that are not valid UTF-8. Names are shown with ``\\xNN`` escapes for bytes
            that are not UTF-8 (:func:`display_name`).
        converted: images that needed a mode or size conversion.
        links: (file name, resolved target) of symbolic links that were followed (links to
            regular files are read, wherever the target lies; they are listed here).
        warnings: problems that did not stop the load, e.g. metadata lines naming files that
            are not in the folder.
    """

    read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    converted: int = 0
    links: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "skipped": [list(s) for s in self.skipped],
            "converted": self.converted,
            "links": [list(s) for s in self.links],
            "warnings": list(self.warnings),
        }


@dataclass
class ImageSet:
    """Images of one folder in sorted file-name order.

    Attributes:
        paths: absolute paths, one per image.
        images: (N, C, H, W) float32 in [-1, 1].
        captions: caption per image from the folder's metadata, or None.
        report: :class:`LoadReport`.
        hashes: per image, the SHA-256 (hex) of its pixels as the model sees them: the loaded
            tensor (after decode, mode conversion and resize) rounded to 8 bits,
            ``round((x + 1) * 127.5)`` as uint8, with its shape. Re-encoded copies of one image
            (PNG vs. lossless WebP, renamed files) share a hash.
    """

    paths: list[Path]
    images: torch.Tensor
    captions: list[str | None]
    report: LoadReport
    hashes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def display_name(name: str | os.PathLike) -> str:
    """``name`` as printable text: bytes that are not UTF-8 (kept by Python as surrogate
    escapes) are shown as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def pixel_hash(image: torch.Tensor) -> str:
    """SHA-256 of one loaded image (C, H, W) in [-1, 1] rounded to 8 bits (see :class:`ImageSet`)."""
    q = torch.round((image.detach().to(torch.float32).clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    arr = np.ascontiguousarray(q.cpu().numpy())
    digest = hashlib.sha256(repr(tuple(arr.shape)).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


class _Skip(Exception):
    """An entry that is not read, with the reason recorded in the load report."""


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _inspect(entry: Path) -> tuple[str, str | None]:
    """Classify a folder entry without opening it: ("file", link target or None) for a regular
    file (or a symbolic link to one), ("dir", None) for a folder; raises _Skip otherwise."""
    try:
        st = os.lstat(entry)
    except OSError as exc:
        raise _Skip(f"cannot stat ({type(exc).__name__}: {exc.strerror or exc})") from None
    link = None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = display_name(os.readlink(entry))
        except OSError:
            target = "?"
        try:
            st = os.stat(entry)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Skip(f"symbolic link loop (-> {target}); not followed") from None
            raise _Skip(f"broken symbolic link (-> {target}: {exc.strerror or exc})") from None
        link = display_name(os.path.realpath(entry))
    if stat.S_ISDIR(st.st_mode):
        return "dir", link
    if not stat.S_ISREG(st.st_mode):
        what = next((text for test, text in _SPECIAL_FILES if test(st.st_mode)), "not a regular file")
        via = f" (through the symbolic link -> {link})" if link else ""
        raise _Skip(f"not a regular file: {what}{via}; not opened")
    return "file", link


def _open_regular(path: Path):
    """A binary file object of the regular file ``path``, opened without blocking (a FIFO
    swapped in after the check opens at once and is refused by fstat)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise _Skip("cannot open: permission denied") from None
    except OSError as exc:
        raise _Skip(f"cannot open ({type(exc).__name__}: {exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Skip("not a regular file (it changed after the folder was listed); not read")
        if st.st_size == 0:
            raise _Skip("unreadable image: empty file (0 bytes)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_image(path: Path, *, decode: bool = True, max_pixels: int | None = None) -> Image.Image | None:
    """Fully decode the first frame of the regular file ``path`` (``decode=False``: only read
    and check its header). Raises _Skip with the reason for unusable files."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with _open_regular(path) as fh:
        try:
            # (no warnings.catch_warnings here: it is not thread-safe, and the dashboard loads in
            # threads; PIL's DecompressionBombWarning range lies above our own limit anyway)
            img = Image.open(fh)
        except Image.DecompressionBombError as exc:
            raise _Skip(f"image too large: {exc}; not decoded") from None
        except PermissionError:
            raise _Skip("cannot read: permission denied") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            raise _Skip(f"unreadable image: {type(exc).__name__}: {exc}") from None
        with img:
            w, h = img.size
            if w < 1 or h < 1 or w * h > limit:
                raise _Skip(
                    f"image too large: the header declares {w} x {h} pixels (limit {limit:,} pixels); not decoded"
                )
            if not decode:
                return None
            try:
                img.seek(0)
                img.load()
                out = ImageOps.exif_transpose(img)
                return out.copy()
            except Exception as exc:  # noqa: BLE001
                kind = "truncated or corrupt" if isinstance(exc, (OSError, SyntaxError, EOFError)) else "corrupt"
                raise _Skip(f"unreadable image ({kind}): {type(exc).__name__}: {exc}") from None


def _check_folder(path: Any, what: str = "image folder") -> Path:
    """The absolute folder ``path`` after checking it exists, is a folder and can be listed."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
        raise DataLoadError(f"{what}: expected a folder path (a string), got {path!r} ({type(path).__name__})")
    folder = Path(os.fspath(path)).expanduser()
    if not _utf8_ok(str(folder)):
        raise DataLoadError(
            f"{what} {display_name(folder)}: the path is not valid UTF-8; rename it (run folders store paths as text)"
        )
    if not folder.exists():
        raise DataLoadError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise DataLoadError(f"{what} {folder} is not a folder")
    folder = folder.resolve()
    try:
        os.listdir(folder)
    except PermissionError:
        raise DataLoadError(f"{what} {folder} cannot be read (permission denied)") from None
    except OSError as exc:
        raise DataLoadError(f"{what} {folder} cannot be listed ({type(exc).__name__}: {exc.strerror or exc})") from None
    if not os.access(folder, os.R_OK | os.X_OK):
        raise DataLoadError(f"{what} {folder} cannot be read (permission denied)")
    return folder


def _list_folder(folder: Path) -> list[Path]:
    return [folder / name for name in sorted(os.listdir(folder))]


def _candidate(entry: Path, report: LoadReport) -> bool:
    """True when ``entry`` may be an image to open; otherwise its skip reason is recorded."""
    name = display_name(entry.name)
    try:
        kind, link = _inspect(entry)
    except _Skip as why:
        report.skipped.append((name, str(why)))
        return False
    if kind == "dir":
        report.skipped.append((name, "sub-folder (not searched)" + (f" (symbolic link -> {link})" if link else "")))
        return False
    ext = entry.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        report.skipped.append((name, f"not an image: {ext or '(no extension)'}"))
        return False
    if not _utf8_ok(entry.name):
        report.skipped.append((
            name, "file name is not valid UTF-8 (shown with \\x escapes); rename it: run folders store paths as text",
        ))
        return False
    if link is not None:
        report.links.append((name, link))
    return True


def check_image_folder(path: Any, *, what: str = "image folder") -> Path:
    """Cheap check of an image folder before a model is loaded: it exists, is a readable
    folder, and holds at least one regular image file whose header opens. Returns the absolute
    folder.

    Raises:
        DataLoadError: naming ``what`` (e.g. "members"), the folder and the first skip reasons.
    """
    folder = _check_folder(path, what)
    report = LoadReport()
    entries = [e for e in _list_folder(folder) if e.name not in METADATA_FILES]
    for entry in entries:
        if not _candidate(entry, report):
            continue
        try:
            _open_image(entry, decode=False)
            return folder
        except _Skip as why:
            report.skipped.append((display_name(entry.name), str(why)))
    _raise_no_image(folder, entries, report, what)
    raise AssertionError("unreachable")


def _raise_no_image(folder: Path, entries: list[Path], report: LoadReport, what: str) -> None:
    if not entries:
        raise DataLoadError(f"{what} {folder} is empty (expected PNG/JPEG/WebP/BMP images)")
    reasons = "; ".join(f"{name}: {why}" for name, why in report.skipped[:5])
    more = f" (+{len(report.skipped) - 5} more)" if len(report.skipped) > 5 else ""
    raise DataLoadError(f"{what} {folder} holds no usable image: {reasons}{more}")


def _read_metadata_text(path: Path) -> str:
    try:
        with _open_regular(path) as fh:
            data = fh.read()
    except _Skip as why:
        raise DataLoadError(f"{path}: {why}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataLoadError(f"{path}, line {line}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _read_captions(folder: Path, report: LoadReport) -> tuple[dict[str, str | None], dict[str, int], Path | None]:
    """(file name -> caption, file name -> line number, metadata file) from metadata.jsonl
    (preferred) or metadata.csv. Problems that do not stop the load go to ``report.warnings``."""
    jsonl, csv = folder / METADATA_FILES[0], folder / METADATA_FILES[1]
    for meta in (jsonl, csv):
        if os.path.lexists(meta) and not meta.is_file():
            report.warnings.append(f"{meta}: not a regular file; ignored (no captions read from it)")
    rows: list[tuple[int, dict]] = []
    if jsonl.is_file():
        lines = _read_metadata_text(jsonl).splitlines()
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataLoadError(f"{jsonl}, line {i}: expected a JSON object, got {line[:60]!r} ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataLoadError(f"{jsonl}, line {i}: expected a JSON object, got {type(row).__name__}")
            rows.append((i, row))
        source = jsonl
    elif csv.is_file():
        import io

        import pandas as pd

        text = _read_metadata_text(csv)
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except Exception as exc:  # noqa: BLE001 - pandas raises several parser errors
            raise DataLoadError(f"{csv}: cannot parse as CSV ({' '.join(str(exc).split())})") from exc
        rows = [(i + 2, row) for i, row in enumerate(frame.to_dict("records"))]  # line 1 is the header
        source = csv
    else:
        return {}, {}, None
    captions: dict[str, str | None] = {}
    line_of: dict[str, int] = {}
    if not rows:
        return captions, line_of, source
    keys = set().union(*(set(r) for _, r in rows))
    if "file_name" not in keys:
        raise DataLoadError(f"{source}: expected a 'file_name' column, found {sorted(keys)}")
    if "text" not in keys:
        msg = f"{source}: no 'text' column (found {sorted(keys)}); images get no captions"
        report.warnings.append(msg)
        warnings.warn(msg, stacklevel=3)
        return {}, {}, source
    for i, row in rows:
        name = row.get("file_name")
        text = row.get("text")
        if not isinstance(name, str) or not name.strip():
            raise DataLoadError(f"{source}, line {i}: 'file_name' must be a non-empty string, got {name!r}")
        if text is not None and not isinstance(text, (str, int, float)):
            raise DataLoadError(
                f"{source}, line {i}: 'text' must be a string, got {type(text).__name__} {str(text)[:60]!r}"
            )
        key = Path(name).name
        if key in line_of:
            report.warnings.append(
                f"{source}, line {i}: file_name {name!r} repeats line {line_of[key]}; the caption of line {i} is used"
            )
        captions[key] = None if text is None else str(text)
        line_of[key] = i
    return captions, line_of, source


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Convert to "L" or "RGB"; 16/32-bit integer images are rescaled, not clipped."""
    if img.mode == mode:
        return img
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8), mode="L")
    return img.convert(mode)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise DataLoadError(f"{name}: expected a positive integer, got {value!r} ({type(value).__name__})")
    return int(value)


def load_image_folder(
    path: str | Path, *, channels: int, resolution: int, limit: int | None = None
) -> ImageSet:
    """Read the images of a folder for a VAE with ``channels`` channels and ``resolution``.

    Files are taken in sorted file-name order (sub-folders are not searched). Each entry is
    examined with ``os.lstat`` first and only regular files are opened (non-blocking), so
    FIFOs, sockets, devices, broken links and link loops are skipped with a reason and never
    block. Symbolic links to regular files are followed wherever they point and listed in
    ``report.links``. Headers declaring more than :data:`MAX_IMAGE_PIXELS` pixels are refused
    before decoding; truncated, corrupt, unreadable (permission) files and names that are not
    valid UTF-8 are skipped with a reason. Each image's first frame is converted to "L"
    (channels=1) or "RGB" (channels=3; alpha is dropped, as diffusers' training scripts do),
    then diffusers' ``VaeImageProcessor`` resizes it to resolution x resolution, keeping the
    aspect ratio and cropping the excess around the centre (``resize_mode="crop"``, Lanczos),
    and normalizes it to [-1, 1]. Metadata lines naming files that are not in the folder are
    reported in ``report.warnings``.

    Args:
        path: the image folder.
        channels: 1 or 3.
        resolution: output side in pixels.
        limit: keep only the first ``limit`` usable images (None = all).

    Returns:
        :class:`ImageSet` with images (N, channels, resolution, resolution) float32.

    Raises:
        DataLoadError: folder missing, not a folder, unreadable, or with no usable image (the
            message lists the first skip reasons); malformed metadata file (named, with the line).
    """
    from diffusers.image_processor import VaeImageProcessor

    if isinstance(channels, bool) or channels not in (1, 3):
        raise DataLoadError(f"channels: expected 1 or 3, got {channels!r}")
    resolution = _positive_int(resolution, "resolution")
    if limit is not None:
        limit = _positive_int(limit, "limit")
    folder = _check_folder(path)
    entries = _list_folder(folder)
    report = LoadReport()
    captions_by_name, caption_lines, caption_source = _read_captions(folder, report)
    if caption_source is not None:
        present = {e.name for e in entries}
        missing = [(line, name) for name, line in caption_lines.items() if name not in present]
        if missing:
            missing.sort()
            shown = ", ".join(f"line {line}: {name!r}" for line, name in missing[:5])
            more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
            report.warnings.append(
                f"{caption_source}: {len(missing)} line(s) name files that are not in {folder}; their captions "
                f"are ignored: {shown}{more}"
            )
    mode = "L" if channels == 1 else "RGB"
    processor = VaeImageProcessor(
        do_resize=True,
        vae_scale_factor=1,
        do_normalize=True,
        do_convert_rgb=channels == 3,
        do_convert_grayscale=channels == 1,
    )

    paths: list[Path] = []
    tensors: list[torch.Tensor] = []
    captions: list[str | None] = []
    hashes: list[str] = []
    for entry in entries:
        if limit is not None and len(paths) >= limit:
            break
        if entry.name in METADATA_FILES:
            continue
        if not _candidate(entry, report):
            continue
        try:
            img = _open_image(entry)
        except _Skip as why:
            report.skipped.append((display_name(entry.name), str(why)))
            continue
        assert img is not None
        if img.mode != mode or img.size != (resolution, resolution):
            report.converted += 1
        try:
            img = _to_mode(img, mode)
            x = processor.preprocess(img, height=resolution, width=resolution, resize_mode="crop")
        except Exception as exc:  # noqa: BLE001 - odd modes PIL cannot convert
            report.skipped.append((display_name(entry.name), f"unreadable image: {type(exc).__name__}: {exc}"))
            continue
        x = x.to(torch.float32)
        tensors.append(x)
        hashes.append(pixel_hash(x[0]))
        paths.append(entry)
        captions.append(captions_by_name.get(entry.name))
    report.read = len(paths)
    if not paths:
        _raise_no_image(folder, [e for e in entries if e.name not in METADATA_FILES], report, "image folder")
    images = torch.cat(tensors, dim=0)
    return ImageSet(paths=paths, images=images, captions=captions, report=report, hashes=hashes)



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
