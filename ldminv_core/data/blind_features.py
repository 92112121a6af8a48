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
  folds, never here);
- ``encoder`` (only when an image model is named: ``analyze --blind-encoder PATH_OR_ID``): the
  embedding ``emb_0 .. emb_{k-1}`` of a pretrained transformers image model, read from a local
  folder or the local Hugging Face cache (nothing is downloaded; safetensors weights only), see
  :func:`ldminv_core.models.blind_encoder.load_image_encoder`. Never the audited model's own VAE or
  UNet: that would not be blind.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import LdminvError, RunError
from ..models.blind_encoder import ENCODER_BATCH, ImageEncoder, encoder_embeddings, load_image_encoder

if TYPE_CHECKING:  # the reader of run folders and torch; imported lazily where used
    import torch

    from ..runs import Run

__all__ = ["BLIND_GROUPS", "BLIND_FILE", "BlindFeatures", "blind_features", "jpeg_quality",
           "store_blind_features", "read_blind_features", "run_blind_features"]

#: The feature groups computed from files, in order (``encoder`` only when an image model is named).
BLIND_GROUPS: tuple[str, ...] = ("meta", "pixels", "caption", "encoder")
#: The features' file: in the run folder (``analyze``'s "blind" stage), or, for a run analysed
#: before that stage existed, in its ``.ldminv-cache/`` (computed on demand from the image paths).
BLIND_FILE = "blind_features.npz"
#: The run folder's cache sub-folder (``ldminv_core.runs.layout.CACHE_DIR``, the same text, checked
#: by a test): spelled here so that the data layer does not import the run-folder package, which
#: imports the evaluation, which reads these features.
RUN_CACHE_DIR = ".ldminv-cache"
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
        groups: group name -> float64 (N, k) feature matrix (``meta``, ``pixels``, ``caption``
            when captions were given, ``encoder`` when an image model was named).
        names: group name -> the k feature names, in column order.
        captions: (N,) caption strings ("" for none), or None without captions.
        encoder: which model made the ``encoder`` group (:meth:`ImageEncoder.record`: name, path,
            class, output, dim, preprocessing, device), or None without it.
    """

    groups: dict[str, np.ndarray]
    names: dict[str, tuple[str, ...]]
    captions: tuple[str, ...] | None = field(default=None)
    encoder: dict | None = field(default=None)


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


def blind_features(paths: Sequence[str | os.PathLike], *, captions: Sequence[str] | None = None,
                   encoder: "str | os.PathLike | ImageEncoder | None" = None,
                   device: "str | torch.device" = "cpu", batch_size: int = ENCODER_BATCH) -> BlindFeatures:
    """Blind features of image files (see the module docstring).

    Args:
        paths: (N,) image files.
        captions: (N,) captions ("" or None for none), or None when the data have no captions.
        encoder: an image model for the ``encoder`` group: a folder or a hub id in the local cache
            (loaded by :func:`load_image_encoder` on ``device``), or an already loaded
            :class:`ImageEncoder`; None (default): no ``encoder`` group.
        device: where a named encoder runs (CPU unless told). batch_size: images per forward pass.

    Returns:
        :class:`BlindFeatures` with ``meta`` (N, 18), ``pixels`` (N, 121), with captions
        ``caption`` (N, 1), with an encoder ``encoder`` (N, k) named ``emb_0 .. emb_{k-1}`` and
        ``BlindFeatures.encoder`` = :meth:`ImageEncoder.record`.

    Raises:
        LdminvError: a file cannot be read as an image (named), ``captions`` does not match, or
            the encoder cannot be found or loaded (naming ``blind_encoder (--blind-encoder)``).
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
    # 4. the optional image model's embeddings
    record = None
    if encoder is not None:
        model = encoder if isinstance(encoder, ImageEncoder) else load_image_encoder(encoder, device=device)
        groups["encoder"] = encoder_embeddings(files, model, batch_size=batch_size).reshape(len(files), model.dim)
        names["encoder"] = tuple(f"emb_{i}" for i in range(model.dim))
        record = model.record()
    return BlindFeatures(groups=groups, names=names, captions=texts, encoder=record)


# ---------------------------------------------------------------------------------------------
# stored features


