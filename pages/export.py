"""Export page: download an HTML report (figures, tables and the settings that produced them),
a CSV of per-sample scores and a CSV of the dimension table, for sharing findings with colleagues.

The attack and timestep are the shared ones of the sidebar; the drop percentage, random seed,
global-ranking and manual masks start from the Masks & ROC page's controls (when that page was
just used) and can be adjusted here. The intervals use the bootstrap replicates the dashboard shows:
the one default of the evaluation layer (as the Findings page and the CLI report), or the faster
preview when it is chosen on the Masks & ROC page, never a count of this page's own. The files are
generated only when "Build report" is clicked, and cached per settings.
"""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st

from ldminv_core import masks
from ldminv_core.choices import attack_label

from ldminv_app import banners, cache, frame, html_report, notices, sidebar, state, timestep_text

# Widget keys of the Masks & ROC page (read, never written) -> this page's widget keys.
_FROM_MASKS = {
    "drop_percent": "export_drop",
    "random_seed": "export_seed",
    "use_global": "export_global",
}
_DEFAULTS = {
    "export_drop": int(html_report.DEFAULT_DROP_PERCENT),
    "export_seed": html_report.DEFAULT_SEED,
    "export_global": False,
    "export_manual": False,
}
# Persistent copy of this page's settings (widget keys are dropped when the page is left).
_REMEMBERED = "_export_settings"
# Manual mask of the Masks & ROC page: {"channels", "positions", "use_picked"} or None.
_MANUAL_SPEC = "_export_manual_spec"
# Settings key of the last report built in this session.
_BUILT = "_export_built"


@st.cache_data(max_entries=4, show_spinner=False)
def _build(
    path: str,
    stamp: int,
    attack: str,
    t: int | None,
    drop: int,
    seed: int,
    manual_coords: tuple[int, ...] | None,
    include_global: bool,
    n_boot: int,
    protocol: str,
    folds: int,
    per_fold: bool,
) -> tuple[str, str]:
    """(HTML report, CSV) of one set of settings; ``stamp`` keys the cache to the run.json mtime."""
    run = cache.open_run(path)
    keep = None
    if manual_coords is not None:
        keep = np.zeros(int(np.prod(run.latent_shape)), dtype=bool)
        keep[list(manual_coords)] = True
        keep = keep.reshape(run.latent_shape)
    html = html_report.build_html_report(
        run, attack=attack, t=t, protocol=protocol, folds=folds, drop_percent=None if per_fold else drop,
        random_seed=seed, manual_mask=keep, include_global=include_global, n_boot=n_boot,
    )
    csv = html_report.per_sample_csv(run, attack=attack, t=t, drop_percent=drop, random_seed=seed, protocol=protocol,
                                folds=folds)
    return html, csv


def _init_settings() -> None:
    """Seed this page's widgets from the Masks & ROC page (if it was just used), else from
    the values last used here, else the defaults."""
    remembered = st.session_state.setdefault(_REMEMBERED, {})
    from_masks = state.mask_settings()
    for masks_key, key in _FROM_MASKS.items():
        if masks_key in from_masks:
            st.session_state[key] = from_masks[masks_key]
        elif key not in st.session_state:
            st.session_state[key] = remembered.get(key, _DEFAULTS[key])
    if "use_manual" in from_masks:
        use = bool(from_masks["use_manual"])
        st.session_state[_MANUAL_SPEC] = {
            "channels": list(from_masks.get("manual_channels", [])),
            "positions": [tuple(p) for p in from_masks.get("manual_positions", [])],
            "use_picked": bool(from_masks.get("manual_use_picked", False)),
        }
        st.session_state["export_manual"] = use
    elif "export_manual" not in st.session_state:
        st.session_state["export_manual"] = remembered.get("export_manual", False)


def _n_boot() -> tuple[int, str]:
    """(bootstrap replicates, where that count comes from): the count the Masks & ROC page shows
    when it was used (its faster preview, say), else the pages' default (the CLI report's)."""
    chosen = state.mask_settings().get("n_boot")
    if chosen is None or int(chosen) == cache.PAGE_N_BOOT:
        return cache.PAGE_N_BOOT, "as on the Findings page and in the CLI report"
    return int(chosen), (f"the faster preview chosen on the Masks & ROC page; choose {cache.PAGE_N_BOOT} there "
                         "for the intervals of the Findings page and the CLI report")


