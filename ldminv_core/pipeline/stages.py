"""What each stage of an analysis computes and writes into the run folder, batch by batch:
``encode`` (latents.npy), ``blind`` (model-free features of the files), ``geometry`` (influence.npy
and samples.parquet ``log_volume``; or a precomputed geometry that applies), and one stage per
attack (residuals/<name>.npy or scores/<name>.npy). Each marks itself done in run.json only once
all its arrays are flushed."""
from __future__ import annotations

import math
import time
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch

from .. import attacks as _attacks
from .. import geometry as _geometry
from ..geometry import precomputed as _precomputed
from ldminv_core.data.blind_features import BLIND_FILE, blind_features, store_blind_features
from ..errors import LdminvError, RunError
from ldminv_core.models.latents import encode_latents
from ldminv_core.geometry.precomputed import PrecomputedGeometry
from ldminv_core.runs import CACHE_DIR, RunWriter
from .batches import ProgressFn, _within_batch
from .geometry_paths import (
    _log_volume_kwargs,
    _make_geometry_plan,
    _plan_fits,
    _probes_record,
    _requested_probes,
    describe_geometry_plan,
)
from .rows import _WORK_LOG_VOLUME, _attack_rows, _check_finite, _geometry_rows
from .session import _Session

__all__ = ["blind_stage", "STAGES"]

#: The model stages every run has; the attacks' stages come around "geometry" (runstore.planned_stages).
STAGES = ("encode", "geometry")


def encode_stage(session: _Session, images: torch.Tensor) -> None:
    """The "encode" stage: the latents of ``images`` (n, C, H, W) into latents.npy (n, C, h, w)."""
    writer, plan, n = session.writer, session.plan, session.n
    t0 = time.perf_counter()
    latents = writer.open_array("latents.npy", (n, *session.lat), np.float32, stage="encode")
    try:
        for start, stop in session.stage("encode").batches([latents]):
            z = encode_latents(session.model, images[start:stop], latent=plan.latent, seed=plan.seed,
                               sample_ids=range(start, stop)).detach().to("cpu", torch.float32).numpy()
            _check_finite(z, stage="encode", file=str(writer.path / "latents.npy"), start=start,
                          paths=session.sample_paths)
            latents[start:stop] = z
    finally:
        session.add_time("encode", time.perf_counter() - t0)
    del latents
    writer.mark_stage_done("encode")


def blind_stage(writer: RunWriter, captions: Sequence[str | None], paths: Sequence[str], *,
                progress: ProgressFn | None, add_time: Callable[[str, float], None],
                encoder: str | None = None, device: "str | torch.device" = "cpu") -> None:
    """The "blind" stage: model-free features of every image file (:mod:`ldminv_core.data.blind_features`)
    written to ``blind_features.npz`` in the run folder, their groups recorded in run.json. Reads
    the files only (no audited model): a few milliseconds per image. With ``encoder`` (a folder or
    a cached hub id) the ``encoder`` group of that image model's embeddings, computed on
    ``device``, is added and run.json "blind" "encoder" records the model (name, path, class,
    output, dim, preprocessing, device); without it "encoder" is None."""
    n = len(paths)
    t0 = time.perf_counter()
    if progress is not None:
        progress("blind", 0, n)
    texts = ["" if c is None else str(c) for c in captions]
    try:
        features = blind_features(paths, captions=texts if any(t.strip() for t in texts) else None,
                                  encoder=encoder, device=device)
        store_blind_features(writer.path / BLIND_FILE, features)
    finally:
        add_time("blind", time.perf_counter() - t0)
    # the cross-fitting's permutation null on the default folds, which every page and report of
    # the run needs first (about 17 ms per fit on 600 images: a few seconds), kept in .ldminv-cache;
    # the evaluation layer (scipy, scikit-learn) is imported here, not by every analysis
    from ..evaluation.blind import cached_fitting_null
    from ..evaluation.evaluator import stratified_folds
    from ..evaluation.protocols import DEFAULT_FOLDS

    t1 = time.perf_counter()
    labels = (writer.samples["split"].to_numpy() == "member").astype(np.int64)
    try:
        folds = stratified_folds(labels, folds=DEFAULT_FOLDS, seed=0)
    except LdminvError:
        folds = None  # fewer images than folds: the evaluation says so when it is asked
    if folds is not None:
        cached_fitting_null(writer.path / CACHE_DIR, features, labels, folds)
    add_time("blind", time.perf_counter() - t1)
    info = dict(writer.data.get("blind", {}))
    info.update(file=BLIND_FILE, groups=list(features.groups),
                features={g: len(v) for g, v in features.names.items()}, encoder=features.encoder)
    writer.update(blind=info)
    writer.set_progress("blind", n)
    writer.mark_stage_done("blind")
    if progress is not None:
        progress("blind", n, n)


def reuse_geometry(session: _Session, precomputed: PrecomputedGeometry) -> bool:
    """Write the precomputed geometry when it applies; record the decision either way."""
    writer, plan, n = session.writer, session.plan, session.n
    t0 = time.perf_counter()
    infl_method = session.influence_method
    settings_now = {"topk": plan.topk, "influence": infl_method,
                    "probes": _probes_record(plan, infl_method)["probes"],
                    "log_volume_method": session.log_volume_method, "seed": plan.seed, **_log_volume_kwargs(plan)}
    try:
        digest = _precomputed.vae_digest(plan.model)
    except RunError as exc:
        ok, why = False, str(exc)
    else:
        ok, why = precomputed.check(samples=writer.samples, latents=np.asarray(session.z_all),
                                    settings=settings_now, vae_sha256=digest)
    geo_info = dict(writer.data.get("geometry", {}))
    geo_info["precomputed"] = {"folder": str(precomputed.folder), "used": ok, "reason": why,
                               "provenance": precomputed.provenance}
    writer.update(geometry=geo_info)
    if not ok:
        return False
    writer.write_array("influence.npy", precomputed.influence)
    samples = writer.samples
    samples["log_volume"] = precomputed.log_volume
    writer.update_samples(samples)
    writer.set_progress("geometry", n)
    session.add_time("geometry", time.perf_counter() - t0)
    writer.mark_stage_done("geometry")
    if session.progress is not None:
        session.progress("geometry", n, n)
    return True


