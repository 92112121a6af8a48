"""The Masks & ROC page's parts: its controls, the arms they ask the cached ``Evaluation`` for,
and what shows them (headline cards, masking findings, ROC curves with the blind baseline's, the
metrics table, the curves against the drop percentage and the timestep).

Every number comes from the ``Evaluation`` (arms, scores, findings, curves); the ROC points from
the evaluation layer through :mod:`ldminv_app.roc_view`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from ldminv_core import masks
from ldminv_core.evaluation.wording import low_fpr_cautions
from ldminv_core.formatting import format_rate

from . import cache, figure_memo, figures, html_report, state, widgets
from .cards import METRIC_LABELS, arm_metric_caption, arm_t_cell, below_chance_captions, finding_card, metric_t_text
from .blind import BLIND_CURVE, shift_note
from .roc_view import arm_curves, axis_titles
from .tables import RATE_METRICS, arms_frame, rate_columns

if TYPE_CHECKING:
    from ldminv_core.evaluation import Evaluation
    from ldminv_core.runs import Run

__all__ = ["ROC_POINTS", "CHART_VIEWS", "CHART_VIEW_KEY", "RATE_METRICS", "MaskControls", "MaskArms", "show_cautions",
           "roc_panel", "arms_frame", "rate_columns", "unmaskable", "controls", "mask_arms", "headline",
           "metrics_table", "chart_views", "drop_charts", "timestep_charts"]

#: Points per drawn ROC curve (a curve has up to N + 1; more do not show at chart size).
ROC_POINTS = 200

#: The page's chart views, one tab each (two charts a tab): only the open tab is computed and drawn.
CHART_VIEWS = ("ROC curves", "Against the drop %", "Against the timestep")
#: The session key of the open view (``st.tabs`` state: the open tab's label).
CHART_VIEW_KEY = "masks_chart_view"


def show_cautions(ev: Evaluation, run: Run) -> None:
    """The low-FPR caution (``fpr_support``) beside every TPR@1%FPR shown, when negatives are few."""
    for text in low_fpr_cautions(ev.protocol, n_members=run.n_members, n_heldout=run.n_heldout,
                                 metrics_shown=("tpr_at_1fpr",)).values():
        st.caption(f":orange[Caution:] {text}")


def _roc_note(ev: Evaluation, arms: dict) -> str:
    """The ROC titles' note: protocol and which t the curves are at."""
    proto = ev.protocol
    base = ev.arms()["baseline"]
    if proto.name == "honest":
        return f"(honest)<br><sup>pooled calibrated out-of-fold scores, {arm_t_cell(base)}</sup>"
    if proto.name == "paper" and len({a.best_t.get("auroc") for a in arms.values()}) > 1:
        return "(paper, each curve at its arm's AUROC t)"
    return f"({proto.name}, {metric_t_text(base, 'auroc')})"


def _paper_caption(arms: dict) -> str:
    """Under ``paper``: which t the curves and the TPR@1%FPR cards are at (each metric its own)."""
    curve_ts = {name: a.best_t.get("auroc") for name, a in arms.items()}
    card_ts = {name: a.best_t.get("tpr_at_1fpr") for name, a in arms.items() if name in ("baseline", "masked")}
    apart = [name for name, t in card_ts.items() if t != curve_ts[name]]
    return (
        "Paper convention: held-out images are the positive class and the statistic is the score. Each "
        "metric has its own best t: the curves are at the AUROC's ("
        + ", ".join(f"{name} t = {t}" for name, t in curve_ts.items()) + "); the TPR@1%FPR cards at "
        "TPR's own (" + ", ".join(f"{name} t = {t}" for name, t in card_ts.items()) + ")"
        + (f", so the {' and '.join(apart)} TPR@1%FPR cannot be read off these curves." if apart else ".")
    )


