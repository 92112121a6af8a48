"""Figures of the decoder's distortion: the log-volume distribution by split and the AUROC by
log-volume quartile (at one t, and against the timestep).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ldminv_core.errors import ShapeError, UnknownNameError

from .style import (SPLIT_COLORS, _QUARTILE_COLORS, _add_vline, _as_1d, _layout, _legend_below, _split_masks,
                    split_label)

__all__ = ["log_volume_distribution", "quartile_auroc_bars", "quartile_auroc_vs_timestep"]


def log_volume_distribution(
    log_volume: np.ndarray,
    labels: np.ndarray,
    *,
    kind: str = "histogram",
    nbins: int = 40,
    title: str | None = "Distortion (log-volume) of members and held-out samples",
    height: int = 360,
) -> go.Figure:
    """Distribution of per-sample log-volume, members vs held-out.

    Args:
        log_volume: (N,) log-volume per sample.
        labels: (N,) 1 = member, 0 = held-out.
        kind: "histogram" (overlaid, normalised to probability density) or "violin".
        nbins: number of histogram bins.
    """
    lv = _as_1d(log_volume, "log_volume").astype(np.float64)
    lab = _as_1d(labels, "labels")
    if lab.shape != lv.shape:
        raise ShapeError(f"labels: expected shape {lv.shape} to match log_volume, got {lab.shape}")
    if kind not in ("histogram", "violin"):
        raise UnknownNameError(f"kind: expected 'histogram' or 'violin', got {kind!r}")
    fig = go.Figure()
    lo, hi = (float(np.min(lv)), float(np.max(lv))) if lv.size else (0.0, 1.0)
    size = (hi - lo) / max(int(nbins), 1) or 1.0
    for name, mask in _split_masks(lab).items():
        values = lv[mask]
        label = f"{split_label(name)} (n={values.size})"
        if kind == "histogram":
            fig.add_trace(
                go.Histogram(
                    x=values,
                    name=label,
                    histnorm="probability density",
                    opacity=0.6,
                    marker_color=SPLIT_COLORS[name],
                    xbins=dict(start=lo, end=hi + size, size=size),
                )
            )
        else:
            fig.add_trace(
                go.Violin(
                    y=values,
                    name=label,
                    box_visible=True,
                    meanline_visible=True,
                    points="outliers",
                    line_color=SPLIT_COLORS[name],
                )
            )
    if kind == "histogram":
        fig.update_layout(barmode="overlay", xaxis_title="log-volume", yaxis_title="density")
        _layout(fig, title=title, height=height)
        return _legend_below(fig)  # a long title and the legend never overlap
    fig.update_layout(yaxis_title="log-volume", showlegend=False)
    return _layout(fig, title=title, height=height)


def quartile_auroc_bars(
    aurocs: Sequence[float],
    *,
    ci: Sequence[tuple[float, float]] | None = None,
    edges: Sequence[float] | None = None,
    counts: Sequence[int] | None = None,
    title: str | None = "AUROC by distortion quartile",
    height: int = 340,
) -> go.Figure:
    """Bars of the attack AUROC within each log-volume quartile (Q1 = least distorted).

    Args:
        aurocs: (4,) AUROC per quartile (NaN where undefined).
        ci: optional 4 (lo, hi) intervals drawn as error bars.
        edges: optional (5,) quartile edges of log-volume, shown in the hover.
        counts: optional (4,) number of samples per quartile.
    """
    vals = np.asarray(aurocs, dtype=np.float64)
    if vals.shape != (4,):
        raise ShapeError(f"aurocs: expected shape (4,), got {vals.shape}")
    names = [f"Q{i + 1}" for i in range(4)]
    hover = []
    for i in range(4):
        parts = [f"Q{i + 1}", f"AUROC {vals[i]:.4f}"]
        if edges is not None:
            parts.append(f"log-volume {edges[i]:.3g} .. {edges[i + 1]:.3g}")
        if counts is not None:
            parts.append(f"n = {int(counts[i])}")
        hover.append("<br>".join(parts))
    error_y = None
    if ci is not None:
        lo = np.array([c[0] for c in ci], dtype=np.float64)
        hi = np.array([c[1] for c in ci], dtype=np.float64)
        error_y = dict(type="data", symmetric=False, array=hi - vals, arrayminus=vals - lo)
    fig = go.Figure(
        go.Bar(
            x=names,
            y=vals,
            marker_color=list(_QUARTILE_COLORS),
            error_y=error_y,
            hovertext=hover,
            hoverinfo="text",
            text=[f"{v:.3f}" for v in vals],
            textposition="inside",
            insidetextanchor="start",  # at the base of the bar: the error bar cannot cover it
        )
    )
    fig.update_layout(uniformtext=dict(minsize=9, mode="hide"))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#888888")
    finite = vals[np.isfinite(vals)]
    top = max(1.0, float(finite.max()) + 0.05) if finite.size else 1.0
    fig.update_layout(
        xaxis_title="log-volume quartile (low to high distortion)",
        yaxis_title="AUROC",
        yaxis_range=[min(0.0, float(finite.min()) - 0.05) if finite.size else 0.0, top],
    )
    return _layout(fig, title=title, height=height)


def quartile_auroc_vs_timestep(
    timesteps: Sequence[int],
    aurocs: np.ndarray,
    *,
    selected_t: int | None = None,
    title: str | None = "AUROC vs timestep per distortion quartile",
    height: int = 340,
) -> go.Figure:
    """AUROC-vs-timestep curves, one per log-volume quartile.

    Args:
        timesteps: (T,) timesteps.
        aurocs: (4, T) AUROC of each quartile at each timestep.
        selected_t: the timestep in use, marked by a vertical line.
    """
    ts = np.asarray(timesteps)
    vals = np.asarray(aurocs, dtype=np.float64)
    if vals.shape != (4, ts.shape[0]):
        raise ShapeError(f"aurocs: expected shape (4, {ts.shape[0]}), got {vals.shape}")
    fig = go.Figure()
    for q in range(4):
        fig.add_trace(
            go.Scatter(
                x=ts,
                y=vals[q],
                mode="lines+markers",
                name=f"Q{q + 1}",
                line_color=_QUARTILE_COLORS[q],
            )
        )
    _add_vline(fig, selected_t, text=f"t={selected_t}")
    fig.update_layout(xaxis_title="timestep t", yaxis_title="AUROC")
    return _layout(fig, title=title, height=height)
