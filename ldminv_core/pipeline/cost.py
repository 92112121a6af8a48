"""What an analysis will cost on this machine: :func:`estimate_cost` counts the work of each stage
(:class:`StageCost`: images, encoder calls, decoder Jacobian products, UNet calls) and times one
small batch of each to predict the wall time (:class:`CostEstimate`, a readable table); and the
wording of durations and shares for a reader (:func:`format_duration`, :func:`format_percent`,
:func:`format_per_image`)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .. import attacks as _attacks
from .. import geometry as _geometry
from ldminv_core.data.blind_features import blind_features
from ldminv_core.models.blind_encoder import load_image_encoder
from ldminv_core.data.image_folders import ImageSet
from ldminv_core.models.loading import LoadedModel, resolve_device
from ldminv_core.runs import planned_stages
from .config import AnalyzeConfig
from .geometry_paths import _decoder_engine, _make_geometry_plan, describe_geometry_plan
from .inputs import (
    _check_captions_for_attacks,
    _check_duplicates,
    _check_model_lora,
    _check_timesteps_for_model,
    _load_images,
    _load_plan_model,
)
from .distributed import DistContext
from .plan import _Plan, _plan, _preflight
from .workers import resolve_workers

__all__ = ["StageCost", "CostEstimate", "estimate_cost", "format_duration", "format_percent", "format_per_image"]

_MAX_TIMED_BATCH = 128
#: The cost estimate times the geometry on real latents only when the cost model predicts at most
#: this many seconds for it; beyond (Stable Diffusion scale: minutes per sample) it uses the
#: prediction, made from one JVP and one VJP timed on this machine.
_MAX_TIMED_GEOMETRY_S = 20.0


@dataclass
class StageCost:
    """Work of one stage: images, decoder Jacobian products (JVP/VJP), UNet forward passes
    (per sample), and the predicted seconds."""

    stage: str
    images: int
    encoder_calls: int = 0
    decoder_products: int = 0
    unet_calls: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_image(self) -> float:
        """Predicted seconds per image of this stage (NaN without images)."""
        return self.seconds / self.images if self.images else float("nan")

    @property
    def label(self) -> str:
        """The stage in words: "loading", "encoding", "decoder geometry", or the attack's name."""
        from ..choices import attack_label

        return {"load": "loading", "encode": "encoding", "geometry": "decoder geometry",
                "blind": "blind features"}.get(
            self.stage, attack_label(self.stage))


