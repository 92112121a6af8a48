"""What run.json records about a run when it starts (:func:`run_record`: the model, the images,
the settings, the library versions, the geometry paths, each attack's arrays) and about each
session that works on it (:func:`session_record`)."""
from __future__ import annotations

import platform
import socket

import numpy as np
import torch

from .. import attacks as _attacks
from ldminv_core.data.blind_features import BLIND_FILE
from ldminv_core.data.image_folders import ImageSet
from ldminv_core.models.family_summary import conditioning_text
from ldminv_core.models.loading import LoadedModel
from .geometry_paths import _probes_record
from .plan import _Plan


def run_record(plan: _Plan, model: LoadedModel, members: ImageSet, heldout: ImageSet, *, allowed: bool,
               influence_method: str, log_volume_method: str) -> dict:
    """The run.json fields of a new run (before any stage): what was analyzed, with what, how.

    Args:
        plan: the checked settings.
        model: the loaded model (its class, shapes, LoRA adapters).
        members, heldout: the loaded image folders (counts and load reports).
        allowed: whether duplicate images are allowed (the session that started the run decides).
        influence_method, log_volume_method: the geometry paths the settings resolve to.
    """
    return {
        "model": plan.model,
        "model_class": model.export["unet_class"] if getattr(model, "export", None) else type(model.unet).__name__,
        **({"model_export": dict(model.export)} if getattr(model, "export", None) else {}),
        "family": model.family.name if model.family is not None else None,
        "conditioning": conditioning_text(model),  # the family's (or the adapter's) conditioning, in words
        "guidance": _guidance(model),
        **({"adapter": dict(model.adapter_record)} if getattr(model, "adapter_record", None) else {}),
        **({"single_file": dict(model.single_file)} if getattr(model, "single_file", None) else {}),
        "members": plan.members,
        "heldout": plan.heldout,
        "limit": plan.limit,
        "n_members": len(members),
        "n_heldout": len(heldout),
        "latent_shape": list(model.latent_shape),
        "image_shape": list(model.image_shape),
        "scaling_factor": model.scaling_factor,
        "is_conditional": model.is_conditional,
        "seeds": {"seed": plan.seed},
        "batch_size": plan.batch_size,
        "residual_dtype": plan.residual_dtype,
        "latent": plan.latent,
        "preset": plan.preset,
        "lora": [dict(r) for r in model.lora],
        "versions": _versions(),
        "geometry": {
            "topk": plan.topk,
            "influence": influence_method,
            **_probes_record(plan, influence_method),
            "log_volume_method": log_volume_method,
            "log_volume": plan.log_volume,
        },
        "attacks": {a: _attack_spec(a, plan.timesteps, plan.residual_dtype) for a in plan.attacks},
        "load_report": {"members": members.report.as_dict(), "heldout": heldout.report.as_dict()},
        "allow_duplicates": allowed,
        **({"blind": {"file": BLIND_FILE, "groups": []}} if plan.blind_stage else {}),
        "timings": {},
        "sessions": [],
    }


def session_record(model: LoadedModel, *, resumed: bool, workers: dict | None = None) -> dict:
    """One entry of run.json "sessions": the host, device and CPU threads of this process, and the
    worker threads of its attack stages (:func:`~.workers.resolve_workers`), when known."""
    record = {
        "host": socket.gethostname(),
        "device": str(model.device),
        "cpu_threads": torch.get_num_threads(),
        "resumed": resumed,
    }
    if workers is not None:
        record["workers"] = dict(workers)
    return record


def _guidance(model: LoadedModel) -> float | None:
    """The embedded guidance a Flux predictor gives its transformer (``FluxNoisePredictor.guidance_scale``:
    None for a schnell-style model); None for every other family."""
    from ldminv_core.models.flux import FluxNoisePredictor

    if isinstance(model.predictor, FluxNoisePredictor) and model.predictor.guidance_scale is not None:
        return float(model.predictor.guidance_scale)
    return None


def _attack_spec(name: str, timesteps: list[int], residual_dtype: str) -> dict:
    if name in _attacks.MASKABLE_ATTACKS:
        spec = {"kind": "terms", "timesteps": _attacks.stored_timesteps(name, timesteps), "p": _attacks.DEFAULT_P[name],
                "dtype": residual_dtype}
        if name == "clid":  # its one stored step averages this window under these caption degradations
            spec.update(window=list(_attacks.CLID_WINDOW), degradations=list(_attacks.CLID_DEGRADATIONS))
        return spec
    return {
        "kind": "scores",
        "timesteps": list(_attacks.PFAMI_TIMESTEPS),
        "p": 2,
        "strengths": list(_attacks.PFAMI_STRENGTHS),
    }


def _versions() -> dict:
    from importlib import metadata  # the installed versions, without importing diffusers / transformers

    from .. import __version__

    return {
        "ldminv": __version__,
        "torch": torch.__version__,
        "diffusers": metadata.version("diffusers"),
        "transformers": metadata.version("transformers"),
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
