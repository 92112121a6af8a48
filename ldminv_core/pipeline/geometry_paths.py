"""The decoder geometry paths of an analysis: which influence and log-volume methods its
settings resolve to, the geometry plan the cost model makes (or a given one that fits), and the
Hutchinson probe counts run.json "geometry" records."""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .. import geometry as _geometry
from ..choices import PROBES_AUTO
from ldminv_core.models.loading import LoadedModel
from .plan import _Plan

__all__ = ["describe_geometry_plan"]


def _geometry_methods(plan: _Plan, model: LoadedModel) -> tuple[str, str]:
    d = math.prod(model.latent_shape)
    pixels = math.prod(model.image_shape)
    infl = _geometry.resolve_influence_method(plan.influence, d)
    lv = _geometry.resolve_log_volume_method("auto", d=d, p=pixels, k=plan.topk, influence_method=infl,
                                             **_log_volume_kwargs(plan))
    return infl, lv


def _decoder_engine(decode: Callable) -> str:
    """The geometry engine the analysis asks for: "auto" for a model's VaeDecoder (the
    layer-by-layer engine where it applies), "torch.func" for any other decoder (a custom
    adapter's), asked for explicitly so the Python API's plain-callable warning is not shown."""
    return "auto" if isinstance(decode, _geometry.VaeDecoder) else "torch.func"


def _make_geometry_plan(plan: _Plan, decode: Callable, z1: torch.Tensor) -> "_geometry.GeometryPlan":
    """The geometry paths of this analysis, by the cost model timed on one latent ``z1`` (1, C, h, w)."""
    return _geometry.plan_geometry(decode, z1, k=plan.topk, influence=plan.influence, log_volume=plan.log_volume,
                                   probes=plan.probes, measure=True, engine=_decoder_engine(decode))


def _plan_fits(gp: Any, plan: _Plan, d: int) -> bool:
    """True when a given GeometryPlan was made for these settings and this latent size."""
    return (isinstance(gp, _geometry.GeometryPlan) and gp.k == plan.topk and gp.log_volume_kind == plan.log_volume
            and gp.d == d and (plan.influence == "auto" or gp.influence_method == plan.influence)
            and gp.probes_requested == plan.probes)


def _requested_probes(plan: _Plan) -> int | str:
    return PROBES_AUTO if plan.probes is None else plan.probes


def _probes_record(plan: _Plan, influence_method: str) -> dict:
    """run.json "geometry" probe fields before the plan is made (the plan's own replace them):
    what was requested, what the influence path uses (None when exact) and why."""
    from ldminv_core.geometry.plan import probes_reason

    n = _geometry.HUTCHINSON_RANK_PROBES if plan.probes is None else plan.probes
    used = n if influence_method == "hutchinson" else None
    return {"probes_requested": _requested_probes(plan), "probes": used, "probes_used": used,
            "probes_reason": probes_reason(influence_method=influence_method, probes_requested=plan.probes,
                                           probes_used=used)}


def _probes_to_run(plan: _Plan, methods: dict) -> int:
    """The probe count the geometry rows take: run.json's recorded ``probes_used`` (a resumed run
    keeps its own), else the requested count or the automatic one. Unused by the exact influence."""
    used = methods.get("probes_used")
    if isinstance(used, int) and not isinstance(used, bool) and used >= 1:
        return used
    return _geometry.HUTCHINSON_RANK_PROBES if plan.probes is None else plan.probes


def describe_geometry_plan(gp: "_geometry.GeometryPlan") -> str:
    """One line: the chosen geometry paths, their products and predicted seconds per sample."""
    return f"geometry: {gp.describe()}"


def _log_volume_kwargs(plan: _Plan) -> dict:
    """The geometry keyword choosing the whole-spectrum log-volume (none for the default top-k)."""
    return {"log_volume": plan.log_volume} if plan.log_volume != "topk" else {}


