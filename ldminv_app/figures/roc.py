"""ROC curves (linear or log false-positive axis, thinned to a number of points) and their tick
helpers.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ldminv_core.errors import LdminvError, ShapeError

from .style import _color, _layout

__all__ = ["thin_curve", "log_ticks", "rate_tick_text", "roc_curves"]


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
    _roc_axes(fig, log_scale=log_scale, x_min=x_min, y_min=y_min)
    fig.update_layout(xaxis_title=xlabel, yaxis_title=ylabel)
    _layout(fig, title=title or ("ROC (log-log)" if log_scale else "ROC"), height=height)
    fig.update_layout(legend=dict(orientation="v", yanchor="bottom", y=0.02, xanchor="right", x=0.99,
                                  bgcolor="rgba(255, 255, 255, 0.85)", bordercolor="#dddddd", borderwidth=1))
    return fig


def _roc_axes(fig: go.Figure, *, log_scale: bool, x_min: float, y_min: float) -> None:
    """Log axes from the smallest resolvable rates with plain tick labels and the 1% FPR line, or
    linear unit axes."""
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
