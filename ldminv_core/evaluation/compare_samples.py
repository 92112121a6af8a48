"""Whether two or more runs hold the same samples, the precondition of comparing them
(METHOD.md section 7): the same number of samples, the same sample ids (``sample_id`` 0..N-1 of
samples.parquet, in order), the same split of every id, and the same file behind every id
(samples.parquet stores each image's ``path``; the files are compared by their SHA-256, so a
moved copy of the same folder still matches). Anything else is refused with the difference
named: which ids, which files, how many.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import RunError
from ..runs import Run

__all__ = ["SampleMismatchError", "file_sha256", "check_same_samples"]

_SHOWN = 5


class SampleMismatchError(RunError):
    """Runs that are to be compared do not hold the same samples (ids, splits or files)."""


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 (hex) of the file at ``path``, or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def _ids_text(ids: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:_SHOWN])
    return f"{ids.size} sample id{'s' if ids.size != 1 else ''} ({shown}{', ...' if ids.size > _SHOWN else ''})"


def _file_differences(a: Run, b: Run, hashes: dict[str, str | None]) -> tuple[np.ndarray, np.ndarray]:
    """(ids whose files differ, ids whose files cannot be read and whose paths differ)."""
    pa = [str(p) for p in a.samples["path"].tolist()]
    pb = [str(p) for p in b.samples["path"].tolist()]
    differ, unreadable = [], []
    for i, (x, y) in enumerate(zip(pa, pb)):
        for p in (x, y):
            if p not in hashes:
                hashes[p] = file_sha256(p)
        hx, hy = hashes[x], hashes[y]
        if hx is not None and hy is not None:
            if hx != hy:
                differ.append(i)
        elif x != y:  # a file is gone: only the same recorded path can vouch for it
            unreadable.append(i)
    return np.asarray(differ, dtype=np.int64), np.asarray(unreadable, dtype=np.int64)


def check_same_samples(runs: Sequence[Run]) -> int:
    """Refuse runs that do not hold the same samples; returns N, their common sample count.

    Args:
        runs: two or more opened runs; each is checked against the first.

    Raises:
        SampleMismatchError: naming both run folders and the difference: the sample counts, the
            ids whose split differs, the ids whose files differ (by SHA-256; the first file names
            shown), or the ids whose files cannot be read and whose recorded paths differ.
    """
    if len(runs) < 2:
        raise RunError(f"runs: expected at least two runs to compare, got {len(runs)}")
    first = runs[0]
    hashes: dict[str, str | None] = {}
    for other in runs[1:]:
        where = f"runs {first.path} (A) and {other.path} (B)"
        if len(first) != len(other):
            raise SampleMismatchError(
                f"{where} do not hold the same samples: A has {len(first)} ({first.n_members} members, "
                f"{first.n_heldout} held-out), B has {len(other)} ({other.n_members} members, "
                f"{other.n_heldout} held-out); analyze both on the same folders")
        ids = first.samples["sample_id"].to_numpy()
        split = first.samples["split"].to_numpy() != other.samples["split"].to_numpy()
        if split.any():
            raise SampleMismatchError(
                f"{where}: the split differs at {_ids_text(ids[split])} (member in one run, held-out in the "
                "other): the runs were not analyzed on the same member / held-out folders")
        differ, unreadable = _file_differences(first, other, hashes)
        if differ.size:
            names = ", ".join(f"{Path(str(first.samples['path'].iloc[i])).name} vs "
                              f"{Path(str(other.samples['path'].iloc[i])).name}" for i in differ[:3])
            raise SampleMismatchError(
                f"{where}: the image files differ (SHA-256) at {_ids_text(ids[differ])} of {len(first)}: {names}; "
                "compare runs analyzed on the same images in the same order")
        if unreadable.size:
            raise SampleMismatchError(
                f"{where}: the files of {_ids_text(ids[unreadable])} cannot be read and their recorded paths "
                "differ, so the runs cannot be shown to hold the same images")
    return len(first)