def _manual_keep(run) -> np.ndarray:
    """The manual keep-mask (C, h, w) of the Masks & ROC page settings, or the coordinates
    picked on the Dimensions page when that page's manual settings are unknown."""
    spec = st.session_state.get(_MANUAL_SPEC)
    picked = state.manual_coords(run)
    c_count, h, w = run.latent_shape
    if spec is None:
        return masks.manual_mask(run.latent_shape, coords=picked or None)
    channels = [c for c in spec["channels"] if 0 <= int(c) < c_count]
    positions = [p for p in spec["positions"] if 0 <= p[0] < h and 0 <= p[1] < w]
    use_picked = spec["use_picked"] and bool(picked)
    return masks.manual_mask(
        run.latent_shape, channels=channels, positions=positions or None, coords=picked if use_picked else None
    )


run = frame.require_run(needs_geometry=False)
if run.partial:
    st.title("Export")
    st.info("The report covers every attack of the run, so it can be exported once the analysis is complete "
            f"(still computing: {banners.pending_text(run)}; progress in the sidebar).", icon=":material/hourglass_top:")
    st.stop()
attack = state.current_attack(run)
t_index = state.current_t_index(run, attack)
maskable = t_index is not None
t = run.timesteps(attack)[t_index] if maskable else None
c_count, h, w = run.latent_shape
d = c_count * h * w

st.title("Export")
st.caption(
    "Download a self-contained HTML report (all figures and tables, with the settings that produced "
    "them; it opens offline in any browser), a CSV with one row per sample and a CSV of the dimension "
    "table (one row per latent coordinate), to share findings. Any chart of the dashboard or the report "
    "saves as an image with the camera button of its toolbar (drawn in the browser: works offline)."
)

_init_settings()
protocol, folds = state.current_protocol(), state.current_folds()
st.markdown(
    f"**{attack_label(attack)}**, protocol **{protocol}**"
    + (" · " + timestep_text.t_scope_text(state.evaluation(run, attack), t_index, fixed="findings, ROC curves and metrics table",
                               follows="the curves against the drop %")
       if maskable else " (one score per sample: no timestep, no masks)")
    + f" · run `{sidebar.run_title(run)}` · {run.n_members} members / {run.n_heldout} held-out  \n"
    "Change the protocol, the attack and the timestep in the sidebar."
)

k1, k2, k3 = st.columns([2, 1, 1])
with k1:
    drop = st.slider(
        "Drop percentage (per sample: its lowest-influence coordinates)", 0, 90, step=1, key="export_drop",
        disabled=not maskable,
        help="Taken from the Masks & ROC page when you come from there; default 40 %.",
    )
    if maskable:
        st.caption(f"{masks.drop_count(d, drop)} of {d} coordinates dropped per sample")
    per_fold = protocol == "honest" and maskable and st.checkbox(
        "Choose the drop on the other folds (honest)", value=True, key="export_per_fold",
        help="Each fold takes the drop % of the best masked AUROC on the other folds; off: the slider's value.")
with k2:
    seed = int(st.number_input("Random seed (random-drop control)", 0, 2**31 - 1, step=1, key="export_seed",
                               disabled=not maskable))
n_boot, boot_source = _n_boot()
with k3:
    st.markdown(f"**Intervals**  \n95% CI, {n_boot} bootstrap replicates")
    st.caption(boot_source)
o1, o2 = st.columns(2)
with o1:
    include_global = st.checkbox("Include the global ranking mask", key="export_global", disabled=not maskable,
                                 help="Drop the same coordinates for every sample: those of lowest mean influence.")
keep = _manual_keep(run) if maskable else None
with o2:
    include_manual = st.checkbox(
        "Include the manual mask",
        key="export_manual",
        disabled=not maskable,
        help="The manual mask of the Masks & ROC page (or the coordinates picked on the Dimensions page).",
    )
    if maskable and include_manual:
        st.caption(f"The manual mask keeps {int(keep.sum())} of {d} coordinates.")

remembered = st.session_state[_REMEMBERED]
for key in _DEFAULTS:
    remembered[key] = st.session_state[key]

