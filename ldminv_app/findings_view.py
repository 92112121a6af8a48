"""The Findings page's sections: the shift check (the blind baseline: can the files alone tell the
folders apart?), the selected attack's headline numbers and ROC curve, one card per finding, every
attack's verdicts and every attack's baseline side by side. Every number comes from the cached
``Evaluation`` objects; the ROC points from the evaluation layer (:mod:`ldminv_app.roc_view`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.formatting import format_rate_ci
from ldminv_core.evaluation import (BLIND_GROUP_WORDS, finding_title, fpr_support, shift_advice, shift_headline,
                                    tiny_note, verdict_words)

from . import cache, figure_memo, figures, state, widgets
from .banners import pending_text
from .blind import BLIND_CURVE, blind_result
from .cards import (arm_metric_caption, arm_t_cell, auroc_note, below_chance_captions, finding_card,
                    low_fpr_text, metric_t_text)
from .roc_view import baseline_curves
from .timestep_text import headline_t_caption

if TYPE_CHECKING:
    from ldminv_core.evaluation import Evaluation
    from ldminv_core.runs import Run

#: Points per drawn ROC curve (thinned along the curve: a curve has up to N + 1).
ROC_POINTS = 200

__all__ = ["SEPARABLE_WORDS", "ROC_POINTS", "FindingsPage", "load", "shift_check", "headline", "headline_metrics", "headline_roc",
           "finding_cards", "findings_job", "every_attack_job", "every_attack_table", "attack_overview",
           "EVERY_ATTACK_TAB", "AGREEMENT_TAB", "EXPOSURE_TAB", "MORE_TABS_KEY", "more_tabs"]

#: A blind group's verdict (of AUROC - 0.5) said of the folders.
SEPARABLE_WORDS = {"supported": "separable without the model (interval above 0.5)",
                   "contradicted": "below chance (interval below 0.5)",
                   "inconclusive": "not separable (interval contains 0.5)", "undefined": "undefined"}


@dataclass(frozen=True)
class FindingsPage:
    """What the page shows, read once: the run, the attack, its cached ``Evaluation`` (the sidebar's
    protocol), the blind baseline and the attack's result (None while a partial run lacks geometry)."""

    run: Run
    attack: str
    ev: Evaluation
    blind: object
    res: object

    @property
    def proto(self):
        return self.ev.protocol

    @property
    def honest(self) -> bool:
        return self.ev.protocol.name == "honest"

    @property
    def base(self):
        return self.ev.baseline()


def load(run: Run, attack: str, ev: Evaluation) -> FindingsPage:
    """Read the page's parts from ``ev`` (the blind baseline first: the findings ask for it too)."""
    blind = blind_result(ev)
    return FindingsPage(run, attack, ev, blind, ev.result() if run.has_geometry else None)


def findings_job(run: Run, attack: str, ev: Evaluation) -> tuple[tuple, object]:
    """(key, callable) of :func:`load`'s page (the blind baseline, then the attack's result and the
    drop curve its cards draw), for :func:`ldminv_app.lazy.section`: computed off the page when it is
    not ready, so the headline numbers never wait for it."""
    key = ("findings", *cache.run_key(run.path), attack, ev.protocol.name, ev.protocol.folds, ev.n_boot,
           bool(run.has_geometry))

    def compute() -> FindingsPage:
        blind = ev.blind()
        res = ev.result() if run.has_geometry else None
        if res is not None and res.maskable:
            ev.drop_curves(ev.headline_t_index())
        return FindingsPage(run, attack, ev, blind, res)
    return key, compute


def shift_check(p: FindingsPage) -> None:
    """The shift check: can the files alone, without the model, tell the two folders apart?"""
    proto, blind = p.proto, p.blind
    with st.container(border=True, key="shift_check"):
        st.markdown("#### :material/compare: Shift check: membership or distribution shift?")
        if blind.finding is not None and blind.finding.verdict in ("supported", "contradicted"):
            st.warning(shift_headline(blind), icon=":material/warning:")  # separable, or the wrong way round
        else:
            st.info(shift_headline(blind), icon=":material/info:")
        if blind.available:
            groups = list(blind.groups)
            everything = blind.group("all")
            chart_col, num_col = st.columns([3, 2])
            chart_col.plotly_chart(
                figure_memo.figure(
                    figures.blind_group_aurocs, [g.group for g in groups], auroc=[g.auroc for g in groups], ci=[g.ci["auroc"] for g in groups],
                    verdicts=[g.verdict for g in groups], n_features=[g.n_features for g in groups],
                    height=380,
                    title=f"Blind AUROC per feature group ({proto.name} protocol)<br><sup>files only, never the "
                          "model; error bars: 95% CI; vermillion: the group alone separates the folders</sup>"),
                key="findings_blind_groups", config=figures.plotly_config("ldminv-blind-baseline"),
            )
            with num_col:
                st.metric("Blind AUROC (all groups)", f"{everything.auroc:.4f}",
                          help=f"{proto.name} protocol; out-of-fold scores of {blind.classifier}")
                below_note = auroc_note(everything)
                st.caption(f"95% CI {format_rate_ci(everything.ci['auroc'])} · "
                           + SEPARABLE_WORDS.get(everything.verdict, everything.verdict)
                           + (f" · :material/warning: {below_note}" if below_note else ""))
                st.metric("Blind TPR@1%FPR (all groups)", f"{everything.tpr_at_1fpr:.4f}", help=proto.tpr_rule)
                st.caption(f"95% CI {format_rate_ci(everything.ci['tpr_at_1fpr'])} (bootstrap)"
                           + (f" · realised FPR {everything.realised_fpr_at_1fpr:.4f}"
                              if everything.realised_fpr_at_1fpr is not None else "")
                           + (f" · {low_fpr_text(everything.low_fpr)}" if everything.low_fpr else ""))
                st.caption(f"Classifier: {blind.classifier} on {blind.folds} seeded stratified folds (seed "
                           f"{blind.fold_seed}, the honest protocol's): every image is scored by a classifier that "
                           "never saw it, and none sees the model. Intervals: " + blind.interval_text + "."
                           + (f" The {blind.encoder_text}." if blind.encoder_text else ""))
            advice = shift_advice(blind)
            if advice:
                st.markdown(f"**What to do.** {advice}")
            box = st.expander("Every feature group: numbers and strongest features", key="findings_blind_groups_box",
                              on_change="rerun")
            if box.open:  # its table is drawn only while it is open
                with box:
                    _blind_groups_table(groups)


def _blind_groups_table(groups: list) -> None:
    """Every feature group of the blind baseline: its numbers and strongest features."""
    st.dataframe(pd.DataFrame([{
        "group": g.group, "what it sees": BLIND_GROUP_WORDS.get(g.group, g.group),
        "features": g.n_features, "AUROC": g.auroc,
        "AUROC interval": format_rate_ci(g.ci["auroc"]), "TPR@1%FPR": g.tpr_at_1fpr,
        "TPR interval (bootstrap)": format_rate_ci(g.ci["tpr_at_1fpr"]),
        "TPR exact interval": format_rate_ci(g.low_fpr.exact_ci) if g.low_fpr else "–",
        "the folders": SEPARABLE_WORDS.get(g.verdict, g.verdict),
        "strongest features": ", ".join(f"{name.split(':', 1)[-1]} ({w:+.2f})"
                                        for name, w in g.top_features[:3]) or "–",
    } for g in groups]), hide_index=True, key="findings_blind_table",
        column_config={m: st.column_config.NumberColumn(m, format="%.4f") for m in ("AUROC", "TPR@1%FPR")})
    st.caption("Intervals: 95%, the protocol's bootstrap; exact: Clopper-Pearson of the count behind the "
               "TPR. Strongest features: standardised coefficients of the group's classifier fitted on "
               "every image (descriptive); positive = higher values look like members.")


