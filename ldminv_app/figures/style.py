"""The look every figure shares: template, colour-blind-safe colours of splits and arms, axis
labels, the plotly toolbar config, coordinate and split labels, and the small layout helpers.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

from ldminv_core.errors import ShapeError, UnknownNameError

__all__ = ["TEMPLATE", "SPLIT_COLORS", "VARIANT_COLORS", "COLUMN_LABELS", "PLOTLY_CONFIG",
           "plotly_config", "coord_label", "split_label", "TOOLBAR_STRIP"]


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


def _set_template(fig: go.Figure) -> None:
    """Give ``fig`` the registered :data:`TEMPLATE` without validating it again: validation
    deep-copies the whole template (20-35 ms a figure, most of a chart's build time); the
    registered template is valid, and the figure's JSON is the same."""
    layout = fig.layout
    validate = layout._validate
    layout._validate = False
    try:
        layout.template = pio.templates[TEMPLATE]
    finally:
        layout._validate = validate


def _layout(fig: go.Figure, *, title: str | None, height: int) -> go.Figure:
    _set_template(fig)
    fig.update_layout(
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
    if row is None:
        # the shape and annotation ``add_vline`` writes on a one-plot figure (the same JSON), without
        # its search of the subplot grid (a quarter of the cost)
        fig.add_shape(type="line", x0=float(x), x1=float(x), xref="x", y0=0, y1=1, yref="y domain",
                      line=dict(color="#555555", dash="dot"))
        fig.add_annotation(showarrow=False, text=text, x=float(x), xanchor="center", xref="x", y=1,
                           yanchor="bottom", yref="y domain")
        return
    fig.add_vline(x=float(x), line_dash="dot", line_color="#555555", annotation_text=text,
                  annotation_position="top", row=row, col=col)
