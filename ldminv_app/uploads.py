"""Uploaded images (single files or zip archives) turned into an image folder on disk.

The analysis reads image folders, so uploads from the browser are written to a folder under
the runs root (``<runs root>/uploads/<digest>/<role>``); the digest of the uploaded bytes names
the folder, so re-running the page does not write a different folder for the same upload.

Archives are flattened: every image (and ``metadata.jsonl`` / ``metadata.csv``) is written
under its base name; folders, hidden files, symbolic links and anything else are skipped, and
names are reduced to a sanitised base name, so no entry can escape the folder (``../../x.png``
and ``/etc/x.png`` both become ``x.png`` inside it).

How names map when two images share a base name (``cats/a.png`` and ``dogs/a.png``): the first
one (in upload order, then archive order) keeps its base name (``a.png``); each later one is
prefixed with the name of its folder (``dogs__a.png``), or, when that is taken too or it has no
folder, with a short hash of its full source path (``3f2a9c1e__a.png``). Captions in
``metadata.jsonl`` / ``metadata.csv`` refer to images by base name, so they could not tell
such images apart: with a metadata file in the upload, colliding image names are refused
(naming both), as are two metadata files of the same name.

Archives are unpacked with limits (arguments of :func:`save_uploads`): the total unpacked size
(:data:`MAX_UNPACKED_BYTES`), the size of one entry (:data:`MAX_ENTRY_BYTES`), the number of
entries (:data:`MAX_ENTRIES`) and the compression ratio of one entry (:data:`MAX_RATIO`, for
entries over :data:`RATIO_FLOOR_BYTES`). They are checked on the sizes the zip's headers
declare and again on the bytes actually read (in chunks, stopping at the limit), since headers
can lie. Everything is written into a temporary folder next to ``dest`` and moved into
``dest`` only when the whole upload was accepted: a refused upload leaves no file behind.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ldminv_core.errors import DataLoadError
from ldminv_core.data.safe_files import IMAGE_EXTENSIONS
from ldminv_core.data.captions import METADATA_FILES

__all__ = [
    "upload_digest",
    "save_uploads",
    "MAX_UNPACKED_BYTES",
    "MAX_ENTRY_BYTES",
    "MAX_ENTRIES",
    "MAX_RATIO",
    "RATIO_FLOOR_BYTES",
]

#: Most bytes one call may write in all (images and metadata, archives unpacked).
MAX_UNPACKED_BYTES = 2 * 10**9
#: Most bytes one archive entry may unpack to.
MAX_ENTRY_BYTES = 500 * 10**6
#: Most entries (files and folders) one archive may list.
MAX_ENTRIES = 100_000
#: Highest compression ratio (unpacked / packed size) of one archive entry over RATIO_FLOOR_BYTES.
MAX_RATIO = 200
#: Entries up to this unpacked size are exempt from the ratio guard (small flat images compress well).
RATIO_FLOOR_BYTES = 10 * 2**20

_CHUNK = 2**20
_MAX_NAME_BYTES = 200  # a file name's UTF-8 length on disk (most file systems allow 255)


def upload_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """Short hex digest of (name, bytes) pairs, independent of their order."""
    h = hashlib.sha256()
    for name, data in sorted(files, key=lambda f: f[0]):
        h.update(name.encode("utf-8", "replace") + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def _fix_encoding(info: zipfile.ZipInfo) -> str:
    """The entry name as its writer meant it: zipfile decodes names without the UTF-8 flag as
    cp437, but most such archives (macOS, Linux, recent Windows) hold UTF-8 bytes."""
    name = info.filename
    if info.flag_bits & 0x800:
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def _clean_base(name: str) -> str:
    """The base name of ``name`` (any separator, any encoding) safe to create inside a folder:
    no path parts, no control characters or lone surrogates, at most _MAX_NAME_BYTES in UTF-8
    (the extension kept)."""
    name = name.replace("\\", "/")
    base = name.rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFC", base)
    base = "".join(
        "_" if unicodedata.category(c) in ("Cc", "Cs") else c for c in base
    ).strip()
    if len(base.encode("utf-8")) > _MAX_NAME_BYTES:
        stem, ext = os.path.splitext(base)
        ext = ext[:16]
        stem_bytes = stem.encode("utf-8")[: _MAX_NAME_BYTES - len(ext.encode("utf-8")) - 9]
        digest = hashlib.sha256(base.encode("utf-8")).hexdigest()[:8]
        base = stem_bytes.decode("utf-8", "ignore") + "-" + digest + ext
    return base


def _wanted(name: str) -> str | None:
    """The base name to write ``name`` under, or None to skip it (not an image or metadata,
    hidden, macOS resource fork, no name)."""
    if "__MACOSX" in name.replace("\\", "/").split("/"):
        return None
    base = _clean_base(name)
    if not base or base.startswith("."):
        return None
    if base in METADATA_FILES or os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS:
        return base
    return None


def _folder_of(name: str) -> str:
    """The sanitised name of the innermost folder of an entry name ("" at the top level)."""
    parts = [p for p in name.replace("\\", "/").split("/")[:-1] if p not in ("", ".", "..")]
    return _clean_base(parts[-1]).lstrip(".") if parts else ""


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _declared_size(info: zipfile.ZipInfo) -> int:
    """The unpacked size an entry's header declares (not trusted: reading re-checks it)."""
    return int(info.file_size)


