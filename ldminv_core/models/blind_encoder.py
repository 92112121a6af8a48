"""The pretrained image model of the blind baseline's optional ``encoder`` group
(``analyze --blind-encoder PATH_OR_ID``): found in a local folder or the local Hugging Face cache
(nothing is downloaded), loaded from safetensors only, and used to embed image files
(:func:`encoder_embeddings`, (N, k)). Never the audited model's own VAE or UNet: that would not
be blind. The features that need no model are :mod:`ldminv_core.data.blind_features`.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .build_lock import MODEL_BUILD_LOCK
from .._validation import check_int
from ..errors import LdminvError

if TYPE_CHECKING:  # torch is imported lazily where used
    import torch

__all__ = ["ImageEncoder", "resolve_image_encoder", "load_image_encoder", "encoder_embeddings",
           "CLIP_MEAN_STD", "IMAGENET_MEAN_STD", "ENCODER_BATCH"]

_ENCODER_ARG = "blind_encoder (--blind-encoder)"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
#: The fallback preprocessing's mean / std (no ``preprocessor_config.json`` beside the model):
#: OpenAI CLIP's for CLIP models, ImageNet's for every other model (DINOv2, ViT, ...).
CLIP_MEAN_STD = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Images per forward pass of the image model.
ENCODER_BATCH = 16


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' loading reports and progress bars silenced, restored afterwards."""
    from transformers.utils import logging as tlog

    level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def resolve_image_encoder(ref: str | os.PathLike) -> Path:
    """The local folder of the image model ``ref``: a folder path, or a hub id (``owner/name``)
    found in the local Hugging Face cache (``snapshot_download(local_files_only=True)``: nothing
    is downloaded). Cheap: reads no weights.

    Raises:
        LdminvError: naming ``blind_encoder (--blind-encoder)``: the folder does not exist, is a
            file, or has no config.json; the text is neither a folder nor a hub id; the hub id is
            not in the local cache.
    """
    text = os.fspath(ref) if isinstance(ref, (str, os.PathLike)) else None
    if text is None or not str(text).strip():
        raise LdminvError(f"{_ENCODER_ARG}: expected an image model folder or a hub id (owner/name), got {ref!r}")
    text = str(text)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise LdminvError(f"{_ENCODER_ARG}: {path} is a file; expected a transformers model folder "
                              "(config.json and model.safetensors, as written by save_pretrained)")
        folder = path.resolve()
    else:
        looks_like_path = text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1
        if looks_like_path or not _HUB_ID.match(text):
            raise LdminvError(f"{_ENCODER_ARG}: folder {path} does not exist"
                              + ("" if looks_like_path else f", and {text!r} is not a hub id (owner/name)"))
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(text, local_files_only=True))
        except Exception as exc:  # noqa: BLE001 - any miss means "not cached"
            raise LdminvError(
                f"{_ENCODER_ARG}: hub id {text!r} is not in the local Hugging Face cache and no folder {path} "
                f"exists; nothing is downloaded. Pass a local model folder (e.g. one written by save_pretrained) "
                f"or fetch the model into the cache first ({type(exc).__name__})") from None
    if not (folder / "config.json").is_file():
        raise LdminvError(f"{_ENCODER_ARG}: {folder} has no config.json; expected a transformers model folder "
                          "as written by save_pretrained")
    return folder


