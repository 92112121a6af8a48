"""Metric curves: a metric against the drop percentage (with bootstrap bands) and against the
timestep.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ldminv_core.errors import ShapeError

from .style import VARIANT_COLORS, _add_vline, _color, _layout, _legend_below, _rgba

__all__ = ["metric_vs_drop", "drop_curves_with_bands", "metric_vs_timestep"]


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
