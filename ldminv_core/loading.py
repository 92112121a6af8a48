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

import json
import os
import re
import socket
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageOps

from .attacks import NoisePredictor
from .errors import DataLoadError, ModelLoadError, ShapeError

__all__ = [
    "LoadedModel",
    "idle_cpu_threads",
    "LoadReport",
    "ImageSet",
    "IMAGE_EXTENSIONS",
    "load_model",
    "load_image_folder",
    "resolve_device",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
_UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
_HUB_HOST = ("huggingface.co", 443)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


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
        (plus the VAE's shift_factor when it has one), as :mod:`ldminv_core.geometry` takes it."""
        vae, sf, shift = self.vae, self.scaling_factor, self.shift_factor
        if shift:
            return lambda z: vae.decode(z / sf + shift).sample
        return lambda z: vae.decode(z / sf).sample


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
            raise ModelLoadError(
                f"{self.describe()}: cannot load {what} from {subfolder}/ ({type(exc).__name__}: {exc})"
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
        if not any(p.name.startswith("diffusion_pytorch_model") for p in (root / sub).iterdir()):
            raise ModelLoadError(
                f"model folder {root}: {sub}/ has no weights (diffusion_pytorch_model.safetensors or .bin)"
            )


def _sample_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            return None
        value = value[0]
    return int(value)


def load_model(
    source: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """Load a latent diffusion model from a diffusers pipeline folder or a hub id.

    Args:
        source: folder with vae/, unet/, scheduler/ (+ text_encoder/, tokenizer/ for
            UNet2DConditionModel), or a hub id such as ``"CompVis/stable-diffusion-v1-4"``
            (local cache first; online download only when huggingface.co is reachable).
        device: "cpu", "cuda", "cuda:i" or "auto".
        dtype: parameter dtype (float32 by default).

    Returns:
        :class:`LoadedModel`, all modules in eval mode with ``requires_grad`` False.

    Raises:
        ModelLoadError: missing path; folder missing a sub-folder or file (named); unknown
            VAE/UNet/scheduler class; UNet in_channels != VAE latent_channels; conditional
            UNet without text_encoder/ or tokenizer/; hub id neither cached nor reachable.
    """
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel, UNet2DModel
    import diffusers

    dev = resolve_device(device)
    src = _locate(source)
    if not src.hub:
        _check_folder_layout(src)
    where = src.describe()

    vae_cfg = src.config("vae", "config.json")
    unet_cfg = src.config("unet", "config.json")
    sched_cfg = src.config("scheduler", "scheduler_config.json")

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

    vae = src.load("the VAE (AutoencoderKL)", AutoencoderKL.from_pretrained, "vae", torch_dtype=dtype)
    unet_cls = UNet2DConditionModel if is_conditional else UNet2DModel
    unet = src.load(f"the UNet ({unet_class})", unet_cls.from_pretrained, "unet", torch_dtype=dtype)
    scheduler = src.load(f"the scheduler ({sched_class_name})", sched_class.from_pretrained, "scheduler")
    if getattr(scheduler, "alphas_cumprod", None) is None:
        raise ModelLoadError(f"{where}: scheduler {sched_class_name} has no alphas_cumprod (not a DDPM-family scheduler)")

    text_encoder = tokenizer = None
    if is_conditional:
        from transformers import AutoModel, AutoTokenizer

        text_encoder = src.load("the text encoder", AutoModel.from_pretrained, "text_encoder", dtype=dtype)
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
    return LoadedModel(
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


# ----------------------------------------------------------------------------- images


@dataclass
class LoadReport:
    """What :func:`load_image_folder` did: images read, files skipped (file name, reason),
    and how many images needed a mode or size conversion."""

    read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    converted: int = 0

    def as_dict(self) -> dict:
        return {"read": self.read, "skipped": [list(s) for s in self.skipped], "converted": self.converted}


@dataclass
class ImageSet:
    """Images of one folder in sorted file-name order.

    Attributes:
        paths: absolute paths, one per image.
        images: (N, C, H, W) float32 in [-1, 1].
        captions: caption per image from the folder's metadata, or None.
        report: :class:`LoadReport`.
    """

    paths: list[Path]
    images: torch.Tensor
    captions: list[str | None]
    report: LoadReport

    def __len__(self) -> int:
        return len(self.paths)


def _read_captions(folder: Path) -> dict[str, str]:
    """file name -> caption from metadata.jsonl (preferred) or metadata.csv."""
    jsonl, csv = folder / METADATA_FILES[0], folder / METADATA_FILES[1]
    rows: list[dict] = []
    if jsonl.is_file():
        try:
            lines = jsonl.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise DataLoadError(f"{jsonl}: cannot read ({exc})") from exc
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataLoadError(f"{jsonl}, line {i}: expected a JSON object, got {line[:60]!r} ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise DataLoadError(f"{jsonl}, line {i}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        source = jsonl
    elif csv.is_file():
        import pandas as pd

        try:
            frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        except Exception as exc:  # noqa: BLE001 - pandas raises several parser errors
            raise DataLoadError(f"{csv}: cannot parse as CSV ({exc})") from exc
        rows = frame.to_dict("records")
        source = csv
    else:
        return {}
    captions: dict[str, str] = {}
    if rows and "file_name" not in rows[0]:
        raise DataLoadError(f"{source}: expected a 'file_name' column, found {sorted(rows[0])}")
    if rows and "text" not in rows[0]:
        warnings.warn(f"{source}: no 'text' column (found {sorted(rows[0])}); images get no captions", stacklevel=3)
        return {}
    for row in rows:
        name = row.get("file_name")
        text = row.get("text")
        if name is None:
            continue
        captions[Path(str(name)).name] = None if text is None else str(text)
    return captions


def _open_image(path: Path) -> Image.Image:
    """Fully decode the first frame of an image file (raises on corrupt data)."""
    with Image.open(path) as img:
        img.seek(0)
        img.load()
        img = ImageOps.exif_transpose(img)
        return img.copy()


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


def load_image_folder(
    path: str | Path, *, channels: int, resolution: int, limit: int | None = None
) -> ImageSet:
    """Read the images of a folder for a VAE with ``channels`` channels and ``resolution``.

    Files are taken in sorted file-name order (sub-folders are not searched). Each image's first
    frame is converted to "L" (channels=1) or "RGB" (channels=3; alpha is dropped, as diffusers'
    training scripts do), then diffusers' ``VaeImageProcessor`` resizes it to
    resolution x resolution, keeping the aspect ratio and cropping the excess around the centre
    (``resize_mode="crop"``, Lanczos), and normalizes it to [-1, 1].

    Args:
        path: the image folder.
        channels: 1 or 3.
        resolution: output side in pixels.
        limit: keep only the first ``limit`` usable images (None = all).

    Returns:
        :class:`ImageSet` with images (N, channels, resolution, resolution) float32.

    Raises:
        DataLoadError: folder missing, not a folder, or with no usable image (the message lists
            the first skip reasons); malformed metadata file.
    """
    from diffusers.image_processor import VaeImageProcessor

    if channels not in (1, 3):
        raise DataLoadError(f"channels: expected 1 or 3, got {channels!r}")
    if int(resolution) < 1:
        raise DataLoadError(f"resolution: expected a positive integer, got {resolution!r}")
    if limit is not None and int(limit) < 1:
        raise DataLoadError(f"limit: expected a positive integer or None, got {limit!r}")
    folder = Path(path).expanduser()
    if not folder.exists():
        raise DataLoadError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise DataLoadError(f"image folder {folder} is not a folder")
    folder = folder.resolve()
    entries = sorted(folder.iterdir(), key=lambda p: p.name)
    captions_by_name = _read_captions(folder)
    mode = "L" if channels == 1 else "RGB"
    processor = VaeImageProcessor(
        do_resize=True,
        vae_scale_factor=1,
        do_normalize=True,
        do_convert_rgb=channels == 3,
        do_convert_grayscale=channels == 1,
    )

    report = LoadReport()
    paths: list[Path] = []
    tensors: list[torch.Tensor] = []
    captions: list[str | None] = []
    for entry in entries:
        if limit is not None and len(paths) >= int(limit):
            break
        if entry.name in METADATA_FILES:
            continue
        if entry.is_dir():
            report.skipped.append((entry.name, "sub-folder (not searched)"))
            continue
        ext = entry.suffix.lower()
        if ext not in IMAGE_EXTENSIONS:
            report.skipped.append((entry.name, f"not an image: {ext or '(no extension)'}"))
            continue
        try:
            img = _open_image(entry)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            report.skipped.append((entry.name, f"unreadable image: {type(exc).__name__}: {exc}"))
            continue
        if img.mode != mode or img.size != (resolution, resolution):
            report.converted += 1
        img = _to_mode(img, mode)
        x = processor.preprocess(img, height=int(resolution), width=int(resolution), resize_mode="crop")
        tensors.append(x.to(torch.float32))
        paths.append(entry)
        captions.append(captions_by_name.get(entry.name))
    report.read = len(paths)
    if not paths:
        if not entries or all(e.name in METADATA_FILES for e in entries):
            raise DataLoadError(f"image folder {folder} is empty (expected PNG/JPEG/WebP/BMP images)")
        reasons = "; ".join(f"{name}: {why}" for name, why in report.skipped[:5])
        more = f" (+{len(report.skipped) - 5} more)" if len(report.skipped) > 5 else ""
        raise DataLoadError(f"image folder {folder} holds no usable image: {reasons}{more}")
    images = torch.cat(tensors, dim=0)
    return ImageSet(paths=paths, images=images, captions=captions, report=report)


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