@dataclass
class _Item:
    """One file to write: from a plain upload (``data``) or an archive entry (``info``)."""

    source: str  # "upload.png" or "archive.zip: folder/entry.png", for messages
    name: str  # the original name (entry path inside the archive, or the upload's name)
    base: str  # the wanted base name
    archive: str | None = None
    info: zipfile.ZipInfo | None = None
    zf: zipfile.ZipFile | None = None
    data: bytes | None = None
    target: str = ""


class _Budget:
    """Bytes written so far against the total cap."""

    def __init__(self, total_cap: int) -> None:
        self.cap = int(total_cap)
        self.used = 0

    def take(self, n: int, what: str) -> None:
        self.used += n
        if self.used > self.cap:
            raise DataLoadError(
                f"{what}: the upload unpacks to more than {self.cap:,} bytes in all "
                f"(max_unpacked_bytes); refused, nothing was saved"
            )


def _plan_archive(name: str, data: bytes, *, max_entries: int, max_entry_bytes: int, max_ratio: float,
                  ratio_floor: int, skipped: list[str]) -> tuple[zipfile.ZipFile, list[_Item]]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        raise DataLoadError(f"upload {name}: expected a readable zip archive, got a corrupt one ({exc})") from exc
    if len(infos) > max_entries:
        zf.close()
        raise DataLoadError(
            f"upload {name}: the archive lists {len(infos):,} entries, more than the limit of {max_entries:,} "
            "(max_entries); refused, nothing was saved"
        )
    items: list[_Item] = []
    for info in infos:
        if info.is_dir():
            continue
        entry = _fix_encoding(info)
        if _is_symlink(info):
            skipped.append(f"{name}: {entry} (symbolic link)")
            continue
        base = _wanted(entry)
        if base is None:
            continue
        if info.flag_bits & 0x1:
            zf.close()
            raise DataLoadError(f"upload {name}: entry {entry!r} is encrypted; expected an unencrypted zip archive")
        size = _declared_size(info)
        if size > max_entry_bytes:
            zf.close()
            raise DataLoadError(
                f"upload {name}: entry {entry!r} declares {size:,} bytes unpacked, more than the per-entry "
                f"limit of {max_entry_bytes:,} (max_entry_bytes); refused, nothing was saved"
            )
        if size > ratio_floor and size / max(int(info.compress_size), 1) > max_ratio:
            zf.close()
            raise DataLoadError(
                f"upload {name}: entry {entry!r} unpacks {size:,} bytes from {info.compress_size:,} "
                f"(ratio {size / max(int(info.compress_size), 1):,.0f}, limit {max_ratio:g}, max_ratio): "
                "looks like a zip bomb; refused, nothing was saved"
            )
        items.append(_Item(source=f"{name}: {entry}", name=entry, base=base, archive=name, info=info, zf=zf))
    return zf, items


def _assign_targets(items: list[_Item]) -> None:
    """Give each item a distinct file name in the folder (see the module doc)."""
    has_metadata = any(it.base in METADATA_FILES for it in items)
    taken: dict[str, _Item] = {}
    for it in items:
        first = taken.get(it.base)
        if first is None:
            it.target = it.base
            taken[it.base] = it
            continue
        if it.base in METADATA_FILES:
            raise DataLoadError(
                f"uploads: two caption files named {it.base}: {first.source!r} and {it.source!r}; "
                "expected one per image folder (upload the folders separately)"
            )
        if has_metadata:
            raise DataLoadError(
                f"uploads: two images named {it.base}: {first.source!r} and {it.source!r}; the captions in "
                f"the metadata file refer to images by file name, so they cannot be told apart: expected "
                "distinct file names (rename one, or upload the folders separately)"
            )
        folder = _folder_of(it.name)
        candidate = f"{folder}__{it.base}" if folder else ""
        if not candidate or candidate in taken or len(candidate.encode("utf-8")) > _MAX_NAME_BYTES:
            stem = hashlib.sha256(f"{it.source}\0{len(taken)}".encode("utf-8", "surrogatepass")).hexdigest()[:8]
            candidate = f"{stem}__{it.base}"
        it.target = candidate
        taken[candidate] = it


