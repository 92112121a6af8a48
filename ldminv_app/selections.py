"""Choosing what a page shows or picks: latent coordinates from a typed query, and a balanced
sample of a selection's images.

Pure functions (numpy), no Streamlit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ldminv_core.errors import LdminvError

__all__ = ["CoordinateQuery", "parse_coordinate_query", "balanced_sample"]

# a named field: "ch 0", "c0", "channel=0", "y 3", "row 3", "x 1", "col 1", "column 1", "#25"
_FIELD_RE = re.compile(r"(?P<name>channel|ch|c|row|y|column|col|x|#)\s*[=:]?\s*(?P<value>-?\d+)", re.IGNORECASE)
_NAMES = {"channel": "channel", "ch": "channel", "c": "channel", "row": "row", "y": "row",
          "column": "col", "col": "col", "x": "col", "#": "flat"}
# what may separate the fields: spaces, middle dots, commas, semicolons, brackets
_SEPARATORS = re.compile(r"[\s·•,;()\[\]]+")
_FIELD_TEXT = {"channel": "ch", "row": "y", "col": "x"}


@dataclass(frozen=True)
class CoordinateQuery:
    """Latent coordinates (channel, row y, column x) with some fields fixed: a field that is None
    matches every value, a fixed one only itself."""

    channel: int | None = None
    row: int | None = None
    col: int | None = None

    @property
    def exact(self) -> bool:
        """True when every field is fixed (the query names one coordinate)."""
        return None not in (self.channel, self.row, self.col)

    def describe(self) -> str:
        """The fixed fields in the dashboard's coordinate label: "ch 0 · y 3"."""
        parts = [f"{_FIELD_TEXT[name]} {value}" for name, value in
                 (("channel", self.channel), ("row", self.row), ("col", self.col)) if value is not None]
        return " · ".join(parts) if parts else "every coordinate"

    def coordinates(self, *, shape: Sequence[int]) -> np.ndarray:
        """Flat indices ((ch·h + y)·w + x, ascending) of the coordinates of a (C, h, w) latent
        that match every fixed field."""
        c, h, w = (int(v) for v in shape)
        cc, yy, xx = np.unravel_index(np.arange(c * h * w), (c, h, w))
        keep = np.ones(c * h * w, dtype=bool)
        for arr, value in ((cc, self.channel), (yy, self.row), (xx, self.col)):
            if value is not None:
                keep &= arr == value
        return np.flatnonzero(keep)


def parse_coordinate_query(text: str, *, shape: Sequence[int]) -> CoordinateQuery:
    """Read a typed coordinate query.

    Fields are named as in the coordinate label ("ch 0 · y 3 · x 1"; also "channel", "c",
    "row", "column", "col", with or without spaces, "=" or ":"), in any order; the ones left
    out match every value, so "ch 0" means every coordinate of channel 0 and "ch 0 · y 3"
    every column of row 3 of channel 0. "#25" is the coordinate with flat index 25, and three
    bare integers ("0, 3, 1") are channel, row and column.

    Args:
        text: the query.
        shape: (C, h, w) of the latent, to check the values.

    Returns:
        The :class:`CoordinateQuery`.

    Raises:
        LdminvError: the text holds something that is not a field, names a field twice with
            different values, or a value is outside the latent (the message says which).
    """
    c, h, w = (int(v) for v in shape)
    found: dict[str, int] = {}

    def put(name: str, value: int) -> None:
        if name in found and found[name] != value:
            raise LdminvError(f"{_FIELD_TEXT.get(name, name)} is given twice ({found[name]} and {value})")
        found[name] = value

    rest = []
    pos = 0
    for m in _FIELD_RE.finditer(text):
        rest.append(text[pos:m.start()])
        pos = m.end()
        put(_NAMES[m.group("name").lower()], int(m.group("value")))
    rest.append(text[pos:])
    leftover = _SEPARATORS.sub(" ", " ".join(rest)).strip()
    if leftover:
        bare = leftover.split(" ")
        if found or len(bare) != 3 or not all(re.fullmatch(r"-?\d+", b) for b in bare):
            where = "" if leftover == text.strip() else f" in {text.strip()!r}"
            raise LdminvError(
                f"could not read {leftover!r}{where}: write fields as in 'ch 0 · y 3 · x 1' "
                "(leave fields out to match all their values), '#25' for a flat index, or 'c, y, x'"
            )
        for name, b in zip(("channel", "row", "col"), bare):
            put(name, int(b))
    if "flat" in found:
        flat = found.pop("flat")
        if not 0 <= flat < c * h * w:
            raise LdminvError(f"#{flat} is outside the latent: flat indices run from 0 to {c * h * w - 1}")
        at = dict(zip(("channel", "row", "col"), (int(v) for v in np.unravel_index(flat, (c, h, w)))))
        clash = [f"{_FIELD_TEXT[k]} {found[k]}" for k in at if k in found and found[k] != at[k]]
        if clash:
            label = " · ".join(f"{_FIELD_TEXT[k]} {v}" for k, v in at.items())
            raise LdminvError(f"#{flat} is {label}, not {' · '.join(clash)}")
        found.update(at)
    for name, size, what in (("channel", c, "channels"), ("row", h, "rows y"), ("col", w, "columns x")):
        if name in found and not 0 <= found[name] < size:
            raise LdminvError(f"{_FIELD_TEXT[name]} {found[name]} is outside the latent: {what} run from 0 to {size - 1}")
    return CoordinateQuery(channel=found.get("channel"), row=found.get("row"), col=found.get("col"))


def balanced_sample(rows: Sequence[int], labels: np.ndarray, *, limit: int = 48, seed: int = 0) -> list[int]:
    """At most ``limit`` of ``rows``, half members and half held-out where both have enough
    (the other class fills the places one cannot), drawn at random with ``seed``.

    Args:
        rows: row indices of the selection.
        labels: (N,) 1 = member, 0 = held-out, for every row of the run.
        limit: the most rows returned (>= 1).
        seed: seed of the draw; the same seed and rows give the same sample.

    Returns:
        The sampled rows: the members, then the held-out, each ascending. All of ``rows``
        (deduplicated, in that order) when there are at most ``limit``.

    Raises:
        LdminvError: ``limit`` is below 1 or a row is outside ``labels``.
    """
    if int(limit) < 1:
        raise LdminvError(f"limit: expected an integer >= 1, got {limit!r}")
    lab = np.asarray(labels)
    idx = np.unique(np.asarray(list(rows), dtype=np.int64))
    if idx.size and (idx[0] < 0 or idx[-1] >= lab.shape[0]):
        raise LdminvError(f"rows: expected indices from 0 to {lab.shape[0] - 1}, got {int(idx[0])}..{int(idx[-1])}")
    members, heldout = idx[lab[idx] == 1], idx[lab[idx] != 1]
    if idx.size > limit:
        half = int(limit) // 2
        k_members = min(members.size, max(half, int(limit) - heldout.size))
        k_heldout = min(heldout.size, int(limit) - k_members)
        rng = np.random.default_rng(int(seed))
        members = np.sort(rng.choice(members, size=k_members, replace=False))
        heldout = np.sort(rng.choice(heldout, size=k_heldout, replace=False))
    return [int(r) for r in members] + [int(r) for r in heldout]