include_global = bool(include_global) and maskable
include_manual = bool(include_manual) and maskable
manual_coords = tuple(int(i) for i in np.flatnonzero(keep)) if include_manual else None
stamp = cache.run_key(run.path)[1]
settings_key = (str(run.path), stamp, attack, t, int(drop), seed, manual_coords, include_global, int(n_boot),
                protocol, int(folds), bool(per_fold))

variants = ["baseline"] + (["masked", "random"] if maskable else [])
variants += (["global"] if include_global else []) + (["manual"] if include_manual else [])
label = attack_label(attack)
html_name, csv_name = html_report.report_filename(run, attack), html_report.scores_filename(run, attack)
dims_name = html_report.dimensions_filename(run, attack, t) if maskable else None
with st.expander("What will be exported", expanded=True):
    settings_text = f"{attack_label(attack)}" + (
        f" at t = {t}, drop {drop} % ({masks.drop_count(d, drop)} of {d} coordinates), random seed {seed}"
        if maskable else ""
    )
    st.markdown(
        f"- **{html_name}**: the findings under the {protocol} protocol (estimates, intervals, verdicts); run "
        "settings and provenance (model, data folders, latent shape, geometry, "
        f"attacks, package versions); the settings ({settings_text}); the metrics table "
        f"({', '.join(variants)}; AUROC, TPR@1%FPR, ASR with 95% CI from {n_boot} bootstrap replicates, each "
        "with its t); ROC curves (linear and log-log); AUROC and TPR@1%FPR vs drop percentage; metrics vs "
        "timestep; log-volume of members vs held-out; AUROC by distortion quartile; the mean influence "
        "heatmap; and a link inside the report that saves the report JSON.\n"
        f"- **{csv_name}**: {len(run)} rows ({', '.join(html_report.CSV_COLUMNS)})."
        + (f"\n- **{dims_name}**: the Dimensions page's table of all {d} latent coordinates ({label} at t = {t}: "
           "mean and spread of influence, member / held-out gap, AUROC of each coordinate alone)."
           if maskable else "")
    )

clicked = st.button("Build report", type="primary", key="export_build", icon=":material/build:")
if clicked:
    try:
        with st.spinner("Building the report (figures, bootstrap intervals, report JSON)…"):
            _build(*settings_key)
        st.session_state[_BUILT] = settings_key
    except Exception as exc:  # noqa: BLE001 - show the error on the page, keep the app running
        st.session_state[_BUILT] = None
        notices.show_error(exc, what="Building the report failed")

built = st.session_state.get(_BUILT)
if built is not None and built == settings_key:
    html, csv = _build(*settings_key)
    st.success("The report is ready.")
    b1, b2, b3 = st.columns(3)
    with b1:
        st.download_button(
            f"Download HTML report ({label})", data=html, file_name=html_name, mime="text/html", key="export_download_html",
            on_click="ignore", type="primary", icon=":material/download:",
        )
        st.caption(f"{html_name} · {len(html.encode('utf-8')) / 1e6:.1f} MB (plotly.js included: works offline)")
    with b2:
        st.download_button(
            f"Download per-sample CSV ({label})", data=csv, file_name=csv_name, mime="text/csv",
            key="export_download_csv", on_click="ignore", icon=":material/table:",
        )
        st.caption(f"{csv_name} · {len(csv.encode('utf-8')) / 1e3:.0f} kB")
    with b3:
        if maskable:
            dims_csv = html_report.dimension_csv(cache.dimension_table(run, attack, t_index), attack=attack, t=t)
            st.download_button(
                f"Download dimension CSV ({label}, t = {t})", data=dims_csv, file_name=dims_name,
                mime="text/csv", key="export_download_dims", on_click="ignore", icon=":material/grid_on:",
            )
            st.caption(f"{dims_name} · {d} coordinates · {len(dims_csv.encode('utf-8')) / 1e3:.0f} kB")
        else:
            st.caption(f"{label} gives one score per sample: no per-coordinate table.")
    st.markdown("**CSV preview** (first 20 rows)")
    st.dataframe(pd.read_csv(io.StringIO(csv)).head(20), hide_index=True, key="export_csv_preview")
elif built is not None:
    st.info("The settings changed since the last report was built: click “Build report” again.")
else:
    st.info("Click “Build report” to generate the report and the CSV files (it takes a moment).")