@dataclass
class CostEstimate:
    """Predicted work and wall time of an analysis on this machine.

    Attributes:
        n_members, n_heldout: images that will be analyzed.
        latent_shape: (C, h, w); d = C*h*w latent coordinates.
        influence_method, log_volume_method: geometry paths "auto" resolves to.
        device: where the analysis runs.
        stages: one :class:`StageCost` per stage (load, encode, geometry, attacks).
        timed_batch: samples in each timed batch.
        geometry_timed: the geometry seconds come from timing it on real latents (False: from
            the cost model's prediction, when timing would take longer than a few seconds).
        disk_bytes: size of the run folder's arrays.
        warnings: problems that do not stop the analysis (duplicates allowed with
            allow_duplicates, metadata lines naming missing files, ...), as run.json "warnings"
            will hold them.
        skipped: per split ("members", "heldout"), the (file name, reason) of skipped entries.
        geometry_plan: the :class:`ldminv_core.geometry.GeometryPlan` the cost model picked on
            this machine (pass it to :func:`run_analysis` as ``geometry_plan`` to run with it).
        denoiser: the network the attacks call, in words for the table's column ("UNet",
            "transformer"); :attr:`StageCost.unet_calls` counts its calls, one per eps_hat.
        workers: the worker threads the attack stages will use (:func:`~.workers.resolve_workers`);
            the denoiser is timed at one worker's intra-op threads and the attack stages' seconds
            divided by the workers that have a batch.
    """

    n_members: int
    n_heldout: int
    latent_shape: tuple[int, int, int]
    influence_method: str
    log_volume_method: str
    device: str
    stages: list[StageCost] = field(default_factory=list)
    timed_batch: int = 1
    geometry_timed: bool = True
    disk_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)
    geometry_plan: Any = None
    denoiser: str = "UNet"
    workers: int = 1

    @property
    def denoiser_calls_label(self) -> str:
        """The column of denoiser calls: "UNet calls" or "transformer calls"."""
        return f"{self.denoiser} calls"

    @property
    def total_seconds(self) -> float:
        return float(sum(s.seconds for s in self.stages))

    def share(self, stage: StageCost) -> float:
        """The part of the total time that ``stage`` is predicted to take, in [0, 1] (NaN when
        nothing is predicted)."""
        total = self.total_seconds
        return stage.seconds / total if total > 0 and math.isfinite(total) else float("nan")

    def breakdown(self) -> str:
        """One sentence: the costliest stage with its share, time and seconds per image, then the
        others' shares, e.g. "decoder geometry: 97 % of the time (10 min 57 s, 3.29 s per image);
        encoding 1 %, SimA 1 %, PIA 1 %"."""
        if not self.stages:
            return "no stages"
        ranked = sorted(self.stages, key=lambda s: s.seconds, reverse=True)
        top = ranked[0]
        head = (f"{top.label}: {format_percent(self.share(top))} of the time ({format_duration(top.seconds)}, "
                f"{format_per_image(top.seconds_per_image)} per image)")
        rest = ", ".join(f"{s.label} {format_percent(self.share(s))}" for s in ranked[1:])
        return head + (f"; {rest}" if rest else "")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["total_seconds"] = self.total_seconds
        return out

    def __str__(self) -> str:
        d = math.prod(self.latent_shape)
        head = (
            f"{self.n_members} members + {self.n_heldout} held-out images, latents "
            f"{'x'.join(map(str, self.latent_shape))} (d = {d}), device {self.device}, influence "
            f"{self.influence_method}, log-volume {self.log_volume_method}"
        )
        cols = ("stage", "images", "encoder", "decoder JVP/VJP", self.denoiser_calls_label, "per image", "est. time",
                "share")
        rows = [
            (
                s.stage,
                str(s.images),
                f"{s.encoder_calls:,}" if s.encoder_calls else "-",
                f"{s.decoder_products:,}" if s.decoder_products else "-",
                f"{s.unet_calls:,}" if s.unet_calls else "-",
                format_per_image(s.seconds_per_image),
                format_duration(s.seconds),
                format_percent(self.share(s)),
            )
            for s in self.stages
        ]
        rows.append(("total", "", "", "", "", "", format_duration(self.total_seconds), ""))
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
        line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
        sep = "  ".join("-" * w for w in widths)
        foot = (
            f"(times extrapolated from timing batches of up to {self.timed_batch} sample(s) on this machine"
            + ("" if self.geometry_timed else "; geometry: the cost model's prediction")
            + (f"; attacks on {self.workers} worker threads" if self.workers > 1 else "")
            + f"; the run folder will take about {_fmt_bytes(self.disk_bytes)})"
        )
        lines = [head, line(cols), sep, *[line(r) for r in rows[:-1]], sep, line(rows[-1]), self.breakdown(), foot]
        if self.geometry_plan is not None:
            lines.insert(1, describe_geometry_plan(self.geometry_plan))
            gp = self.geometry_plan
            if gp.probes_used is not None or gp.probes_requested is not None:
                lines.insert(2, f"Hutchinson probes: {gp.probes_reason()}")
        return "\n".join(lines)


def format_percent(fraction: float) -> str:
    """A share for a reader: "97 %", "<1 %", "?" when unknown."""
    if not math.isfinite(fraction):
        return "?"
    if 0 < fraction < 0.005:
        return "<1 %"
    return f"{100 * fraction:.0f} %"


def format_per_image(seconds: float) -> str:
    """Seconds per image for a reader: "0.05 s", "2.91 s", "<0.01 s", "4 min 10 s", "?" when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 0.01:
        return "<0.01 s" if seconds > 0 else "0 s"
    return f"{seconds:.2f} s" if seconds < 10 else format_duration(seconds)


def format_duration(seconds: float) -> str:
    """A duration in words a reader takes in at a glance: "45 s", "3 min 20 s", "7 h 12 min" ("?" when
    unknown)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"




