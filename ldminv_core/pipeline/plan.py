"""The resolved plan of an analysis (:class:`_Plan`: a checked :class:`~.config.AnalyzeConfig`
with absolute paths), the checks made before anything loads (:func:`check_config`,
:func:`_preflight`), and the comparison with a run folder's stored settings (resume, or a
complete run: nothing to do)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import attacks as _attacks
from .. import geometry as _geometry
from .._validation import check_bool, check_choice, check_int, describe
from ldminv_core.models.blind_encoder import resolve_image_encoder
from ..choices import INFLUENCE_METHODS, LATENT_KINDS, LOG_VOLUME_KINDS, PRESETS, PROBES_AUTO, RESIDUAL_DTYPES
from ..errors import DataLoadError, LdminvError, RunError, UnknownNameError
from ldminv_core.data.image_folders import check_image_folder
from ldminv_core.models.families import Family
from ldminv_core.models.family_summary import check_model_family
from ldminv_core.models.single_file import check_single_file_option
from ldminv_core.models.loading import resolve_device
from ldminv_core.runs import run_status
from .config import (
    AnalyzeConfig,
    _adapter_ref,
    _as_path_text,
    _as_probes,
    _model_ref,
    _normalize_attacks,
    _normalize_lora,
    _normalize_timesteps,
)
from .output_folder import _check_out, is_probe_file
from .workers import check_workers

__all__ = ["check_config", "config_settings"]


@dataclass(frozen=True)
class _Plan:
    """A validated configuration."""

    model: str | None  # None only with a model adapter
    members: str
    heldout: str
    out: Path
    attacks: tuple[str, ...]
    timesteps: list[int]
    topk: int
    influence: str
    probes: int | None  # None: "auto"
    device: str
    batch_size: int
    seed: int
    limit: int | None
    residual_dtype: str
    force: bool
    allow_duplicates: bool = False
    break_lock: bool = False
    latent: str = "mean"
    log_volume: str = "topk"
    preset: str | None = None
    lora: tuple[tuple[str, float], ...] = ()
    blind_encoder: str | None = None  # absolute folder, or a hub id
    model_adapter: str | None = None  # absolute path of a custom-model adapter file
    model_adapter_sha256: str | None = None
    model_config: str | None = None  # the config folder of a single-file checkpoint (models.single_file)
    blind_stage: bool = True  # False: no "blind" stage (features computed when first asked for)
    workers: int | None = None  # attack batches computed at once; None: "auto" (not a compared setting)

    def settings(self) -> dict:
        """The settings that define the results (compared when resuming)."""
        return {
            "model": self.model,
            "members": self.members,
            "heldout": self.heldout,
            "limit": self.limit,
            "attacks": list(self.attacks),
            "timesteps": list(self.timesteps),
            "topk": self.topk,
            "influence": self.influence,
            "probes": PROBES_AUTO if self.probes is None else self.probes,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "residual_dtype": self.residual_dtype,
            # recorded only when not the default, so that runs made before these options resume
            **({"latent": self.latent} if self.latent != "mean" else {}),
            **({"log_volume": self.log_volume} if self.log_volume != "topk" else {}),
            **({"lora": [{"path": p, "scale": s} for p, s in self.lora]} if self.lora else {}),
            **({"blind_encoder": self.blind_encoder} if self.blind_encoder is not None else {}),
            **({"model_adapter": self.model_adapter, "model_adapter_sha256": self.model_adapter_sha256}
               if self.model_adapter is not None else {}),
            **({"model_config": self.model_config} if self.model_config is not None else {}),
            **({"blind_stage": False} if not self.blind_stage else {}),
        }

    def adapters(self) -> list:
        """The LoRA adapters as :class:`ldminv_core.models.lora_files.LoraAdapter` (empty list when none)."""
        from ldminv_core.models.lora_files import LoraAdapter

        return [LoraAdapter(path, scale=scale) for path, scale in self.lora]


def _plan(config: AnalyzeConfig) -> _Plan:
    """Check the type and range of every option (nothing on disk is looked at, but for the bytes of a
    model adapter file, hashed)."""
    if not isinstance(config, AnalyzeConfig):
        raise LdminvError(f"config: expected an AnalyzeConfig, got {type(config).__name__}")
    adapter = (None, None) if config.model_adapter is None else _adapter_ref(config.model_adapter)
    model = None if adapter[0] is not None and config.model is None else _as_path_text(config.model, "model", hub=True)
    members = _as_path_text(config.members, "members")
    heldout = _as_path_text(config.heldout, "heldout")
    out = _as_path_text(config.out, "out")
    influence = check_choice(config.influence, "influence", INFLUENCE_METHODS)
    residual_dtype = check_choice(config.residual_dtype, "residual_dtype", RESIDUAL_DTYPES)
    if not isinstance(config.device, (str, torch.device)):
        raise LdminvError(f"device: expected 'auto', 'cpu' or 'cuda[:i]', got {describe(config.device)}")
    limit = None if config.limit is None else check_int(config.limit, "limit", minimum=1)
    latent = check_choice(config.latent, "latent", LATENT_KINDS)
    log_volume_kind = check_choice(config.log_volume, "log_volume", LOG_VOLUME_KINDS)
    if log_volume_kind == "logdet" and "logdet" not in getattr(_geometry, "LOG_VOLUME_KINDS", ()):
        raise UnknownNameError("log_volume: 'logdet' is not available in this build of ldminv_core.geometry")
    preset = None if config.preset is None else check_choice(config.preset, "preset", tuple(PRESETS))
    if config.lora and adapter[0] is not None:
        raise LdminvError("lora: LoRA adapters are applied to diffusers pipelines; with a model adapter "
                          f"({adapter[0]}) apply them inside its build_adapter")
    lora = _normalize_lora(config.lora, config.lora_scale)
    model_config = None if config.model_config is None else _model_ref(
        _as_path_text(config.model_config, "model_config (--model-config)"))
    if model_config is not None and adapter[0] is not None:
        raise LdminvError("model_config: converts a single-file checkpoint for a diffusers pipeline; with a model "
                          f"adapter ({adapter[0]}) load the checkpoint inside its build_adapter")
    blind_encoder = None if config.blind_encoder is None else _model_ref(
        _as_path_text(config.blind_encoder, "blind_encoder (--blind-encoder)", hub=True))
    return _Plan(
        model=None if model is None else _model_ref(model),
        members=str(Path(members).expanduser().resolve()),
        heldout=str(Path(heldout).expanduser().resolve()),
        out=Path(out).expanduser().resolve(),
        attacks=_normalize_attacks(config.attacks),
        timesteps=_normalize_timesteps(config.timesteps),
        topk=check_int(config.topk, "topk", minimum=1),
        influence=influence,
        probes=_as_probes(config.probes),
        device=str(config.device),
        batch_size=check_int(config.batch_size, "batch_size", minimum=1),
        seed=check_int(config.seed, "seed", minimum=0),
        limit=limit,
        residual_dtype=residual_dtype,
        force=check_bool(config.force, "force"),
        allow_duplicates=check_bool(config.allow_duplicates, "allow_duplicates"),
        break_lock=check_bool(config.break_lock, "break_lock"),
        latent=latent,
        log_volume=log_volume_kind,
        preset=preset,
        lora=lora,
        blind_encoder=blind_encoder,
        model_config=model_config,
        model_adapter=adapter[0],
        model_adapter_sha256=adapter[1],
        blind_stage=check_bool(config.blind_stage, "blind_stage"),
        workers=check_workers(config.workers),
    )


def _settings_diff(old: dict, new: dict) -> list[str]:
    return [f"{k}: {old.get(k)!r} there, {new.get(k)!r} now"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _settings_against(plan: _Plan, stored: dict) -> dict:
    """``plan.settings()`` as compared with the run.json ``stored`` of an existing run. Runs made
    before ``probes`` could be "auto" stored a number that "auto" influence raised to the rank
    target anyway (:data:`ldminv_core.geometry.HUTCHINSON_RANK_PROBES`): such a number counts as
    "auto", so those runs still resume and still match."""
    settings = plan.settings()
    config = stored.get("config") if isinstance(stored.get("config"), dict) else {}
    geometry = stored.get("geometry") if isinstance(stored.get("geometry"), dict) else {}
    old = config.get("probes")
    legacy = "probes_requested" not in geometry and "geometry" in stored
    if (legacy and plan.probes is None and plan.influence == "auto" and config.get("influence") == "auto"
            and isinstance(old, int) and not isinstance(old, bool) and 1 <= old <= _geometry.HUTCHINSON_RANK_PROBES):
        settings["probes"] = old
    return settings


def _read_stored_run(folder: Path) -> dict:
    """run.json of ``folder`` as a dict ({} when there is none or it cannot be read)."""

    try:
        data = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _complete_run_matches(plan: _Plan) -> bool:
    """True when ``plan.out`` holds a complete run made with these settings (nothing to do);
    RunError naming the differing settings when it holds one made with others (and not force)."""
    if plan.force or run_status(plan.out) != "complete":
        return False

    try:
        data = json.loads((plan.out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{plan.out / 'run.json'}: cannot be read ({exc})") from exc
    data = data if isinstance(data, dict) else {}
    stored = data.get("config", {})
    diff = _settings_diff(stored if isinstance(stored, dict) else {}, _settings_against(plan, data))
    if not diff:
        return True
    raise RunError(
        f"run folder {plan.out} already holds a complete run made with other settings ({'; '.join(diff)}); "
        "nothing was computed, and a report of that folder would describe the old run: pass --force "
        "(AnalyzeConfig(force=True)) to delete it and recompute, or choose another --out"
    )


def _preflight(plan: _Plan, *, model_given: bool) -> None:
    """The cheap checks of the folders, the model and the output before anything is loaded."""
    if plan.members == plan.heldout:
        raise DataLoadError(
            f"members and heldout are the same folder ({plan.members}); a membership test needs the training "
            "images and images the model never saw in two different folders"
        )
    check_image_folder(plan.members, what="members: image folder")
    check_image_folder(plan.heldout, what="heldout: image folder")
    if plan.model_adapter is not None:
        if not model_given:
            _check_adapter_inputs(plan)
    elif not model_given:
        if check_single_file_option(plan.model, model_config=plan.model_config) is None:  # not a single file
            _, family = check_model_family(plan.model)  # layout, configs, and a family that recognises it
            _check_text_only_attacks(plan, family)
        if plan.lora:
            from ldminv_core.models.lora_files import check_lora

            check_lora(plan.adapters())
    if plan.blind_encoder is not None:
        resolve_image_encoder(plan.blind_encoder)  # found locally (reads no weights)
    resolve_device(plan.device)
    _check_out(plan.out)
    if str(plan.out) in (plan.members, plan.heldout):
        raise RunError(f"out: {plan.out} is an image folder of this analysis; choose another run folder")
    if run_status(plan.out) is None and _holds_content(plan.out):
        raise RunError(
            f"output folder {plan.out} is not empty and holds no run.json; refusing to write a run "
            "there (choose a new or empty folder)"
        )


def _holds_content(out: Path) -> bool:
    """True when the folder ``out`` holds anything but another process's write probe (the other
    ranks of a torchrun launch check the same ``--out`` at the same moment: their probe file, and
    the folder their probe created and removes again, are not content)."""
    try:
        return any(not is_probe_file(p.name) for p in out.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return False


def _check_adapter_inputs(plan: _Plan) -> None:
    """The adapter file is still the one the settings hash; ``--model``, when given, exists."""
    from ldminv_core.models.custom_adapter import adapter_file_sha256

    if adapter_file_sha256(plan.model_adapter) != plan.model_adapter_sha256:
        raise RunError(f"model_adapter: {plan.model_adapter} changed while the analysis was being prepared")
    if plan.model is not None and not Path(plan.model).exists():
        raise DataLoadError(f"model: {plan.model} does not exist (with --model-adapter, --model is the path handed "
                            "to the adapter's build_adapter, e.g. its checkpoint folder; leave it out if it needs none)")


def _check_text_only_attacks(plan: _Plan, family: Family) -> None:
    """ModelKindError before anything loads when the plan runs a text-only attack (CLiD) on a
    model whose family reads no captions (unconditional or class-conditional)."""
    if not any(a in _attacks.TEXT_ONLY_ATTACKS for a in plan.attacks) or family.text:
        return
    kind = "class-conditional" if family.name in ("dit", "class_unet") else "unconditional"
    _attacks.refuse_clid_model(kind, detail=f"{family.label}, detected from {plan.model}")


def check_config(config: AnalyzeConfig, *, model_given: bool = False) -> bool:
    """Validate ``config`` before anything expensive happens: every option's type and range,
    both image folders (exist, are readable folders, hold at least one image whose header
    opens; not the same folder), the model (folder layout, safetensors weights, config values;
    skipped with ``model_given``), the device and the output folder (creatable, writable).

    Returns:
        True when ``config.out`` already holds a complete run with the same settings (nothing
        to do), else False.

    Raises:
        LdminvError (UnknownNameError, DataLoadError, ModelLoadError, RunError): naming the
        option, folder or file at fault; RunError when ``config.out`` holds a complete run made
        with other settings and ``config.force`` is False (the differing settings are named).
    """
    plan = _plan(config)
    if _complete_run_matches(plan):
        return True
    _preflight(plan, model_given=model_given)
    return False


def config_settings(config: AnalyzeConfig) -> dict:
    """The validated settings of ``config`` that define its results, as run.json stores them
    under "config" (what a resumed run must match)."""
    return _plan(config).settings()
