"""The distortion sections of the HTML report: the log-volume of members and held-out images, the
metrics per distortion quartile (with their low-FPR cautions) and the mean influence heatmap."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ldminv_core.evaluation import ArmResult, below_chance_text
from ldminv_core.evaluation.wording import low_fpr_cautions
from ldminv_core.formatting import format_rate, format_rate_ci

from ... import figures
from ..context import ReportContext
from ..markup import cautions_html, esc, html_table

__all__ = ["log_volume_body", "quartiles_body", "influence_body"]


def log_volume_body(ctx: ReportContext) -> str:
    """The log-volume distribution of members and held-out images and the gap of their means."""
    run = ctx.run
    lv, labels = run.log_volume, run.labels
    gap = lv[labels == 1].mean() - lv[labels == 0].mean() if run.n_members and run.n_heldout else float("nan")
    topk = (run.settings.get("geometry") or {}).get("topk", "k")
    return (ctx.fig(figures.log_volume_distribution(lv, labels))
            + f'<p class="note">Log-volume = sum of the top-{esc(topk)} log singular values of the decoder Jacobian. '
            f"Mean log-volume, members − held-out: {format_rate(gap)}.</p>")


def _quartile_table(ctx: ReportContext, cautions: list[str | None]) -> pd.DataFrame:
    """One row per quartile: size, log-volume range, baseline metrics (⚠ where the TPR@1%FPR has
    too few negatives) and the t they were measured at."""
    res = ctx.res
    qs = res.quartiles
    return pd.DataFrame({
        "quartile": [f"Q{q.q}" for q in qs],
        "n": [q.n for q in qs],
        "members": [q.n_members for q in qs],
        "log-volume range": [f"{format_rate(q.log_volume_min, 3)} .. {format_rate(q.log_volume_max, 3)}"
                             if q.n else "–" for q in qs],
        "AUROC (baseline)": [format_rate(q.auroc)
                             + (" (below chance)" if below_chance_text(q.auroc, q.auroc_ci) else "") for q in qs],
        "AUROC 95% CI": [format_rate_ci(q.auroc_ci) for q in qs],
        "TPR@1%FPR": [format_rate(q.tpr_at_1fpr) + (" ⚠" if cautions[i] else "") for i, q in enumerate(qs)],
        "ASR": [format_rate(q.asr) for q in qs],
        "t": [ArmResult("q", 0, 0, 0, {}, q.best_t).t_text if not ctx.honest else res.baseline.t_text for q in qs],
    })


def quartiles_body(ctx: ReportContext) -> str:
    """The quartiles' AUROC against the timestep, their table and their low-FPR cautions."""
    res = ctx.res
    q_cautions = [low_fpr_cautions(res.protocol, n_members=q.n_members, n_heldout=q.n - q.n_members,
                                   metrics_shown=("tpr_at_1fpr",)).get("tpr_at_1fpr") for q in res.quartiles]
    body = ""
    if ctx.maskable and len(ctx.timesteps) > 1:
        body = ctx.fig(figures.quartile_auroc_vs_timestep(ctx.timesteps, ctx.ev.quartile_per_t(),
                                                          selected_t=ctx.t_fig))
    body += html_table(_quartile_table(ctx, q_cautions), table_id="quartile-table")
    warned = [(f"Q{q.q}", text) for q, text in zip(res.quartiles, q_cautions) if text]
    if warned:
        body += cautions_html({f"⚠ {name} TPR@1%FPR": text for name, text in warned},
                              element_id="quartile-fpr-caution")
    return body + (f'<p class="note">Q1 = least distorted (lowest log-volume), Q4 = most distorted; groups: '
                   f"{esc(res.protocol.settings()['quartiles'])}.</p>")


def influence_body(ctx: ReportContext) -> str:
    """The mean influence over samples as a heatmap per latent channel."""
    mean_inf = np.asarray(ctx.run.influence, dtype=np.float64).mean(axis=0)
    return (ctx.fig(figures.channel_heatmaps(mean_inf, title="Mean influence over samples, ½·log G_ii, per latent "
                                                              "channel"))
            + '<p class="note">Influence of coordinate i = ½·log‖∂D/∂z_i‖²: how much the image moves when z_i moves. '
            "The masked variant drops each sample's own lowest-influence coordinates.</p>")
