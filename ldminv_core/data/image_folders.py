"""Reading an image folder into tensors the model takes, with a report of what was skipped.

:func:`load_image_folder` reads a folder of images (PNG, JPEG, WebP, BMP, TIFF, GIF; any size
or mode) into a float32 tensor in [-1, 1] at the model's channels and resolution, with
captions from ``metadata.jsonl`` / ``metadata.csv`` (:mod:`ldminv_core.data.captions`).
Unreadable and non-image files are skipped and reported (:mod:`ldminv_core.data.safe_files`),
never fatal unless nothing usable remains. :func:`check_image_folder` is the cheap check made
before a model is loaded.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from .._validation import check_int
from ..errors import DataLoadError
from .captions import METADATA_FILES, missing_caption_files, read_captions, read_labels
from .safe_files import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, Skip, display_name, inspect_entry, open_image, utf8_ok

__all__ = ["LoadReport", "ImageSet", "load_image_folder", "check_image_folder", "pixel_hash",
           "IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "METADATA_FILES", "display_name"]


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
        labels: integer class per image from the metadata's ``label`` column, or None (all None
            when the folder's metadata has no such column).
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
    labels: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def pixel_hash(image: torch.Tensor) -> str:
    """SHA-256 of one loaded image (C, H, W) in [-1, 1] rounded to 8 bits (see :class:`ImageSet`)."""
    q = torch.round((image.detach().to(torch.float32).clamp(-1, 1) + 1) * 127.5).to(torch.uint8)
    arr = np.ascontiguousarray(q.cpu().numpy())
    digest = hashlib.sha256(repr(tuple(arr.shape)).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _check_folder(path: Any, what: str = "image folder") -> Path:
    """The absolute folder ``path`` after checking it exists, is a folder and can be listed."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not str(os.fspath(path)).strip():
        raise DataLoadError(f"{what}: expected a folder path (a string), got {path!r} ({type(path).__name__})")
    folder = Path(os.fspath(path)).expanduser()
    if not utf8_ok(str(folder)):
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
        kind, link = inspect_entry(entry)
    except Skip as why:
        report.skipped.append((name, str(why)))
        return False
    if kind == "dir":
        report.skipped.append((name, "sub-folder (not searched)" + (f" (symbolic link -> {link})" if link else "")))
        return False
    ext = entry.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        report.skipped.append((name, f"not an image: {ext or '(no extension)'}"))
        return False
    if not utf8_ok(entry.name):
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
            open_image(entry, decode=False)
            return folder
        except Skip as why:
            report.skipped.append((display_name(entry.name), str(why)))
    _raise_no_image(folder, entries, report, what)
    raise AssertionError("unreachable")


def _raise_no_image(folder: Path, entries: list[Path], report: LoadReport, what: str) -> None:
    if not entries:
        raise DataLoadError(f"{what} {folder} is empty (expected PNG/JPEG/WebP/BMP images)")
    reasons = "; ".join(f"{name}: {why}" for name, why in report.skipped[:5])
    more = f" (+{len(report.skipped) - 5} more)" if len(report.skipped) > 5 else ""
    raise DataLoadError(f"{what} {folder} holds no usable image: {reasons}{more}")


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


def _image_processor(channels: int) -> Any:
    """diffusers' VaeImageProcessor: resize (centre crop, Lanczos) and normalise to [-1, 1]."""
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(
        do_resize=True,
        vae_scale_factor=1,
        do_normalize=True,
        do_convert_rgb=channels == 3,
        do_convert_grayscale=channels == 1,
    )


def _already_sized(img: Image.Image) -> torch.Tensor:
    """(1, C, resolution, resolution) float32 in [-1, 1] of an image already in ``mode`` at
    resolution x resolution: what ``VaeImageProcessor.preprocess`` returns for it (its resize and
    crop leave such an image unchanged), in the same float32 steps, without importing diffusers
    (seconds on a cold start). tests/core/data check it bit for bit against the processor."""
    arr = np.asarray(img).astype(np.float32) / 255.0  # (H, W) or (H, W, 3), as pil_to_numpy
    if arr.ndim == 2:
        arr = arr[..., None]
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)[None]))
    return 2.0 * x - 1.0  # as VaeImageProcessor.normalize


def _read_one(entry: Path, *, mode: str, resolution: int, processor: Callable[[], Any],
              report: LoadReport) -> torch.Tensor | None:
    """The image of ``entry`` as a (1, C, resolution, resolution) float32 tensor, or None with the
    skip reason recorded in ``report``."""
    if not _candidate(entry, report):
        return None
    try:
        img = open_image(entry)
    except Skip as why:
        report.skipped.append((display_name(entry.name), str(why)))
        return None
    assert img is not None
    if img.mode != mode or img.size != (resolution, resolution):
        report.converted += 1
    try:
        img = _to_mode(img, mode)
        if img.size == (resolution, resolution) and img.mode == mode:
            x = _already_sized(img)
        else:
            x = processor().preprocess(img, height=resolution, width=resolution, resize_mode="crop")
    except Exception as exc:  # noqa: BLE001 - odd modes PIL cannot convert
        report.skipped.append((display_name(entry.name), f"unreadable image: {type(exc).__name__}: {exc}"))
        return None
    return x.to(torch.float32)


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
    # 1. check the arguments and the folder
    if isinstance(channels, bool) or channels not in (1, 3):
        raise DataLoadError(f"channels: expected 1 or 3, got {channels!r}")
    resolution = check_int(resolution, "resolution", minimum=1, error=DataLoadError)
    if limit is not None:
        limit = check_int(limit, "limit", minimum=1, error=DataLoadError)
    folder = _check_folder(path)
    entries = _list_folder(folder)
    report = LoadReport()
    # 2. the captions, and a warning for metadata lines naming absent files
    captions_by_name, caption_lines, caption_source = read_captions(folder, report)
    labels_by_name = read_labels(folder)
    if caption_source is not None:
        warning = missing_caption_files(caption_lines, {e.name for e in entries}, caption_source, folder)
        if warning is not None:
            report.warnings.append(warning)
    # 3. read each usable image, in file-name order
    mode = "L" if channels == 1 else "RGB"
    processor = functools.cache(lambda: _image_processor(channels))  # only for images it must resize
    paths: list[Path] = []
    tensors: list[torch.Tensor] = []
    captions: list[str | None] = []
    hashes: list[str] = []
    labels: list[int | None] = []
    for entry in entries:
        if limit is not None and len(paths) >= limit:
            break
        if entry.name in METADATA_FILES:
            continue
        x = _read_one(entry, mode=mode, resolution=resolution, processor=processor, report=report)
        if x is None:
            continue
        tensors.append(x)
        hashes.append(pixel_hash(x[0]))
        paths.append(entry)
        captions.append(captions_by_name.get(entry.name))
        labels.append(labels_by_name.get(entry.name))
    # 4. the set, or an error listing the skip reasons when nothing was usable
    report.read = len(paths)
    if not paths:
        _raise_no_image(folder, [e for e in entries if e.name not in METADATA_FILES], report, "image folder")
    images = torch.cat(tensors, dim=0)
    return ImageSet(paths=paths, images=images, captions=captions, report=report, hashes=hashes, labels=labels)
