"""Model-free features of image files: what a blind baseline sees (METHOD.md section 6).

A blind baseline tells members from held-out images without ever touching the audited model.
When it can, the two folders differ in something other than membership (source, format,
resolution, compression, caption style), and an attack's AUROC on them is not evidence of
membership. This module reads the files only; the cross-fitted classifier that turns these
features into out-of-fold scores lives in :mod:`ldminv_core.evaluation.blind`.

Feature groups (fixed names):

- ``meta``: container format (one-hot PNG / JPEG / WEBP / BMP / other), bytes per pixel of the
  file, log width, log height, log aspect, mode (one-hot L / RGB / RGBA / P / other), the JPEG
  quality estimated from the luminance quantisation table (0 when not a JPEG), EXIF present;
- ``pixels``: on the image converted to RGB and resized to 64 x 64: per-channel mean and std,
  16-bin per-channel histograms, an 8 x 8 grey thumbnail, mean absolute horizontal and vertical
  gradient, high-frequency energy (the image minus its 2 x 2 box blur);
- ``caption``: word count (the words themselves enter the classifier as TF-IDF fitted within
  folds, never here).
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .errors import LdminvError

__all__ = ["BLIND_GROUPS", "BlindFeatures", "blind_features", "jpeg_quality"]

#: The feature groups computed from files, in order.
BLIND_GROUPS: tuple[str, ...] = ("meta", "pixels", "caption")
_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
_MODES = ("L", "RGB", "RGBA", "P")
_SIDE = 64
_BINS = 16
# the IJG standard luminance quantisation table (quality 50), in natural order
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)


@dataclass(frozen=True)
class BlindFeatures:
    """Blind features of N image files.

    Attributes:
        groups: group name -> float64 (N, k) feature matrix (``meta``, ``pixels``, and ``caption``
            when captions were given).
        names: group name -> the k feature names, in column order.
        captions: (N,) caption strings ("" for none), or None without captions.
    """

    groups: dict[str, np.ndarray]
    names: dict[str, tuple[str, ...]]
    captions: tuple[str, ...] | None = field(default=None)


def jpeg_quality(image: Image.Image) -> float:
    """IJG-scale quality (1..100) of a JPEG from its luminance quantisation table; 0 otherwise.

    The table is compared with the IJG standard table scaled by the IJG rule (scale = 5000 / q
    below 50, 200 - 2 q above); the quality whose scaled table is nearest (mean absolute
    difference) is returned. Encoders that use their own tables get the nearest IJG quality.
    """
    tables = getattr(image, "quantization", None)
    if not tables or 0 not in tables:
        return 0.0
    luma = np.asarray(tables[0], dtype=np.float64)
    if luma.size != 64:
        return 0.0
    best_q, best_err = 0, math.inf
    for q in range(1, 101):
        scale = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
        table = np.clip(np.floor((_IJG_LUMA * scale + 50.0) / 100.0), 1, 255)
        err = float(np.abs(np.sort(table) - np.sort(luma)).mean())
        if err < best_err:
            best_q, best_err = q, err
    return float(best_q)


def _meta(path: str, image: Image.Image) -> list[float]:
    fmt = (image.format or "").upper()
    w, h = image.size
    size = os.path.getsize(path)
    mode = image.mode
    out = [float(fmt == f) for f in _FORMATS] + [float(fmt not in _FORMATS)]
    out += [size / max(w * h, 1), math.log(max(w, 1)), math.log(max(h, 1)), math.log(max(w, 1) / max(h, 1))]
    out += [float(mode == m) for m in _MODES] + [float(mode not in _MODES)]
    exif = image.getexif() if hasattr(image, "getexif") else {}
    out += [jpeg_quality(image), float(len(exif) > 0)]
    return out


_META_NAMES = (*(f"format_{f.lower()}" for f in _FORMATS), "format_other", "bytes_per_pixel", "log_width",
               "log_height", "log_aspect", *(f"mode_{m}" for m in _MODES), "mode_other", "jpeg_quality", "exif")


def _pixels(image: Image.Image) -> list[float]:
    rgb = np.asarray(image.convert("RGB").resize((_SIDE, _SIDE), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    out: list[float] = []
    out += rgb.mean(axis=(0, 1)).tolist() + rgb.std(axis=(0, 1)).tolist()
    for c in range(3):
        hist, _ = np.histogram(rgb[..., c], bins=_BINS, range=(0.0, 1.0))
        out += (hist / hist.sum()).tolist()
    grey = rgb.mean(axis=2)
    out += grey.reshape(8, _SIDE // 8, 8, _SIDE // 8).mean(axis=(1, 3)).ravel().tolist()
    out += [float(np.abs(np.diff(grey, axis=1)).mean()), float(np.abs(np.diff(grey, axis=0)).mean())]
    blur = grey.reshape(_SIDE // 2, 2, _SIDE // 2, 2).mean(axis=(1, 3)).repeat(2, axis=0).repeat(2, axis=1)
    out.append(float(((grey - blur) ** 2).mean()))
    return out


_PIXEL_NAMES = (*(f"mean_{c}" for c in "rgb"), *(f"std_{c}" for c in "rgb"),
                *(f"hist_{c}_{b}" for c in "rgb" for b in range(_BINS)),
                *(f"thumb_{i}" for i in range(64)), "grad_x", "grad_y", "high_freq")


def blind_features(paths: Sequence[str | os.PathLike], *, captions: Sequence[str] | None = None) -> BlindFeatures:
    """Blind features of image files (see the module docstring).

    Args:
        paths: (N,) image files.
        captions: (N,) captions ("" or None for none), or None when the data have no captions.

    Returns:
        :class:`BlindFeatures` with ``meta`` (N, 18), ``pixels`` (N, 121) and, with captions,
        ``caption`` (N, 1).

    Raises:
        LdminvError: a file cannot be read as an image (named), or ``captions`` does not match.
    """
    # 1. validate
    files = [os.fspath(p) for p in paths]
    if captions is not None and len(captions) != len(files):
        raise LdminvError(f"captions: expected {len(files)} captions (one per image), got {len(captions)}")
    # 2. read every file once
    meta, pixels = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                meta.append(_meta(path, image))
                pixels.append(_pixels(image))
        except (OSError, ValueError) as exc:
            raise LdminvError(f"blind features: cannot read {path} as an image ({exc})") from exc
    groups = {"meta": np.asarray(meta, dtype=np.float64).reshape(len(files), len(_META_NAMES)),
              "pixels": np.asarray(pixels, dtype=np.float64).reshape(len(files), len(_PIXEL_NAMES))}
    names = {"meta": _META_NAMES, "pixels": _PIXEL_NAMES}
    # 3. captions: the word count here; the words go to the classifier (TF-IDF within folds)
    texts = None
    if captions is not None:
        texts = tuple("" if c is None else str(c) for c in captions)
        groups["caption"] = np.asarray([[len(t.split())] for t in texts], dtype=np.float64).reshape(len(files), 1)
        names["caption"] = ("word_count",)
    return BlindFeatures(groups=groups, names=names, captions=texts)
