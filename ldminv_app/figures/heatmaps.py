"""Heatmaps of the latent grid: one per channel, and a value map over an image.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ldminv_core.errors import LdminvError, ShapeError

from .style import _set_template

__all__ = ["channel_heatmaps", "image_with_heatmap"]


def channel_heatmaps(
    maps: np.ndarray,
    *,
    title: str | None = None,
    colorscale: str = "Viridis",
    colorbar_title: str = "influence",
    shared_scale: bool = True,
    zmid: float | None = None,
    highlight: Sequence[tuple[int, int, int]] | None = None,
    panel_size: int = 220,
) -> go.Figure:
    """One heatmap panel per latent channel.

    Args:
        maps: (C, h, w) values (e.g. influence of one sample, or its mean over samples).
        shared_scale: one colour range for all channels (else one per panel).
        zmid: centre of a diverging scale (e.g. 0.5 for AUROC): the range is made symmetric
            around it, so the scale's neutral colour sits exactly at ``zmid``.
        highlight: optional (channel, row, col) coordinates marked with a square.
        panel_size: pixel height of the figure row.
    """
    arr = np.asarray(maps, dtype=np.float64)
    if arr.ndim != 3:
        raise ShapeError(f"maps: expected shape (C, h, w), got {arr.shape}")
    c, h, w = arr.shape
    cols = min(c, 4)
    rows = int(np.ceil(c / cols))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"channel {i}" for i in range(c)],
        horizontal_spacing=0.04,
        vertical_spacing=0.12 if rows > 1 else 0.08,
    )
    finite = arr[np.isfinite(arr)]
    zmin = float(finite.min()) if (shared_scale and finite.size) else None
    zmax = float(finite.max()) if (shared_scale and finite.size) else None
    if zmid is not None and finite.size:
        half = max(float(np.abs(finite - zmid).max()), 1e-12)
        zmin, zmax = zmid - half, zmid + half
    for i in range(c):
        r, col = divmod(i, cols)
        fig.add_trace(
            go.Heatmap(
                z=arr[i],
                zmin=zmin,
                zmax=zmax,
                colorscale=colorscale,
                showscale=(i == 0) or not shared_scale,
                colorbar=dict(title=colorbar_title, len=0.9) if i == 0 else None,
                hovertemplate=f"ch {i} · y %{{y}} · x %{{x}}<br>%{{z:.4g}}<extra></extra>",
            ),
            row=r + 1,
            col=col + 1,
        )
        # axis titles on the outer panels only: y = latent row (top to bottom), x = latent column
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i + 1 if i else ''}", row=r + 1, col=col + 1,
                         title_text="latent row y" if col == 0 else None, title_standoff=4)
        fig.update_xaxes(showticklabels=w <= 16, row=r + 1, col=col + 1,
                         title_text="latent column x" if (i + cols >= c) else None, title_standoff=4)
    for ch, row, col in highlight or ():
        if not 0 <= ch < c:
            continue
        r, cc = divmod(int(ch), cols)
        fig.add_shape(
            type="rect",
            x0=col - 0.5,
            x1=col + 0.5,
            y0=row - 0.5,
            y1=row + 0.5,
            line=dict(color="#ff00ff", width=2),
            row=r + 1,
            col=cc + 1,
        )
    _set_template(fig)
    fig.update_layout(title=title, height=panel_size * rows + (60 if title else 30) + 30,
                      margin=dict(l=55, r=20, t=60 if title else 30, b=50))
    return fig


def image_with_heatmap(
    image: np.ndarray,
    heat: np.ndarray,
    *,
    opacity: float = 0.5,
    colorscale: str = "Inferno",
    title: str | None = None,
    colorbar_title: str = "influence",
    height: int = 320,
) -> go.Figure:
    """An image with a heatmap overlaid (e.g. the upsampled influence map).

    Args:
        image: (H, W, 3) uint8 RGB image.
        heat: (H, W) values on the image grid.
        opacity: opacity of the heatmap layer in [0, 1].
    """
    img = np.asarray(image)
    hm = np.asarray(heat, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ShapeError(f"image: expected an RGB array (H, W, 3), got shape {img.shape}")
    if hm.shape != img.shape[:2]:
        raise ShapeError(f"heat: expected shape {img.shape[:2]} to match the image, got {hm.shape}")
    if not 0.0 <= float(opacity) <= 1.0:
        raise LdminvError(f"opacity: expected a number in [0, 1], got {opacity!r}")
    fig = go.Figure()
    fig.add_trace(go.Image(z=img.astype(np.uint8), hoverinfo="skip"))
    fig.add_trace(
        go.Heatmap(
            z=hm,
            opacity=float(opacity),
            colorscale=colorscale,
            colorbar=dict(title=colorbar_title),
            hovertemplate="x %{x}, y %{y}<br>%{z:.4g}<extra></extra>",
        )
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor="x")
    _set_template(fig)
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig
