"""The findings of the HTML report: a one-line summary, the protocol, the findings table (each
finding under its title, its estimate, interval, verdict and statement; a finding on folders the
files alone separate says so), the quartile and drop charts and the classes' quartile AUROCs."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import (AttackEvaluation, Evaluation, effect_sentence, finding_title, findings_summary,
                                    tiny_note, verdict_words)
from ldminv_core.formatting import format_rate, format_rate_ci, format_signed

from ... import figures
from ..markup import CI_LEVEL, FigureWriter, boot_text, esc, figure_row, html_table

__all__ = ["findings_table", "findings_body"]


def findings_table(res: AttackEvaluation) -> str:
    """The findings as a table: each under its title (the id beneath, small), its estimate, interval,
    verdict (a tiny effect named as such) and the statement of the evaluation layer."""
    level = int(CI_LEVEL * 100)
    head = (f"<tr><th>finding</th><th>estimate</th><th>{level}% CI</th><th>verdict</th>"
            "<th>statement</th></tr>")
    rows = []
    for f in res.findings:
        est = format_signed(f.estimate)
        statement = f.statement
        if f.caveat and statement.endswith(f.caveat):  # the caveat gets its own line in the cell
            statement = statement[: -len(f.caveat)].rstrip()
        caveat = f'<span class="caveat">⚠ {esc(f.caveat)}</span>' if f.caveat else ""
        klass = ' class="confounded"' if f.confounded else ""
        rows.append(
            f'<tr data-finding="{esc(f.id)}"{klass}>'
            f'<td><span class="finding-title">{esc(finding_title(f.id))}</span>'
            f'<span class="finding-id">{esc(f.id)}</span></td><td>{est}</td><td>{esc(format_rate_ci(f.ci))}</td>'
            f"<td>{esc(verdict_words(f.verdict, f.estimate, metric=f.metric, confounded=f.confounded))}</td>"
            f"<td>{esc(statement)}{caveat}</td></tr>"
        )
    return ('<table class="ldminv" id="findings-table">\n<thead>' + head + "</thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>")


def findings_body(res: AttackEvaluation, ev: Evaluation, fig: FigureWriter, drop: float | None) -> str:
    """The findings section: summary, protocol line, findings table, the tiny-effect note, the
    quartile chart and (maskable attacks) the drop curves with bands at ``drop``, the classes."""
    proto = res.protocol
    context = f"the {proto.name} protocol, {attack_label(res.attack)} ({res.baseline.t_text})"
    summary = findings_summary(res.findings, context=context)
    out = [f'<p class="summary" id="findings-summary"><b>{esc(summary)}</b></p>',
           f'<p class="lead" id="protocol-line">Protocol <b>{esc(proto.name)}</b>: {esc(proto.description)}. '
           f"TPR@1%FPR = {esc(proto.tpr_rule)}. Intervals: {esc(boot_text(res.n_boot, paired=True))}.</p>",
           findings_table(res)]
    if any(effect_sentence(f) for f in res.findings):
        out.append(f'<p class="note" id="tiny-note">{esc(tiny_note())}</p>')
    charts = [fig(figures.quartile_auroc_bars(
        np.array([q.auroc for q in res.quartiles]), ci=[q.auroc_ci for q in res.quartiles],
        edges=np.array([res.quartiles[0].log_volume_min] + [q.log_volume_max for q in res.quartiles]),
        counts=np.array([q.n for q in res.quartiles]),
        title=f"{attack_label(res.attack)} baseline AUROC by distortion quartile ({proto.name})",
    ))]
    if res.maskable:
        curves = ev.drop_curves(ev.headline_t_index())
        charts.append(fig(figures.drop_curves_with_bands(
            curves.percents, masked=curves.masked["auroc"],
            masked_band=(curves.masked_lo["auroc"], curves.masked_hi["auroc"]),
            random_mean=curves.random_mean["auroc"], random_band=(curves.random_lo["auroc"], curves.random_hi["auroc"]),
            baseline=curves.baseline["auroc"], baseline_ci=curves.baseline_ci["auroc"], n_seeds=len(curves.seeds),
            n_boot=curves.n_boot,
            current=drop, title=f"AUROC vs drop %, t = {curves.t} (all samples, {proto.name})",
        )))
    out.append(figure_row(*charts))
    if res.classes:
        cdf = pd.DataFrame([{"class": c.label, "n": c.n, "members": c.n_members,
                             **{f"Q{i + 1}": format_rate(v, 3) for i, v in enumerate(c.aurocs)},
                             "Q4 − Q1": format_rate(c.difference, 3)} for c in res.classes])
        out.append("<details><summary>Quartile AUROC within each class</summary>"
                   + html_table(cdf, table_id="class-table") + "</details>")
    return "\n".join(out)
