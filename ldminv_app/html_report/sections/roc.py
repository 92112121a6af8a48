"""The ROC curves of the HTML report: linear and log-log, under the protocol's convention, every
arm's legend with the evaluation layer's AUROC, the random control for its first seed, the blind
baseline dashed beside the attack's."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from ldminv_core.evaluation import ArmResult, BlindResult, Protocol, convention_roc
from ldminv_core.formatting import format_rate, format_rate_ci
from ldminv_core.runs import Run

from ... import figures
from ..context import ReportContext
from ..markup import BLIND_CURVE_LABEL, RANDOM_CURVE_LABEL, FigureWriter, esc, figure_row

__all__ = ["roc_figures", "roc_body"]


def roc_figures(curves_scores: dict[str, np.ndarray], arms: dict[str, ArmResult], run: Run, protocol: Protocol,
                 fig: FigureWriter, note: str, blind: BlindResult | None = None) -> str:
    """ROC curves of the arms under the protocol's convention (``paper``: held-out positive). Each
    legend's AUROC is the evaluation layer's number of that arm; the random control is drawn for
    its first seed, labelled so, with that seed's AUROC (the metrics table's random row is the mean
    over seeds; the per-seed table lists each). With an available ``blind`` baseline, its curve (all
    feature groups, out-of-fold scores) is drawn dashed, with its AUROC.

    ``curves_scores``: arm -> scores (N,) in run order, higher = member; ``arms``: arm ->
    :class:`~ldminv_core.evaluation.ArmResult`; ``note``: what the titles say of the t."""
    labels = run.labels
    curves, aurocs, names = {}, {}, {}
    blind_all = blind.group("all") if blind is not None and blind.available else None
    for name, s in curves_scores.items():
        c = convention_roc(s, labels, protocol)
        curves[name] = (c.fpr, c.tpr)
        arm = arms[name]
        if name == "random":
            aurocs[name] = arm.per_seed["auroc"][0]
            names[name] = RANDOM_CURVE_LABEL.format(seed=arm.seeds[0])
        else:
            aurocs[name] = arm.auroc
    if blind_all is not None and "all" in blind.scores:
        c = convention_roc(blind.scores["all"], labels, protocol)
        curves["blind"] = (c.fpr, c.tpr)
        aurocs["blind"] = blind_all.auroc
        names["blind"] = BLIND_CURVE_LABEL
    if protocol.positive_class == "heldout":
        axes = dict(xlabel="false-positive rate (members)", ylabel="true-positive rate (held-out)")
        n_neg, n_pos = run.n_members, run.n_heldout
    else:
        axes = dict(xlabel="false-positive rate (held-out)", ylabel="true-positive rate (members)")
        n_neg, n_pos = run.n_heldout, run.n_members
    def dashed(f: go.Figure) -> go.Figure:
        if "blind" in curves:
            f.update_traces(line_dash="dash", selector=lambda t: str(t.name).startswith(BLIND_CURVE_LABEL))
        return f

    body = figure_row(
        fig(dashed(figures.roc_curves(curves, aurocs=aurocs, labels=names, title=f"ROC ({note})", **axes))),
        fig(dashed(figures.roc_curves(curves, aurocs=aurocs, labels=names, log_scale=True, n_negatives=n_neg,
                                      n_positives=n_pos, title=f"ROC, log-log ({note})", **axes))),
    )
    text = (f"The log-log axes start at the smallest rates the data resolve: FPR 1/{n_neg}, TPR 1/{n_pos}.")
    if "blind" in curves:
        lo, hi = blind_all.ci["auroc"]
        text = (f"Dashed: the blind baseline (all feature groups; out-of-fold scores of a classifier that sees the "
                f"files only, never the model), AUROC {format_rate(blind_all.auroc)} {format_rate_ci((lo, hi))}: "
                "where the attack's curve runs close to it, the files alone explain the attack's separation. " + text)
    if "random" in arms and "random" in curves:
        rand = arms["random"]
        text = (f"The random curve is seed {rand.seeds[0]} alone (AUROC {format_rate(rand.per_seed['auroc'][0])}); the "
                f"metrics table's random row is the mean over seeds {', '.join(map(str, rand.seeds))} "
                f"(AUROC {format_rate(rand.auroc)}), each seed listed below the table. " + text)
    return body + f'<p class="note" id="roc-note">{esc(text)}</p>'


def roc_body(ctx: ReportContext) -> str:
    """The ROC section's body (``ctx.arms`` and ``ctx.roc_scores`` collected): under ``paper`` the
    curves are at each arm's AUROC t (each metric has its own)."""
    res, arms = ctx.res, ctx.arms
    if res.protocol.name == "paper" and ctx.maskable:
        note = "AUROC's t: " + ", ".join(f"{a.arm} {a.best_t['auroc']}" for a in arms)
    else:
        note = res.baseline.t_text + (", pooled calibrated out-of-fold scores" if ctx.honest else "")
    return roc_figures(ctx.roc_scores, {a.arm: a for a in arms}, ctx.run, res.protocol, ctx.fig, note,
                       blind=res.blind)