def store_blind_features(path: str | os.PathLike, features: BlindFeatures) -> Path:
    """Write ``features`` to ``path`` (an ``.npz``: one float64 matrix per group, its feature
    names as ``names:<group>``, the captions as ``captions``, the encoder's record as JSON text
    ``encoder_record``), atomically (temporary file +
    ``os.replace``). Returns the path.

    Raises:
        RunError: the file cannot be written (named, with the reason).
    """
    target = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for g, x in features.groups.items():
        arrays[g] = np.ascontiguousarray(x, dtype=np.float64)
        arrays[f"names:{g}"] = np.asarray(features.names.get(g, ()), dtype=np.str_)
    if features.captions is not None:
        arrays["captions"] = np.asarray(features.captions, dtype=np.str_)
    if features.encoder is not None:
        arrays["encoder_record"] = np.asarray(json.dumps(features.encoder, sort_keys=True), dtype=np.str_)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.getvalue())
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise RunError(f"could not store the blind features in {target}: {exc.strerror or exc}") from exc
    return target


def read_blind_features(path: str | os.PathLike, *, n: int) -> BlindFeatures:
    """Read features written by :func:`store_blind_features`, checking that every group has
    ``n`` rows and its names match its columns.

    Raises:
        RunError: missing or unreadable file, or a group of the wrong shape (file, group and both
            shapes named).
    """
    file = Path(path)
    try:
        with np.load(file, allow_pickle=False) as data:
            stored = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise RunError(f"{file}: cannot read the blind features ({exc})") from exc
    groups: dict[str, np.ndarray] = {}
    names: dict[str, tuple[str, ...]] = {}
    for g in BLIND_GROUPS:
        if g not in stored:
            continue
        x = np.asarray(stored[g], dtype=np.float64)
        cols = tuple(str(v) for v in stored.get(f"names:{g}", np.asarray([], dtype=np.str_)).tolist())
        if x.ndim != 2 or x.shape[0] != n or len(cols) != x.shape[1]:
            raise RunError(f"{file}: group {g!r} has shape {x.shape} and {len(cols)} names; expected {n} rows "
                           "(one per sample) and one name per column")
        groups[g], names[g] = x, cols
    if "meta" not in groups or "pixels" not in groups:
        raise RunError(f"{file}: the groups 'meta' and 'pixels' are missing (found {sorted(groups)})")
    captions = None
    if "captions" in stored:
        captions = tuple(str(v) for v in stored["captions"].tolist())
        if len(captions) != n:
            raise RunError(f"{file}: {len(captions)} captions stored, expected {n}")
    record = None
    if "encoder_record" in stored:
        try:
            record = json.loads(str(stored["encoder_record"]))
        except ValueError as exc:
            raise RunError(f"{file}: the record of the encoder is damaged ({exc})") from exc
    if ("encoder" in groups) != isinstance(record, dict):
        raise RunError(f"{file}: the 'encoder' group and the record of the model that made it must come together")
    return BlindFeatures(groups=groups, names=names, captions=captions, encoder=record)


def _run_captions(run: "Run") -> list[str] | None:
    """The run's captions ("" for a sample without one), or None when no sample has one."""
    raw = run.samples["caption"].tolist() if "caption" in run.samples.columns else []
    texts = ["" if (c is None or (isinstance(c, float) and math.isnan(c))) else str(c) for c in raw]
    return texts if any(t.strip() for t in texts) else None


def run_blind_features(run: "Run") -> BlindFeatures:
    """The blind features of a run's samples, in sample order.

    Read from the run folder when ``analyze`` computed them (its "blind" stage); for a run made
    before that stage existed, computed once from the image paths in ``samples.parquet`` and kept
    in ``<run>/.ldminv-cache/blind_features.npz`` (when the folder is writable; otherwise they are
    computed again next time). The cached file is used only when it has one row per sample.
    The ``encoder`` group exists only where ``analyze`` computed it (``--blind-encoder``) and is
    read from the run folder with the record of its model; features computed here never have it.

    Raises:
        LdminvError: the run has no stored features and some image files are missing or
            unreadable (the count and the first paths named: the run folder outlived its images).
    """
    n = len(run.samples)
    stored = run.path / BLIND_FILE
    if "blind" in run.stages_done and stored.is_file():
        return read_blind_features(stored, n=n)
    cached = run.path / RUN_CACHE_DIR / BLIND_FILE
    if cached.is_file():
        try:
            return read_blind_features(cached, n=n)
        except RunError:
            pass  # stale or damaged: computed again below
    paths = [str(p) for p in run.samples["path"].tolist()]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise LdminvError(
            f"blind baseline: {len(missing)} of {n} image files of run {run.path} are missing (first: "
            f"{', '.join(missing[:3])}); the run was analysed before blind features were stored, and they are "
            "computed from the files. Re-run analyze on the image folders (or restore them) to get the blind baseline")
    features = blind_features(paths, captions=_run_captions(run))
    try:
        store_blind_features(cached, features)
    except RunError:
        pass  # a read-only run folder: computed again next time
    return features
