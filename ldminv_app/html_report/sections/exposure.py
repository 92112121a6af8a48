"""The exposure list of the HTML report: the member images most at risk under the report's attack,
arm and protocol (``ldminv_core.evaluation.exposure``), so a model owner knows which training
images to look at first. Each row: the image (its thumbnail embedded as a PNG ``data:`` URL, with
its file name; the file name alone when the file cannot be read), its rank among the members, its
score, the attacks flagging it at the 1%-FPR threshold and its log-volume."""
from __future__ import annotations

import math
from pathlib import Path

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.exposure import ExposureList, exposure_list
from ldminv_core.formatting import format_count

from ...images import load_thumbnail, png_data_uri
from ..context import ReportContext
from ..markup import esc

__all__ = ["EXPOSURE_ROWS", "report_exposure", "exposure_body"]

#: Members shown in the report's table (the CSV holds them all).
EXPOSURE_ROWS = 20

#: Thumbnail side in pixels.
THUMB = 48


def report_exposure(ctx: ReportContext) -> ExposureList:
    """The exposure list of the report's attack: its masked arm at the report's drop (the
    protocol's default when None) where it can be masked, else the baseline; every attack of the
    run asked whether it flags (the same protocol, no bootstrap: flags need none)."""
    evs = {a: (ctx.ev if a == ctx.attack else Evaluation(ctx.run, a, ctx.ev.protocol, n_boot=0, seed=ctx.seed))
           for a in ctx.run.attacks}
    arm = "masked" if ctx.maskable and ctx.run.has_geometry else "baseline"
    return exposure_list(evs, attack=ctx.attack, arm=arm, drop=ctx.drop)


def _image_cell(path: str) -> str:
    name = esc(Path(path).name)
    thumb = load_thumbnail(path, size=THUMB)
    if thumb is None:
        return f"<td>{name}</td>"
    return (f'<td><img src="{png_data_uri(thumb)}" alt="{name}" width="{thumb.shape[1]}" '
            f'height="{thumb.shape[0]}"><br><span class="note">{name}</span></td>')


def _number(value: float, digits: int) -> str:
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def exposure_body(ctx: ReportContext, *, rows: int = EXPOSURE_ROWS) -> str:
    """The section: what the list ranks by, how many members each attack flags, the table of the
    ``rows`` most exposed members (``#exposure-table``) and the notes of degenerate cases."""
    lst = report_exposure(ctx)
    how = (f"{attack_label(lst.attack)}, {lst.arm} arm"
           + (f" (drop {lst.drop_percent:g} %)" if lst.drop_percent is not None else
              " (drop chosen per fold)" if lst.arm == "masked" else "")
           + (f", t = {lst.t}" if lst.t is not None else ", t chosen per fold" if ctx.maskable else "")
           + f", protocol {lst.protocol}")
    counts = "; ".join(f"{attack_label(a)} {format_count(c, lst.n_members)}" for a, c in lst.flagged_counts.items())
    out = [f'<p>The member images most at risk, most exposed first: ranked by {esc(how)} (rank 1 = the most '
           "member-like score among the members); beside each, the attacks that flag it at the 1%-FPR threshold "
           "and its decoder log-volume. Look at the top images first: they are the ones an attacker would "
           "name as training images.</p>",
           f'<p class="note" id="exposure-counts">Members flagged at 1% FPR: {esc(counts)}. The table shows the '
           f"{min(rows, len(lst.entries))} most exposed of {lst.n_members}; the CSV export holds them all.</p>"]
    head = "".join(f"<th>{h}</th>" for h in ("#", "image", "member rank", "score", "flagged by", "log-volume"))
    body = []
    for i, e in enumerate(lst.top(rows), start=1):
        flagged = ", ".join(attack_label(a) for a in e.flagged_by) or "none"
        body.append(f"<tr><td>{i}</td>{_image_cell(e.path)}<td>{e.rank}</td><td>{esc(_number(e.score, 4))}</td>"
                    f"<td>{esc(flagged)}</td><td>{esc(_number(e.log_volume, 2))}</td></tr>")
    out.append(f'<table class="ldminv" id="exposure-table"><thead><tr>{head}</tr></thead>'
               f'<tbody>{"".join(body)}</tbody></table>')
    if lst.notes:
        out.append(f'<p class="note" id="exposure-notes">{"<br>".join(esc(n) for n in lst.notes)}</p>')
    return "\n".join(out)
