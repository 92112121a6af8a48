"""The model and the images of a plan: loading them (a diffusers folder with the configured LoRA
adapters, or a custom model through its adapter file, on this rank's device) and checking them
against the plan (LoRA adapters and their hashes, the model adapter's hash, timesteps within the
scheduler, a text-conditioned model and a caption per image for CLiD, duplicate images), and the
samples table they make."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import attacks as _attacks
from ..data.duplicates import find_duplicates
from ..data.captions import METADATA_FILES
from ..errors import DataLoadError, LdminvError, RunError
from ldminv_core.data.image_folders import ImageSet, load_image_folder
from ldminv_core.models.loading import LoadedModel, load_model, resolve_device
from .config import AnalyzeConfig
from .distributed import DistContext
from .plan import _Plan, _plan

__all__ = ["load_config_model"]


def _check_model_lora(plan: _Plan, model: LoadedModel) -> None:
    """RunError when a given model does not carry exactly the configured LoRA adapters, or was not
    built by the configured model adapter file (same SHA-256)."""
    _check_model_adapter(plan, model)
    have = [(str(r.get("path")), float(r.get("scale"))) for r in getattr(model, "lora", ())]
    want = [(p, s) for p, s in plan.lora]
    if have != want:
        shown = lambda items: ", ".join(f"{p} (scale {s:g})" for p, s in items) or "none"
        raise RunError(
            f"model: the given model carries LoRA adapters {shown(have)} but the configuration asks for "
            f"{shown(want)}; load it with ldminv_core.pipeline.inputs.load_config_model(config)"
        )


def _check_model_adapter(plan: _Plan, model: LoadedModel) -> None:
    """RunError when the model's adapter file (by SHA-256) is not the configured one, either way."""
    record = getattr(model, "adapter_record", None) or {}
    have, want = record.get("sha256"), plan.model_adapter_sha256
    if have == want:
        return
    shown = lambda path, sha: f"{path} (SHA-256 {sha[:12]}...)" if sha else "none (a diffusers pipeline)"
    raise RunError(
        f"model: the model was built by the adapter file {shown(record.get('path'), have)} but the configuration "
        f"asks for {shown(plan.model_adapter, want)}; load it with ldminv_core.pipeline.inputs.load_config_model(config)"
    )


def _check_lora_hashes(plan: _Plan, model: LoadedModel, recorded: Any) -> None:
    """RunError when a resumed run's adapter files changed since the run started (by SHA-256)."""
    if not recorded:
        return
    now = {str(r["path"]): r["sha256"] for r in model.lora}
    for r in recorded:
        if now.get(str(r.get("path"))) not in (None, r.get("sha256")):
            raise RunError(
                f"lora: {r.get('file') or r.get('path')} changed since this run started (SHA-256 "
                f"{str(r.get('sha256'))[:12]}... recorded, {now[str(r.get('path'))][:12]}... now); the stored "
                f"terms belong to the old adapter: restore it or pass --force"
            )


def load_config_model(config: AnalyzeConfig, *, device: str | torch.device | None = None) -> LoadedModel:
    """Load ``config.model`` with the configuration's LoRA adapters applied (what
    :func:`run_analysis` and :func:`estimate_cost` load when no model is given).

    Args:
        config: the analysis settings (validated here).
        device: where to load; ``config.device`` resolved when None.

    Raises:
        LdminvError subclasses from validation; ModelLoadError for the model or an adapter.
    """
    plan = _plan(config)
    return _load_plan_model(plan, resolve_device(plan.device) if device is None else device)


def _load_plan_model(plan: _Plan, device: str | torch.device) -> LoadedModel:
    """The model of ``plan`` on ``device``: its diffusers folder with its LoRA adapters applied, or
    the custom model its adapter file builds (:mod:`ldminv_core.models.custom_adapter`)."""
    if plan.model_adapter is None:
        return load_model(plan.model, device=device, lora=plan.adapters() or None, model_config=plan.model_config)
    from ldminv_core.models.custom_adapter import load_custom_model

    model = load_custom_model(plan.model_adapter, model_path=plan.model, device=device)
    _check_model_adapter(plan, model)  # the file hashed by the settings is the file that was run
    if plan.latent == "sample" and model.adapter.posterior_std is None:
        raise LdminvError(
            f"latent: 'sample' draws each latent from the encoder's posterior, but the adapter {plan.model_adapter} "
            "gives no posterior_std; add it to its ModelAdapter or analyze the encoder mean (--latent mean)")
    return model


def _check_timesteps_for_model(plan: _Plan, model: LoadedModel) -> None:
    n_train = model.predictor.num_train_timesteps
    if plan.timesteps[-1] >= n_train:
        raise LdminvError(
            f"timesteps: must be < num_train_timesteps = {n_train} of the model's scheduler, "
            f"got timesteps up to {plan.timesteps[-1]}"
        )
    if "secmi" in plan.attacks:
        _attacks._secmi_grid(plan.timesteps, n_train)
    if "pfami" in plan.attacks and max(_attacks.PFAMI_TIMESTEPS) >= n_train:
        raise LdminvError(
            f"attacks: pfami uses timesteps up to {max(_attacks.PFAMI_TIMESTEPS)}, but the model's "
            f"scheduler has only {n_train} training timesteps"
        )
    for name in plan.attacks:
        window = _attacks.REGISTRY[name].window
        if window is not None and max(window) >= n_train:
            raise LdminvError(
                f"attacks: {name} uses timesteps {list(window)}, but the model's scheduler has only {n_train} "
                "training timesteps"
            )
    if _text_only(plan):
        _attacks.check_clid_model(model.predictor)  # a model given to run_analysis / estimate_cost


def _text_only(plan: _Plan) -> list[str]:
    """The plan's attacks that need a text-conditioned model and a caption per image (CLiD)."""
    return [a for a in plan.attacks if a in _attacks.TEXT_ONLY_ATTACKS]


def _check_captions_for_attacks(plan: _Plan, members: ImageSet, heldout: ImageSet) -> None:
    """DataLoadError naming the folder, its images without a caption and the metadata column when
    the plan runs an attack that compares each image's own caption with degraded ones (CLiD)."""
    names = _text_only(plan)
    if not names:
        return
    for folder, images in ((plan.members, members), (plan.heldout, heldout)):
        missing = [p for p, c in zip(images.paths, images.captions) if c is None or not str(c).strip()]
        if not missing:
            continue
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(Path(p).name for p in missing[:5]) + more
        raise DataLoadError(
            f"attacks: {', '.join(names)} (CLiD) needs each image's own caption, but {len(missing)} of "
            f"{len(images.paths)} images in {folder} have none ({shown}); add a {' or '.join(METADATA_FILES)} "
            "with columns file_name and text (the caption) to the folder, or run without clid"
        )


def _rank_device(plan: _Plan, ctx: DistContext) -> torch.device:
    """cuda:LOCAL_RANK for "auto"/"cuda" on a machine with GPUs under a launcher, else the option."""
    if ctx.active and plan.device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{ctx.local_rank % torch.cuda.device_count()}")
    return resolve_device(plan.device)


def _load_images(plan: _Plan, model: LoadedModel) -> tuple[ImageSet, ImageSet]:
    kw = dict(channels=model.image_channels, resolution=model.resolution, limit=plan.limit)
    members, heldout = load_image_folder(plan.members, **kw), load_image_folder(plan.heldout, **kw)
    _check_labels(plan, model, members, heldout)
    return members, heldout


def _check_labels(plan: _Plan, model: LoadedModel, members: ImageSet, heldout: ImageSet) -> None:
    """DataLoadError, before anything is computed, when a class-conditional model without a null
    class meets images without a class label (:mod:`ldminv_core.models.class_conditional`)."""
    pred = model.predictor
    if getattr(pred, "conditions_on", "caption") != "label" or getattr(pred, "null_class", None) is not None:
        return
    for folder, images in ((plan.members, members), (plan.heldout, heldout)):
        missing = [p.name for p, y in zip(images.paths, images.labels or [None] * len(images)) if y is None]
        if missing:
            more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
            raise DataLoadError(
                f"{folder}: {len(missing)} image(s) have no class label ({', '.join(missing[:3])}{more}) and the "
                f"model ({type(pred.model).__name__}) is class-conditional without a null class; add a 'label' "
                "column (integer class) to the folder's metadata.jsonl or metadata.csv"
            )


def _duplicate_message(plan: _Plan, members: ImageSet, heldout: ImageSet) -> str | None:
    dup = find_duplicates(members, heldout)
    total = dup["across"] + dup["within_members"] + dup["within_heldout"]
    if not total:
        return None
    shown = "; ".join(f"{a} = {b}" for a, b in dup["pairs"][:5])
    more = f" (+{len(dup['pairs']) - 5} more)" if len(dup["pairs"]) > 5 else ""
    side = members.images.shape[-1]
    return (
        f"duplicate images: members {plan.members} and heldout {plan.heldout} hold {total} duplicate(s) by "
        f"pixels (after decoding and resizing to {side}x{side}): {dup['across']} shared by both splits, "
        f"{dup['within_members']} within members, {dup['within_heldout']} within heldout: {shown}{more}"
    )


def _check_duplicates(plan: _Plan, members: ImageSet, heldout: ImageSet, *, allowed: bool | None = None) -> list[str]:
    """Refuse duplicates (DataLoadError) unless allow_duplicates; returns the run's warnings."""
    allowed = plan.allow_duplicates if allowed is None else allowed
    msg = _duplicate_message(plan, members, heldout)
    warnings_out = [f"members: {w}" for w in members.report.warnings]
    warnings_out += [f"heldout: {w}" for w in heldout.report.warnings]
    if msg is None:
        return warnings_out
    if not allowed:
        raise DataLoadError(
            f"{msg}. A membership test on overlapping splits is meaningless (AUROC drifts to 0.5); remove the "
            "duplicates, or pass --allow-duplicates (AnalyzeConfig(allow_duplicates=True)) to analyze anyway"
        )
    return [f"{msg} (analyzed anyway: allow_duplicates)"] + warnings_out


def _samples_table(members: ImageSet, heldout: ImageSet) -> pd.DataFrame:
    n = len(members) + len(heldout)
    table = pd.DataFrame(
        {
            "sample_id": np.arange(n, dtype=np.int64),
            "path": [str(p) for p in members.paths + heldout.paths],
            "split": ["member"] * len(members) + ["heldout"] * len(heldout),
            "caption": pd.array(list(members.captions) + list(heldout.captions), dtype="object"),
            "log_volume": np.full(n, np.nan, dtype=np.float64),
        }
    )
    labels = list(members.labels or [None] * len(members)) + list(heldout.labels or [None] * len(heldout))
    if any(y is not None for y in labels):  # only labelled folders get the optional column
        table["label"] = pd.array(labels, dtype="Int64")
    return table