def roc_panel(ev: Evaluation, run: Run, scores: dict, arms: dict) -> None:
    """ROC curves of the arms' scores in the protocol's convention (``paper``: held-out positive);
    ``arms``: curve name -> its ``ArmResult`` (which t each curve and each card is at)."""
    proto = ev.protocol
    paper = proto.name == "paper"
    # 1. the curves (the evaluation layer's points, the arms' AUROC) and the blind baseline's, dashed
    curves, aurocs, has_blind = arm_curves(ev, scores, arms)
    note = _roc_note(ev, arms)
    axes = axis_titles(paper)
    # 2. linear and log-log: the log axes start at the smallest rate the negatives / positives resolve
    n_neg, n_pos = (run.n_members, run.n_heldout) if paper else (run.n_heldout, run.n_members)
    r1, r2 = st.columns(2)
    dashed = (BLIND_CURVE,)
    r1.plotly_chart(figure_memo.figure(
        figures.roc_curves, curves, aurocs=aurocs, title=f"ROC {note}", max_points=ROC_POINTS,
                                       dashed=dashed, **axes),
                    key="masks_roc_lin")
    r2.plotly_chart(figure_memo.figure(
        figures.roc_curves, curves, aurocs=aurocs, log_scale=True, title=f"ROC, log-log {note}",
                                       max_points=ROC_POINTS, n_negatives=n_neg, n_positives=n_pos, dashed=dashed,
                                       **axes),
                    key="masks_roc_log")
    # 3. what the curves are
    if has_blind:
        st.caption(f"Dashed: the {BLIND_CURVE} (a classifier of the images' format, pixels and captions, "
                   "cross-fitted, never seeing the model), in the same convention as the attack's curves.")
    shift = shift_note(ev)
    if shift:
        st.caption(shift)
    for line in below_chance_captions((name, arms[name]) for name in scores):
        st.caption(line)
    if proto.name == "honest":
        st.caption("Honest protocol: every sample is scored at its fold's t (and drop), then calibrated on the "
                   "other folds' held-out scores, so the folds pool into one set of out-of-fold scores: the "
                   "curves, their AUROC and the table's AUROC are of those pooled scores; TPR@1%FPR is the "
                   "realised rate of the thresholds chosen on the other folds.")
    elif paper:
        st.caption(_paper_caption(arms))


def unmaskable(run: Run, attack: str, ev: Evaluation) -> None:
    """The page of an attack with one score per sample (PFAMI): nothing to mask, its ROC and metrics."""
    from ldminv_core.choices import attack_label

    base = ev.arms()["baseline"]
    st.info(f"{attack_label(attack)} gives one score per sample: it cannot be masked. Its ROC and metrics "
            f"({ev.protocol.name} protocol, {ev.n_boot} bootstrap replicates):")
    roc_panel(ev, run, {"baseline": ev.scores("baseline")}, {"baseline": base})
    st.dataframe(arms_frame([base], ev.protocol.name == "honest"), key="masks_metrics_table",
                 column_config=rate_columns())
    show_cautions(ev, run)
    if base.folds:
        st.dataframe(html_report.folds_table([base]), hide_index=True, key="masks_folds_table")


@dataclass
class MaskControls:
    """The Masks & ROC controls: drop % (or the folds' own choice under ``honest``), the global and
    manual masks, the bootstrap replicates. ``keep``: (C, h, w) bool, the manual mask."""

    drop: int
    per_fold: bool
    use_global: bool
    n_boot: int
    use_manual: bool
    keep: np.ndarray
    d: int

    @property
    def p(self) -> float | None:
        """The drop % the arms use: None when each fold chooses its own."""
        return None if self.per_fold else float(self.drop)


def _drop_controls(run: Run, d: int) -> tuple[int, bool]:
    honest = state.current_protocol() == "honest"
    per_fold = False
    if honest:
        per_fold = st.toggle("Choose the drop on the other folds (honest)", value=True, key="drop_per_fold",
                             help="Each fold takes the drop % of the best masked AUROC on the other folds; "
                             "off: the slider fixes it for every fold.")
    restored = state.restore_mask_widget("drop_percent")  # kept across a visit to another page
    drop = st.slider(
        "Drop percentage (per sample: its lowest-influence coordinates)",
        0, 90, None if restored else 40, step=1, key="drop_percent", disabled=per_fold,
        help="Each sample drops its own lowest-influence coordinates (paper default 40 %).",
    )
    if per_fold:
        rule = "the percentage each fold chose on the other folds (see the folds table below)"
    elif state.current_protocol() == "paper":
        rule = "coordinates at or below the sample's np.percentile threshold"
    else:
        rule = f"{masks.drop_count(d, drop)} of {d} coordinates"
    st.caption(f"Dropped per sample: {rule}")
    return drop, per_fold


def _manual_controls(run: Run, d: int) -> tuple[bool, np.ndarray]:
    c_count, h, w = run.latent_shape
    picked = state.manual_coords(run)
    with st.expander("Manual mask (channels, positions, picked coordinates)", expanded=False):
        use_manual = st.toggle("Use the manual mask", value=False, key="use_manual")
        m1, m2 = st.columns(2)
        keep_channels = m1.multiselect("Keep channels", list(range(c_count)), default=list(range(c_count)),
                                       key="manual_channels")
        positions = [(r, c) for r in range(h) for c in range(w)]
        keep_positions = m2.multiselect("Keep positions (row, col)", positions, default=[], key="manual_positions",
                                        format_func=lambda p: f"({p[0]}, {p[1]})",
                                        help="Empty = every position.")
        use_picked = st.checkbox(f"Only the {len(picked)} coordinates picked on the Dimensions page",
                                 value=bool(picked), key="manual_use_picked", disabled=not picked)
        keep = masks.manual_mask(
            run.latent_shape,
            channels=keep_channels,
            positions=keep_positions or None,
            coords=picked if (use_picked and picked) else None,
        )
        st.caption(f"The manual mask keeps {int(keep.sum())} of {d} coordinates.")
    return use_manual, keep


