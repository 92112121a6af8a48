"""The HTML pieces of the export: the sections' ids and headings, the style sheet, escaping, a
table, a key-value table, a section, a row of figures, figures with plotly.js inlined once, and
the recurring notes (how the intervals were made, low-FPR cautions, an attack that cannot be
masked). Numbers are written with :mod:`ldminv_core.formatting`.
"""
from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from ldminv_core.choices import attack_label

from .. import figures

__all__ = ["CI_LEVEL", "SECTIONS", "METRIC_LABELS", "RANDOM_CURVE_LABEL", "BLIND_CURVE_LABEL", "CSS", "FigureWriter",
           "esc", "html_table", "kv_table", "section", "figure_row", "boot_text", "cautions_html", "not_maskable"]

#: Level of every interval of the export.
CI_LEVEL = 0.95

#: Sections of the HTML report: element id -> heading, in document order.
SECTIONS: dict[str, str] = {
    "shift": "Shift check: membership or distribution shift?",
    "findings": "Findings",
    "run-settings": "Run settings",
    "figure-settings": "Settings",
    "metrics": "Metrics",
    "roc": "ROC curves",
    "drop-sweep": "AUROC and TPR@1%FPR vs drop percentage",
    "timesteps": "Metrics vs timestep",
    "log-volume": "Log-volume: members vs held-out",
    "quartiles": "AUROC by distortion quartile",
    "influence": "Mean influence heatmap",
    "agreement": "Agreement between attacks",
    "exposure": "Exposure list: the members most at risk",
    "report-json": "Report JSON",
}

#: The ROC curve of the random control is drawn for one seed (the first); its legend says so.
RANDOM_CURVE_LABEL = "random, seed {seed}"

#: Legend of the blind baseline's ROC curve (all feature groups, out-of-fold scores), drawn dashed.
BLIND_CURVE_LABEL = "blind baseline (files only, no model)"

#: Each metric as the tables' headers name it.
METRIC_LABELS = {"auroc": "AUROC", "tpr_at_1fpr": "TPR@1%FPR", "tpr_at_01fpr": "TPR@0.1%FPR", "asr": "ASR"}


CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem 2rem 4rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; }
h2 { font-size: 1.3rem; margin-top: 2.4rem; border-bottom: 1px solid #ddd; padding-bottom: .25rem; }
.lead { color: #555; margin-top: 0; }
nav ol { columns: 2; color: #444; }
table.ldminv { border-collapse: collapse; font-size: .9rem; margin: .6rem 0 1rem; }
table.ldminv th, table.ldminv td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left;
                                   vertical-align: top; }
table.ldminv th { background: #f5f5f5; }
table.ldminv td.num, table.ldminv td:not(:first-child) { font-variant-numeric: tabular-nums; }
.row { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1rem; }
@media (max-width: 900px) { .row { grid-template-columns: minmax(0, 1fr); } }
.figure { margin: .5rem 0; }
.note { color: #666; font-size: .9rem; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .8rem; overflow-x: auto; font-size: .8rem; }
details > summary { cursor: pointer; color: #335; margin: .4rem 0; }
.finding-title { font-weight: 600; }
#findings-table td:nth-child(2), #findings-table td:nth-child(3), #findings-table td:nth-child(4) { white-space: nowrap; }
.finding-id { display: block; color: #888; font-size: .75rem; font-family: monospace; }
.summary { font-size: 1.05rem; margin: .6rem 0; }
#findings-table tr.confounded td:nth-child(4) { white-space: normal; min-width: 11rem; }
.caveat { display: block; margin-top: .3rem; color: #8a4b00; }
.shift-box { border-left: 4px solid #bbb; padding: .2rem .9rem; background: #fafafa; }
.shift-box.shifted { border-left-color: #D55E00; background: #fff6ef; }
a.download { display: inline-block; padding: .35rem .8rem; border: 1px solid #0072B2; border-radius: .3rem;
             color: #0072B2; text-decoration: none; }
"""


class FigureWriter:
    """Turns plotly figures into HTML divs; plotly.js is inlined with the first one only."""

    def __init__(self) -> None:
        self._count = 0

    def __call__(self, fig: go.Figure) -> str:
        """The figure as ``<div class="figure">`` (its layout height, full width, responsive)."""
        height = fig.layout.height or 420
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=self._count == 0,
            default_width="100%",
            default_height=f"{int(height)}px",
            config={**figures.PLOTLY_CONFIG, "responsive": True},  # the toolbar's PNG download works offline
        )
        self._count += 1
        return f'<div class="figure">{div}</div>'


def esc(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def html_table(df: pd.DataFrame, *, table_id: str, index: bool = False) -> str:
    """``df`` as an escaped HTML table with id ``table_id`` (missing values "–")."""
    return df.to_html(index=index, table_id=table_id, classes="ldminv", border=0, escape=True, na_rep="–")


def kv_table(rows: Sequence[tuple[str, Any]], *, table_id: str) -> str:
    """(setting, value) rows as a two-column table (None reads "–")."""
    df = pd.DataFrame([(k, "–" if v is None else str(v)) for k, v in rows], columns=["setting", "value"])
    return html_table(df, table_id=table_id)


def section(sid: str, body: str) -> str:
    """The section ``sid`` (a key of :data:`SECTIONS`) with its heading and ``body``."""
    return f'<section id="{sid}">\n<h2>{esc(SECTIONS[sid])}</h2>\n{body}\n</section>'


def figure_row(*parts: str) -> str:
    """Figures side by side (two columns; one on narrow screens)."""
    return '<div class="row">' + "".join(parts) + "</div>"


def boot_text(n_boot: int, *, paired: bool = False) -> str:
    """How the intervals were made, in words: "95% CI, 1000 stratified bootstrap replicates"."""
    if not n_boot:
        return "none (no bootstrap replicates)"
    return (f"{int(CI_LEVEL * 100)}% CI, {n_boot} {'paired ' if paired else ''}stratified bootstrap replicates")


def cautions_html(cautions: dict[str, str], *, element_id: str) -> str:
    """The low-FPR cautions as one note (nothing when there is none)."""
    if not cautions:
        return ""
    items = "<br>".join(f"<b>{esc(METRIC_LABELS.get(m, m))}</b>: {esc(text)}" for m, text in cautions.items())
    return f'<p class="note caution" id="{element_id}">{items}</p>'


def not_maskable(attack: str) -> str:
    """The note standing for a section an attack with one score per sample cannot have."""
    return (f'<p class="note">{esc(attack_label(attack))} gives one score per sample: it has no timestep axis and no '
            "per-coordinate terms, so it cannot be masked.</p>")
