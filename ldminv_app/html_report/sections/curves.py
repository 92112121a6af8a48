"""The curves of the HTML report on all samples (descriptive): AUROC and TPR@1%FPR against the drop
percentage (masked and random at one t) and every metric against the timestep (baseline and
masked), each with its values in a folded table."""
from __future__ import annotations

import pandas as pd

from ldminv_core.evaluation import REPORTED_METRICS
from ldminv_core.formatting import format_percent, format_rate

from ... import figures
from ..context import ReportContext
from ..markup import METRIC_LABELS, figure_row, html_table, not_maskable

__all__ = ["drop_sweep_body", "timesteps_body"]


def drop_sweep_body(ctx: ReportContext) -> str:
    """AUROC and TPR@1%FPR against the drop percentage at ``ctx.t_fig``, and their values."""
    if not ctx.maskable:
        return not_maskable(ctx.attack)
    name, t_fig = ctx.res.protocol.name, ctx.t_fig
    curves = ctx.ev.drop_curves(ctx.t_index)
    series_a = {"masked": curves.masked["auroc"], "random": curves.random_mean["auroc"]}
    series_t = {"masked": curves.masked["tpr_at_1fpr"], "random": curves.random_mean["tpr_at_1fpr"]}
    body = figure_row(
        ctx.fig(figures.metric_vs_drop(curves.percents, series_a, ylabel="AUROC", current=ctx.curve_drop,
                                       title=f"AUROC vs drop percentage, t = {t_fig} ({name})")),
        ctx.fig(figures.metric_vs_drop(curves.percents, series_t, ylabel="TPR@1%FPR", current=ctx.curve_drop,
                                       title=f"TPR@1%FPR vs drop percentage, t = {t_fig} ({name})")),
    )
    sweep_df = pd.DataFrame({"drop %": [f"{p:g}" for p in curves.percents]})
    for m in ("auroc", "tpr_at_1fpr"):
        sweep_df[f"{METRIC_LABELS[m]} (masked)"] = [format_rate(x) for x in curves.masked[m]]
        sweep_df[f"{METRIC_LABELS[m]} (random, mean)"] = [format_rate(x) for x in curves.random_mean[m]]
        sweep_df[f"{METRIC_LABELS[m]} (random, min–max)"] = [
            f"{format_rate(lo)} – {format_rate(hi)}" for lo, hi in zip(curves.random_lo[m], curves.random_hi[m])]
    body += ('<p class="note">On every sample at one t (descriptive, nothing chosen on held-out folds); '
             f"random = mean and range over seeds {', '.join(map(str, curves.seeds))}.</p>")
    return body + "<details><summary>Values</summary>" + html_table(sweep_df, table_id="drop-table") + "</details>"


def timesteps_body(ctx: ReportContext) -> str:
    """Every metric against the timestep (baseline and masked at ``ctx.curve_drop``), and their
    values; the best baseline AUROC named as optimistic."""
    if not ctx.maskable:
        return not_maskable(ctx.attack)
    name, timesteps, t_fig, drop = ctx.res.protocol.name, ctx.timesteps, ctx.t_fig, ctx.curve_drop
    percent = format_percent(drop, sep=" ")
    base_t = ctx.ev.per_t()
    masked_t = ctx.ev.masked_per_t(drop)
    body = figure_row(
        ctx.fig(figures.metric_vs_timestep(timesteps, {"baseline": base_t["auroc"], "masked": masked_t["auroc"]},
                                           ylabel="AUROC", selected_t=t_fig,
                                           title=f"AUROC vs timestep (drop {percent}, {name})")),
        ctx.fig(figures.metric_vs_timestep(timesteps, {"baseline": base_t["tpr_at_1fpr"],
                                                       "masked": masked_t["tpr_at_1fpr"]},
                                           ylabel="TPR@1%FPR", selected_t=t_fig,
                                           title=f"TPR@1%FPR vs timestep (drop {percent}, {name})")),
    )
    t_df = pd.DataFrame({"t": timesteps})
    for label, src in (("baseline", base_t), ("masked", masked_t)):
        for m in REPORTED_METRICS:
            t_df[f"{METRIC_LABELS[m]} ({label})"] = [format_rate(x) for x in src[m]]
    hi = ctx.ev.headline_t_index()
    body += (f'<p class="note">Best baseline AUROC {format_rate(base_t["auroc"][hi])} at t = {timesteps[hi]} on all '
             "samples; choosing t on the evaluation set itself is optimistic (the honest protocol chooses it "
             "on the other folds).</p>")
    return body + "<details><summary>Values</summary>" + html_table(t_df, table_id="timestep-table") + "</details>"