def controls(run: Run) -> MaskControls:
    """The page's controls (remembered for the Export page): drop, global mask, replicates, manual mask."""
    c_count, h, w = run.latent_shape
    d = c_count * h * w
    k1, k2, k3 = st.columns([2, 1, 1])
    with k1:
        drop, per_fold = _drop_controls(run, d)
    with k2:
        state.restore_mask_widget("use_global")
        use_global = st.toggle("Global ranking mask", value=False, key="use_global",
                               help="Drop the same coordinates for every sample: those of lowest mean influence.")
    with k3:
        restored = state.restore_mask_widget("n_boot")
        n_boot = st.select_slider("Bootstrap replicates", [cache.PREVIEW_N_BOOT, cache.PAGE_N_BOOT],
                                  value=None if restored else cache.PAGE_N_BOOT, key="n_boot",
                                  help=f"{cache.PAGE_N_BOOT}: the replicates of every interval on the Findings "
                                       f"page, in the CLI report and in the export; {cache.PREVIEW_N_BOOT}: a "
                                       "faster preview while tuning (the Export page follows this choice).")
    use_manual, keep = _manual_controls(run, d)
    state.remember_mask_settings()
    return MaskControls(drop=drop, per_fold=per_fold, use_global=use_global, n_boot=int(n_boot),
                        use_manual=use_manual, keep=keep, d=d)


@dataclass
class MaskArms:
    """What the controls select from the ``Evaluation``: the arms shown in the table (``shown``),
    the ROC curves' scores and arms by curve name, and what a global / manual mask drops."""

    base: object
    masked: object
    rand: object
    shown: list = field(default_factory=list)
    roc_scores: dict = field(default_factory=dict)
    roc_arms: dict = field(default_factory=dict)
    custom_drop: dict = field(default_factory=dict)


def mask_arms(ev: Evaluation, c: MaskControls) -> MaskArms:
    """The baseline, masked and random arms at the controls' drop, plus the global and manual masks
    when switched on (each a custom arm of the ``Evaluation``)."""
    arms = ev.arms(c.p)
    base, masked, rand = arms["baseline"], arms["masked"], arms["random"]
    random_label = f"random (seed {rand.seeds[0]})"
    out = MaskArms(base, masked, rand, shown=[base, masked, rand],
                   roc_scores={"baseline": ev.scores("baseline"), "masked": ev.scores("masked", c.p),
                               random_label: ev.scores("random", c.p, rand.seeds[0])},
                   roc_arms={"baseline": base, "masked": masked, random_label: rand})
    if c.use_global:
        gstat = ev.global_stat(float(c.drop))
        out.roc_arms["global"] = ev.custom_arm("global", gstat)
        out.shown.append(out.roc_arms["global"])
        out.roc_scores["global"] = ev.custom_scores(gstat)
        out.custom_drop["global"] = f"{c.drop} % (global ranking)"
    if c.use_manual:
        if not c.keep.any():
            st.warning("The manual mask keeps no coordinate; its statistic is 0 for every sample.")
        mstat = ev.manual_stat(c.keep)  # per-channel sums + the few differing coordinates; memoised per mask
        out.roc_arms["manual"] = ev.custom_arm("manual", mstat)
        out.shown.append(out.roc_arms["manual"])
        out.roc_scores["manual"] = ev.custom_scores(mstat)
        out.custom_drop["manual"] = f"keeps {int(c.keep.sum())} of {c.d} (manual)"
    return out


def headline(ev: Evaluation, run: Run, a: MaskArms, p: float | None) -> None:
    """Headline cards (every value names its protocol, t, drop and interval; no bare deltas) and the
    two masking findings."""
    proto = ev.protocol
    cards = ((a.base, "auroc", "AUROC (baseline)"), (a.masked, "auroc", "AUROC (masked)"),
             (a.base, "tpr_at_1fpr", "TPR@1%FPR (baseline)"), (a.masked, "tpr_at_1fpr", "TPR@1%FPR (masked)"))
    for col, (arm, m, label) in zip(st.columns(4), cards):
        col.metric(label, arm.value(m), format="%.4f",  # a 4-decimal fraction, as on every page
                   help=proto.tpr_rule if m == "tpr_at_1fpr" else f"{proto.name} protocol: {proto.description}")
        col.caption(arm_metric_caption(arm, m, proto))
    show_cautions(ev, run)
    f1, f2 = st.columns(2)
    for col, fid in ((f1, "masking_vs_baseline"), (f2, "masking_vs_random")):
        f = next(x for x in ev.findings(p) if x.id == fid)
        with col:
            finding_card(f)


