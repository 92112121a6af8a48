"""Bar charts: every attack's AUROC side by side, and the blind baseline's AUROC per feature
group.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ldminv_core.errors import ShapeError

from .style import _layout

__all__ = ["attack_overview", "BLIND_VERDICT_COLORS", "blind_group_aurocs"]


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
