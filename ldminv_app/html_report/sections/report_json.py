"""The report-JSON section of the HTML report: a link that saves the report JSON of ``python -m
ldminv_core report RUN --json`` for this attack, embedded as a ``data:`` URL (not printed)."""
from __future__ import annotations

import base64
import json

from ldminv_core.formatting import format_percent
from ldminv_core.report import report_from_results

from ..context import ReportContext
from ..filenames import report_json_filename
from ..markup import esc

__all__ = ["report_json_body"]


def report_json_body(ctx: ReportContext) -> str:
    """The link (``a#report-json-link``) and a note of the settings it was made with."""
    drop, res = ctx.drop, ctx.res
    report = report_from_results(ctx.run, {ctx.attack: res}, drop=drop)
    payload = base64.b64encode(json.dumps(report, indent=2).encode("utf-8")).decode("ascii")
    json_name = report_json_filename(ctx.run, ctx.attack)
    drop_text = "chosen per fold" if drop is None else format_percent(drop, sep=" ")
    return (f'<p><a class="download" id="report-json-link" download="{esc(json_name)}" '
            f'href="data:application/json;base64,{payload}">Save {esc(json_name)}</a></p>'
            '<p class="note">The report of <code>python -m ldminv_core report RUN --json</code> for this attack '
            f"(protocol {esc(res.protocol.name)}, drop {drop_text}, "
            f"seed {ctx.seed}, {ctx.n_boot} bootstrap replicates), embedded in this file: the link saves it.</p>")