def headline_metrics(run: Run, attack: str, ev: Evaluation):
    """The selected attack's baseline numbers (no geometry, no blind baseline needed: drawn first);
    returns the column the ROC curve goes in (:func:`headline_roc`)."""
    proto, honest, base = ev.protocol, ev.protocol.name == "honest", ev.baseline()
    support = fpr_support(proto, n_members=run.n_members, n_heldout=run.n_heldout, fpr=0.01)
    m1, m2, m3, roc_col = st.columns([1, 1, 1, 3])
    m1.metric(f"{attack_label(attack)} AUROC", f"{base.auroc:.4f}", help=arm_metric_caption(base, "auroc", proto))
    m1.caption(f"{metric_t_text(base, 'auroc')} · 95% CI " + format_rate_ci(base.ci["auroc"])
               + (f" · :material/warning: {auroc_note(base)}" if auroc_note(base) else ""))
    m2.metric("TPR@1%FPR", f"{base.tpr_at_1fpr:.4f}", help=arm_metric_caption(base, "tpr_at_1fpr", proto))
    m2.caption(f"{metric_t_text(base, 'tpr_at_1fpr')} · 95% CI " + format_rate_ci(base.ci["tpr_at_1fpr"])
               + (f" · realised FPR {base.realised_fpr_at_1fpr:.4f}" if honest else "")
               + (f" · {low_fpr_text(base.low_fpr)}" if base.low_fpr is not None else ""))
    m3.metric("ASR", f"{base.asr:.4f}", help=arm_metric_caption(base, "asr", proto))
    m3.caption(f"{metric_t_text(base, 'asr')} · 95% CI " + format_rate_ci(base.ci["asr"]))
    if support.warning():  # below the cards, across the page (a card's column is a sixth of it)
        st.warning(support.warning(), icon=":material/warning:")
    st.caption(f"{attack_label(attack)} baseline (no mask), {arm_t_cell(base)}. "
               + (headline_t_caption(ev) if run.is_maskable(attack) else "One score per sample (no timestep)."))
    return roc_col


def headline_roc(p: FindingsPage, roc_col) -> None:
    """The selected attack's baseline ROC curve with the blind baseline's, in ``roc_col``."""
    run, attack, ev, proto, base = p.run, p.attack, p.ev, p.proto, p.base
    axes = (dict(xlabel="false-positive rate (members)", ylabel="true-positive rate (held-out)",
                 n_negatives=run.n_members, n_positives=run.n_heldout)
            if proto.positive_class == "heldout" else
            dict(xlabel="false-positive rate (held-out)", ylabel="true-positive rate (members)",
                 n_negatives=run.n_heldout, n_positives=run.n_members))
    roc, _ = baseline_curves(ev)  # the evaluation layer's points, the blind baseline's beside
    roc_col.plotly_chart(
        figure_memo.figure(
            figures.roc_curves, roc, log_scale=True, height=300, dashed=(BLIND_CURVE,), max_points=ROC_POINTS,
                           title=f"{attack_label(attack)} baseline ROC, log-log ({proto.name}, "
                                 f"{metric_t_text(base, 'auroc')})", **axes),
        key="findings_roc", config=figures.plotly_config(f"ldminv-{attack}-roc"),
    )


def headline(p: FindingsPage) -> None:
    """The selected attack's baseline numbers and ROC curve."""
    headline_roc(p, headline_metrics(p.run, p.attack, p.ev))


def _quartile_chart(p: FindingsPage):
    proto, base, res = p.proto, p.base, p.res
    qs = res.quartiles
    where = ("each quartile at its own best t (paper)" if proto.name == "paper"
             else f"{proto.name} protocol, {arm_t_cell(base)}")
    return figure_memo.figure(figures.quartile_auroc_bars, [q.auroc for q in qs], ci=[q.auroc_ci for q in qs],
        edges=[qs[0].log_volume_min] + [q.log_volume_max for q in qs], counts=[q.n for q in qs],
        title=f"Baseline AUROC by distortion quartile<br><sup>{where}; error bars: 95% CI</sup>",
    )


