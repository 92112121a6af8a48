"""The shift check of the HTML report (METHOD.md section 6): can the files alone, without the
model, tell the folders apart? The blind baseline's verdict in words, its table and chart per
feature group, what its TPR@1%FPR rests on, and what to do when the files alone separate the
folders."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ldminv_core.evaluation import AttackEvaluation, BlindResult, below_chance_text, shift_advice, shift_headline
from ldminv_core.formatting import format_rate, format_rate_ci

from ... import figures
from ..markup import FigureWriter, boot_text, esc, html_table
from ..tables import blind_table

__all__ = ["blind_bars", "shift_body"]


def blind_bars(blind: BlindResult, *, title: str) -> go.Figure:
    """Bars of the blind AUROC per feature group (and all together) with their intervals; a group
    whose interval lies above 0.5 in orange (it separates the folders), below 0.5 in blue."""
    groups = list(blind.groups)
    vals = np.array([g.auroc for g in groups], dtype=np.float64)
    lo = np.array([g.ci["auroc"][0] for g in groups], dtype=np.float64)
    hi = np.array([g.ci["auroc"][1] for g in groups], dtype=np.float64)
    colors = ["#D55E00" if g.verdict == "supported" else "#0072B2" if g.verdict == "contradicted" else "#999999"
              for g in groups]
    fig = go.Figure(go.Bar(
        x=[g.group for g in groups], y=vals, marker_color=colors,
        error_y=dict(type="data", symmetric=False, array=hi - vals, arrayminus=vals - lo),
        text=[f"{v:.3f}" for v in vals], textposition="inside", insidetextanchor="start",
        hovertext=[f"{g.group}: AUROC {g.auroc:.4f} {format_rate_ci(g.ci['auroc'])}, {g.verdict}" for g in groups],
        hoverinfo="text",
    ))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#888888", annotation_text="chance",
                  annotation_position="bottom right")
    fig.update_layout(template=figures.TEMPLATE, title=title, height=340, showlegend=False,
                      xaxis_title="feature group", yaxis_title="blind AUROC (files only)", yaxis_range=[0, 1.05],
                      margin=dict(l=50, r=20, t=60, b=45))
    return fig


def shift_body(res: AttackEvaluation, fig: FigureWriter) -> str:
    """The shift check: the blind baseline's verdict in words, its table and chart per feature
    group, what its TPR@1%FPR rests on, and what to do when the files alone separate the folders."""
    blind = res.blind
    if blind is None or not blind.available:
        text = shift_headline(blind) if blind is not None else "Blind baseline unavailable: it was not evaluated."
        return (f'<div class="shift-box" id="shift-box"><p class="summary" id="shift-headline"><b>{esc(text)}</b>'
                "</p></div>")
    honest = res.protocol.name == "honest"
    klass = "shift-box shifted" if blind.separable else "shift-box"
    out = [f'<div class="{klass}" id="shift-box"><p class="summary" id="shift-headline">'
           f"<b>{esc(shift_headline(blind))}</b></p>"]
    advice = shift_advice(blind)
    if advice:
        out.append(f'<p id="shift-advice"><b>What to do:</b> {esc(advice)}</p>')
    out.append("</div>")
    out.append(f'<p class="note">Blind baseline: {esc(blind.classifier)} on {blind.folds} folds (seed '
               f"{blind.fold_seed}, the honest protocol's); it sees the image files and captions only, never the "
               f"model{esc('; ' + blind.encoder_text if blind.encoder_text else '')}. Measured under the "
               f"{esc(res.protocol.name)} protocol; AUROC intervals: {esc(blind.interval_text)}; other intervals: "
               f"{esc(boot_text(res.n_boot))}.</p>")
    out.append(html_table(blind_table(blind, honest=honest), table_id="blind-table"))
    notes = [f"{g.group}: AUROC {format_rate(g.auroc)} is {text}" for g in blind.groups
             if (text := below_chance_text(g.auroc, g.ci["auroc"]))]
    lf = blind.group("all").low_fpr if blind.group("all") is not None else None
    if lf is not None:
        notes.append(f"TPR@1%FPR: {lf.rests_on()}; beside the bootstrap interval, the exact interval is the "
                     "Clopper-Pearson interval of the flagged count.")
    out += [f'<p class="note" id="blind-notes">{"<br>".join(esc(n) for n in notes)}</p>'] if notes else []
    out.append(fig(blind_bars(blind, title=f"Blind AUROC per feature group ({res.protocol.name})")))
    return "\n".join(out)
