"""Uploaded images (single files or zip archives) turned into an image folder on disk.

The analysis reads image folders, so uploads from the browser are written to a folder under
the runs root (``<runs root>/uploads/<digest>/<role>``); the digest of the uploaded bytes names
the folder, so re-running the page does not write the same upload twice. Archives are
flattened: every image (and ``metadata.jsonl`` / ``metadata.csv``) is written under its base
name; folders, hidden files and anything else are skipped, so no entry can escape the folder.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

from ldminv_core.errors import DataLoadError
from ldminv_core.loading import IMAGE_EXTENSIONS, METADATA_FILES

__all__ = ["upload_digest", "save_uploads"]


def upload_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """Short hex digest of (name, bytes) pairs, independent of their order."""
    h = hashlib.sha256()
    for name, data in sorted(files, key=lambda f: f[0]):
        h.update(name.encode("utf-8", "replace") + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def _wanted(name: str) -> str | None:
    base = os.path.basename(name.replace("\\", "/"))
    if not base or base.startswith(".") or "__MACOSX" in name:
        return None
    if base in METADATA_FILES or os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS:
        return base
    return None


def save_uploads(files: list[tuple[str, bytes]], dest: str | os.PathLike) -> Path:
    """Write uploaded images and the images inside uploaded zips into ``dest``.

    Args:
        files: (file name, content) pairs: images (PNG/JPEG/WebP/BMP/TIFF/GIF), metadata
            files, or zip archives of them.
        dest: the folder to fill (created; files already there are kept).

    Returns:
        ``dest`` as a Path.

    Raises:
        DataLoadError: nothing was uploaded, a zip is corrupt, or no image was found.
    """
    if not files:
        raise DataLoadError("uploads: expected at least one image or zip file, got none")
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, data in files:
        if name.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    for info in zf.infolist():
                        if info.is_dir():
                            continue
                        base = _wanted(info.filename)
                        if base is None:
                            continue
                        (folder / base).write_bytes(zf.read(info))
                        written += base not in METADATA_FILES
            except zipfile.BadZipFile as exc:
                raise DataLoadError(f"upload {name}: not a readable zip archive ({exc})") from exc
            continue
        base = _wanted(name)
        if base is None:
            continue
        (folder / base).write_bytes(data)
        written += base not in METADATA_FILES
    if written == 0 and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir()):
        raise DataLoadError(
            f"uploads: expected images ({', '.join(IMAGE_EXTENSIONS)}) or zips of them, "
            f"got none among {[n for n, _ in files][:5]}"
        )
    return folder
