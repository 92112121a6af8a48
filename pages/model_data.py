"""Model & data page: open, delete and compute runs.

Open an existing run (or any run folder by path), delete one (after a confirmation), or start
a new analysis: the demo model, a local diffusers pipeline folder, a hub id, a custom PyTorch model
through its adapter file or a single-file checkpoint with its config folder
(``ldminv_app.model_source``; its family, conditioning, schedule and geometry engine shown before
anything runs, or why it cannot be analysed); members and held-out images as folders or uploads (images or zips); the analysis
options; a cost preview;
then the analysis in the background with a progress bar, a Cancel button and Resume for a
cancelled run. Any error is shown as a message and the active run stays as it was.

Runs reached through a symbolic link in the runs folder that points outside it are listed as
links and can be opened, never deleted: the dashboard deletes only real folders directly inside
the runs folder (checked again at the confirmation), and the core's ``delete_run`` refuses
links and files it does not own. Uploads are unpacked with limits (``ldminv_app.uploads``).
"""
from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

import pandas as pd
import streamlit as st

from ldminv_core.choices import INFLUENCE_METHODS, RESIDUAL_DTYPES
from ldminv_core.pipeline.inputs import load_config_model
from ldminv_core.pipeline.batches import AnalysisCancelled
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.cost import estimate_cost, format_duration
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.attacks import ATTACKS
from ldminv_core.choices import HUTCHINSON_RANK_PROBES, LATENT_KINDS, LOG_VOLUME_KINDS, PROBES_AUTO, attack_label
from ldminv_core.errors import LdminvError, RunError
from ldminv_core.runs import default_runs_root, delete_run, list_runs

from ldminv_app import cache, frame, job_panel, model_source, model_summary, notices, sidebar, state, widgets
from ldminv_app.jobs import AnalysisJob
from ldminv_app.run_folders import check_deletable, checked_resume_config, estimate_rows, inside_root, link_names

#: Defaults of a new analysis: a quick first look (100 images per folder, two attacks, every 30th
#: timestep). How long it takes depends on the model: the decoder geometry grows with the latent
#: size, so "Estimate cost" times every stage on this machine before anything is started.
QUICK_ATTACKS = ("sima", "pia")
QUICK_TIMESTEPS = "0:300:30"
QUICK_LIMIT = 100

active = frame.page_frame(needs_run=False)