def metrics_table(ev: Evaluation, a: MaskArms, honest: bool) -> None:
    """The metrics table with bootstrap intervals, the random control's spread over its seeds and,
    under ``honest``, every fold's choices."""
    rand = a.rand
    st.markdown(f"**Metrics, {ev.protocol.name} protocol** (intervals: {ev.n_boot} stratified bootstrap "
                f"replicates; random = mean of seeds {', '.join(map(str, rand.seeds))})")
    st.dataframe(arms_frame(a.shown, honest, a.custom_drop), key="masks_metrics_table", column_config=rate_columns())
    spread = " · ".join(
        f"{METRIC_LABELS[m]} {format_rate(min(rand.per_seed[m]))} to {format_rate(max(rand.per_seed[m]))}"
        for m in ("auroc", "tpr_at_1fpr", "asr") if rand.per_seed.get(m)
    )
    st.caption(f"Random control over its {len(rand.seeds)} seeds (min to max): {spread}; the table shows their "
               f"mean, the ROC curve seed {rand.seeds[0]}."
               + (" Realised FPR: the FPR the thresholds chosen on the other folds give on each fold's own "
                  "samples (above 1%: the threshold did not transfer)." if honest else ""))
    if honest:
        with st.expander("Choices of every fold (made on the other folds only)", expanded=True):
            folds = html_report.folds_table(a.shown[:3])
            st.dataframe(folds, hide_index=True, key="masks_folds_table", height=36 * (len(folds) + 1) + 3)


def chart_views(ev: Evaluation, run: Run, arms: MaskArms, *, t_index: int, timesteps: list[int], drop: int,
                current: float | None, honest: bool) -> None:
    """The ROC curves, the curves against the drop % and those against the timestep, as tabs of which
    only the open one is computed and drawn (``st.tabs(on_change="rerun")``): a control redraws two
    charts, not six, and the drop curves' bands are computed only while their tab is open."""
    roc, by_drop, by_t = widgets.lazy_tabs(CHART_VIEWS, key=CHART_VIEW_KEY)
    if roc.open:
        with roc:
            roc_panel(ev, run, arms.roc_scores, arms.roc_arms)
    if by_drop.open:
        with by_drop:
            drop_charts(ev, t_index, current, honest)
    if by_t.open:
        with by_t:
            timestep_charts(ev, timesteps, t_index, drop)


def drop_charts(ev: Evaluation, t_index: int, current: float | None, honest: bool) -> None:
    """AUROC and TPR@1%FPR against the drop percentage at the sidebar's t, with bands."""
    curves = ev.drop_curves(t_index, extra=() if current is None else (current,))
    p1, p2 = st.columns(2)
    for col, m, name in ((p1, "auroc", "AUROC"), (p2, "tpr_at_1fpr", "TPR@1%FPR")):
        col.plotly_chart(
            figure_memo.figure(
                figures.drop_curves_with_bands, curves.percents, masked=curves.masked[m], masked_band=(curves.masked_lo[m], curves.masked_hi[m]),
                random_mean=curves.random_mean[m], random_band=(curves.random_lo[m], curves.random_hi[m]),
                baseline=curves.baseline[m], baseline_ci=curves.baseline_ci[m], n_seeds=len(curves.seeds),
                n_boot=curves.n_boot,
                ylabel=name, current=current,
                title=f"{name} vs drop %, t = {curves.t}<br><sup>all samples, "
                + ("in-sample (descriptive)" if honest else f"{ev.protocol.name} convention") + "</sup>",
            ),
            key=f"masks_drop_{m}",
        )


def timestep_charts(ev: Evaluation, timesteps: list[int], t_index: int, drop: int) -> None:
    """Baseline and masked AUROC / TPR@1%FPR against the timestep at the current drop, and the best
    masked AUROC over timesteps (in-sample)."""
    base_t = ev.per_t()
    masked_t = ev.masked_per_t(float(drop))
    q1, q2 = st.columns(2)
    for col, m, name in ((q1, "auroc", "AUROC"), (q2, "tpr_at_1fpr", "TPR@1%FPR")):
        col.plotly_chart(
            figure_memo.figure(
                figures.metric_vs_timestep, timesteps, {"baseline": base_t[m], "masked": masked_t[m]}, ylabel=name,
                                       selected_t=timesteps[t_index],
                                       title=f"{name} vs timestep (drop {drop} %, all samples)"),
            key=f"masks_t_{m}",
        )
    best_masked = int(np.nanargmax(masked_t["auroc"])) if np.isfinite(masked_t["auroc"]).any() else t_index
    st.caption(
        f"Best masked AUROC over timesteps: {format_rate(masked_t['auroc'][best_masked])} at "
        f"t = {timesteps[best_masked]} (chosen on the evaluation set itself: optimistic; the honest protocol "
        "chooses t on other folds)."
    )
