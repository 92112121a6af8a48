"""The agreement section of the HTML report (METHOD.md section 7): for every attack of the run
under the report's protocol, the samples each flags at the 1%-FPR threshold, the Jaccard index of
those sets and the Spearman correlation of the scores per pair, and who flags whom (file names:
each flagged image's thumbnail embedded as a PNG ``data:`` URL beside its file name, as the
exposure list embeds them; the file name alone when the file cannot be read). The numbers are :func:`ldminv_core.evaluation.agreement`'s, with the
report's seed and bootstrap replicates, the report's attack evaluated by its own evaluation."""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from ldminv_core.evaluation import agreement

from ...agreement_tables import counts_table, flag_words, pair_table, who_flags_table
from ..context import ReportContext
from ...images import load_thumbnail, png_data_uri
from ..markup import esc, html_table

__all__ = ["agreement_body", "WHO_FLAGS_LIMIT"]

#: Rows of the who-flags-whom table in the export (the samples flagged by most attacks first).
WHO_FLAGS_LIMIT = 200
#: Thumbnail side in pixels.
THUMB = 48


def _file_cell(path: str) -> str:
    """The thumbnail (when the file reads) and the file name."""
    name = esc(Path(path).name)
    thumb = load_thumbnail(path, size=THUMB)
    if thumb is None:
        return f"<td>{name}</td>"
    return (f'<td><img src="{png_data_uri(thumb)}" alt="{name}" width="{thumb.shape[1]}" '
            f'height="{thumb.shape[0]}"><br><span class="note">{name}</span></td>')


def _who_table(who: pd.DataFrame) -> str:
    """The who-flags-whom rows as ``table#who-flags-table``, the file column with thumbnails."""
    columns = [c for c in who.columns if c != "path"]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    rows = "".join("<tr>" + "".join(_file_cell(r["path"]) if c == "file" else f"<td>{esc(r[c])}</td>"
                                    for c in columns) + "</tr>" for _, r in who.iterrows())
    return (f'<table border="0" class="dataframe ldminv" id="who-flags-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def agreement_body(ctx: ReportContext) -> str:
    """The counts table (``agreement-counts-table``), the pairs (``agreement-table``) and who flags
    whom (``who-flags-table``); a note instead when the run holds one attack."""
    if len(ctx.run.attacks) < 2:
        return f'<p class="note">The run holds one attack ({esc(ctx.attack)}): no agreement to show.</p>'
    with warnings.catch_warnings():  # the degenerate cases are written below the tables
        warnings.simplefilter("ignore", RuntimeWarning)
        ag = agreement(ctx.run, ctx.ev.protocol, n_boot=ctx.n_boot, level=ctx.ev.level, seed=ctx.seed,
                       evaluations={ctx.attack: ctx.ev})
    who = who_flags_table(ag, limit=WHO_FLAGS_LIMIT)
    flagged = len(ag.flagged_samples())
    parts = [f'<p class="note">{esc(flag_words(ag))}</p>',
             html_table(counts_table(ag), table_id="agreement-counts-table"),
             html_table(pair_table(ag), table_id="agreement-table"),
             f"<p>Who flags whom: {flagged} of {len(ag.samples)} samples flagged by at least one attack, "
             "most flags first" + (f" (first {WHO_FLAGS_LIMIT} shown)" if flagged > WHO_FLAGS_LIMIT else "")
             + ".</p>",
             _who_table(who)]
    parts += [f'<p class="note">{esc(w)}</p>' for w in ag.warnings]
    return "\n".join(parts)