def _drop_chart(p: FindingsPage):
    ev, proto, honest, res = p.ev, p.proto, p.honest, p.res
    curves = ev.drop_curves(ev.headline_t_index())
    scope = "all samples, in-sample (descriptive)" if honest else f"all samples, {proto.name} convention"
    return figure_memo.figure(figures.drop_curves_with_bands, curves.percents, masked=curves.masked["auroc"],
        masked_band=(curves.masked_lo["auroc"], curves.masked_hi["auroc"]),
        random_mean=curves.random_mean["auroc"],
        random_band=(curves.random_lo["auroc"], curves.random_hi["auroc"]),
        baseline=curves.baseline["auroc"], baseline_ci=curves.baseline_ci["auroc"],
        n_seeds=len(curves.seeds), n_boot=curves.n_boot,
        current=res.masked.drop_percent,  # None: chosen per fold (honest)
        title=f"AUROC vs drop %, t = {curves.t}<br><sup>{scope}</sup>",
    )


def _class_labels(p: FindingsPage) -> tuple[list[str], str]:
    """The class captions without their common leading words ("a photo of a bag" -> "bag")."""
    res = p.res
    labels = [c.label for c in res.classes]
    words = [lab.split(" ") for lab in labels]
    k = 0
    while len(labels) > 1 and all(len(w) > k + 1 for w in words) and len({w[k] for w in words}) == 1:
        k += 1
    prefix = " ".join(words[0][:k])
    return [" ".join(w[k:]) for w in words], prefix


def _class_table(p: FindingsPage) -> pd.DataFrame:
    """What the within-class estimate is pooled from: per class, its size (the weight) and the
    AUROC of its least and most distorted quartiles."""
    res = p.res
    short, _ = _class_labels(p)
    return pd.DataFrame({
        "class": short,
        "n (members)": [f"{c.n} ({c.n_members})" for c in res.classes],
        "Q1": [c.aurocs[0] for c in res.classes],
        "Q4": [c.aurocs[3] for c in res.classes],
        "Q4 − Q1": [c.difference for c in res.classes],
    })


def _masking_note(p: FindingsPage, fid: str) -> str | None:
    proto, honest, res = p.proto, p.honest, p.res
    other = res.baseline if fid == "masking_vs_baseline" else res.random
    if honest:
        return (f"Realised FPR of the transferred 1% thresholds: masked {res.masked.realised_fpr_at_1fpr:.4f}, "
                f"{other.arm} {other.realised_fpr_at_1fpr:.4f} (above 0.01: the threshold did not transfer).")
    if proto.name == "paper":
        return (f"Each arm at its own best t per metric: masked {res.masked.t_text}; "
                f"{other.arm} {other.t_text}.")
    return None


