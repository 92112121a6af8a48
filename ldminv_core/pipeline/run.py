"""Running (or resuming) an analysis: model + two image folders -> a run folder.

:func:`run_analysis` runs these stages, in order, into the run folder of the method
reference (section 3), batch by batch (:mod:`.stages`):

1. ``encode``   load the model and both image folders, write samples.parquet and the scaled
                encoder means latents.npy;
2. one stage per maskable attack: per-coordinate terms residuals/<name>.npy (SimA, PIA,
                Loss, SecMI), cheap, so AUROC and ROC curves exist early;
3. ``geometry`` decoder log-volume (-> samples.parquet ``log_volume``) and per-coordinate
                influence (influence.npy), usually the most expensive stage;
4. one stage per score-only attack: scores/pfami.npy (PFAMI);
5. finish       run.json ``status`` becomes "complete".

The order is :func:`ldminv_core.runs.layout.planned_stages`. Each stage is marked done in
run.json only once all its arrays are flushed, so ``Run.open(path, partial=True)`` (the
dashboard, while an analysis runs) sees exactly the finished stages.

Resuming: after each batch its array rows are flushed, then the stage's sample counter in
run.json moves (atomic write). Running again with the same settings skips finished stages and
continues a partly done one from its last completed batch. Every random draw is seeded per
sample id and batches always cover the same samples, so a resumed run is bit-identical to an
uninterrupted one. ``should_stop()`` returning True raises :class:`AnalysisCancelled` after
the current batch; a KeyboardInterrupt or a killed process leave the folder resumable too.

Workers: the batches of an attack stage may be computed by several threads at once
(``AnalyzeConfig.workers``, :mod:`.workers`); they are the same batches, and this thread still
writes and records them in batch order, so all of the above holds whatever their number. The
geometry stage runs one batch at a time. run.json "sessions" records each session's workers.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from .. import geometry as _geometry
from ..errors import RunError
from ldminv_core.models.single_file import check_single_file_unchanged
from ldminv_core.models.loading import LoadedModel
from ldminv_core.geometry.precomputed import PrecomputedGeometry
from ldminv_core.runs import RunWriter, delete_run, planned_stages, run_status
from .batches import ProgressFn
from .config import AnalyzeConfig
from .distributed import DistContext, RankLedger
from .follower import _run_follower
from .geometry_paths import _geometry_methods
from .inputs import (
    _check_captions_for_attacks,
    _check_duplicates,
    _check_lora_hashes,
    _check_model_lora,
    _check_timesteps_for_model,
    _load_images,
    _load_plan_model,
    _rank_device,
    _samples_table,
)
from .plan import _Plan, _complete_run_matches, _plan, _preflight, _read_stored_run, _settings_against
from .record import run_record, session_record
from .session import _Session
from .workers import resolve_workers
from .stages import attack_stage, blind_stage, encode_stage, geometry_stage, reuse_geometry

__all__ = ["run_analysis"]


def run_analysis(
    config: AnalyzeConfig,
    *,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    model: LoadedModel | None = None,
    precomputed: "PrecomputedGeometry | None" = None,
    geometry_plan: "_geometry.GeometryPlan | None" = None,
) -> Path:
    """Run (or resume) an analysis into ``config.out``; returns the run folder.

    Args:
        config: :class:`AnalyzeConfig`.
        progress: called as ``progress(stage, done, total)`` (samples) at the start of each
            stage and after every batch; stages are "encode", "geometry", then attack names.
            Inside a geometry batch (one sample can take minutes) it is also called after
            decoder calls, at most every :data:`WITHIN_BATCH_REPORT_S` s, with ``done`` a float
            (the samples finished, estimated from the decoder products done).
        should_stop: polled after every batch; True raises :class:`AnalysisCancelled`
            leaving a resumable folder.
        model: an already loaded model for ``config.model`` (skips loading it again).
        precomputed: a saved geometry stage (:mod:`ldminv_core.geometry.precomputed`) used instead of
            computing the geometry when it provably applies (same VAE files, settings, samples
            and latents); run.json "geometry" records whether it was used and why.
        geometry_plan: the geometry paths to use (:attr:`CostEstimate.geometry_plan`), when it
            was made for these settings; else the cost model picks them on the first latent.
            run.json "geometry" records the paths, the plan (products, measured cost of one
            product, predicted seconds per sample) and, once done, the measured seconds per sample.

    Every option, both folders, the model folder and the output folder are validated before
    anything is loaded or deleted (:func:`~.plan.check_config`). A folder that already holds a
    complete run with the same settings is returned as is unless ``config.force`` (then it is
    deleted and recomputed). Duplicate images (across or within the splits) are refused unless
    ``config.allow_duplicates``, which records a warning in run.json "warnings" (with the load
    reports' warnings, e.g. metadata lines naming missing files).

    Raises:
        RunError: the folder holds a complete run with other settings (named), an unfinished
            run with other settings, or other content; the output cannot be created.
        DataLoadError: an image folder cannot be used, the two are the same folder, or they
            hold duplicates (without allow_duplicates).
        NonFiniteError: a stage produced NaN or infinite values (stage, file and samples named;
            the run stays resumable).
        AnalysisCancelled: ``should_stop()`` returned True.
        ModelLoadError, DataLoadError: the model or an image folder cannot be used.
    """
    # 1. check the options; a complete run with these settings is returned as is
    plan = _plan(config)
    if _complete_run_matches(plan):
        return plan.out
    # 2. one process, or one of several (torchrun / accelerate launch)
    ctx = DistContext.from_env()
    if not ctx.active:
        return _run_main(plan, ctx, progress=progress, should_stop=should_stop, model=model, precomputed=precomputed,
                         geometry_plan=geometry_plan)
    ctx.start()
    try:
        if ctx.is_main:
            return _run_main(plan, ctx, progress=progress, should_stop=should_stop, model=model, precomputed=None,
                             geometry_plan=geometry_plan)
        return _run_follower(plan, ctx, model)
    except BaseException as exc:
        if not ctx.broken:
            ctx.agree(exc)  # tell the other ranks (re-raises exc)
        raise
    finally:
        ctx.stop()


def _run_main(plan: _Plan, ctx: DistContext, *, progress: ProgressFn | None, should_stop: Callable[[], bool] | None,
              model: LoadedModel | None, precomputed: PrecomputedGeometry | None,
              geometry_plan: "_geometry.GeometryPlan | None" = None) -> Path:
    """Rank 0 (or the only process): everything of :func:`run_analysis` after validation."""
    # 1. check the folders, the model and --out; open an unfinished run (before any loading)
    _preflight(plan, model_given=model is not None)
    if model is not None:  # a given model's kind and schedule are checked before --force deletes anything
        _check_timesteps_for_model(plan, model)
    writer, settings = _open_unfinished(plan)
    session_start = time.perf_counter()
    try:
        # 2. load the model and check it against the plan
        t0 = time.perf_counter()
        if model is None:
            model = _load_plan_model(plan, _rank_device(plan, ctx))
        _check_timesteps_for_model(plan, model)
        _check_model_lora(plan, model)
        infl_method, lv_method = _geometry_methods(plan, model)
        # 3. load the images and record the run (a resumed run checks that they are its images)
        images: torch.Tensor | None = None
        if writer is None or not writer.stage_done("encode"):
            members, heldout = _load_images(plan, model)
            _check_captions_for_attacks(plan, members, heldout)
            # a resumed run keeps the allow_duplicates of the session that started it
            allowed = plan.allow_duplicates or bool(writer is not None and writer.data.get("allow_duplicates"))
            run_warnings = _check_duplicates(plan, members, heldout, allowed=allowed)
            images = torch.cat([members.images, heldout.images])
            info = run_record(plan, model, members, heldout, allowed=allowed, influence_method=infl_method,
                              log_volume_method=lv_method)
            writer = _start_or_check_run(plan, writer, settings, _samples_table(members, heldout), info)
            writer.update(warnings=run_warnings)
        # 4. record this session
        _check_lora_hashes(plan, model, writer.data.get("lora"))
        check_single_file_unchanged(getattr(model, "single_file", None), writer.data.get("single_file"))
        workers = resolve_workers(plan.workers, device=model.device, distributed=ctx.active,
                                  custom_model=plan.model_adapter is not None)
        _record_session(writer, model, workers)
        session = _Session(plan, ctx, writer, model, progress, should_stop, infl_method, lv_method, workers=workers)
        session.add_time("load", time.perf_counter() - t0)
        # 5. encode, then the blind features: what the files alone show, before the model's stages
        if not writer.stage_done("encode"):
            assert images is not None
            encode_stage(session, images)
        images = None
        if "blind" in planned_stages(writer.data) and not writer.stage_done("blind"):
            blind_stage(writer, session.captions, session.sample_paths, progress=progress, add_time=session.add_time,
                        encoder=plan.blind_encoder, device=model.device)
        session.start_model_stages()
        # 6. the attacks with per-coordinate terms, the geometry, the score-only attacks; a
        # precomputed geometry that applies costs nothing, so it lands first
        if precomputed is not None and not writer.stage_done("geometry"):
            reuse_geometry(session, precomputed)
        for name in planned_stages(writer.data)[1:]:
            if writer.stage_done(name):
                continue
            if name == "geometry":
                geometry_stage(session, geometry_plan)
            else:
                attack_stage(session, name)
        # 7. finish
        _record_ranks(session)
        writer.remove("_work")
        session.add_time("total", time.perf_counter() - session_start)
        return writer.finish()
    finally:
        if writer is not None:
            writer.close()


def _open_unfinished(plan: _Plan) -> tuple[RunWriter | None, dict]:
    """The writer of the unfinished run in ``plan.out`` (None when there is none, or --force
    deleted it) and the settings to record: a settings mismatch or a live writer fail here."""
    status = run_status(plan.out)
    if plan.force and status is not None:
        delete_run(plan.out, foreign="delete")  # --force: an explicit start over
        status = None
    if status is None:
        return None, plan.settings()
    settings = _settings_against(plan, _read_stored_run(plan.out))
    return RunWriter(plan.out, settings=settings, force_unlock=plan.break_lock), settings


def _start_or_check_run(plan: _Plan, writer: RunWriter | None, settings: dict, samples, info: dict) -> RunWriter:
    """A new run folder with ``samples`` and ``info`` (when ``writer`` is None), else RunError
    unless the unfinished run holds the same images in the same splits."""
    if writer is None:
        return RunWriter(plan.out, settings=settings, samples=samples, info=info, force_unlock=plan.break_lock)
    stored = writer.samples
    if stored["path"].tolist() != samples["path"].tolist() or stored["split"].tolist() != samples["split"].tolist():
        raise RunError(
            f"run folder {plan.out} holds an unfinished run over other images ({len(stored)} "
            f"stored, {len(samples)} found now); re-run on the same folders or pass --force"
        )
    labels = [_labels_of(t) for t in (stored, samples)]
    if labels[0] != labels[1]:  # class-conditional models are conditioned on them
        raise RunError(
            f"run folder {plan.out} holds an unfinished run whose images had other class labels (metadata "
            "'label' column); restore the labels, or pass --force to recompute"
        )
    return writer


def _labels_of(samples) -> list:
    """The optional 'label' column of a samples table (None per sample when absent or empty)."""
    if "label" not in samples.columns:
        return [None] * len(samples)
    return [None if pd.isna(y) else int(y) for y in samples["label"].tolist()]


def _record_session(writer: RunWriter, model: LoadedModel, workers: dict) -> None:
    """Append this session to run.json "sessions" (with its attack workers); record the device and dtype."""
    sessions = list(writer.data.get("sessions", []))
    sessions.append(session_record(model, resumed=writer.resumed, workers=workers))
    writer.update(device=str(model.device), dtype=str(model.dtype).replace("torch.", ""), sessions=sessions)


def _record_ranks(session: _Session) -> None:
    """With several processes: each rank's summary (batches, seconds, memory) in run.json
    "distributed" "ranks"."""
    ctx, writer = session.ctx, session.writer
    if session.ledger is None or not ctx.active:
        return
    ranks = []
    for r in range(ctx.world_size):
        rec = RankLedger(writer.path, DistContext(rank=r, world_size=ctx.world_size), batch_size=session.plan.batch_size)
        ranks.append(rec.summary())
    writer.update(distributed={**writer.data.get("distributed", {}), "ranks": ranks})
