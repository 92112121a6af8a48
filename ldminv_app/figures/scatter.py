"""Scatter plots: the dimension table's columns against each other and the 2-D map of the
latents.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ldminv_core.errors import LdminvError, ShapeError

from .style import COLUMN_LABELS, SPLIT_COLORS, _PALETTE, _layout, _legend_below, split_label

__all__ = ["dimension_scatter", "latent_scatter", "WEBGL_MIN_POINTS", "DENSITY_MIN_POINTS", "NOTABLE_POINTS"]

#: From this many points on, the latent map is drawn with WebGL (``scattergl``): an SVG scatter of
#: thousands of points (an SD-size run's 5000 samples) takes the browser seconds to redraw; below
#: it, SVG (a WebGL context alone costs Chromium hundreds of milliseconds without a GPU).
WEBGL_MIN_POINTS = 2000
#: From this many coordinates on, the Dimensions scatter draws every coordinate as a density (a
#: binned heatmap, counted here) with the notable ones as points: sixteen thousand overlapping points
#: say less than their density, and a WebGL context costs Chromium about 0.6 s without a GPU.
DENSITY_MIN_POINTS = 2000
#: The notable coordinates drawn as points over the density: this many farthest from chance AUROC
#: (the ``y`` column when it is AUROC) and this many with the largest ``x`` (mean influence).
NOTABLE_POINTS = 200
#: Bins of the density along x and y.
DENSITY_BINS = (60, 40)


def dimension_scatter(
    table,
    *,
    x: str = "influence_mean",
    y: str = "auroc",
    color: str = "channel",
    title: str | None = "Coordinate influence vs its own AUROC",
    height: int = 420,
) -> go.Figure:
    """Scatter of per-coordinate statistics (one point per latent coordinate; from
    :data:`DENSITY_MIN_POINTS` coordinates on, their density with the notable ones as points).

    Args:
        table: pandas DataFrame with columns ``channel``, ``row``, ``col`` and the
            columns named by ``x``, ``y`` and ``color`` (as built by
            ``ldminv_core.evaluation.dimension_table``).
    """
    for col in ("channel", "row", "col", x, y, color):
        if col not in table.columns:
            raise LdminvError(f"table: expected a column {col!r}, got columns {list(table.columns)}")
    fig = go.Figure()
    channels = sorted(table[color].unique()) if color == "channel" else [None]
    shown = table
    if len(table) >= DENSITY_MIN_POINTS:
        # every coordinate as a density, the notable ones as points (SVG: no WebGL context)
        fig.add_trace(_density(table, x, y))
        shown = _notable(table, x, y)
        title = (title or "") + (f"<br><sup>shading: all {len(table)} coordinates; points: the {NOTABLE_POINTS} "
                                 + ("farthest from chance and the " if y == "auroc" else "")
                                 + f"{NOTABLE_POINTS} with the largest {COLUMN_LABELS.get(x, x)}</sup>")
    for i, ch in enumerate(channels):
        part = shown if ch is None else shown[shown[color] == ch]
        if ch is not None and part.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part[y],
                mode="markers",
                name=f"channel {ch}" if ch is not None else COLUMN_LABELS.get(y, y),
                marker=dict(size=6, color=_PALETTE[i % len(_PALETTE)], opacity=0.75),
                customdata=np.stack([part["channel"], part["row"], part["col"]], axis=1),
                hovertemplate="ch %{customdata[0]} · y %{customdata[1]} · x %{customdata[2]}"
                + f"<br>{COLUMN_LABELS.get(x, x)}: %{{x:.4g}}<br>{COLUMN_LABELS.get(y, y)}: %{{y:.4g}}"
                + "<extra></extra>",
            )
        )
    if y == "auroc":
        fig.add_hline(y=0.5, line_dash="dot", line_color="#888888")
    fig.update_layout(xaxis_title=COLUMN_LABELS.get(x, x), yaxis_title=COLUMN_LABELS.get(y, y))
    _layout(fig, title=title, height=height)
    return _legend_below(fig, y=-0.3, bottom=95)  # clear of plotly's toolbar at the top right


def _density(table, x: str, y: str) -> go.Heatmap:
    """Counts of the rows with finite x and y in :data:`DENSITY_BINS` bins (empty bins transparent)."""
    xs, ys = table[x].to_numpy(dtype=float), table[y].to_numpy(dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys)
    counts, xe, ye = np.histogram2d(xs[ok], ys[ok], bins=DENSITY_BINS)
    z = np.where(counts.T > 0, counts.T, np.nan)  # (y bins, x bins); NaN: drawn transparent
    return go.Heatmap(
        x=(xe[:-1] + xe[1:]) / 2, y=(ye[:-1] + ye[1:]) / 2, z=z, colorscale="Greys", zmin=0,
        colorbar=dict(title="coordinates", thickness=12, len=0.6, x=1.02), name="all coordinates",
        hovertemplate=f"{COLUMN_LABELS.get(x, x)} ≈ %{{x:.3g}}<br>{COLUMN_LABELS.get(y, y)} ≈ %{{y:.3g}}"
        "<br>%{z:d} coordinates<extra></extra>", showscale=True, opacity=0.8,
    )


def _notable(table, x: str, y: str):
    """The rows drawn as points over the density: the :data:`NOTABLE_POINTS` with the largest ``x``
    and, when ``y`` is AUROC, the ones farthest from 0.5 (ties: the table's order)."""
    keep = table[x].nlargest(NOTABLE_POINTS, keep="first").index
    if y == "auroc":
        keep = keep.union((table[y] - 0.5).abs().nlargest(NOTABLE_POINTS, keep="first").index)
    return table.loc[table.index.isin(keep)]


def latent_scatter(
    xy: np.ndarray,
    color: np.ndarray,
    *,
    color_label: str,
    categorical: bool = False,
    sample_ids: Sequence | None = None,
    hover: Mapping[str, np.ndarray] | None = None,
    selected: Sequence[int] | None = None,
    title: str | None = "UMAP of the latents",
    height: int = 520,
) -> go.Figure:
    """2-D map of the samples (one trace, so point index = sample row).

    Args:
        xy: (N, 2) embedding.
        color: (N,) values (continuous colour scale) or, with ``categorical``, (N,) labels
            (e.g. "member" / "heldout", shown as "held-out"), each category with its own colour
            and legend entry (horizontal, under the plot: clear of plotly's toolbar).
        sample_ids: optional (N,) ids shown in the hover.
        hover: optional extra name -> (N,) values shown in the hover.
        selected: optional row indices drawn as the current selection (``selectedpoints``; the
            other points fade), so a selection survives a change of colouring.

    ``customdata[:, 0]`` holds the row index of every point, so a selection maps back to
    samples whatever the plotly version reports.
    """
    pts = np.asarray(xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ShapeError(f"xy: expected shape (N, 2), got {pts.shape}")
    n = pts.shape[0]
    col = np.asarray(color)
    if col.shape != (n,):
        raise ShapeError(f"color: expected shape ({n},) to match xy, got {col.shape}")
    ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids)
    extra = dict(hover or {})
    custom = [np.arange(n), ids] + [np.asarray(v) for v in extra.values()]
    customdata = np.stack([np.asarray(c, dtype=object) for c in custom], axis=1)
    lines = ["sample %{customdata[1]}"]
    for j, name in enumerate(extra, start=2):
        lines.append(f"{name}: %{{customdata[{j}]}}")
    hovertemplate = "<br>".join(lines) + "<extra></extra>"
    fig = go.Figure()
    trace = go.Scattergl if n >= WEBGL_MIN_POINTS else go.Scatter
    if categorical:
        cats = [str(c) for c in col]
        levels = list(dict.fromkeys(cats))
        cmap = {lvl: SPLIT_COLORS.get(lvl, _PALETTE[i % len(_PALETTE)]) for i, lvl in enumerate(levels)}
        marker = dict(size=7, color=[cmap[c] for c in cats], opacity=0.8, line=dict(width=0))
        fig.add_trace(trace(x=pts[:, 0], y=pts[:, 1], mode="markers", marker=marker,
                            customdata=customdata, hovertemplate=hovertemplate, showlegend=False,
                            name="samples"))
        for lvl in levels:  # legend entries only
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=split_label(lvl),
                                       marker=dict(size=9, color=cmap[lvl])))
    else:
        vals = col.astype(np.float64)
        marker = dict(size=7, color=vals, colorscale="Viridis", opacity=0.85, showscale=True,
                      colorbar=dict(title=color_label), line=dict(width=0))
        fig.add_trace(trace(x=pts[:, 0], y=pts[:, 1], mode="markers", marker=marker,
                            customdata=customdata, hovertemplate=hovertemplate, name="samples",
                            showlegend=False))
    if selected is not None:
        rows = sorted({int(r) for r in selected if 0 <= int(r) < n})
        fig.data[0].update(selectedpoints=rows, selected=dict(marker=dict(opacity=1.0)),
                           unselected=dict(marker=dict(opacity=0.2)))
    fig.update_layout(xaxis_title="UMAP 1", yaxis_title="UMAP 2", dragmode="lasso")
    _layout(fig, title=title, height=height)
    return _legend_below(fig, y=-0.14, bottom=80)