def _copy_entry(it: _Item, target: Path, *, max_entry_bytes: int, max_ratio: float, ratio_floor: int,
                budget: _Budget) -> int:
    """Unpack one archive entry to ``target`` in chunks, stopping at the limits."""
    assert it.info is not None and it.zf is not None
    zf = it.zf
    written = 0
    try:
        with zf.open(it.info) as src, open(target, "wb") as out:
            while True:
                chunk = src.read(_CHUNK)
                if not chunk:
                    break
                written += len(chunk)
                if written > max_entry_bytes:
                    raise DataLoadError(
                        f"upload {it.archive}: entry {it.name!r} unpacks to more than {max_entry_bytes:,} bytes "
                        f"(max_entry_bytes; its header declared {it.info.file_size:,}); refused, nothing was saved"
                    )
                if written > ratio_floor and written / max(int(it.info.compress_size), 1) > max_ratio:
                    raise DataLoadError(
                        f"upload {it.archive}: entry {it.name!r} unpacks more than {written:,} bytes from "
                        f"{it.info.compress_size:,} (ratio over {max_ratio:g}, max_ratio): looks like a zip bomb; "
                        "refused, nothing was saved"
                    )
                budget.take(len(chunk), f"upload {it.archive}: entry {it.name!r}")
                out.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise DataLoadError(
            f"upload {it.archive}: entry {it.name!r} cannot be unpacked: expected a readable zip archive ({exc})"
        ) from exc
    return written


def _remove_new_dirs(path: Path, stop: Path) -> None:
    """Remove ``path`` and its empty parents up to ``stop`` (included)."""
    cur = path
    while True:
        try:
            cur.rmdir()
        except OSError:
            return
        if cur == stop:
            return
        cur = cur.parent


def save_uploads(
    files: list[tuple[str, bytes]],
    dest: str | os.PathLike,
    *,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
    max_entry_bytes: int = MAX_ENTRY_BYTES,
    max_entries: int = MAX_ENTRIES,
    max_ratio: float = MAX_RATIO,
    ratio_floor_bytes: int = RATIO_FLOOR_BYTES,
) -> Path:
    """Write uploaded images and the images inside uploaded zips into ``dest``.

    Args:
        files: (file name, content) pairs: images (PNG/JPEG/WebP/BMP/TIFF/GIF), metadata
            files, or zip archives of them.
        dest: the folder to fill (created; files already there are kept, same names replaced).
        max_unpacked_bytes: most bytes written in all.
        max_entry_bytes: most bytes one archive entry may unpack to.
        max_entries: most entries one archive may list.
        max_ratio: highest unpacked / packed ratio of an archive entry over ``ratio_floor_bytes``.
        ratio_floor_bytes: entries up to this size are exempt from the ratio guard.

    Returns:
        ``dest`` as a Path.

    Raises:
        DataLoadError: nothing was uploaded, a zip is corrupt or encrypted, a limit is exceeded
            (archive, entry and limit named), names collide where captions need them distinct,
            or no image was found. Nothing is written to ``dest`` then.
    """
    if not files:
        raise DataLoadError("uploads: expected at least one image or zip file, got none")
    folder = Path(dest)
    limits = _Limits(max_unpacked_bytes=max_unpacked_bytes, max_entry_bytes=max_entry_bytes,
                     max_entries=max_entries, max_ratio=max_ratio, ratio_floor_bytes=ratio_floor_bytes)
    archives: list[zipfile.ZipFile] = []
    try:
        # 1. list what the upload holds: plain files as they are, archives planned (not unpacked yet)
        items, skipped = _collect_items(files, limits, archives)
        # 2. refuse before writing anything: no image at all, or more bytes declared than allowed
        _check_declared(files, items, skipped, limits)
        # 3. give every item its file name in the folder (collisions resolved or refused)
        _assign_targets(items)
        # 4. unpack into a temporary folder beside ``dest``, then move the files into place
        _write_items(items, folder, limits)
    finally:
        for zf in archives:
            zf.close()
    return folder


