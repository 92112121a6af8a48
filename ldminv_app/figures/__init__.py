"""Plotly figures of the dashboard, as pure functions.

Every function takes arrays / data frames and keyword options and returns a
``plotly.graph_objects.Figure``; none reads files, touches Streamlit or caches anything, so
the same builders serve the pages and any exported report. Conventions: members are
label 1, held-out label 0; arrays are numpy; a ``selected_t`` / ``current`` option draws a
marker line at the value in use.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ldminv_core.errors import LdminvError, ShapeError, UnknownNameError

__all__ = [
    "SPLIT_COLORS",
    "VARIANT_COLORS",
    "TEMPLATE",
    "log_volume_distribution",
    "quartile_auroc_bars",
    "quartile_auroc_vs_timestep",
    "channel_heatmaps",
    "image_with_heatmap",
    "roc_curves",
    "thin_curve",
    "log_ticks",
    "rate_tick_text",
    "metric_vs_drop",
    "drop_curves_with_bands",
    "attack_overview",
    "blind_group_aurocs",
    "metric_vs_timestep",
    "dimension_scatter",
    "latent_scatter",
    "coord_label",
    "split_label",
    "PLOTLY_CONFIG",
    "plotly_config",
]

TEMPLATE = "plotly_white"
# Okabe-Ito colour-blind-safe palette; the same arm has the same colour on every page and report.
SPLIT_COLORS = {"member": "#E69F00", "heldout": "#0072B2"}
#: Colours of the arms (baseline, masked, random control, global and manual masks).
VARIANT_COLORS = {
    "baseline": "#000000",
    "masked": "#D55E00",
    "random": "#56B4E9",
    "global": "#009E73",
    "manual": "#CC79A7",
    "blind": "#666666",  # the blind baseline (files only): a dashed grey reference curve
}
#: Axis titles of the dimension table's columns.
COLUMN_LABELS = {
    "influence_mean": "mean influence ½·log G_ii",
    "influence_std": "influence std over samples",
    "auroc": "AUROC of the coordinate alone (−term)",
    "gap": "mean term gap (held-out − member)",
    "gap_std": "term gap / pooled std",
    "influence_rank": "influence rank (1 = most)",
}
#: Shared ``st.plotly_chart(config=...)`` of every chart: plotly's own toolbar with its
#: "Download plot" button (client-side ``Plotly.toImage``, so it works offline), no plotly logo.
#: ``plotly_config(name)`` gives the same with a file name for the download.
PLOTLY_CONFIG: dict = {
    "displaylogo": False,
    "displayModeBar": "hover",  # shown on hover only: always shown, it covers the end of long titles
    "toImageButtonOptions": {"format": "png", "filename": "ldminv-chart", "scale": 2},
    # plotly.js 3 adds a "Share chart..." button that uploads to Plotly Cloud: never offline
    "modeBarButtonsToRemove": ["sendChartToCloud", "sendDataToCloud"],
}


def plotly_config(filename: str | None = None, *, image_format: str = "png") -> dict:
    """:data:`PLOTLY_CONFIG` with the toolbar's download named ``filename`` (``.png`` / ``.svg``
    added by plotly) in ``image_format`` ("png" or "svg")."""
    if image_format not in ("png", "svg", "jpeg", "webp"):
        raise UnknownNameError(f"image_format: expected 'png', 'svg', 'jpeg' or 'webp', got {image_format!r}")
    opts = dict(PLOTLY_CONFIG["toImageButtonOptions"], format=image_format)
    if filename:
        opts["filename"] = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(filename))
    return {**PLOTLY_CONFIG, "toImageButtonOptions": opts}


def coord_label(c: int, y: int, x: int) -> str:
    """The one label of a latent coordinate: "ch 1 · y 2 · x 3" (channel, row y, column x)."""
    return f"ch {int(c)} · y {int(y)} · x {int(x)}"


def split_label(split: str) -> str:
    """Displayed name of a split: "member" or "held-out" (the data keep "heldout")."""
    return "held-out" if str(split) == "heldout" else str(split)


_QUARTILE_COLORS = ("#fdd49e", "#fc8d59", "#e34a33", "#b30000")
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")


def _color(name: str, i: int) -> str:
    """The arm's colour (a name may carry a suffix: "random (mean of 5 seeds)"), else the palette's."""
    return VARIANT_COLORS.get(name.split(" ")[0], _PALETTE[i % len(_PALETTE)])


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)}, {int(h[2:4], 16)}, {int(h[4:6], 16)}, {alpha})"


#: Height (px) of the strip kept free at the top of a titled chart for plotly's toolbar (shown at
#: the top right while the pointer is over the chart): the title sits under it, so the toolbar
#: never covers the end of a long title in a narrow column.
TOOLBAR_STRIP = 34


def _layout(fig: go.Figure, *, title: str | None, height: int) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title=dict(text=title, yref="container", y=1 - TOOLBAR_STRIP / height, yanchor="top") if title else title,
        height=height,
        margin=dict(l=50, r=20, t=TOOLBAR_STRIP + 42 if title else 20, b=45),
    )
    # the legend goes under the plot: above it, it would sit under plotly's toolbar and the title
    return _legend_below(fig)


def _legend_below(fig: go.Figure, *, y: float = -0.3, bottom: int = 90) -> go.Figure:
    """Move the legend under the x-axis title (long titles and legends then never overlap)."""
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=y, xanchor="left", x=0),
                      margin=dict(b=bottom))
    return fig


def _as_1d(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ShapeError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def _split_masks(labels: np.ndarray) -> dict[str, np.ndarray]:
    lab = np.asarray(labels).astype(bool)
    return {"member": lab, "heldout": ~lab}


def _add_vline(fig: go.Figure, x: float | None, *, text: str, row=None, col=None) -> None:
    if x is None:
        return
    kwargs = {} if row is None else {"row": row, "col": col}
    fig.add_vline(
        x=float(x),
        line_dash="dot",
        line_color="#555555",
        annotation_text=text,
        annotation_position="top",
        **kwargs,
    )


# --------------------------------------------------------------------------- distortion


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


# --------------------------------------------------------------------------- heatmaps


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
    fig.update_layout(template=TEMPLATE, title=title, height=panel_size * rows + (60 if title else 30) + 30,
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
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig


# --------------------------------------------------------------------------- ROC and metrics


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int, *, log_scale: bool = False,
               min_rate: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``max_points`` points of a monotone curve (a ROC curve), chosen evenly along
    its length as drawn (in log10 units with ``log_scale``), the first and last kept; a staircase
    keeps its look at chart resolution. Curves already short enough are returned as they are."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if max_points is None or x.size <= max_points or max_points < 2:
        return x, y
    if log_scale:
        u, v = np.log10(np.clip(x, min_rate, 1.0)), np.log10(np.clip(y, min_rate, 1.0))
    else:
        u, v = x, y
    step = np.abs(np.diff(u)) + np.abs(np.diff(v))  # staircase length of each segment
    along = np.concatenate([[0.0], np.cumsum(step)])
    if not np.isfinite(along[-1]) or along[-1] <= 0:
        idx = np.linspace(0, x.size - 1, max_points).round().astype(np.int64)
    else:
        targets = np.linspace(0.0, along[-1], max_points)
        idx = np.searchsorted(along, targets, side="left").clip(0, x.size - 1)
    idx = np.unique(np.concatenate([[0], idx, [x.size - 1]]))
    return x[idx], y[idx]


def _resolvable_rate(count: int | None, fallback: float, name: str) -> float:
    """1 / count, the smallest non-zero rate ``count`` samples can show; ``fallback`` for None."""
    if count is None:
        return float(fallback)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 1:
        raise LdminvError(f"{name}: expected a positive integer (a class size), got {count!r}")
    return 1.0 / int(count)


def log_ticks(low: float) -> list[float]:
    """Tick values of a log rate axis from ``low`` to 1: the decades (0.001, 0.01, 0.1, 1) inside
    the range, with 2 and 5 times each decade added when fewer than three decades fit."""
    first = int(np.ceil(np.log10(low) - 1e-12))
    decades = [10.0 ** k for k in range(first, 1)]
    if len(decades) >= 3:
        return decades
    extra = [m * 10.0 ** k for k in range(first - 1, 0) for m in (2.0, 5.0)]
    return sorted(v for v in {*decades, *extra} if low * (1 - 1e-9) <= v <= 1.0)


def rate_tick_text(value: float) -> str:
    """A rate as a plain tick label: 0.001, 0.02, 0.5, 1 (no SI prefixes such as "100µ")."""
    return np.format_float_positional(float(value), precision=6, trim="-")


def roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    log_scale: bool = False,
    aurocs: Mapping[str, float] | None = None,
    min_rate: float = 1e-4,
    title: str | None = None,
    xlabel: str = "false-positive rate",
    ylabel: str = "true-positive rate",
    height: int = 400,
    max_points: int | None = None,
    n_negatives: int | None = None,
    n_positives: int | None = None,
    labels: Mapping[str, str] | None = None,
    dashed: Sequence[str] = (),
) -> go.Figure:
    """ROC curves of several score variants.

    Args:
        curves: name -> (fpr (L,), tpr (L,)) arrays, e.g. from ``metrics.roc``.
        log_scale: log-log axes (rates are clipped to the axis minimum so that zero stays visible).
        aurocs: optional name -> AUROC shown in the legend.
        min_rate: log axes' minimum when the class sizes are not given.
        xlabel, ylabel: axis titles (e.g. which class is positive).
        max_points: draw at most about this many points per curve (:func:`thin_curve`; a live
            page redraws faster); None draws every point.
        n_negatives, n_positives: class sizes of the ROC's convention: the log x axis starts at
            the smallest FPR they can resolve, 1 / n_negatives (the y axis at 1 / n_positives),
            instead of ``min_rate``.
        labels: optional name -> legend text (e.g. "random, seed 0"), before the AUROC.
        dashed: names of curves drawn dashed (a reference such as the blind baseline).

    The legend sits inside the lower-right corner, which a ROC curve never reaches. Log axes
    carry plain tick labels (0.001, 0.01, 0.1, 1; with 2 and 5 between decades on short axes).
    """
    x_min = _resolvable_rate(n_negatives, min_rate, "n_negatives")
    y_min = _resolvable_rate(n_positives, min_rate, "n_positives")
    fig = go.Figure()
    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        x = np.asarray(fpr, dtype=np.float64)
        y = np.asarray(tpr, dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise ShapeError(f"curves[{name!r}]: expected two 1-D arrays of equal length, got {x.shape} and {y.shape}")
        if max_points is not None:
            x, y = thin_curve(x, y, max_points, log_scale=log_scale, min_rate=min(x_min, y_min))
        if log_scale:
            x = np.clip(x, x_min, 1.0)
            y = np.clip(y, y_min, 1.0)
        label = (labels or {}).get(name, name)
        if aurocs and name in aurocs:
            label = f"{label} (AUROC {aurocs[name]:.4f})"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=y,
                mode="lines",
                name=label,
                line=dict(color=_color(name, i), shape="hv", width=2, dash="dash" if name in dashed else "solid"),
                hovertemplate="FPR %{x:.4g}<br>TPR %{y:.4g}<extra>" + name + "</extra>",
            )
        )
    chance = np.array([max(x_min, y_min), 1.0]) if log_scale else np.array([0.0, 1.0])
    fig.add_trace(
        go.Scatter(x=chance, y=chance, mode="lines", name="chance", line=dict(color="#bbbbbb", dash="dot"),
                   hoverinfo="skip")
    )
    if log_scale:
        for axis, low in ((fig.update_xaxes, x_min), (fig.update_yaxes, y_min)):
            ticks = log_ticks(low)
            axis(type="log", range=[np.log10(low), 0], tickmode="array", tickvals=ticks,
                 ticktext=[rate_tick_text(v) for v in ticks])
        if x_min <= 0.01:
            fig.add_vline(x=0.01, line_dash="dash", line_color="#999999", annotation_text="1% FPR",
                          annotation_position="top left", annotation_font_size=11)
    else:
        fig.update_xaxes(range=[0, 1])
        fig.update_yaxes(range=[0, 1.01])
    fig.update_layout(xaxis_title=xlabel, yaxis_title=ylabel)
    _layout(fig, title=title or ("ROC (log-log)" if log_scale else "ROC"), height=height)
    fig.update_layout(legend=dict(orientation="v", yanchor="bottom", y=0.02, xanchor="right", x=0.99,
                                  bgcolor="rgba(255, 255, 255, 0.85)", bordercolor="#dddddd", borderwidth=1))
    return fig


def _metric_lines(x: np.ndarray, series: Mapping[str, np.ndarray], *, x_name: str) -> go.Figure:
    """One line per named series of metric values over the shared x values."""
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        v = np.asarray(values, dtype=np.float64)
        if v.shape != x.shape:
            raise ShapeError(f"series[{name!r}]: expected shape {x.shape} to match {x_name}, got {v.shape}")
        fig.add_trace(go.Scatter(x=x, y=v, mode="lines+markers", name=name, line_color=_color(name, i)))
    return fig


def metric_vs_drop(
    percents: Sequence[float],
    series: Mapping[str, np.ndarray],
    *,
    ylabel: str = "AUROC",
    current: float | None = None,
    title: str | None = None,
    height: int = 340,
) -> go.Figure:
    """A metric against the drop percentage for one or more variants.

    Args:
        percents: (K,) drop percentages.
        series: name -> (K,) metric values (e.g. "masked", "random").
        current: the drop percentage in use, marked by a vertical line.
    """
    fig = _metric_lines(np.asarray(percents, dtype=np.float64), series, x_name="percents")
    _add_vline(fig, current, text=f"{current:g}%" if current is not None else "")
    fig.update_layout(xaxis_title="dropped coordinates (%)", yaxis_title=ylabel)
    return _layout(fig, title=title or f"{ylabel} vs drop percentage", height=height)


def drop_curves_with_bands(
    percents: Sequence[float],
    *,
    masked: np.ndarray,
    masked_band: tuple[np.ndarray, np.ndarray] | None,
    random_mean: np.ndarray,
    random_band: tuple[np.ndarray, np.ndarray],
    baseline: float,
    baseline_ci: tuple[float, float] | None,
    n_seeds: int,
    n_boot: int | None = None,
    ylabel: str = "AUROC",
    current: float | None = None,
    title: str | None = None,
    height: int = 360,
) -> go.Figure:
    """Masked / baseline / random control against the drop percentage, with their bands.

    Args:
        percents: (K,) drop percentages.
        masked: (K,) metric of the masked arm; ``masked_band``: its (lo (K,), hi (K,)) bootstrap band.
        random_mean: (K,) mean over the control's seeds; ``random_band``: (min (K,), max (K,)) over seeds.
        baseline: the unmasked metric (a horizontal line); ``baseline_ci``: its interval (a band).
        n_seeds: number of seeds of the random control (named in the legend).
        n_boot: bootstrap replicates behind the masked and baseline bands (named under the axis).
    """
    x = np.asarray(percents, dtype=np.float64)
    fig = go.Figure()

    def band(lo, hi, color: str, name: str) -> None:
        lo_a, hi_a = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        if lo_a.shape != x.shape or hi_a.shape != x.shape:
            raise ShapeError(f"{name}: expected bands of shape {x.shape}, got {lo_a.shape} and {hi_a.shape}")
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi_a, lo_a[::-1]]),
                                 fill="toself", fillcolor=_rgba(color, 0.18), line=dict(width=0), name=name,
                                 hoverinfo="skip", showlegend=False))

    if baseline_ci is not None and np.isfinite(baseline_ci).all():
        band(np.full(x.shape, baseline_ci[0]), np.full(x.shape, baseline_ci[1]), VARIANT_COLORS["baseline"],
             "baseline 95% CI")
    band(random_band[0], random_band[1], VARIANT_COLORS["random"], f"random: range over {n_seeds} seeds")
    if masked_band is not None and np.isfinite(masked_band[0]).any():
        band(masked_band[0], masked_band[1], VARIANT_COLORS["masked"], "masked 95% CI")
    fig.add_trace(go.Scatter(x=x, y=np.full(x.shape, float(baseline)), mode="lines", name="baseline",
                             line=dict(color=VARIANT_COLORS["baseline"], dash="dash")))
    fig.add_trace(go.Scatter(x=x, y=np.asarray(random_mean, dtype=np.float64), mode="lines+markers",
                             name=f"random (mean of {n_seeds} seeds)", line=dict(color=VARIANT_COLORS["random"])))
    masked_y = np.asarray(masked, dtype=np.float64)
    fig.add_trace(go.Scatter(x=x, y=masked_y, mode="lines+markers", name="masked",
                             line=dict(color=VARIANT_COLORS["masked"])))
    _add_vline(fig, current, text=f"{current:g}%" if current is not None else "")
    if current is not None and np.any(np.isclose(x, float(current))):
        # the drop in use, on the masked curve (its x values include it: Evaluation.drop_curves(extra=...))
        k = int(np.flatnonzero(np.isclose(x, float(current)))[0])
        fig.add_trace(go.Scatter(x=[x[k]], y=[masked_y[k]], mode="markers", name=f"masked at {current:g}%",
                                 marker=dict(color=VARIANT_COLORS["masked"], size=12, symbol="diamond",
                                             line=dict(color="#ffffff", width=1.5)),
                                 showlegend=False, hovertemplate="drop %{x:g}%<br>%{y:.4f}<extra>in use</extra>"))
    reps = f" ({n_boot} bootstrap replicates)" if n_boot else ""
    fig.update_layout(xaxis_title="dropped coordinates (%)<br><sup>shaded: 95% CI of masked and baseline"
                      f"{reps}, range of random over {n_seeds} seeds</sup>", yaxis_title=ylabel)
    _layout(fig, title=title or f"{ylabel} vs drop percentage", height=height)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.36, xanchor="left", x=0),
                      margin=dict(b=110))
    return fig


def attack_overview(
    attacks: Sequence[str],
    *,
    auroc: Sequence[float],
    auroc_ci: Sequence[tuple[float, float]],
    tpr: Sequence[float],
    tpr_ci: Sequence[tuple[float, float]],
    title: str | None = None,
    height: int = 360,
) -> go.Figure:
    """Every attack's baseline AUROC and TPR@1%FPR side by side (grouped bars with intervals).

    Args:
        attacks: (A,) attack labels; ``auroc`` / ``tpr``: (A,) values; ``*_ci``: A (lo, hi) intervals.
    """
    fig = go.Figure()
    for name, vals, cis, color in (("AUROC", auroc, auroc_ci, "#0072B2"), ("TPR@1%FPR", tpr, tpr_ci, "#E69F00")):
        v = np.asarray(vals, dtype=np.float64)
        if v.shape != (len(attacks),):
            raise ShapeError(f"{name}: expected {len(attacks)} values, got shape {v.shape}")
        lo = np.array([c[0] for c in cis], dtype=np.float64)
        hi = np.array([c[1] for c in cis], dtype=np.float64)
        fig.add_trace(go.Bar(
            x=list(attacks), y=v, name=name, marker_color=color,
            error_y=dict(type="data", symmetric=False, array=np.nan_to_num(hi - v), arrayminus=np.nan_to_num(v - lo)),
            text=[f"{x:.3f}" for x in v], textposition="inside", insidetextanchor="start",
        ))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#888888")  # chance AUROC (named in the axis title)
    fig.update_layout(barmode="group", yaxis_title="baseline metric", yaxis_range=[0, 1.08],
                      xaxis_title="dotted line: chance AUROC (0.5)",
                      uniformtext=dict(minsize=9, mode="hide"))  # a label that does not fit its bar is hidden
    return _layout(fig, title=title, height=height)


#: Bar colours of the blind baseline's feature groups by verdict: a group that separates the
#: folders (interval above 0.5) in vermillion, one below chance in blue, the others grey.
BLIND_VERDICT_COLORS = {"supported": "#D55E00", "contradicted": "#0072B2"}


def blind_group_aurocs(
    groups: Sequence[str],
    *,
    auroc: Sequence[float],
    ci: Sequence[tuple[float, float]],
    verdicts: Sequence[str],
    n_features: Sequence[int] | None = None,
    title: str | None = None,
    height: int = 320,
) -> go.Figure:
    """The blind baseline's AUROC per feature group (and all groups together) with 95% intervals
    as error bars and a dotted chance line at 0.5.

    Args:
        groups: (G,) group names ("meta", "pixels", "caption", "encoder", "all").
        auroc: (G,) out-of-fold AUROC of each group's classifier.
        ci: G (lo, hi) intervals.
        verdicts: (G,) verdict of AUROC - 0.5 per group: "supported" bars (the group alone
            separates the folders) are vermillion, "contradicted" blue, the others grey.
        n_features: optional (G,) feature counts, shown under the group names.
    """
    v = np.asarray(auroc, dtype=np.float64)
    if v.shape != (len(groups),) or len(ci) != len(groups) or len(verdicts) != len(groups):
        raise ShapeError(f"auroc, ci, verdicts: expected {len(groups)} of each (one per group), got shape {v.shape}, "
                         f"{len(ci)} intervals and {len(verdicts)} verdicts")
    if n_features is not None and len(n_features) != len(groups):
        raise ShapeError(f"n_features: expected {len(groups)} counts, got {len(n_features)}")
    lo = np.array([c[0] for c in ci], dtype=np.float64)
    hi = np.array([c[1] for c in ci], dtype=np.float64)
    names = ["all groups" if g == "all" else str(g) for g in groups]
    ticks = (names if n_features is None else
             [f"{n}<br><sup>{int(k)} features</sup>" for n, k in zip(names, n_features)])
    colors = [BLIND_VERDICT_COLORS.get(str(x), "#999999") for x in verdicts]
    hover = [f"{n}: AUROC {v[i]:.3f}, 95% CI [{lo[i]:.3f}, {hi[i]:.3f}], {verdicts[i]}" for i, n in enumerate(names)]
    outline = dict(color=["#000000" if g == "all" else c for g, c in zip(groups, colors)],
                   width=[2 if g == "all" else 0 for g in groups])  # "all groups" outlined in black
    fig = go.Figure(go.Bar(
        x=ticks, y=v, marker_color=colors, marker_line=outline,
        error_y=dict(type="data", symmetric=False, array=np.nan_to_num(hi - v), arrayminus=np.nan_to_num(v - lo),
                     color="#333333"),
        text=[f"{a:.3f}" for a in v], textposition="inside", insidetextanchor="start",
        hovertext=hover, hoverinfo="text", showlegend=False,
    ))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#888888")  # chance AUROC (named in the axis title)
    fig.update_layout(yaxis_title="blind AUROC (files only)", yaxis_range=[0, 1.08],
                      xaxis_title="dotted line: chance AUROC (0.5)",
                      uniformtext=dict(minsize=9, mode="hide"), bargap=0.35)
    return _layout(fig, title=title, height=height)


def metric_vs_timestep(
    timesteps: Sequence[int],
    series: Mapping[str, np.ndarray],
    *,
    ylabel: str = "AUROC",
    selected_t: int | None = None,
    title: str | None = None,
    height: int = 340,
) -> go.Figure:
    """A metric against the timestep for one or more variants.

    Args:
        timesteps: (T,) timesteps.
        series: name -> (T,) metric values.
        selected_t: the timestep in use, marked by a vertical line.
    """
    fig = _metric_lines(np.asarray(timesteps), series, x_name="timesteps")
    _add_vline(fig, selected_t, text=f"t={selected_t}" if selected_t is not None else "")
    fig.update_layout(xaxis_title="timestep t", yaxis_title=ylabel)
    _layout(fig, title=title or f"{ylabel} vs timestep", height=height)
    return _legend_below(fig)


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
    for i, ch in enumerate(channels):
        part = table if ch is None else table[table[color] == ch]
        fig.add_trace(
            go.Scattergl(
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


# --------------------------------------------------------------------------- latent map


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
    if categorical:
        cats = [str(c) for c in col]
        levels = list(dict.fromkeys(cats))
        cmap = {lvl: SPLIT_COLORS.get(lvl, _PALETTE[i % len(_PALETTE)]) for i, lvl in enumerate(levels)}
        marker = dict(size=7, color=[cmap[c] for c in cats], opacity=0.8, line=dict(width=0))
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", marker=marker,
                                   customdata=customdata, hovertemplate=hovertemplate, showlegend=False,
                                   name="samples"))
        for lvl in levels:  # legend entries only
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=split_label(lvl),
                                       marker=dict(size=9, color=cmap[lvl])))
    else:
        vals = col.astype(np.float64)
        marker = dict(size=7, color=vals, colorscale="Viridis", opacity=0.85, showscale=True,
                      colorbar=dict(title=color_label), line=dict(width=0))
        fig.add_trace(go.Scatter(x=pts[:, 0], y=pts[:, 1], mode="markers", marker=marker,
                                   customdata=customdata, hovertemplate=hovertemplate, name="samples",
                                   showlegend=False))
    if selected is not None:
        rows = sorted({int(r) for r in selected if 0 <= int(r) < n})
        fig.data[0].update(selectedpoints=rows, selected=dict(marker=dict(opacity=1.0)),
                           unselected=dict(marker=dict(opacity=0.2)))
    fig.update_layout(xaxis_title="UMAP 1", yaxis_title="UMAP 2", dragmode="lasso")
    _layout(fig, title=title, height=height)
    return _legend_below(fig, y=-0.14, bottom=80)