def _geometry_paths(session: _Session, decode: Callable, geometry_plan: "_geometry.GeometryPlan | None") -> dict:
    """The geometry paths of this run: recorded in run.json once (a resumed run keeps them),
    chosen by the cost model on the first latent (or the given plan when it fits)."""
    writer, plan, model = session.writer, session.plan, session.model
    geo_info = dict(writer.data.get("geometry", {}))
    if "plan" not in geo_info and writer.progress("geometry") == 0:
        gp = geometry_plan if _plan_fits(geometry_plan, plan, math.prod(session.lat)) else None
        if gp is None:
            z1 = torch.from_numpy(np.array(session.z_all[:1])).to(model.device, model.dtype)
            gp = _make_geometry_plan(plan, decode, z1)
        geo_info.update(influence=gp.influence_method, log_volume_method=gp.log_volume_method,
                        probes_requested=_requested_probes(plan), probes=gp.probes_used,
                        probes_used=gp.probes_used, probes_reason=gp.probes_reason(), plan=gp.as_dict(),
                        plan_summary=describe_geometry_plan(gp))
        writer.update(geometry=geo_info)
    return geo_info  # an older unfinished run without a plan: its recorded paths


def geometry_stage(session: _Session, geometry_plan: "_geometry.GeometryPlan | None") -> None:
    """The "geometry" stage: influence.npy (n, C, h, w) and samples.parquet ``log_volume`` (n,)."""
    writer, model, n, progress = session.writer, session.model, session.n, session.progress
    t0 = time.perf_counter()
    if progress is not None:  # the stage has begun (choosing its paths times the decoder first)
        progress("geometry", writer.progress("geometry"), n)
    decode = model.decoder_fn()
    methods = _geometry_paths(session, decode, geometry_plan)
    influence = writer.open_array("influence.npy", (n, *session.lat), np.float32, stage="geometry")
    log_vol = writer.open_array(_WORK_LOG_VOLUME, (n,), np.float64, stage="geometry")

    try:
        session.stage_loop("geometry", [influence, log_vol], partial(_geometry_batch, session, decode, methods),
                           partial(_write_rows, [influence, log_vol]))
    finally:
        session.add_time("geometry", time.perf_counter() - t0)
    samples = writer.samples
    samples["log_volume"] = np.asarray(log_vol, dtype=np.float64)
    writer.update_samples(samples)
    del influence, log_vol
    geo_info = dict(writer.data.get("geometry", {}))
    geo_info["measured_seconds_per_sample"] = round(float(session.timings.get("geometry", 0.0)) / max(n, 1), 6)
    writer.update(geometry=geo_info)
    writer.mark_stage_done("geometry")
    session.ctx.agree()  # recorded


def _geometry_batch(session: _Session, decode: Callable, methods: dict, start: int,
                    stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The influence (B, C, h, w) and log-volume (B,) rows of samples start..stop-1."""
    progress, n = session.progress, session.n
    # one geometry sample can take minutes: report within the batch, per decoder call
    within = None if progress is None or session.ledger is not None else \
        _within_batch(progress, "geometry", start=start, total=n)
    return _geometry_rows(session.plan, session.model, decode, session.z_all, start, stop, methods,
                          session.writer.path, session.sample_paths, within)


def _write_rows(arrays: Sequence[np.ndarray], start: int, stop: int, rows: Sequence[np.ndarray]) -> None:
    """Store a batch's rows (one block per array) at samples start..stop-1."""
    for arr, block in zip(arrays, rows, strict=True):
        arr[start:stop] = block


def attack_stage(session: _Session, name: str) -> None:
    """The stage of attack ``name``: residuals/<name>.npy (n, T, C, h, w) of a maskable attack, or
    scores/<name>.npy (n,) of a score-only one."""
    writer, plan, n = session.writer, session.plan, session.n
    t0 = time.perf_counter()
    if name in _attacks.MASKABLE_ATTACKS:
        relpath = f"residuals/{name}.npy"
        t_count = len(_attacks.stored_timesteps(name, plan.timesteps))
        out = writer.open_array(relpath, (n, t_count, *session.lat), np.dtype(plan.residual_dtype), stage=name)
    else:
        relpath = f"scores/{name}.npy"
        out = writer.open_array(relpath, (n,), np.float32, stage=name)

    try:
        session.stage_loop(name, [out], partial(_attack_batch, session, name, out.dtype, relpath),
                           partial(_write_rows, [out]), workers=int(session.workers.get("workers", 1)))
    finally:
        session.add_time(name, time.perf_counter() - t0)
    del out
    writer.mark_stage_done(name)
    session.ctx.agree()  # recorded


def _attack_batch(session: _Session, name: str, dtype: np.dtype, relpath: str, start: int,
                  stop: int) -> tuple[np.ndarray]:
    """The rows of attack ``name`` (terms (B, T, C, h, w) or scores (B,)) of samples start..stop-1;
    safe to call from several threads at once (it reads the latents and the model only)."""
    return (_attack_rows(name, session.plan, session.model, session.z_all, session.conditions, start, stop,
                         dtype, str(session.writer.path / relpath), session.sample_paths),)
