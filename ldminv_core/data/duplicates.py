"""Duplicate images across and within the two splits of an analysis, found by their pixels
(:func:`find_duplicates`); a membership test on overlapping splits is meaningless."""
from __future__ import annotations

from pathlib import Path

from ldminv_core.data.image_folders import ImageSet
from ldminv_core.data.safe_files import display_name

__all__ = ["find_duplicates"]


def find_duplicates(members: ImageSet, heldout: ImageSet) -> dict:
    """Images with the same pixels (:func:`ldminv_core.data.image_folders.pixel_hash`: the loaded tensor
    rounded to 8 bits, after the loader's decode and resize) across and within the two splits.

    Returns:
        {"across": n, "within_members": n, "within_heldout": n, "pairs": [(a, b), ...]} where
        each pair names two files ("member NAME" / "held-out NAME") of one duplicate group (the
        first file of a group against each other one), across-split pairs first.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for split, images in (("member", members), ("held-out", heldout)):
        hashes = images.hashes or [None] * len(images)
        for path, h in zip(images.paths, hashes):
            if h is not None:
                groups.setdefault(h, []).append((split, display_name(Path(path).name)))
    counts = {"across": 0, "within_members": 0, "within_heldout": 0}
    across, within = [], []
    for group in groups.values():
        if len(group) < 2:
            continue
        first = group[0]
        for other in group[1:]:
            pair = (f"{first[0]} {first[1]}", f"{other[0]} {other[1]}")
            if first[0] != other[0]:
                counts["across"] += 1
                across.append(pair)
            else:
                counts["within_members" if first[0] == "member" else "within_heldout"] += 1
                within.append(pair)
    return {**counts, "pairs": across + within}