@dataclass(frozen=True)
class _Limits:
    """The caps of one upload (see :func:`save_uploads`)."""

    max_unpacked_bytes: int
    max_entry_bytes: int
    max_entries: int
    max_ratio: float
    ratio_floor_bytes: int


def _collect_items(files: list[tuple[str, bytes]], limits: _Limits,
                   archives: list[zipfile.ZipFile]) -> tuple[list[_Item], list[str]]:
    """The items to write and what was skipped (with why); opened archives are appended to
    ``archives`` (the caller closes them)."""
    skipped: list[str] = []
    items: list[_Item] = []
    for name, data in files:
        name = str(name)
        if name.lower().endswith(".zip"):
            if not data:
                raise DataLoadError(f"upload {name}: expected a zip archive, got an empty file (0 bytes)")
            zf, entries = _plan_archive(name, data, max_entries=limits.max_entries,
                                        max_entry_bytes=limits.max_entry_bytes, max_ratio=limits.max_ratio,
                                        ratio_floor=limits.ratio_floor_bytes, skipped=skipped)
            archives.append(zf)
            if not entries:
                skipped.append(f"{name}: no image inside")
            items.extend(entries)
            continue
        base = _wanted(name)
        if base is None:
            skipped.append(f"{name} (not an image, metadata file or zip)")
            continue
        if not data:
            skipped.append(f"{name} (empty file)")
            continue
        items.append(_Item(source=name, name=name, base=base, data=bytes(data)))
    return items, skipped


def _check_declared(files: list[tuple[str, bytes]], items: list[_Item], skipped: list[str], limits: _Limits) -> None:
    """Refuse an upload without an image, or one declaring more unpacked bytes than the cap."""
    if not any(it.base not in METADATA_FILES for it in items):
        raise DataLoadError(
            f"uploads: expected images ({', '.join(IMAGE_EXTENSIONS)}) or zips of them, got none among "
            f"{[n for n, _ in files][:5]}" + (f" (skipped: {'; '.join(skipped[:5])})" if skipped else "")
        )
    declared = sum(_declared_size(it.info) if it.info is not None else len(it.data or b"") for it in items)
    if declared > limits.max_unpacked_bytes:
        biggest = max((it for it in items if it.info is not None), key=lambda it: _declared_size(it.info),
                      default=None)
        where = f"upload {biggest.archive} (largest entry {biggest.name!r})" if biggest else "uploads"
        raise DataLoadError(
            f"{where}: the upload declares {declared:,} bytes unpacked in all, more than the limit of "
            f"{limits.max_unpacked_bytes:,} (max_unpacked_bytes); refused, nothing was saved"
        )


def _write_items(items: list[_Item], folder: Path, limits: _Limits) -> None:
    """Write every item into a temporary folder beside ``folder``, then move them into it; on any
    failure remove what this call created (the temporary folder, new parent folders)."""
    # the first folder that does not exist yet: removed again if the upload is refused
    new_top: Path | None = None
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        new_top = p
    if folder.exists() and not folder.is_dir():
        raise DataLoadError(f"uploads: expected {folder} to be a folder (or not to exist), got a file")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    except OSError as exc:
        raise DataLoadError(f"uploads: cannot create the upload folder {folder} ({exc})") from exc
    try:
        budget = _Budget(limits.max_unpacked_bytes)
        for it in items:
            target = tmp / it.target
            if target.resolve().parent != tmp.resolve():  # _clean_base guarantees it; belt and braces
                raise DataLoadError(f"upload {it.source}: the name escapes the upload folder; refused")
            if it.info is not None:
                _copy_entry(it, target, max_entry_bytes=limits.max_entry_bytes, max_ratio=limits.max_ratio,
                            ratio_floor=limits.ratio_floor_bytes, budget=budget)
            else:
                assert it.data is not None
                budget.take(len(it.data), f"upload {it.source}")
                target.write_bytes(it.data)
        if not folder.exists():
            os.replace(tmp, folder)
        else:
            for f in tmp.iterdir():
                os.replace(f, folder / f.name)
            tmp.rmdir()
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if new_top is not None and new_top != folder:  # folders this call created, empty again
            _remove_new_dirs(folder.parent, new_top)
        if isinstance(exc, OSError):
            raise DataLoadError(f"uploads: cannot write the images into {folder} ({exc})") from exc
        raise
