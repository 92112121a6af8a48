"""Reading and writing a run folder's files safely.

- every small file is written atomically (temporary file ``.<name>.<random>.tmp`` +
  ``os.replace``), so a reader sees the old file or the new one, never half of one;
- every file read is resolved inside the run folder (:func:`inside`): a symbolic link pointing
  outside, or anything but a regular file, is refused, so a crafted run.json cannot make ldminv
  read files elsewhere;
- ``.npy`` / ``.npz`` files are loaded without pickles (:func:`load_npy`); numpy parses their
  headers with ``ast``, which :mod:`ldminv_core.threadsafe_ast` keeps to one thread at a time.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import stat as _stat
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import RunError

__all__ = ["load_npy", "load_npz", "inside", "npy_header", "read_json", "write_json", "atomic_write_bytes"]

def load_npy(path: str | os.PathLike, *, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` of one .npy file (no pickles).

    numpy parses the header with ``ast.literal_eval``; CPython < 3.13 cannot build two ASTs at
    once on different threads, and :mod:`ldminv_core.threadsafe_ast` (installed when
    :mod:`ldminv_core` is imported) keeps that parse to one thread at a time.
    """
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def load_npz(path: str | os.PathLike, keys: "list[str] | tuple[str, ...]") -> dict[str, np.ndarray]:
    """The arrays ``keys`` of one .npz file (no pickles), read whole. Raises KeyError naming
    a missing key."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in keys}


def now() -> str:
    """The current UTC time as run.json records it (ISO 8601, seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def jsonable(value: Any) -> Any:
    """Round-trip through JSON so tuples compare equal to the lists read back."""
    return json.loads(json.dumps(value))


def atomic_write_bytes(path: Path, write: Callable[[Any], Any]) -> None:
    """Write ``path`` atomically: ``write(fh)`` fills a temporary file next to it (flushed and
    synced), which then replaces ``path``; the temporary file is removed on any error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON (no NaN) atomically."""
    text = json.dumps(data, indent=2, allow_nan=False).encode("utf-8")
    atomic_write_bytes(path, lambda fh: fh.write(text))


def read_json(path: Path) -> dict:
    """The JSON object in ``path``.

    Raises:
        FileNotFoundError: ``path`` is missing.
        RunError: unreadable, not JSON, or not an object (the file named).
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read run settings ({exc})") from exc
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_parquet(path: Path, samples: pd.DataFrame) -> None:
    """Write the samples table atomically (without its index)."""
    atomic_write_bytes(path, lambda fh: samples.to_parquet(fh, index=False))


def _kind(mode: int) -> str:
    for test, name in ((_stat.S_ISDIR, "a folder"), (_stat.S_ISFIFO, "a named pipe"), (_stat.S_ISSOCK, "a socket"),
                       (_stat.S_ISCHR, "a character device"), (_stat.S_ISBLK, "a block device"),
                       (_stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def inside(folder: Path, rel: str | Path) -> Path:
    """``folder / rel`` with every symbolic link resolved, checked to lie inside ``folder`` (the
    resolved run folder) and to be a regular file.

    Raises:
        RunError: the path (a link on it) leads outside the folder, is not a regular file, or is
            missing ("file is missing").
    """
    path = folder / rel
    real = Path(os.path.realpath(path))
    if folder not in real.parents:
        link = " (a symbolic link)" if path.is_symlink() else ""
        raise RunError(
            f"{path}{link}: resolves to {real}, outside the run folder {folder}; refusing to read it"
        )
    try:
        st = os.stat(real)
    except FileNotFoundError as exc:
        raise RunError(f"{path}: file is missing") from exc
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc})") from exc
    if not _stat.S_ISREG(st.st_mode):
        raise RunError(f"{path}: expected a regular file, found {_kind(st.st_mode)}")
    return real


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the .npy file ``path``, reading its header only (RunError when missing or
    not a readable array)."""
    try:
        arr = load_npy(path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise RunError(f"{path}: file is missing") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise RunError(f"{path}: not a readable .npy array ({exc})") from exc
    return tuple(arr.shape), arr.dtype
