"""Scatter plots: the dimension table's columns against each other and the 2-D map of the
latents.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ldminv_core.errors import LdminvError, ShapeError

from .style import COLUMN_LABELS, SPLIT_COLORS, _PALETTE, _layout, _legend_below, split_label

__all__ = ["dimension_scatter", "latent_scatter", "WEBGL_MIN_POINTS"]

#: From this many points on, the latent map and the Dimensions scatter are drawn with WebGL
#: (``scattergl``): an SVG scatter of thousands of points (an SD-size run's 5000 samples or 16384
#: coordinates) takes the browser seconds to redraw; below it, SVG (a WebGL context alone costs
#: Chromium hundreds of milliseconds without a GPU).
WEBGL_MIN_POINTS = 2000


def dimension_scatter(
    table,
    *,
    x: str = "influence_mean",
    y: str = "auroc",
    color: str = "channel",
    title: str | None = "Coordinate influence vs its own AUROC",
    height: int = 420,
) -> go.Figure:
    """Scatter of per-coordinate statistics (one point per latent coordinate).

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
    # SVG for a small latent: a WebGL context costs more than it saves below WEBGL_MIN_POINTS (on a
    # machine without a GPU, Chromium draws WebGL in software)
    trace = go.Scattergl if len(table) >= WEBGL_MIN_POINTS else go.Scatter
    for i, ch in enumerate(channels):
        part = table if ch is None else table[table[color] == ch]
        fig.add_trace(
            trace(
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
