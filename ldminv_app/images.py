"""Image helpers of the dashboard: thumbnails, display-size images, tensor -> RGB, data URIs.

Pure functions (PIL / numpy), no Streamlit. Images of a run are read from the paths in
``samples.parquet``; a file that has gone missing gives None so that the pages can say so
instead of failing.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ldminv_core.errors import ShapeError

__all__ = ["load_thumbnail", "load_display_image", "to_rgb_uint8", "png_data_uri"]


def _open_rgb(path: str | Path) -> Image.Image | None:
    try:
        with Image.open(path) as img:
            img.seek(0)
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                arr = np.asarray(img, dtype=np.float64)
                top = arr.max() if arr.max() > 0 else 1.0
                img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8))
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def load_thumbnail(path: str | Path, *, size: int = 96) -> np.ndarray | None:
    """RGB thumbnail of an image file, longest side ``size`` pixels: uint8 (h, w, 3), or None
    when the file is missing or unreadable. Small images are enlarged (nearest neighbour)."""
    img = _open_rgb(path)
    if img is None:
        return None
    w, h = img.size
    scale = size / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    return np.asarray(img.resize(new, resample=resample), dtype=np.uint8)


def load_display_image(path: str | Path, *, resolution: int, channels: int = 3) -> np.ndarray | None:
    """The image as the model sees it: centre crop to a square, resized to ``resolution``,
    converted to grey when the model's VAE takes ``channels`` = 1.

    Returns uint8 (resolution, resolution, 3) RGB, or None when the file cannot be read.
    """
    img = _open_rgb(path)
    if img is None:
        return None
    if int(channels) == 1:
        img = img.convert("L").convert("RGB")
    fitted = ImageOps.fit(img, (int(resolution), int(resolution)), method=Image.Resampling.LANCZOS)
    return np.asarray(fitted, dtype=np.uint8)


def to_rgb_uint8(image) -> np.ndarray:
    """A decoded image (C, H, W) in [-1, 1] (torch or numpy, C = 1 or 3) -> uint8 (H, W, 3)."""
    if hasattr(image, "detach"):
        image = image.detach().to("cpu").float().numpy()
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4):
        raise ShapeError(f"image: expected shape (C, H, W) with C in (1, 3, 4), got {arr.shape}")
    arr = arr[:3]
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    arr = np.clip((arr + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(1, 2, 0))


def png_data_uri(image: np.ndarray) -> str:
    """A uint8 (H, W, 3) image as a ``data:image/png;base64,...`` URI."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ShapeError(f"image: expected an RGB array (H, W, 3), got shape {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
