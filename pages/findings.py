"""Findings page (the landing page): what this run shows about the paper's claims, under the
protocol chosen in the sidebar: a one-line summary, the shift check (can the files alone, without
the model, tell the folders apart? METHOD.md section 6), each claim an estimate with its 95%
interval and a verdict (a caveat beside every membership or geometry claim on folders the files
alone separate), then three tabs of which only the open one is computed and drawn: every attack
(a table of every attack's verdicts on every claim, every attack's baseline AUROC and TPR@1%FPR side
by side), whether the attacks flag the same images (Jaccard and Spearman per pair, who flags whom
with thumbnails; runs of two or more attacks) and the members most at risk (the exposure list with
thumbnails and its CSV). All numbers come from the cached
``Evaluation`` objects (``ldminv_app.state.evaluation``); the page only lays them out.

The selected attack's headline numbers are drawn first (the shift check and the summary above them
fill in after); every attack's verdicts and baselines, the agreement and the exposure list are
drawn from the background's results, and show a "computing" line until those are ready
(``ldminv_app.lazy``), so a sidebar change never waits for every attack; the other attacks' and
protocols' sections are then computed in the background (``ldminv_app.findings_warm``), so the next
switch finds them ready.
"""
from __future__ import annotations

import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import findings_summary

from ldminv_app import agreement_view, cards, exposure_view, findings_view, findings_warm, frame, lazy, notices, state

run = frame.page_frame(uses_timestep=False)  # no Findings number depends on the sidebar's t

with notices.guard("The Findings page failed"):
    attack = state.current_attack(run)
    ev = state.evaluation(run, attack)
    proto = ev.protocol
    st.title("Findings")
    st.caption(
        f"**{attack_label(attack)}** on {run.n_members} members / {run.n_heldout} held-out images · "
        f"protocol **{proto.name}**: {proto.description}. TPR@1%FPR = {proto.tpr_rule}. Intervals: "
        f"{ev.n_boot} paired stratified bootstrap replicates (95%); a verdict is *supported* when the "
        "interval lies above 0, *contradicted* below 0, *inconclusive* otherwise."
    )
    # drawn in this order, shown in the page's: the headline number first, then (from the background
    # when not ready: ldminv_app.lazy) the summary and shift check above it, its ROC curve and the
    # findings, then the every-attack sections
    summary_slot, shift_slot = st.container(), st.container()
    roc_col = findings_view.headline_metrics(run, attack, ev)
    page_key, page_fn = findings_view.findings_job(run, attack, ev)

    def analysis(got: dict) -> None:
        """The summary, the shift check, the headline ROC and the finding cards of the page."""
        page = got[page_key]
        base, res = page.base, page.res
        if res is not None:
            summary_slot.markdown("**" + findings_summary(res.findings, context=f"the {proto.name} protocol, "
                                                        f"{attack_label(attack)} ({cards.arm_t_cell(base)})") + "**"
                                  + (" Every attack's verdicts: the tab *Every attack* below the findings."
                                     if len(run.attacks) > 1 else ""))
        with shift_slot:
            findings_view.shift_check(page)
        findings_view.headline_roc(page, roc_col)
        findings_view.finding_cards(page)

    lazy.section("findings", [(page_key, page_fn)], analysis, what="The shift check and the findings")
    every_key, every_fn = findings_view.every_attack_job(run)

    def every_attack(got: dict) -> None:
        findings_view.every_attack_table(got[page_key])
        findings_view.attack_overview(got[page_key])

    # the sections below the findings, one tab each: only the open one is computed and drawn
    tabs = findings_view.more_tabs(run)
    if tabs[findings_view.EVERY_ATTACK_TAB].open:
        with tabs[findings_view.EVERY_ATTACK_TAB]:
            lazy.section("every_attack", [(page_key, page_fn), (every_key, every_fn)], every_attack,
                         what="Every attack's findings and baseline")
    if findings_view.AGREEMENT_TAB in tabs and tabs[findings_view.AGREEMENT_TAB].open:
        with tabs[findings_view.AGREEMENT_TAB]:
            agreement_view.section(run)
    if tabs[findings_view.EXPOSURE_TAB].open:
        with tabs[findings_view.EXPOSURE_TAB]:
            exposure_view.section(run, attack)
    # what the sidebar's next attack or protocol switch asks for, in the background
    open_tab = next(label for label, tab in tabs.items() if tab.open)
    findings_warm.warm_neighbours(run, attack, protocol=proto.name, folds=state.current_folds(), tab=open_tab)

    st.markdown("**Explore further**")
    l1, l2, l3 = st.columns(3)
    l1.page_link("pages/distortion.py", label="Distortion: quartiles, per-sample viewer",
                 icon=":material/blur_on:")
    l2.page_link("pages/masks_roc.py", label="Masks & ROC: tune the drop, ROC curves",
                 icon=":material/show_chart:")
    l3.page_link("pages/dimensions.py", label="Dimensions: coordinate ranking",
                 icon=":material/grid_on:")
