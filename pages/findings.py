"""Findings page (the landing page): what this run shows about the paper's claims, under the
protocol chosen in the sidebar: a one-line summary, the shift check (can the files alone, without
the model, tell the folders apart? METHOD.md section 6), each claim an estimate with its 95%
interval and a verdict (a caveat beside every membership or geometry claim on folders the files
alone separate), a table of every attack's verdicts on every claim, then every attack's baseline
AUROC and TPR@1%FPR side by side. All numbers come from the cached
``Evaluation`` objects (``ldminv_app.cache.evaluation``); the page only lays them out.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ldminv_app import cache, figures, state, ui
from ldminv_core.evaluation import (
    BLIND_GROUP_WORDS,
    convention_roc,
    finding_title,
    findings_summary,
    fpr_support,
    shift_advice,
    shift_headline,
    tiny_note,
    verdict_words,
)

run = ui.page_frame()
#: A blind group's verdict (of AUROC - 0.5) said of the folders.
SEPARABLE_WORDS = {"supported": "separable without the model (interval above 0.5)",
                   "contradicted": "below chance (interval below 0.5)",
                   "inconclusive": "not separable (interval contains 0.5)", "undefined": "undefined"}

with ui.guard("The Findings page failed"):
    attack = state.current_attack(run)
    ev = cache.evaluation(run, attack)
    proto = ev.protocol
    honest = proto.name == "honest"
    base = ev.baseline()
    blind = ui.blind_result(ev)  # first: the findings ask for it too
    res = ev.result() if run.has_geometry else None

    st.title("Findings")
    st.caption(
        f"**{ui.attack_label(attack)}** on {run.n_members} members / {run.n_heldout} held-out images · "
        f"protocol **{proto.name}**: {proto.description}. TPR@1%FPR = {proto.tpr_rule}. Intervals: "
        f"{ev.n_boot} paired stratified bootstrap replicates (95%); a verdict is *supported* when the "
        "interval lies above 0, *contradicted* below 0, *inconclusive* otherwise."
    )
    if res is not None:
        st.markdown("**" + findings_summary(res.findings, context=f"the {proto.name} protocol, "
                                            f"{ui.attack_label(attack)} ({ui.arm_t_cell(base)})") + "**"
                    + (" Every attack's verdicts: see the table below the findings." if len(run.attacks) > 1 else ""))

    # ---- the shift check: can the files alone, without the model, tell the two folders apart?
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
                figures.blind_group_aurocs(
                    [g.group for g in groups], auroc=[g.auroc for g in groups], ci=[g.ci["auroc"] for g in groups],
                    verdicts=[g.verdict for g in groups], n_features=[g.n_features for g in groups],
                    height=380,
                    title=f"Blind AUROC per feature group ({proto.name} protocol)<br><sup>files only, never the "
                          "model; error bars: 95% CI; vermillion: the group alone separates the folders</sup>"),
                key="findings_blind_groups", config=figures.plotly_config("ldminv-blind-baseline"),
            )
            with num_col:
                st.metric("Blind AUROC (all groups)", f"{everything.auroc:.4f}",
                          help=f"{proto.name} protocol; out-of-fold scores of {blind.classifier}")
                below_note = ui.auroc_note(everything)
                st.caption(f"95% CI {ui.ci_text(everything.ci['auroc'], signed=False)} · "
                           + SEPARABLE_WORDS.get(everything.verdict, everything.verdict)
                           + (f" · :material/warning: {below_note}" if below_note else ""))
                st.metric("Blind TPR@1%FPR (all groups)", f"{everything.tpr_at_1fpr:.4f}", help=proto.tpr_rule)
                st.caption(f"95% CI {ui.ci_text(everything.ci['tpr_at_1fpr'], signed=False)} (bootstrap)"
                           + (f" · realised FPR {everything.realised_fpr_at_1fpr:.4f}"
                              if everything.realised_fpr_at_1fpr is not None else "")
                           + (f" · {ui.low_fpr_text(everything.low_fpr)}" if everything.low_fpr else ""))
                st.caption(f"Classifier: {blind.classifier} on {blind.folds} seeded stratified folds (seed "
                           f"{blind.fold_seed}, the honest protocol's): every image is scored by a classifier that "
                           "never saw it, and none sees the model. Intervals: " + blind.interval_text + "."
                           + (f" The {blind.encoder_text}." if blind.encoder_text else ""))
            advice = shift_advice(blind)
            if advice:
                st.markdown(f"**What to do.** {advice}")
            with st.expander("Every feature group: numbers and strongest features"):
                st.dataframe(pd.DataFrame([{
                    "group": g.group, "what it sees": BLIND_GROUP_WORDS.get(g.group, g.group),
                    "features": g.n_features, "AUROC": g.auroc,
                    "AUROC interval": ui.ci_text(g.ci["auroc"], signed=False), "TPR@1%FPR": g.tpr_at_1fpr,
                    "TPR interval (bootstrap)": ui.ci_text(g.ci["tpr_at_1fpr"], signed=False),
                    "TPR exact interval": ui.ci_text(g.low_fpr.exact_ci, signed=False) if g.low_fpr else "–",
                    "the folders": SEPARABLE_WORDS.get(g.verdict, g.verdict),
                    "strongest features": ", ".join(f"{name.split(':', 1)[-1]} ({w:+.2f})"
                                                    for name, w in g.top_features[:3]) or "–",
                } for g in groups]), hide_index=True, key="findings_blind_table",
                    column_config={m: st.column_config.NumberColumn(m, format="%.4f") for m in ("AUROC", "TPR@1%FPR")})
                st.caption("Intervals: 95%, the protocol's bootstrap; exact: Clopper-Pearson of the count behind the "
                           "TPR. Strongest features: standardised coefficients of the group's classifier fitted on "
                           "every image (descriptive); positive = higher values look like members.")

    # ---- the headline: the selected attack's baseline numbers and ROC curve (no geometry needed)
    support = fpr_support(proto, n_members=run.n_members, n_heldout=run.n_heldout, fpr=0.01)
    m1, m2, m3, roc_col = st.columns([1, 1, 1, 3])
    m1.metric(f"{ui.attack_label(attack)} AUROC", f"{base.auroc:.4f}", help=ui.arm_metric_caption(base, "auroc", proto))
    m1.caption(f"{ui.metric_t_text(base, 'auroc')} · 95% CI " + ui.ci_text(base.ci["auroc"], signed=False)
               + (f" · :material/warning: {ui.auroc_note(base)}" if ui.auroc_note(base) else ""))
    m2.metric("TPR@1%FPR", f"{base.tpr_at_1fpr:.4f}", help=ui.arm_metric_caption(base, "tpr_at_1fpr", proto))
    m2.caption(f"{ui.metric_t_text(base, 'tpr_at_1fpr')} · 95% CI " + ui.ci_text(base.ci["tpr_at_1fpr"], signed=False)
               + (f" · realised FPR {base.realised_fpr_at_1fpr:.4f}" if honest else "")
               + (f" · {ui.low_fpr_text(base.low_fpr)}" if base.low_fpr is not None else ""))
    m3.metric("ASR", f"{base.asr:.4f}", help=ui.arm_metric_caption(base, "asr", proto))
    m3.caption(f"{ui.metric_t_text(base, 'asr')} · 95% CI " + ui.ci_text(base.ci["asr"], signed=False))
    if support.warning():  # below the cards, across the page (a card's column is a sixth of it)
        st.warning(support.warning(), icon=":material/warning:")
    curve = convention_roc(ev.scores("baseline"), run.labels, proto)
    axes = (dict(xlabel="false-positive rate (members)", ylabel="true-positive rate (held-out)",
                 n_negatives=run.n_members, n_positives=run.n_heldout)
            if proto.positive_class == "heldout" else
            dict(xlabel="false-positive rate (held-out)", ylabel="true-positive rate (members)",
                 n_negatives=run.n_heldout, n_positives=run.n_members))
    roc = {"baseline": (curve.fpr, curve.tpr)}
    blind_roc = ui.blind_curve(ev)
    if blind_roc is not None:
        roc[ui.BLIND_CURVE] = (blind_roc[0].fpr, blind_roc[0].tpr)
    roc_col.plotly_chart(
        figures.roc_curves(roc, log_scale=True, height=300, dashed=(ui.BLIND_CURVE,),
                           title=f"{ui.attack_label(attack)} baseline ROC, log-log ({proto.name}, "
                                 f"{ui.metric_t_text(base, 'auroc')})", **axes),
        key="findings_roc", config=figures.plotly_config(f"ldminv-{attack}-roc"),
    )
    st.caption(f"{ui.attack_label(attack)} baseline (no mask), {ui.arm_t_cell(base)}. "
               + (ui.headline_t_caption(ev) if run.is_maskable(attack) else "One score per sample (no timestep)."))

    # ---- one card per finding, two per row
    def quartile_chart():
        qs = res.quartiles
        where = ("each quartile at its own best t (paper)" if proto.name == "paper"
                 else f"{proto.name} protocol, {ui.arm_t_cell(base)}")
        return figures.quartile_auroc_bars(
            [q.auroc for q in qs], ci=[q.auroc_ci for q in qs],
            edges=[qs[0].log_volume_min] + [q.log_volume_max for q in qs], counts=[q.n for q in qs],
            title=f"Baseline AUROC by distortion quartile<br><sup>{where}; error bars: 95% CI</sup>",
        )

    def drop_chart():
        curves = ev.drop_curves(ev.headline_t_index())
        scope = "all samples, in-sample (descriptive)" if honest else f"all samples, {proto.name} convention"
        return figures.drop_curves_with_bands(
            curves.percents, masked=curves.masked["auroc"],
            masked_band=(curves.masked_lo["auroc"], curves.masked_hi["auroc"]),
            random_mean=curves.random_mean["auroc"],
            random_band=(curves.random_lo["auroc"], curves.random_hi["auroc"]),
            baseline=curves.baseline["auroc"], baseline_ci=curves.baseline_ci["auroc"],
            n_seeds=len(curves.seeds), n_boot=curves.n_boot,
            current=res.masked.drop_percent,  # None: chosen per fold (honest)
            title=f"AUROC vs drop %, t = {curves.t}<br><sup>{scope}</sup>",
        )

    def class_labels() -> tuple[list[str], str]:
        """The class captions without their common leading words ("a photo of a bag" -> "bag")."""
        labels = [c.label for c in res.classes]
        words = [lab.split(" ") for lab in labels]
        k = 0
        while len(labels) > 1 and all(len(w) > k + 1 for w in words) and len({w[k] for w in words}) == 1:
            k += 1
        prefix = " ".join(words[0][:k])
        return [" ".join(w[k:]) for w in words], prefix

    def class_table() -> pd.DataFrame:
        """What the within-class estimate is pooled from: per class, its size (the weight) and the
        AUROC of its least and most distorted quartiles."""
        short, _ = class_labels()
        return pd.DataFrame({
            "class": short,
            "n (members)": [f"{c.n} ({c.n_members})" for c in res.classes],
            "Q1": [c.aurocs[0] for c in res.classes],
            "Q4": [c.aurocs[3] for c in res.classes],
            "Q4 − Q1": [c.difference for c in res.classes],
        })

    def masking_note(fid: str) -> str | None:
        other = res.baseline if fid == "masking_vs_baseline" else res.random
        if honest:
            return (f"Realised FPR of the transferred 1% thresholds: masked {res.masked.realised_fpr_at_1fpr:.4f}, "
                    f"{other.arm} {other.realised_fpr_at_1fpr:.4f} (above 0.01: the threshold did not transfer).")
        if proto.name == "paper":
            return (f"Each arm at its own best t per metric: masked {res.masked.t_text}; "
                    f"{other.arm} {other.t_text}.")
        return None

    if res is None:
        st.info(
            "The four findings (distortion quartiles, within-class quartiles, masking against the baseline and "
            "against random masks) need the decoder geometry, which has not finished yet (still computing: "
            f"{ui.pending_text(run)}). They appear here by themselves when it lands.",
            icon=":material/hourglass_top:",
        )
    cards = []
    for f in (res.findings if res is not None else ev.blind_findings()):  # the blind ones need no geometry
        kw: dict = {}
        if f.id == "distortion_quartiles":
            kw["chart"] = quartile_chart()
        elif f.id == "distortion_quartiles_within_class" and res.classes:
            kw["table"] = class_table()
            kw["table_key"] = "findings_classes"
            kw["table_config"] = {m: st.column_config.NumberColumn(m, format="%.3f") for m in ("Q1", "Q4", "Q4 − Q1")}
            prefix = class_labels()[1]
            kw["note"] = (f"Baseline AUROC of each class's least (Q1) and most (Q4) distorted quartile ({proto.name} "
                          f"protocol, {ui.arm_t_cell(base)}); the estimate is the n-weighted mean of Q4 − Q1 over "
                          f"{len(res.classes)} classes with both splits and at least 16 images"
                          + (f"; captions \"{prefix} …\"." if prefix else "."))
        elif f.id in ("masking_vs_baseline", "masking_vs_random") and res.maskable:
            kw["chart"] = drop_chart()
            kw["note"] = masking_note(f.id)
        cards.append((f, kw))
    for row_start in range(0, len(cards), 2):
        cols = st.columns(2)
        for col, (f, kw) in zip(cols, cards[row_start:row_start + 2]):
            with col:
                ui.finding_card(f, chart_key=f"finding_{f.id}", n_boot=ev.n_boot, **kw)
    if res is not None and not any(f.id == "distortion_quartiles_within_class" for f in res.findings):
        st.caption("No within-class control: the data carry fewer than two caption classes with at least 16 "
                   "images of both splits.")
    if res is not None and not res.maskable:
        st.caption(f"{ui.attack_label(attack)} gives one score per sample: it cannot be masked, so the masking "
                   "findings are not defined for it. Choose a maskable attack in the sidebar to see them.")

    # ---- every attack's verdict on every finding, under the same protocol
    if res is not None:
        st.subheader("Every attack, every finding")
        verdict_rows, shown = [], []
        for name in run.attacks:
            for f in (res.findings if name == attack else cache.evaluation(run, name).findings()):
                shown.append(f)
                verdict_rows.append({
                    "attack": ui.attack_label(name), "finding": finding_title(f.id, short=True),
                    "estimate": f.estimate, "95% CI": ui.ci_text(f.ci),
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

    # ---- attack overview: every attack's baseline under the same protocol
    st.subheader("All attacks")
    names, auroc, auroc_ci, tpr, tpr_ci, where, rows, below = [], [], [], [], [], [], [], []
    for name in run.attacks:
        arm = cache.evaluation(run, name).baseline()
        names.append(ui.attack_label(name))
        auroc.append(arm.auroc)
        auroc_ci.append(arm.ci["auroc"])
        tpr.append(arm.tpr_at_1fpr)
        tpr_ci.append(arm.ci["tpr_at_1fpr"])
        where.append(f"{ui.attack_label(name)}: {ui.arm_t_cell(arm)}")
        below.append((ui.attack_label(name), arm))
        row = {"attack": ui.attack_label(name), "t": ui.arm_t_cell(arm), "AUROC": arm.auroc,
               "AUROC 95% CI": ui.ci_text(arm.ci["auroc"], signed=False), "TPR@1%FPR": arm.tpr_at_1fpr,
               "TPR@1%FPR 95% CI": ui.ci_text(arm.ci["tpr_at_1fpr"], signed=False),
               "1% FPR rests on": (arm.low_fpr.rests_on().removeprefix("1% FPR = ").removesuffix(" images")
                                   if arm.low_fpr else "–"),
               "TPR exact 95% CI": ui.ci_text(arm.low_fpr.exact_ci, signed=False) if arm.low_fpr else "–"}
        if honest:
            row["realised FPR"] = arm.realised_fpr_at_1fpr
        rows.append(row)
    st.plotly_chart(
        figures.attack_overview(names, auroc=np.array(auroc), auroc_ci=auroc_ci, tpr=np.array(tpr), tpr_ci=tpr_ci,
                                title=f"Baseline AUROC and TPR@1%FPR of every attack ({proto.name} protocol)"),
        key="findings_overview", config=figures.plotly_config("ldminv-attacks-overview"),
    )
    st.caption(f"{proto.name} protocol; TPR@1%FPR = {proto.tpr_rule}. Timesteps: " + " · ".join(where)
               + ". Error bars: 95% stratified bootstrap intervals"
               + ("; realised FPR: the FPR the transferred thresholds give on each fold's own samples."
                  if honest else ".")
               + " Table: how many false positives the 1% FPR admits on how many negatives, and the exact "
               "(Clopper-Pearson) interval of the TPR's count at its threshold."
               + (f" Still computing: {', '.join(ui.attack_label(a) for a in run.pending_attacks)}."
                  if run.pending_attacks else ""))
    st.dataframe(
        pd.DataFrame(rows), hide_index=True, key="findings_attacks_table",
        column_config={"t": st.column_config.TextColumn("t", width="medium"),
                       **{m: st.column_config.NumberColumn(m, format="%.4f")
                          for m in ("AUROC", "TPR@1%FPR", "realised FPR")}},
    )
    for line in ui.below_chance_captions(below):
        st.caption(line)

    st.markdown("**Explore further**")
    l1, l2, l3 = st.columns(3)
    l1.page_link("pages/distortion.py", label="Distortion: quartiles, per-sample viewer",
                 icon=":material/blur_on:")
    l2.page_link("pages/masks_roc.py", label="Masks & ROC: tune the drop, ROC curves",
                 icon=":material/show_chart:")
    l3.page_link("pages/dimensions.py", label="Dimensions: coordinate ranking",
                 icon=":material/grid_on:")