@dataclass
class ImageEncoder:
    """A pretrained image model that embeds images for the ``encoder`` group.

    Built by :func:`load_image_encoder`. The embedding of one image is a (k,) float32 vector:

    - ``CLIPVisionModelWithProjection`` (also for a full CLIP checkpoint): ``image_embeds``,
      the projected pooled output (what ``CLIPModel.get_image_features`` returns);
    - ``CLIPVisionModel``: ``pooler_output`` (the post-layernormed CLS token);
    - any other ``AutoModel`` vision model (DINOv2, ViT, ...): ``pooler_output`` when the model
      has one (DINOv2: the layernormed CLS token), else the CLS token ``last_hidden_state[:, 0]``.

    Attributes:
        name: as given (folder path or hub id). path: the local folder read.
        model_class: the transformers class. output: "image_embeds" | "pooler_output" | "cls_token".
        dim: k. preprocessing: how images became pixel values (the folder's image processor, or
            the fallback resize + normalise). device: where the model runs.
        model: the module (eval mode, float32).
    """

    name: str
    path: str
    model_class: str
    output: str
    dim: int
    preprocessing: str
    device: str
    model: Any = field(repr=False)
    _processor: Any = field(default=None, repr=False)
    _size: tuple[int, int] = (224, 224)
    _mean_std: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_MEAN_STD

    def record(self) -> dict:
        """What run.json ``blind.encoder`` records: which model made the features."""
        return {"name": self.name, "path": self.path, "class": self.model_class, "output": self.output,
                "dim": self.dim, "preprocessing": self.preprocessing, "device": self.device}

    def pixel_values(self, images: Sequence[Image.Image]) -> "torch.Tensor":
        """(B, 3, H, W) float32 model input of B images (converted to RGB first)."""
        import torch

        rgb = [im.convert("RGB") for im in images]
        if self._processor is not None:
            out = self._processor(images=rgb, return_tensors="pt")["pixel_values"]
            return torch.as_tensor(out, dtype=torch.float32)
        h, w = self._size
        mean = np.asarray(self._mean_std[0], dtype=np.float32)
        std = np.asarray(self._mean_std[1], dtype=np.float32)
        arrays = [(np.asarray(im.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0 - mean) / std
                  for im in rgb]
        return torch.from_numpy(np.stack(arrays).transpose(0, 3, 1, 2).copy())

    def embed(self, pixel_values: "torch.Tensor") -> "torch.Tensor":
        """(B, k) float32 embeddings of (B, 3, H, W) pixel values (no gradients)."""
        import torch

        with torch.no_grad():
            out = self.model(pixel_values=pixel_values.to(self.device, torch.float32))
            if self.output == "image_embeds":
                emb = out.image_embeds
            elif self.output == "pooler_output":
                emb = out.pooler_output
            else:
                emb = out.last_hidden_state[:, 0]
            return emb.reshape(emb.shape[0], -1).to("cpu", torch.float32)


def _image_size(config: Any) -> tuple[int, int]:
    size = getattr(config, "image_size", None)
    if isinstance(size, int) and size > 0:
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return (int(size[0]), int(size[1]))
    return (224, 224)


def load_image_encoder(ref: str | os.PathLike, *, device: "str | torch.device" = "cpu") -> ImageEncoder:
    """Load the image model ``ref`` (a folder, or a hub id in the local cache) for the ``encoder``
    group: weights from safetensors only (``use_safetensors=True``, ``local_files_only=True``),
    float32, eval mode, on ``device`` (CPU unless told).

    Preprocessing: the folder's own image processor (``preprocessor_config.json``, loaded with
    ``AutoImageProcessor``) when present; else the documented fallback: RGB, bicubic resize to the
    config's ``image_size`` (224 when it has none), scale to [0, 1], normalise with
    :data:`CLIP_MEAN_STD` (CLIP models) or :data:`IMAGENET_MEAN_STD` (others).

    Raises:
        LdminvError: naming ``blind_encoder (--blind-encoder)``: not found locally
            (:func:`resolve_image_encoder`), no safetensors weights, weights missing from the files
            (the model would be partly random), or a model that does not embed an image.
    """
    import torch

    # 1. the folder, with safetensors weights
    folder = resolve_image_encoder(ref)
    _check_safetensors(folder)
    dev = torch.device(device)
    # 2. the model, its output kind and its preprocessing
    model, info, output, size_config, processor, model_type = _load_vision_model(folder)
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise LdminvError(f"{_ENCODER_ARG}: {len(missing)} weights of {type(model).__name__} are missing from the "
                          f"files in {folder} (first: {', '.join(missing[:3])}); they would be random. Expected a "
                          "CLIP vision model or a vision AutoModel (DINOv2, ViT) saved with save_pretrained")
    model = model.to(dev, torch.float32).eval()
    clip = model_type in ("clip", "clip_vision_model")
    encoder = ImageEncoder(
        name=str(os.fspath(ref)), path=str(folder), model_class=type(model).__name__, output=output, dim=0,
        preprocessing="", device=str(dev), model=model, _processor=processor, _size=_image_size(size_config),
        _mean_std=CLIP_MEAN_STD if clip else IMAGENET_MEAN_STD)
    if processor is not None:
        encoder.preprocessing = f"{type(processor).__name__} from {folder / 'preprocessor_config.json'}"
    else:
        h, w = encoder._size
        encoder.preprocessing = (f"RGB, bicubic resize to {w} x {h}, scaled to [0, 1], normalised with the "
                                 f"{'CLIP' if clip else 'ImageNet'} mean / std (no preprocessor_config.json)")
    # 3. one grey image through the whole path: the output kind and the dimension, or a clear refusal
    _probe(encoder, folder)
    return encoder


def _check_safetensors(folder: Path) -> None:
    if not any(folder.glob("*.safetensors")):
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise LdminvError(f"{_ENCODER_ARG}: {folder} holds no .safetensors weights"
                          + (f" (found {', '.join(others)}; only safetensors are loaded)" if others else "")
                          + "; save the model with save_pretrained(..., safe_serialization=True)")


def _load_vision_model(folder: Path) -> tuple[Any, dict, str, Any, Any, str]:
    """(model, loading info, output kind, the config giving the image size, image processor or
    None, model_type) of the transformers model in ``folder``."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, CLIPVisionModel, CLIPVisionModelWithProjection

    kw = dict(local_files_only=True, use_safetensors=True, output_loading_info=True)
    try:
        with MODEL_BUILD_LOCK, _quiet_transformers():
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            model_type = getattr(config, "model_type", "")
            archs = tuple(getattr(config, "architectures", None) or ())
            if model_type == "clip":  # a full CLIP checkpoint: its vision tower and projection
                vision = config.vision_config
                vision.projection_dim = config.projection_dim
                model, info = CLIPVisionModelWithProjection.from_pretrained(folder, config=vision, **kw)
                output, size_config = "image_embeds", vision
            elif model_type == "clip_vision_model":
                cls = CLIPVisionModelWithProjection if "CLIPVisionModelWithProjection" in archs else CLIPVisionModel
                model, info = cls.from_pretrained(folder, **kw)
                output = "image_embeds" if cls is CLIPVisionModelWithProjection else "pooler_output"
                size_config = config
            else:
                model, info = AutoModel.from_pretrained(folder, **kw)
                output, size_config = "pooler_output", getattr(config, "vision_config", config)
            processor = None
            if (folder / "preprocessor_config.json").is_file():
                processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise LdminvError(f"{_ENCODER_ARG}: cannot load an image model from {folder} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return model, info, output, size_config, processor, model_type


def _probe(encoder: ImageEncoder, folder: Path) -> None:
    """Embed one grey image: sets ``encoder.dim`` (and ``output`` "cls_token" for a model without
    a pooled output), or LdminvError naming the model."""
    import torch

    model = encoder.model
    try:
        probe = encoder.pixel_values([Image.new("RGB", (encoder._size[1], encoder._size[0]), (128, 128, 128))])
        if encoder.output == "pooler_output":
            with torch.no_grad():
                out = model(pixel_values=probe.to(encoder.device))
            if getattr(out, "pooler_output", None) is None:
                encoder.output = "cls_token"
        encoder.dim = int(encoder.embed(probe).shape[1])
    except Exception as exc:  # noqa: BLE001 - a model that cannot embed an image is refused, named
        raise LdminvError(f"{_ENCODER_ARG}: {type(model).__name__} from {folder} did not embed a test image "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); expected an "
                          "image model (a CLIP vision tower, DINOv2, ViT)") from exc


def encoder_embeddings(paths: Sequence[str | os.PathLike], encoder: ImageEncoder, *,
                       batch_size: int = ENCODER_BATCH) -> np.ndarray:
    """(N, k) float64 embeddings of N image files by ``encoder``, ``batch_size`` images per
    forward pass (computed in float32, without gradients).

    Raises:
        LdminvError: a file cannot be read as an image (named).
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    files = [os.fspath(p) for p in paths]
    out = np.empty((len(files), encoder.dim), dtype=np.float64)
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        images = []
        for path in chunk:
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except (OSError, ValueError) as exc:
                raise LdminvError(f"blind features: cannot read {path} as an image ({exc})") from exc
        out[start:start + len(chunk)] = encoder.embed(encoder.pixel_values(images)).numpy()
    return out
