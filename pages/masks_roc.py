"""Masks & ROC page: does dropping low-influence coordinates from the attack statistic help?

Per-sample drop (each sample drops its own lowest-influence p %), the random-drop control at
the same percentage (several seeds: a band), a global ranking mask and manual channel / position /
coordinate masks; the masking findings with their paired intervals, ROC curves, a metrics table
that names the protocol, t and drop of every number, metrics against the drop percentage and the
timestep. The ROC curves carry the blind baseline's (the files alone, never the model; METHOD.md
section 6) dashed beside the attack's, with a one-line shift note when the files alone separate the
folders. Every control recomputes inside a fragment from the cached ``Evaluation`` only.

Live: the drop slider reruns the fragment alone; the headline numbers come first (``st.metric``),
the ROC curves are thinned to about 200 points, and after each run the neighbouring drops are
computed in the background (``ldminv_app.warm.prefetch_drops``) so that one slider step is a lookup.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from ldminv_core import masks
from ldminv_core.evaluation import convention_roc
from ldminv_core.report import format_rate, format_rate_ci, low_fpr_cautions

from ldminv_app import cache, export, figures, state, ui

run = ui.require_run()  # waits for the decoder geometry of a partial run

with ui.guard("The Masks & ROC page failed"):
    st.title("Masks & ROC")
    st.caption(
        "Statistic = Σ mask_i · term_i(t); score = −statistic (higher = member). The model always "
        "sees the full latent: masks only choose which coordinates enter the statistic."
    )
    head1, head2 = st.columns([1, 2])
    with head1:
        attack = ui.attack_selector(run, key="masks_attack")
    t_index = state.current_t_index(run, attack)
    labels = run.labels
    #: Points per drawn ROC curve (a curve has up to N + 1; more do not show at chart size).
    ROC_POINTS = 200
    RATE_METRICS = ("AUROC", "TPR@1%FPR", "ASR")

    def show_cautions(ev) -> None:
        """The low-FPR caution (``fpr_support``) beside every TPR@1%FPR shown, when negatives are few."""
        for text in low_fpr_cautions(ev.protocol, n_members=run.n_members, n_heldout=run.n_heldout,
                                     metrics_shown=("tpr_at_1fpr",)).values():
            st.caption(f":orange[Caution:] {text}")

    def roc_panel(ev, scores: dict, arms: dict) -> None:
        """ROC curves of the arms' scores in the protocol's convention (``paper``: held-out positive);
        ``arms``: curve name -> its ``ArmResult`` (which t each curve and each card is at)."""
        proto = ev.protocol
        paper = proto.name == "paper"
        curves, aurocs = {}, {}
        for name, s in scores.items():
            c = convention_roc(s, labels, proto)
            curves[name] = (c.fpr, c.tpr)
            arm = arms[name]  # the legend's AUROC is the evaluation's: the arm's (the random curve: its seed's)
            aurocs[name] = arm.per_seed["auroc"][0] if arm.per_seed else arm.auroc
        blind = ui.blind_curve(ev)  # the files alone, same convention: dashed beside the attack's curves
        if blind is not None:
            curves[ui.BLIND_CURVE] = (blind[0].fpr, blind[0].tpr)
            aurocs[ui.BLIND_CURVE] = blind[1]
        base = ev.arms()["baseline"]
        if proto.name == "honest":
            note = f"(honest)<br><sup>pooled calibrated out-of-fold scores, {ui.arm_t_cell(base)}</sup>"
        elif paper and len({a.best_t.get("auroc") for a in arms.values()}) > 1:
            note = "(paper, each curve at its arm's AUROC t)"
        else:
            note = f"({proto.name}, {ui.metric_t_text(base, 'auroc')})"
        axes = (dict(xlabel="false-positive rate (members)", ylabel="true-positive rate (held-out)") if paper
                else dict(xlabel="false-positive rate (held-out)", ylabel="true-positive rate (members)"))
        # the log axes start at the smallest rate the negatives / positives can resolve
        n_neg, n_pos = (run.n_members, run.n_heldout) if paper else (run.n_heldout, run.n_members)
        r1, r2 = st.columns(2)
        dashed = (ui.BLIND_CURVE,)
        r1.plotly_chart(figures.roc_curves(curves, aurocs=aurocs, title=f"ROC {note}", max_points=ROC_POINTS,
                                           dashed=dashed, **axes),
                        key="masks_roc_lin")
        r2.plotly_chart(figures.roc_curves(curves, aurocs=aurocs, log_scale=True, title=f"ROC, log-log {note}",
                                           max_points=ROC_POINTS, n_negatives=n_neg, n_positives=n_pos, dashed=dashed,
                                           **axes),
                        key="masks_roc_log")
        if blind is not None:
            st.caption(f"Dashed: the {ui.BLIND_CURVE} (a classifier of the images' format, pixels and captions, "
                       "cross-fitted, never seeing the model), in the same convention as the attack's curves.")
        shift = ui.shift_note(ev)
        if shift:
            st.caption(shift)
        for line in ui.below_chance_captions((name, arms[name]) for name in scores):
            st.caption(line)
        if proto.name == "honest":
            st.caption("Honest protocol: every sample is scored at its fold's t (and drop), then calibrated on the "
                       "other folds' held-out scores, so the folds pool into one set of out-of-fold scores: the "
                       "curves, their AUROC and the table's AUROC are of those pooled scores; TPR@1%FPR is the "
                       "realised rate of the thresholds chosen on the other folds.")
        elif paper:
            curve_ts = {name: a.best_t.get("auroc") for name, a in arms.items()}
            card_ts = {name: a.best_t.get("tpr_at_1fpr") for name, a in arms.items() if name in ("baseline", "masked")}
            apart = [name for name, t in card_ts.items() if t != curve_ts[name]]
            st.caption(
                "Paper convention: held-out images are the positive class and the statistic is the score. Each "
                "metric has its own best t: the curves are at the AUROC's ("
                + ", ".join(f"{name} t = {t}" for name, t in curve_ts.items()) + "); the TPR@1%FPR cards at "
                "TPR's own (" + ", ".join(f"{name} t = {t}" for name, t in card_ts.items()) + ")"
                + (f", so the {' and '.join(apart)} TPR@1%FPR cannot be read off these curves." if apart else ".")
            )

    def arms_frame(arms: list, honest: bool, custom_drop: dict | None = None):
        """The report's arms table (``export.arms_table``); under ``honest`` the t and drop of every
        fold in short columns ("60 (all)" when the folds agree), so the table fits the page;
        ``custom_drop``: arm name -> what a global or manual mask drops (they have no drop of their own)."""
        frame = export.arms_table(arms, honest=honest)
        if custom_drop:
            frame["drop"] = [custom_drop.get(a.arm, value) for a, value in zip(arms, frame["drop"])]
        # rates as numbers shown in % (column_config below), intervals in %: the cards' convention
        for m, label in zip(("auroc", "tpr_at_1fpr", "asr"), RATE_METRICS):
            frame[label] = [a.value(m) for a in arms]
            frame[f"{label} 95% CI"] = [format_rate_ci(a.ci[m]) for a in arms]
        if honest:
            frame["realised FPR"] = [a.realised_fpr_at_1fpr for a in arms]
        if honest:
            def per_fold(values: list) -> str:
                if not values:
                    return "–"
                return f"{values[0]} (all)" if len(set(values)) == 1 else ", ".join(map(str, values))
            frame["t"] = [per_fold([f.t for f in a.folds if f.t is not None]) for a in arms]
            frame["drop"] = [(custom_drop or {}).get(a.arm) or
                             per_fold([f"{f.drop_percent:g}" for f in a.folds if f.drop_percent is not None])
                             for a in arms]
            frame = frame.rename(columns={"t": "t (per fold)", "drop": "drop % (per fold)"})
        return frame.set_index("variant")

    RATE_COLUMNS = {c: st.column_config.NumberColumn(c, format="%.4f")
                    for c in (*RATE_METRICS, "realised FPR")}

    if t_index is None:
        # PFAMI: one score per sample, nothing to mask.
        ev = cache.evaluation(run, attack)
        base = ev.arms()["baseline"]
        st.info(f"{ui.attack_label(attack)} gives one score per sample: it cannot be masked. Its ROC and metrics "
                f"({ev.protocol.name} protocol, {ev.n_boot} bootstrap replicates):")
        roc_panel(ev, {"baseline": ev.scores("baseline")}, {"baseline": base})
        st.dataframe(arms_frame([base], ev.protocol.name == "honest"), key="masks_metrics_table",
                     column_config=RATE_COLUMNS)
        show_cautions(ev)
        if base.folds:
            st.dataframe(export.folds_table([base]), hide_index=True, key="masks_folds_table")
        st.stop()

    timesteps = run.timesteps(attack)
    with head2:
        st.markdown(
            f"**{ui.attack_label(attack)}** · {run.n_members} members / {run.n_heldout} held-out · "
            f"protocol **{state.current_protocol()}** (sidebar)  \n"
            + ui.t_scope_text(cache.evaluation(run, attack), t_index,
                              fixed="cards, findings, ROC curves and metrics table",
                              follows="the curves against the drop %")
        )

    def masks_body(run, attack: str, t_index: int, labels: np.ndarray, timesteps: list[int]) -> None:
        c_count, h, w = run.latent_shape
        d = c_count * h * w
        honest = state.current_protocol() == "honest"

        # ---- controls
        k1, k2, k3 = st.columns([2, 1, 1])
        with k1:
            per_fold = False
            if honest:
                per_fold = st.toggle("Choose the drop on the other folds (honest)", value=True, key="drop_per_fold",
                                     help="Each fold takes the drop % of the best masked AUROC on the other folds; "
                                     "off: the slider fixes it for every fold.")
            drop = st.slider(
                "Drop percentage (per sample: its lowest-influence coordinates)",
                0, 90, 40, step=1, key="drop_percent", disabled=per_fold,
                help="Each sample drops its own lowest-influence coordinates (paper default 40 %).",
            )
            if per_fold:
                rule = "the percentage each fold chose on the other folds (see the folds table below)"
            elif state.current_protocol() == "paper":
                rule = "coordinates at or below the sample's np.percentile threshold"
            else:
                rule = f"{masks.drop_count(d, drop)} of {d} coordinates"
            st.caption(f"Dropped per sample: {rule}")
        with k2:
            use_global = st.toggle("Global ranking mask", value=False, key="use_global",
                                   help="Drop the same coordinates for every sample: those of lowest mean influence.")
        with k3:
            n_boot = st.select_slider("Bootstrap replicates", [cache.PREVIEW_N_BOOT, cache.PAGE_N_BOOT],
                                      value=cache.PAGE_N_BOOT, key="n_boot",
                                      help=f"{cache.PAGE_N_BOOT}: the replicates of every interval on the Findings "
                                           f"page, in the CLI report and in the export; {cache.PREVIEW_N_BOOT}: a "
                                           "faster preview while tuning (the Export page follows this choice).")

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
        state.remember_mask_settings()

        ev = cache.evaluation(run, attack, n_boot=int(n_boot))
        p = None if per_fold else float(drop)
        arms = ev.arms(p)
        base, masked, rand = arms["baseline"], arms["masked"], arms["random"]
        shown = [base, masked, rand]
        random_label = f"random (seed {rand.seeds[0]})"
        roc_scores = {"baseline": ev.scores("baseline"), "masked": ev.scores("masked", p),
                      random_label: ev.scores("random", p, rand.seeds[0])}
        roc_arms = {"baseline": base, "masked": masked, random_label: rand}
        custom_drop = {}  # what a global / manual mask drops, for the table's drop column
        if use_global:
            gstat = ev.global_stat(float(drop))
            roc_arms["global"] = ev.custom_arm("global", gstat)
            shown.append(roc_arms["global"])
            roc_scores["global"] = ev.custom_scores(gstat)
            custom_drop["global"] = f"{drop} % (global ranking)"
        if use_manual:
            if not keep.any():
                st.warning("The manual mask keeps no coordinate; its statistic is 0 for every sample.")
            mstat = ev.manual_stat(keep)  # per-channel sums + the few differing coordinates; memoised per mask
            roc_arms["manual"] = ev.custom_arm("manual", mstat)
            shown.append(roc_arms["manual"])
            roc_scores["manual"] = ev.custom_scores(mstat)
            custom_drop["manual"] = f"keeps {int(keep.sum())} of {d} (manual)"

        # ---- headline cards: every value names its protocol, t (and drop) and interval; no bare deltas
        proto = ev.protocol
        cards = ((base, "auroc", "AUROC (baseline)"), (masked, "auroc", "AUROC (masked)"),
                 (base, "tpr_at_1fpr", "TPR@1%FPR (baseline)"), (masked, "tpr_at_1fpr", "TPR@1%FPR (masked)"))
        for col, (arm, m, label) in zip(st.columns(4), cards):
            col.metric(label, arm.value(m), format="%.4f",  # a 4-decimal fraction, as on every page
                       help=proto.tpr_rule if m == "tpr_at_1fpr" else f"{proto.name} protocol: {proto.description}")
            col.caption(ui.arm_metric_caption(arm, m, proto))
        show_cautions(ev)
        f1, f2 = st.columns(2)
        for col, fid in ((f1, "masking_vs_baseline"), (f2, "masking_vs_random")):
            f = next(x for x in ev.findings(p) if x.id == fid)
            with col:
                ui.finding_card(f)

        # ---- ROC curves
        roc_panel(ev, roc_scores, roc_arms)

        # ---- metrics table with bootstrap intervals
        st.markdown(f"**Metrics, {ev.protocol.name} protocol** (intervals: {ev.n_boot} stratified bootstrap "
                    f"replicates; random = mean of seeds {', '.join(map(str, rand.seeds))})")
        st.dataframe(arms_frame(shown, honest, custom_drop), key="masks_metrics_table", column_config=RATE_COLUMNS)
        spread = " · ".join(
            f"{ui.METRIC_LABELS[m]} {format_rate(min(rand.per_seed[m]))} to {format_rate(max(rand.per_seed[m]))}"
            for m in ("auroc", "tpr_at_1fpr", "asr") if rand.per_seed.get(m)
        )
        st.caption(f"Random control over its {len(rand.seeds)} seeds (min to max): {spread}; the table shows their "
                   f"mean, the ROC curve seed {rand.seeds[0]}."
                   + (" Realised FPR: the FPR the thresholds chosen on the other folds give on each fold's own "
                      "samples (above 1%: the threshold did not transfer)." if honest else ""))
        if honest:
            with st.expander("Choices of every fold (made on the other folds only)", expanded=True):
                folds = export.folds_table(shown[:3])
                st.dataframe(folds, hide_index=True, key="masks_folds_table", height=36 * (len(folds) + 1) + 3)

        # ---- metrics against drop percentage, with bands
        current = None if per_fold else float(drop)
        curves = ev.drop_curves(t_index, extra=() if current is None else (current,))
        p1, p2 = st.columns(2)
        for col, m, name in ((p1, "auroc", "AUROC"), (p2, "tpr_at_1fpr", "TPR@1%FPR")):
            col.plotly_chart(
                figures.drop_curves_with_bands(
                    curves.percents, masked=curves.masked[m], masked_band=(curves.masked_lo[m], curves.masked_hi[m]),
                    random_mean=curves.random_mean[m], random_band=(curves.random_lo[m], curves.random_hi[m]),
                    baseline=curves.baseline[m], baseline_ci=curves.baseline_ci[m], n_seeds=len(curves.seeds),
                    n_boot=curves.n_boot,
                    ylabel=name, current=current,
                    title=f"{name} vs drop %, t = {curves.t}<br><sup>all samples, "
                    + ("in-sample (descriptive)" if honest else f"{ev.protocol.name} convention") + "</sup>",
                ),
                key=f"masks_drop_{m}",
            )

        # ---- metrics against timestep: baseline vs masked at the current drop
        base_t = ev.per_t()
        masked_t = ev.masked_per_t(float(drop))
        q1, q2 = st.columns(2)
        for col, m, name in ((q1, "auroc", "AUROC"), (q2, "tpr_at_1fpr", "TPR@1%FPR")):
            col.plotly_chart(
                figures.metric_vs_timestep(timesteps, {"baseline": base_t[m], "masked": masked_t[m]}, ylabel=name,
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
        if not per_fold:
            # the neighbouring drops, computed in the background: the next slider step is a lookup
            near = [float(drop + k) for k in (1, -1, 2, -2, 3, -3) if 0 <= drop + k <= 90]
            from ldminv_app import warm

            warm.prefetch_drops(ev, near, t_index=t_index)
        if int(n_boot) == cache.PAGE_N_BOOT:
            # then the other protocols at this drop and the neighbouring timesteps (one low-priority
            # thread): a protocol or timestep change is a lookup too
            cache.warm_controls(run, attack, p, t_index)

    @st.fragment
    def masks_panel(run, attack: str, t_index: int, labels: np.ndarray, timesteps: list[int]) -> None:
        """The controls and everything they change: reruns alone when a control moves."""
        with ui.guard("The masks panel failed"):
            masks_body(run, attack, t_index, labels, timesteps)

    masks_panel(run, attack, t_index, labels, timesteps)