def finding_cards(p: FindingsPage) -> None:
    """One card per finding, two per row (the blind ones need no geometry)."""
    run, attack, ev, proto, base, res = p.run, p.attack, p.ev, p.proto, p.base, p.res
    if res is None:
        st.info(
            "The four findings (distortion quartiles, within-class quartiles, masking against the baseline and "
            "against random masks) need the decoder geometry, which has not finished yet (still computing: "
            f"{pending_text(run)}). They appear here by themselves when it lands.",
            icon=":material/hourglass_top:",
        )
    cards, drop_chart_in = [], None
    for f in (res.findings if res is not None else ev.blind_findings()):  # the blind ones need no geometry
        kw: dict = {}
        if f.id == "distortion_quartiles":
            kw["chart"] = _quartile_chart(p)
        elif f.id == "distortion_quartiles_within_class" and res.classes:
            kw["table"] = _class_table(p)
            kw["table_key"] = "findings_classes"
            kw["table_config"] = {m: st.column_config.NumberColumn(m, format="%.3f") for m in ("Q1", "Q4", "Q4 − Q1")}
            prefix = _class_labels(p)[1]
            kw["note"] = (f"Baseline AUROC of each class's least (Q1) and most (Q4) distorted quartile ({proto.name} "
                          f"protocol, {arm_t_cell(base)}); the estimate is the n-weighted mean of Q4 − Q1 over "
                          f"{len(res.classes)} classes with both splits and at least 16 images"
                          + (f"; captions \"{prefix} …\"." if prefix else "."))
        elif f.id in ("masking_vs_baseline", "masking_vs_random") and res.maskable:
            kw["note"] = _masking_note(p, f.id)
            if drop_chart_in is None:  # both read the same curve: drawn once, in the first one's card
                kw["chart"], drop_chart_in = _drop_chart(p), f.id
            else:
                kw["note"] = " ".join(filter(None, [kw["note"], (
                    "The curve against the drop % (masked, the random control's band, the baseline) is in the card "
                    f"“{finding_title(drop_chart_in)}”.")]))
        cards.append((f, kw))
    for row_start in range(0, len(cards), 2):
        cols = st.columns(2)
        for col, (f, kw) in zip(cols, cards[row_start:row_start + 2]):
            with col:
                finding_card(f, chart_key=f"finding_{f.id}", n_boot=ev.n_boot, **kw)
    if res is not None and not any(f.id == "distortion_quartiles_within_class" for f in res.findings):
        st.caption("No within-class control: the data carry fewer than two caption classes with at least 16 "
                   "images of both splits.")
    if res is not None and not res.maskable:
        st.caption(f"{attack_label(attack)} gives one score per sample: it cannot be masked, so the masking "
                   "findings are not defined for it. Choose a maskable attack in the sidebar to see them.")



def every_attack_job(run: Run, *, evaluations: dict | None = None) -> tuple[tuple, object]:
    """(key, callable) computing what :func:`every_attack_table` and :func:`attack_overview` read
    (every attack's findings and baseline under the session's protocol, or of ``evaluations``:
    attack -> cached ``Evaluation`` of one protocol; memoised in the evaluations), for
    :func:`ldminv_app.lazy.section`."""
    evaluations = ([state.evaluation(run, name) for name in run.attacks] if evaluations is None
                   else [evaluations[name] for name in run.attacks])
    first = evaluations[0]
    key = ("every_attack", *cache.run_key(run.path), first.protocol.name, first.protocol.folds, first.n_boot,
           bool(run.has_geometry))

    def compute() -> None:
        for e in evaluations:
            e.baseline()
        if run.has_geometry:
            for e in evaluations:
                e.findings()
    return key, compute


#: The tabs below the findings (:func:`more_tabs`), by label.
EVERY_ATTACK_TAB, AGREEMENT_TAB, EXPOSURE_TAB = "Every attack", "Agreement", "Members most at risk"
#: The session key of the open tab below the findings (``st.tabs`` state: its label).
MORE_TABS_KEY = "findings_more_tab"


def more_tabs(run: Run) -> dict:
    """label -> tab of the sections below the findings (the agreement's only for two or more
    attacks), as ``st.tabs(on_change="rerun")``: each tab's ``open`` says whether to draw it."""
    labels = [EVERY_ATTACK_TAB] + ([AGREEMENT_TAB] if len(run.attacks) > 1 else []) + [EXPOSURE_TAB]
    return dict(zip(labels, widgets.lazy_tabs(labels, key=MORE_TABS_KEY)))


