"""Captions of an image folder, from its ``metadata.jsonl`` or ``metadata.csv`` (columns
``file_name`` and ``text``: the Hugging Face ``imagefolder`` convention), and the optional
integer class ``label`` column that class-conditional models are conditioned on.

Problems that do not stop a load (no ``text`` column, repeated file names, lines naming files
that are not in the folder) become warnings of the load report; a malformed file is a
:class:`~ldminv_core.errors.DataLoadError` naming the file and the line.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..errors import DataLoadError
from .safe_files import Skip, open_regular

__all__ = ["METADATA_FILES", "LABEL_COLUMN", "read_captions", "read_labels", "missing_caption_files"]

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
LABEL_COLUMN = "label"
"""Optional metadata column: each image's integer class (class-conditional models)."""


def _read_metadata_text(path: Path) -> str:
    try:
        with open_regular(path) as fh:
            data = fh.read()
    except Skip as why:
        raise DataLoadError(f"{path}: {why}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataLoadError(f"{path}, line {line}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _jsonl_rows(jsonl: Path) -> list[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a metadata.jsonl."""
    rows: list[tuple[int, dict]] = []
    for i, line in enumerate(_read_metadata_text(jsonl).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataLoadError(f"{jsonl}, line {i}: expected a JSON object, got {line[:60]!r} ({exc.msg})") from exc
        if not isinstance(row, dict):
            raise DataLoadError(f"{jsonl}, line {i}: expected a JSON object, got {type(row).__name__}")
        rows.append((i, row))
    return rows


def _csv_rows(csv: Path) -> list[tuple[int, dict]]:
    """(line number, row) of each data row of a metadata.csv (line 1 is the header)."""
    import io

    import pandas as pd

    text = _read_metadata_text(csv)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas raises several parser errors
        raise DataLoadError(f"{csv}: cannot parse as CSV ({' '.join(str(exc).split())})") from exc
    return [(i + 2, row) for i, row in enumerate(frame.to_dict("records"))]


def read_captions(folder: Path, report: Any) -> tuple[dict[str, str | None], dict[str, int], Path | None]:
    """(file name -> caption, file name -> line number, metadata file) from metadata.jsonl
    (preferred) or metadata.csv of ``folder``. Problems that do not stop the load go to
    ``report.warnings`` (a :class:`~ldminv_core.data.image_folders.LoadReport`).

    Raises:
        DataLoadError: a metadata file that cannot be read or parsed, naming the file and line.
    """
    jsonl, csv = folder / METADATA_FILES[0], folder / METADATA_FILES[1]
    for meta in (jsonl, csv):
        if os.path.lexists(meta) and not meta.is_file():
            report.warnings.append(f"{meta}: not a regular file; ignored (no captions read from it)")
    if jsonl.is_file():
        rows, source = _jsonl_rows(jsonl), jsonl
    elif csv.is_file():
        rows, source = _csv_rows(csv), csv
    else:
        return {}, {}, None
    captions: dict[str, str | None] = {}
    line_of: dict[str, int] = {}
    if not rows:
        return captions, line_of, source
    keys = set().union(*(set(r) for _, r in rows))
    if "file_name" not in keys:
        raise DataLoadError(f"{source}: expected a 'file_name' column, found {sorted(keys)}")
    if "text" not in keys:
        if LABEL_COLUMN in keys:  # a class-labelled folder: no captions is expected
            return {}, {}, source
        msg = f"{source}: no 'text' column (found {sorted(keys)}); images get no captions"
        report.warnings.append(msg)
        warnings.warn(msg, stacklevel=3)
        return {}, {}, source
    for i, row in rows:
        name = row.get("file_name")
        text = row.get("text")
        if not isinstance(name, str) or not name.strip():
            raise DataLoadError(f"{source}, line {i}: 'file_name' must be a non-empty string, got {name!r}")
        if text is not None and not isinstance(text, (str, int, float)):
            raise DataLoadError(
                f"{source}, line {i}: 'text' must be a string, got {type(text).__name__} {str(text)[:60]!r}"
            )
        key = Path(name).name
        if key in line_of:
            report.warnings.append(
                f"{source}, line {i}: file_name {name!r} repeats line {line_of[key]}; the caption of line {i} is used"
            )
        captions[key] = None if text is None else str(text)
        line_of[key] = i
    return captions, line_of, source


def _label_value(value: Any, source: Path, line: int) -> int | None:
    """The integer class of one metadata cell (None for an empty cell / JSON null)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            value = value.strip()
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataLoadError(
            f"{source}, line {line}: '{LABEL_COLUMN}' must be a non-negative integer class, got {value!r}"
        )
    return value


def read_labels(folder: Path) -> dict[str, int | None]:
    """file name -> integer class from the ``label`` column of ``folder``'s metadata.jsonl
    (preferred) or metadata.csv; empty when there is no such file or column.

    Raises:
        DataLoadError: a metadata file that cannot be parsed, or a label that is not a
            non-negative integer, naming the file and the line.
    """
    jsonl, csv = folder / METADATA_FILES[0], folder / METADATA_FILES[1]
    if jsonl.is_file():
        rows, source = _jsonl_rows(jsonl), jsonl
    elif csv.is_file():
        rows, source = _csv_rows(csv), csv
    else:
        return {}
    if not any(LABEL_COLUMN in r for _, r in rows):
        return {}
    labels: dict[str, int | None] = {}
    for i, row in rows:
        name = row.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise DataLoadError(f"{source}, line {i}: 'file_name' must be a non-empty string, got {name!r}")
        labels[Path(name).name] = _label_value(row.get(LABEL_COLUMN), source, i)
    return labels


def missing_caption_files(caption_lines: dict[str, int], present: set[str], source: Path, folder: Path) -> str | None:
    """The warning for metadata lines naming files that are not in ``folder`` (None when every
    named file is there)."""
    missing = [(line, name) for name, line in caption_lines.items() if name not in present]
    if not missing:
        return None
    missing.sort()
    shown = ", ".join(f"line {line}: {name!r}" for line, name in missing[:5])
    more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
    return (
        f"{source}: {len(missing)} line(s) name files that are not in {folder}; their captions "
        f"are ignored: {shown}{more}"
    )
