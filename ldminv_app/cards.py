"""Metric and finding cards: verdict badges, interval text, where each arm's number comes from
(protocol, t, drop, interval, low-FPR count) and the bordered card of one finding.
"""
from __future__ import annotations

import streamlit as st

from ldminv_core.evaluation import FINDING_TITLES, below_chance_text, effect_sentence, verdict_words
from ldminv_core.formatting import format_rate, format_rate_ci

__all__ = ["VERDICT_COLORS", "FINDING_LABELS", "METRIC_LABELS", "verdict_badge",
           "arm_t_cell", "arm_drop_cell", "metric_t_text", "arm_metric_caption", "auroc_note",
           "low_fpr_text", "below_chance_captions", "statement_text", "finding_card"]


VERDICT_COLORS = {"supported": "green", "contradicted": "red", "inconclusive": "gray", "undefined": "gray"}


# FINDING_TITLES: the evaluation layer's (ldminv_core.evaluation.wording), shared with the export
FINDING_LABELS = {
    "distortion_quartiles": "AUROC(Q4) − AUROC(Q1)",
    "distortion_quartiles_within_class": "mean within-class AUROC(Q4) − AUROC(Q1)",
    "masking_vs_baseline": "AUROC masked − baseline",
    "masking_vs_random": "AUROC masked − random",
    "blind_baseline": "blind AUROC − 0.5",
    "attack_vs_blind": "attack AUROC − blind AUROC",
    "attack_within_blind_strata": "AUROC within blind strata − 0.5",
}


METRIC_LABELS = {"auroc": "AUROC", "tpr_at_1fpr": "TPR@1%FPR", "asr": "ASR"}


def verdict_badge(verdict: str, *, confounded: bool = False) -> str:
    """Markdown of a coloured verdict badge (supported green, contradicted red, else grey); a
    supported or contradicted verdict that is ``confounded`` (the finding's ``caveat``: the files
    alone separate the folders) is orange: the statistic holds, it is not evidence of membership."""
    color = "orange" if confounded and verdict in ("supported", "contradicted") else VERDICT_COLORS.get(verdict, "gray")
    return f":{color}-badge[{verdict}]"


def _per_fold(values: list, unit: str = "") -> str:
    """"60 in every fold" when the folds agree, else "per fold: 60, 50, 60"."""
    if len(set(values)) == 1:
        return f"{values[0]}{unit} in every fold"
    return "per fold: " + ", ".join(f"{v}" for v in values) + unit


def arm_t_cell(arm) -> str:
    """The t of an ``ArmResult`` in a few words: "t = 60", "t: AUROC 60, TPR 40, ASR 70" (``paper``),
    "t = 60 in every fold" or "t per fold: 60, 50, ..." (``honest``), "no timestep"."""
    if arm.folds:
        ts = [f.t for f in arm.folds]
        if all(t is None for t in ts):
            return "no timestep"
        return "t = " + _per_fold(ts) if len(set(ts)) == 1 else "t " + _per_fold(ts)
    return arm.t_text


def arm_drop_cell(arm) -> str:
    """The drop of an ``ArmResult`` in a few words: "40 %", "55 % in every fold",
    "per fold: 55, 50, 55 %", "–" for the baseline."""
    if not arm.drop_text:
        return "–"
    if arm.drop_percent is not None:
        return arm.drop_text
    return _per_fold([f"{f.drop_percent:g}" for f in arm.folds if f.drop_percent is not None], " %")


def metric_t_text(arm, metric: str) -> str:
    """The t one metric of an ``ArmResult`` is reported at: "t = 60" (``paper``: that metric's own
    best t), the folds' t under ``honest`` (:func:`arm_t_cell`), "no timestep" without one."""
    if arm.folds:
        return arm_t_cell(arm)
    t = arm.best_t.get(metric)
    return "no timestep" if t is None else f"t = {t}"


def arm_metric_caption(arm, metric: str, protocol) -> str:
    """Where one metric card's number comes from: protocol, t (that metric's own under ``paper``),
    drop, 95% interval, and under ``honest`` the realised FPR beside TPR@1%FPR."""
    parts = [f"{protocol.name} · {metric_t_text(arm, metric)}"]
    if arm.drop_text:
        parts.append(f"drop {arm_drop_cell(arm)}")
    parts.append(f"95% CI {format_rate_ci(arm.ci[metric])}")
    if metric == "tpr_at_1fpr" and arm.realised_fpr_at_1fpr is not None:
        parts.append(f"realised FPR {format_rate(arm.realised_fpr_at_1fpr)}")
    if metric == "tpr_at_1fpr" and getattr(arm, "low_fpr", None) is not None:
        parts.append(low_fpr_text(arm.low_fpr))
    if metric == "auroc" and auroc_note(arm):
        parts.append(f":material/warning: AUROC {auroc_note(arm)}")
    return " · ".join(parts)