def every_attack_table(p: FindingsPage) -> None:
    """Every attack's verdict on every finding, under the same protocol."""
    run, attack, ev, proto, res = p.run, p.attack, p.ev, p.proto, p.res
    if res is not None:
        st.subheader("Every attack, every finding")
        verdict_rows, shown = [], []
        for name in run.attacks:
            for f in (res.findings if name == attack else state.evaluation(run, name).findings()):
                shown.append(f)
                verdict_rows.append({
                    "attack": attack_label(name), "finding": finding_title(f.id, short=True),
                    "estimate": f.estimate, "95% CI": format_rate_ci(f.ci, signed=True),
                    "verdict": verdict_words(f.verdict, f.estimate, metric=f.metric, confounded=f.confounded),
                })
        st.dataframe(
            pd.DataFrame(verdict_rows), hide_index=True, key="findings_every_attack",
            column_config={"estimate": st.column_config.NumberColumn("estimate", format="%+.4f"),
                           "finding": st.column_config.TextColumn("finding", width="medium"),
                           "verdict": st.column_config.TextColumn("verdict", width="large")},
        )
        st.caption(f"{proto.name} protocol; estimates are AUROC differences with {ev.n_boot}-replicate 95% "
                   "paired bootstrap intervals; each attack at its own t (as in the table of all attacks below). "
                   + (tiny_note() if any(verdict_words(f.verdict, f.estimate, metric=f.metric) != f.verdict
                                         for f in shown) else ""))


def attack_overview(p: FindingsPage) -> None:
    """Every attack's baseline under the same protocol: chart, table, below-chance notes."""
    run, proto, honest = p.run, p.proto, p.honest
    st.subheader("All attacks")
    names, auroc, auroc_ci, tpr, tpr_ci, where, rows, below = [], [], [], [], [], [], [], []
    for name in run.attacks:
        arm = state.evaluation(run, name).baseline()
        names.append(attack_label(name))
        auroc.append(arm.auroc)
        auroc_ci.append(arm.ci["auroc"])
        tpr.append(arm.tpr_at_1fpr)
        tpr_ci.append(arm.ci["tpr_at_1fpr"])
        where.append(f"{attack_label(name)}: {arm_t_cell(arm)}")
        below.append((attack_label(name), arm))
        row = {"attack": attack_label(name), "t": arm_t_cell(arm), "AUROC": arm.auroc,
               "AUROC 95% CI": format_rate_ci(arm.ci["auroc"]), "TPR@1%FPR": arm.tpr_at_1fpr,
               "TPR@1%FPR 95% CI": format_rate_ci(arm.ci["tpr_at_1fpr"]),
               "1% FPR rests on": (arm.low_fpr.rests_on().removeprefix("1% FPR = ").removesuffix(" images")
                                   if arm.low_fpr else "–"),
               "TPR exact 95% CI": format_rate_ci(arm.low_fpr.exact_ci) if arm.low_fpr else "–"}
        if honest:
            row["realised FPR"] = arm.realised_fpr_at_1fpr
        rows.append(row)
    st.plotly_chart(
        figure_memo.figure(
            figures.attack_overview, names, auroc=np.array(auroc), auroc_ci=auroc_ci, tpr=np.array(tpr), tpr_ci=tpr_ci,
                                title=f"Baseline AUROC and TPR@1%FPR of every attack ({proto.name} protocol)"),
        key="findings_overview", config=figures.plotly_config("ldminv-attacks-overview"),
    )
    st.caption(f"{proto.name} protocol; TPR@1%FPR = {proto.tpr_rule}. Timesteps: " + " · ".join(where)
               + ". Error bars: 95% stratified bootstrap intervals"
               + ("; realised FPR: the FPR the transferred thresholds give on each fold's own samples."
                  if honest else ".")
               + " Table: how many false positives the 1% FPR admits on how many negatives, and the exact "
               "(Clopper-Pearson) interval of the TPR's count at its threshold."
               + (f" Still computing: {', '.join(attack_label(a) for a in run.pending_attacks)}."
                  if run.pending_attacks else ""))
    st.dataframe(
        pd.DataFrame(rows), hide_index=True, key="findings_attacks_table",
        column_config={"t": st.column_config.TextColumn("t", width="medium"),
                       **{m: st.column_config.NumberColumn(m, format="%.4f")
                          for m in ("AUROC", "TPR@1%FPR", "realised FPR")}},
    )
    for line in below_chance_captions(below):
        st.caption(line)