def _fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _unet_calls_per_sample(name: str, timesteps: list[int]) -> int:
    t = len(timesteps)
    if name == "clid":  # its own window, 1 own caption + 4 degraded captions per timestep: 15
        return _attacks.CLID_UNET_CALLS
    if name in ("sima", "loss"):
        return t
    if name == "pia":
        return t + 1
    if name == "secmi":
        return t + 1 + (timesteps[0] != 0)
    return len(_attacks.PFAMI_TIMESTEPS) * (1 + len(_attacks.PFAMI_STRENGTHS))


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def estimate_cost(config: AnalyzeConfig, *, model: LoadedModel | None = None) -> CostEstimate:
    """Count each stage's work and time one small batch of each on this machine.

    Validates every option and both folders first (:func:`check_config`, without the
    complete-run comparison), then loads the model (unless given) and both image folders
    (duplicates are refused unless ``allow_duplicates``); times the encoder and one UNet
    forward on a batch of ``batch_size`` samples (at most 128), and the decoder geometry on 2
    latents (when the cost model predicts at most a few seconds for that; else its prediction is
    used), each after a warm-up call, then extrapolates linearly to every sample (and every
    UNet call of each attack). The geometry paths come from the cost model
    (:func:`ldminv_core.geometry.plan_geometry`, one JVP and one VJP timed on the first latent):
    :attr:`CostEstimate.geometry_plan`. Nothing is written.

    Returns:
        :class:`CostEstimate`; ``str()`` of it is a readable table.
    """
    # 1. check everything, load the model and both folders (the "load" stage's time)
    plan = _plan(config)
    _preflight(plan, model_given=model is not None)
    t0 = time.perf_counter()
    if model is None:
        model = _load_plan_model(plan, resolve_device(plan.device))
    _check_timesteps_for_model(plan, model)
    _check_model_lora(plan, model)
    members, heldout = _load_images(plan, model)
    _check_captions_for_attacks(plan, members, heldout)
    run_warnings = _check_duplicates(plan, members, heldout)
    load_seconds = time.perf_counter() - t0
    n = len(members) + len(heldout)
    # 2. time the encoder, the decoder geometry and one UNet forward per sample
    batch = _timing_batch(plan, members, heldout, n)
    enc_s, z = _time_encoder(model, batch)
    gp, geo_s, geometry_timed = _time_geometry(plan, model, z, len(batch))
    workers = resolve_workers(plan.workers, device=model.device, distributed=DistContext.from_env().active,
                              custom_model=plan.model_adapter is not None)
    in_flight = max(1, min(workers["workers"], -(-n // plan.batch_size)))  # workers that get a batch
    unet_s = _time_unet(plan, model, members, heldout, z, len(batch),
                        threads=workers["threads_per_worker"] if in_flight > 1 else None)
    # 3. extrapolate to every sample of every stage
    est = CostEstimate(
        n_members=len(members),
        n_heldout=len(heldout),
        latent_shape=model.latent_shape,
        influence_method=gp.influence_method,
        log_volume_method=gp.log_volume_method,
        device=str(model.device),
        timed_batch=len(batch),
        warnings=run_warnings,
        skipped={"members": list(members.report.skipped), "heldout": list(heldout.report.skipped)},
        geometry_plan=gp,
        geometry_timed=geometry_timed,
        denoiser=_denoiser_words(model),
        workers=in_flight,
    )
    est.disk_bytes = _disk_bytes(plan, n, math.prod(model.latent_shape))
    est.stages.append(StageCost("load", n, seconds=load_seconds))
    est.stages.append(StageCost("encode", n, encoder_calls=n, seconds=enc_s * n))
    products = int(sum(gp.products.values()))
    for name in _stages_after_encode(plan):  # in the order run_analysis computes them
        if name == "blind":
            est.stages.append(_blind_cost(plan, members, heldout, n, model.device))
        elif name == "geometry":
            est.stages.append(StageCost("geometry", n, decoder_products=products * n, seconds=geo_s * n))
        else:
            calls = _unet_calls_per_sample(name, plan.timesteps) * n
            est.stages.append(StageCost(name, n, unet_calls=calls, seconds=unet_s * calls / in_flight))
    return est


def _denoiser_words(model: LoadedModel) -> str:
    """"transformer" for a family whose denoiser lives in transformer/ (SD3, Flux, DiT), else "UNet"."""
    family = getattr(model, "family", None)
    return "transformer" if getattr(family, "denoiser", "unet") == "transformer" else "UNet"


def _timing_batch(plan: _Plan, members: ImageSet, heldout: ImageSet, n: int) -> torch.Tensor:
    """A batch of the configured size (capped at :data:`_MAX_TIMED_BATCH`), built by repeating
    the first two images of each split: (b, C, H, W)."""
    b = max(1, min(plan.batch_size, n, _MAX_TIMED_BATCH))
    few = torch.cat([members.images[:2], heldout.images[:2]])
    reps = -(-b // few.shape[0])
    return few.repeat(reps, 1, 1, 1)[:b]


def _time_encoder(model: LoadedModel, images: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Seconds per image of the encoder (after a warm-up call) and the batch's latents (b, C, h, w)."""
    model.encode(images[:1])
    enc_s = _timed(lambda: model.encode(images), model.device) / len(images)
    return enc_s, model.encode(images).float()


def _time_geometry(plan: _Plan, model: LoadedModel, z: torch.Tensor, b: int) -> tuple[Any, float, bool]:
    """The geometry plan the cost model picks on ``z[:1]``, the geometry's seconds per sample
    (timed on up to 2 latents, or the plan's prediction when timing would take longer than
    :data:`_MAX_TIMED_GEOMETRY_S`) and whether they were timed."""
    decode = model.decoder_fn()
    gp = _make_geometry_plan(plan, decode, z[:1])
    geo_b = min(2, b)
    predicted = gp.predicted_seconds_per_sample
    geometry_timed = predicted is None or predicted * geo_b <= _MAX_TIMED_GEOMETRY_S
    if geometry_timed:  # the plan's timing calls warmed the decoder products up
        geo_s = _timed(lambda: _geometry.decoder_geometry(decode, z[:geo_b], plan=gp, seed=plan.seed,
                                                          sample_ids=list(range(geo_b)),
                                                          engine=_decoder_engine(decode)), model.device) / geo_b
    else:
        geo_s = float(predicted)
    return gp, geo_s, geometry_timed


def _time_unet(plan: _Plan, model: LoadedModel, members: ImageSet, heldout: ImageSet, z: torch.Tensor,
               b: int, *, threads: int | None = None) -> float:
    """Seconds per sample of one denoiser call through the family's predictor (its conditioning,
    packing and output conversion included) at the first timestep, after a warm-up call, with the
    first captions (class labels for a class-conditional model) when the model is conditional;
    at ``threads`` intra-op threads (one worker's share; the process' setting is restored)."""
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _time_unet_calls(plan, model, members, heldout, z, b)
    finally:
        torch.set_num_threads(saved)


def _time_unet_calls(plan: _Plan, model: LoadedModel, members: ImageSet, heldout: ImageSet, z: torch.Tensor,
                     b: int) -> float:
    """:func:`_time_unet` at the process' current threads."""
    pred = model.predictor
    cond = None
    if pred.is_conditional:
        caps = list(members.captions[:2]) + list(heldout.captions[:2])
        if getattr(pred, "conditions_on", "caption") == "label":  # class-conditional: the labels
            caps = list(members.labels[:2]) + list(heldout.labels[:2])
        reps = -(-b // len(caps)) if caps else 1
        cond = pred.encode_prompts((caps * reps)[:b])
    call = lambda: pred(z, plan.timesteps[0], cond)
    call()
    return _timed(call, model.device) / b


def _disk_bytes(plan: _Plan, n: int, d: int) -> int:
    """Bytes of the run folder's arrays: latents and influence, residual terms, scores."""
    itemsize = np.dtype(plan.residual_dtype).itemsize
    t_stored = sum(len(_attacks.stored_timesteps(a, plan.timesteps)) for a in plan.attacks
                   if a in _attacks.MASKABLE_ATTACKS)
    return int(n * d * 4 * 2 + n * t_stored * d * itemsize + n * 8 * len(plan.attacks))


def _stages_after_encode(plan: _Plan) -> list[str]:
    """The stages after "encode", in the order :func:`run_analysis` computes them."""
    order = planned_stages({"attacks": {a: {"kind": "terms" if a in _attacks.MASKABLE_ATTACKS else "scores"}
                                        for a in plan.attacks}, "blind": {}})
    return list(order[1:])


def _blind_cost(plan: _Plan, members: ImageSet, heldout: ImageSet, n: int, dev: torch.device) -> StageCost:
    """The blind stage reads the files (and runs a named image model): timed on four real ones."""
    files = [*members.paths[:2], *heldout.paths[:2]]
    t_enc = time.perf_counter()
    encoder = load_image_encoder(plan.blind_encoder, device=dev) if plan.blind_encoder is not None else None
    enc_load_s = time.perf_counter() - t_enc
    blind_s = _timed(lambda: blind_features(files, encoder=encoder), dev) / max(len(files), 1)
    return StageCost("blind", n, seconds=enc_load_s + blind_s * n)