def auroc_note(arm) -> str | None:
    """For an arm (or blind group) whose AUROC interval lies below 0.5, what that means
    (``below_chance_text``: shift or swapped folders, not a weak attack); None otherwise."""
    return below_chance_text(arm.auroc, arm.ci["auroc"]) if getattr(arm, "below_chance", False) else None


def low_fpr_text(low) -> str:
    """What a TPR@1%FPR rests on and its exact interval, from a ``LowFprCount``: "1% FPR = 3 of 300
    held-out images · exact 95% CI [0.0120, 0.0800] (Clopper-Pearson, 12 of 300 members)"."""
    pos = "held-out images" if low.positive_class == "heldout" else "members"
    return (f"{low.rests_on()} · exact {low.level:.0%} CI {format_rate_ci(low.exact_ci)} "
            f"(Clopper-Pearson, {low.true_positives} of {low.n_positives} {pos})")


def below_chance_captions(named_arms) -> list[str]:
    """One line per (name, arm) pair whose AUROC lies below chance, for beside a table or a chart
    that shows the AUROC as a plain number: "baseline: AUROC 0.3450, below chance (95% CI ...): ..."."""
    return [f":material/warning: **{name}**: AUROC {format_rate(arm.auroc)}, {auroc_note(arm)}."
            for name, arm in named_arms if auroc_note(arm)]


def statement_text(finding) -> str:
    """A finding's statement without its shift caveat at the end (the pages show the caveat
    on its own, as a warning)."""
    caveat = getattr(finding, "caveat", "")
    text = finding.statement
    return text[: -len(caveat)].rstrip() if caveat and text.endswith(caveat) else text


def finding_card(finding, *, chart=None, chart_key: str | None = None, note: str | None = None,
                 table=None, table_key: str | None = None, table_config: dict | None = None,
                 n_boot: int | None = None) -> None:
    """One finding in a bordered card: question, verdict badge (a tiny effect named as such),
    estimate with its interval (and its ``n_boot`` bootstrap replicates when given), the statement
    computed from the data, its shift caveat as a warning when it has one (the badge then orange,
    the verdict words "... not separable from the folders' difference"), an optional note
    (caption), an optional plotly chart and an optional small table (a DataFrame or dict of columns)."""
    confounded = bool(getattr(finding, "caveat", ""))
    # a supported blind baseline is a warning (the folders differ without the model), not good news
    alarm = confounded or (finding.id == "blind_baseline" and finding.verdict == "supported")
    with st.container(border=True):
        words = verdict_words(finding.verdict, finding.estimate, metric=finding.metric, confounded=confounded)
        st.markdown(f"**{FINDING_TITLES.get(finding.id, finding.id)}** "
                    f"{verdict_badge(finding.verdict, confounded=alarm)}"
                    + (f" *{words[len(finding.verdict):].strip()}*" if words != finding.verdict else ""))
        est = "–" if finding.estimate != finding.estimate else f"{finding.estimate:+.4f}"
        label = FINDING_LABELS.get(finding.id, finding.metric)
        st.markdown(f"{label}: **{est}**, 95% CI {format_rate_ci(finding.ci, signed=True)}"
                    + (f" ({n_boot} bootstrap replicates)" if n_boot else ""))
        size = effect_sentence(finding)
        if size:
            st.caption(size)
        for sec in finding.secondary:
            s_est = "–" if sec["estimate"] != sec["estimate"] else f"{sec['estimate']:+.4f}"
            name = METRIC_LABELS.get(sec["metric"], sec["metric"])
            st.caption(f"{name} difference: {s_est}, 95% CI {format_rate_ci(sec['ci'], signed=True)}, {sec['verdict']}")
        st.write(statement_text(finding))
        if confounded:
            st.warning(finding.caveat, icon=":material/warning:")
        if note:
            st.caption(note)
        if chart is not None:
            from . import figures

            st.plotly_chart(chart, key=chart_key, config=figures.plotly_config(chart_key))
        if table is not None:
            st.dataframe(table, hide_index=True, key=table_key, column_config=table_config)