with notices.guard("The Model & data page failed"):
    runs_root = default_runs_root()
    registry = cache.job_registry()

    st.title("Model & data")
    if active is not None:
        st.caption(f"Active run: **{sidebar.run_title(active)}** ({active.path})")

    # keyed and tracked: the tab the user is on stays open through reruns (a job's progress, a
    # stage landing), instead of falling back to the first one
    tab_runs, tab_new = st.tabs(["Runs", "New analysis"], key="model_data_tab", on_change="rerun")

    # =========================================================================== runs
    with tab_runs:
        try:
            infos = list_runs(runs_root)
        except Exception as exc:  # noqa: BLE001 - an unreadable runs folder is a message
            notices.show_error(exc, what=f"Cannot list the runs under {runs_root}")
            infos = []
        links = link_names(runs_root)
        outside = {str(i.path) for i in infos if not inside_root(i.path, runs_root)}

        def run_label(i) -> str:
            if str(i.path) in outside:
                return f"{links.get(str(i.path), i.path.name)} (link → {i.path})"
            return i.path.name

        st.caption(f"Runs under {runs_root} (set LDMINV_HOME to use another folder).")
        if infos:
            st.dataframe(
                pd.DataFrame(
                    {
                        "run": [run_label(i) for i in infos],
                        "status": [i.status for i in infos],
                        "created": [i.created for i in infos],
                        "model": [i.model for i in infos],
                        "members": [i.n_members for i in infos],
                        "held-out": [i.n_heldout for i in infos],
                        "path": [str(i.path) for i in infos],
                    }
                ),
                hide_index=True,
                key="runs_table",
            )
            by_path = {str(i.path): i for i in infos}
            picked = st.selectbox(
                "Run",
                list(by_path),
                format_func=lambda p: f"{run_label(by_path[p])} ({by_path[p].status})",
                key="runs_pick",
            )
            linked = picked in outside
            if linked:
                st.caption(f"{run_label(by_path[picked])} is a symbolic link to a folder outside the runs folder: "
                           "it can be opened, but the dashboard does not delete it (remove the link yourself).")
            b1, b2, b3, _ = st.columns([1, 1, 1, 3])
            if b1.button("Open", key="runs_open", type="primary", disabled=by_path[picked].status != "complete"):
                try:
                    run = state.set_active_run(picked)
                    state.notify("success", f"Opened run {sidebar.run_title(run)}.")
                    st.rerun()
                except Exception as exc:  # noqa: BLE001
                    notices.show_error(exc, what=f"Cannot open {picked}")
            if b2.button("Resume", key="runs_resume", disabled=by_path[picked].status != "unfinished",
                         help="Finish an interrupted or cancelled analysis with its own settings."):
                try:
                    config = checked_resume_config(picked)
                    registry.start(picked, AnalysisJob(label=Path(picked).name, config=config, target=run_analysis,
                                                       cancelled_exc=AnalysisCancelled))
                    st.session_state[state.JOB_ID] = picked
                except Exception as exc:  # noqa: BLE001
                    notices.show_error(exc, what=f"Cannot resume {picked}")
            if b3.button("Delete…", key="runs_delete", disabled=linked,
                         help="A linked run outside the runs folder is never deleted here." if linked else None):
                try:
                    check_deletable(picked, runs_root)
                    st.session_state[state.CONFIRM_DELETE] = picked
                except Exception as exc:  # noqa: BLE001
                    notices.show_error(exc, what=f"Cannot delete {picked}")
        else:
            st.info("No runs yet: compute one in the New analysis tab.")

        pending = st.session_state.get(state.CONFIRM_DELETE)
        if pending:
            st.warning(f"Delete the run **{Path(pending).name}** ({pending}) and all its files? This cannot be undone.")
            d1, d2, _ = st.columns([1, 1, 4])
            if d1.button("Yes, delete it", key="runs_delete_confirm", type="primary"):
                st.session_state[state.CONFIRM_DELETE] = None
                try:
                    delete_run(check_deletable(pending, runs_root))
                except Exception as exc:  # noqa: BLE001
                    notices.show_error(exc, what=f"Cannot delete {pending}")
                else:
                    cache.clear_run_caches()
                    if state.active_run_path() == str(Path(pending).resolve()):
                        st.session_state[state.ACTIVE_RUN] = None
                    state.notify("success", f"Deleted run {Path(pending).name}.")
                    st.rerun()
            if d2.button("Cancel", key="runs_delete_cancel"):
                st.session_state[state.CONFIRM_DELETE] = None
                st.rerun()

        st.markdown("**Open a run folder by path**")
        o1, o2 = st.columns([4, 1], vertical_alignment="bottom")
        other = o1.text_input("Run folder", key="runs_open_path", placeholder="/path/to/run")
        if o2.button("Open folder", key="runs_open_path_btn"):
            try:
                if not other.strip():
                    raise RunError("run folder: expected the path of a run folder, got an empty field")
                if Path(other.strip()).expanduser().is_file():
                    raise RunError(f"run folder {other.strip()}: expected a run folder, got a file")
                run = state.set_active_run(other.strip())
                state.notify("success", f"Opened run {sidebar.run_title(run)}.")
                st.rerun()
            except Exception as exc:  # noqa: BLE001
                notices.show_error(exc, what="Cannot open the run")

    # =========================================================================== new analysis
    with tab_new:
        choice = model_source.model_choice()
        kind, model = choice.kind, choice.model
        default_members, default_heldout = choice.default_members, choice.default_heldout
        # the family, its conditioning, schedule and geometry engine, read before anything runs; a
        # model the loader would refuse is named here and nothing can be started on it
        model_ok = model_source.show_summary(choice)

        if st.session_state.get("_new_model_kind_shown") != kind:  # a demo fills in its own folders
            st.session_state["_new_model_kind_shown"] = kind
            for role, default in (("members", default_members), ("heldout", default_heldout)):
                if default or kind in model_source.DEMO_KINDS:
                    st.session_state[f"new_{role}_path"] = default
        d1, d2 = st.columns(2)
        with d1:
            members = widgets.data_source("Members", "members", default_members, runs_root=runs_root)
        with d2:
            heldout = widgets.data_source("Held-out", "heldout", default_heldout, runs_root=runs_root)

        with st.expander("Options", expanded=True):
            st.caption(f"The defaults are a quick first look: {QUICK_LIMIT} images per folder, "
                       f"{', '.join(attack_label(a) for a in QUICK_ATTACKS)}, every "
                       f"{QUICK_TIMESTEPS.rsplit(':', 1)[-1]}th timestep. How long that takes depends on the model "
                       "(the decoder geometry grows with the latent size and usually dominates): “Estimate cost” "
                       "times every stage on this machine and shows each one's share before anything starts. "
                       "Raise the limit (0 = all images), add attacks or refine the timesteps for the full audit.")
            # a row of its own: the chips of all five attacks fit without being cut
            attacks = st.multiselect("Attacks", list(ATTACKS), default=list(QUICK_ATTACKS), key="new_attacks",
                                     format_func=attack_label)
            e1, e2, e3, e4 = st.columns(4)
            timesteps = e1.text_input("Timesteps", QUICK_TIMESTEPS, key="new_timesteps",
                                      help="start:stop:step, or a comma list such as 0,10,50 "
                                           "(the paper's grid: 0:300:10)")
            topk = int(e2.number_input("Top-k singular values", 1, 4096, 50, key="new_topk"))
            influence = e2.selectbox("Influence method", list(INFLUENCE_METHODS), key="new_influence",
                                     help="auto: exact for small latents, Hutchinson estimate for large ones")
            probes = int(e2.number_input(
                "Hutchinson probes (0 = auto)", 0, 4096, 0, key="new_probes",
                help=f"Used only where the influence is estimated rather than exact. 0 = auto: "
                     f"{HUTCHINSON_RANK_PROBES} probes, the count measured to keep the median rank correlation with "
                     "the exact influence >= 0.98. A number is used as given (fewer: faster, noisier ranking). "
                     "The cost preview and run.json say what is used and why."))
            batch_size = int(e3.number_input("Batch size", 1, 4096, 50, key="new_batch"))
            limit = int(e3.number_input("Limit per folder (0 = all)", 0, 10**7, QUICK_LIMIT, key="new_limit",
                                        help="The first images of each folder; 0 analyzes all of them."))
            seed = int(e3.number_input("Seed", 0, 2**31 - 1, 0, key="new_seed"))
            device = e4.selectbox("Device", ["auto", "cpu", "cuda"], key="new_device")
            residual_dtype = e4.selectbox("Residual dtype", list(RESIDUAL_DTYPES), key="new_residual_dtype")
            if "new_run_name" not in st.session_state:
                st.session_state["new_run_name"] = "run-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            run_name = e4.text_input("Run name", key="new_run_name", help=f"folder under {runs_root}").strip()
            f1, f2, f3 = st.columns([1, 1, 2])
            latent = f1.selectbox("Latent", list(LATENT_KINDS), key="new_latent",
                                  help="mean: the encoder mean (the paper's small-LDM code); sample: one posterior "
                                       "draw per image, seeded per sample id (the paper's Stable Diffusion code)")
            log_volume = f2.selectbox("Log-volume", list(LOG_VOLUME_KINDS), key="new_log_volume",
                                      help="topk: sum of the top-k log singular values of the decoder Jacobian; "
                                           "logdet: 0.5 log det(J^T J), by stochastic Lanczos quadrature where J "
                                           "is not built (the paper's Stable Diffusion default)")
            lora_text = f3.text_area(
                "LoRA adapters (one path per line, optional)", key="new_lora", height=68,
                help="Folders with pytorch_lora_weights.safetensors (or .safetensors files) applied to the UNet "
                     "and text encoder of the model above; optional ' @ scale' after a path (default 1.0).")
            blind_encoder = st.text_input(
                "Blind baseline encoder (optional)", key="new_blind_encoder",
                placeholder="/path/to/image-model or owner/name",
                help="An image model (a transformers folder, or a hub id already in the local Hugging Face cache; "
                     "nothing is downloaded), e.g. a CLIP vision tower or DINOv2: its embeddings add the 'encoder' "
                     "feature group to the blind baseline, which tells the folders apart without the audited model. "
                     "Empty: no such group.").strip()
            allow_duplicates = st.checkbox(
                "Analyze even when the folders share images", value=False, key="new_allow_duplicates",
                help="Images shared across (or within) the two folders make membership unmeasurable and are "
                     "refused by default (compared by decoded pixels). Checked: the analysis runs anyway and every "
                     "page of the run shows a warning.")

        def lora_lines() -> tuple[list[str], list[float]]:
            """(paths, scales) from the LoRA box: one adapter per line, 'PATH' or 'PATH @ SCALE'."""
            paths, scales = [], []
            for i, line in enumerate(x.strip() for x in (lora_text or "").splitlines()):
                if not line:
                    continue
                path, _, scale = line.rpartition(" @ ") if " @ " in line else (line, "", "1")
                try:
                    scales.append(float(scale))
                except ValueError:
                    raise LdminvError(f"LoRA adapters, line {i + 1}: expected 'PATH' or 'PATH @ SCALE', got {line!r}")
                paths.append(path.strip())
            return paths, scales

        def build_config() -> AnalyzeConfig:
            name = run_name or "run"
            if Path(name).name != name:
                raise LdminvError(f"run name: expected a plain folder name, got {name!r}")
            lora_paths, lora_scales = lora_lines()
            return AnalyzeConfig(
                latent=latent,
                log_volume=log_volume,
                lora=tuple(lora_paths),
                lora_scale=tuple(lora_scales),
                model=(model or None) if choice.adapter else model,
                model_adapter=choice.adapter,
                model_config=choice.model_config,
                members=members,
                heldout=heldout,
                out=str(runs_root / name),
                attacks=tuple(attacks),
                timesteps=timesteps,
                topk=topk,
                influence=influence,
                probes=probes or PROBES_AUTO,
                device=device,
                batch_size=batch_size,
                seed=seed,
                limit=limit or None,
                residual_dtype=residual_dtype,
                allow_duplicates=bool(allow_duplicates),
                blind_encoder=blind_encoder or None,
            )

        current_job = registry.get(st.session_state.get(state.JOB_ID))
        busy = current_job is not None and current_job.running
        c1, c2, _ = st.columns([1, 1, 3])
        refused = None if model_ok else f"{model_summary.REFUSED_WHAT}: see the message under the model."
        preview = c1.button("Estimate cost", key="new_estimate", disabled=not model_ok, help=refused)
        start = c2.button("Start analysis", key="new_start", type="primary", disabled=busy or not model_ok,
                          help=refused)

        if (preview or start) and model_ok:
            try:
                config = build_config()
                if not attacks:
                    raise LdminvError("attacks: expected at least one attack, got none")
                with st.spinner("Checking the model and the images, timing one batch…"):
                    loaded = load_config_model(config)
                    estimate = estimate_cost(config, model=loaded)
                st.session_state["cost_preview"] = (repr(config), str(estimate), estimate.total_seconds,
                                                    estimate_rows(estimate), estimate.breakdown())
                if start:
                    job = AnalysisJob(
                        label=Path(config.out).name,
                        config=config,
                        target=functools.partial(run_analysis, model=loaded, geometry_plan=estimate.geometry_plan),
                        cancelled_exc=AnalysisCancelled,
                    )
                    registry.start(str(Path(config.out).resolve()), job)
                    st.session_state[state.JOB_ID] = str(Path(config.out).resolve())
            except Exception as exc:  # noqa: BLE001 - every problem becomes a message
                notices.show_error(exc, what="Cannot start the analysis" if start else "Cannot estimate the cost")

        cost = st.session_state.get("cost_preview")
        if cost is not None:
            lines = cost[1].splitlines()
            st.markdown(f"**Cost preview**: about **{format_duration(cost[2])}** on this machine")
            if len(cost) > 4:
                st.markdown(f"Where the time goes: {cost[4]}.")  # the costliest stage and every share
            st.caption(lines[0])  # images, latent shape, device, geometry paths (wraps, never cut)
            for extra in lines[1:3]:  # the cost model's paths and predicted seconds per sample; the probes
                if extra.startswith(("geometry:", "Hutchinson probes:")):
                    st.caption(extra)
            if len(cost) > 3:
                st.dataframe(pd.DataFrame(cost[3]), hide_index=True, key="cost_table")
            else:
                st.code(cost[1], language="text", wrap_lines=True)
            st.caption(lines[-1])  # how the times were extrapolated, disk size


    # =========================================================================== job
    job_id = st.session_state.get(state.JOB_ID)
    job = registry.get(job_id)
    job_panel.job_panel(registry, job_id, job)
