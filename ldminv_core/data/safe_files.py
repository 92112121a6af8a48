"""Opening the files of an image folder safely: each entry is classified with ``os.lstat``
before anything is opened, only regular files are opened (non-blocking, so a FIFO never
blocks), headers declaring too many pixels are refused before decoding, and every unusable entry
becomes a :class:`Skip` carrying the reason the load report shows.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from PIL import Image, ImageOps

__all__ = ["IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "Skip", "display_name", "utf8_ok", "inspect_entry",
           "open_regular", "open_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: Images whose header declares more pixels than this are skipped before decoding (a crafted
#: 100000x100000 PNG header would otherwise allocate tens of GB). 8192 x 8192.
MAX_IMAGE_PIXELS = 8192 * 8192


def display_name(name: str | os.PathLike) -> str:
    """``name`` as printable text: bytes that are not UTF-8 (kept by Python as surrogate
    escapes) are shown as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def utf8_ok(text: str) -> bool:
    """True when ``text`` encodes to UTF-8 (no surrogate escapes of undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Skip(Exception):
    """An entry that is not read, with the reason recorded in the load report."""


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def inspect_entry(entry: Path) -> tuple[str, str | None]:
    """Classify a folder entry without opening it: ("file", link target or None) for a regular
    file (or a symbolic link to one), ("dir", None) for a folder; raises Skip otherwise."""
    try:
        st = os.lstat(entry)
    except OSError as exc:
        raise Skip(f"cannot stat ({type(exc).__name__}: {exc.strerror or exc})") from None
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
                raise Skip(f"symbolic link loop (-> {target}); not followed") from None
            raise Skip(f"broken symbolic link (-> {target}: {exc.strerror or exc})") from None
        link = display_name(os.path.realpath(entry))
    if stat.S_ISDIR(st.st_mode):
        return "dir", link
    if not stat.S_ISREG(st.st_mode):
        what = next((text for test, text in _SPECIAL_FILES if test(st.st_mode)), "not a regular file")
        via = f" (through the symbolic link -> {link})" if link else ""
        raise Skip(f"not a regular file: {what}{via}; not opened")
    return "file", link


def open_regular(path: Path):
    """A binary file object of the regular file ``path``, opened without blocking (a FIFO
    swapped in after the check opens at once and is refused by fstat)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise Skip("cannot open: permission denied") from None
    except OSError as exc:
        raise Skip(f"cannot open ({type(exc).__name__}: {exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Skip("not a regular file (it changed after the folder was listed); not read")
        if st.st_size == 0:
            raise Skip("unreadable image: empty file (0 bytes)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_image(path: Path, *, decode: bool = True, max_pixels: int | None = None) -> Image.Image | None:
    """Fully decode the first frame of the regular file ``path`` (``decode=False``: only read
    and check its header). Raises Skip with the reason for unusable files."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with open_regular(path) as fh:
        try:
            # (no warnings.catch_warnings here: it is not thread-safe, and the dashboard loads in
            # threads; PIL's DecompressionBombWarning range lies above our own limit anyway)
            img = Image.open(fh)
        except Image.DecompressionBombError as exc:
            raise Skip(f"image too large: {exc}; not decoded") from None
        except PermissionError:
            raise Skip("cannot read: permission denied") from None
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            raise Skip(f"unreadable image: {type(exc).__name__}: {exc}") from None
        with img:
            w, h = img.size
            if w < 1 or h < 1 or w * h > limit:
                raise Skip(
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
                raise Skip(f"unreadable image ({kind}): {type(exc).__name__}: {exc}") from None

