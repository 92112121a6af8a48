"""The analysis pipeline: model + two image folders -> a run folder.

:func:`run_analysis` runs these stages, in order, into the run folder of the method
reference (section 3), batch by batch:

1. ``encode``   load the model and both image folders, write samples.parquet and the scaled
                encoder means latents.npy;
2. one stage per maskable attack: per-coordinate terms residuals/<name>.npy (SimA, PIA,
                Loss, SecMI), cheap, so AUROC and ROC curves exist early;
3. ``geometry`` decoder log-volume (-> samples.parquet ``log_volume``) and per-coordinate
                influence (influence.npy), usually the most expensive stage;
4. one stage per score-only attack: scores/pfami.npy (PFAMI);
5. finish       run.json ``status`` becomes "complete".

The order is :func:`ldminv_core.runstore.planned_stages`. Each stage is marked done in
run.json only once all its arrays are flushed, so ``Run.open(path, partial=True)`` (the
dashboard, while an analysis runs) sees exactly the finished stages.

Resuming: after each batch its array rows are flushed, then the stage's sample counter in
run.json moves (atomic write). Running again with the same settings skips finished stages and
continues a partly done one from its last completed batch. Every random draw is seeded per
sample id and batches always cover the same samples, so a resumed run is bit-identical to an
uninterrupted one. ``should_stop()`` returning True raises :class:`AnalysisCancelled` after
the current batch; a KeyboardInterrupt or a killed process leave the folder resumable too.

:func:`estimate_cost` counts the work of each stage and times one small batch of each on
this machine to predict the wall time.
"""
from __future__ import annotations

import math
import os
import platform
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from . import attacks as _attacks
from . import geometry as _geometry
from . import precomputed as _precomputed
from .errors import DataLoadError, LdminvError, NonFiniteError, RunError, UnknownNameError
from .loading import (
    ImageSet,
    LoadedModel,
    check_image_folder,
    check_model,
    display_name,
    load_image_folder,
    load_model,
    resolve_device,
)
from .latents import encode_latents
from .distributed import DistContext, RankLedger
from .precomputed import PrecomputedGeometry
from .blind_features import BLIND_FILE, blind_features, load_image_encoder, resolve_image_encoder, store_blind_features
from .evaluation.blind import cached_fitting_null
from .evaluation.evaluator import stratified_folds
from .evaluation.protocols import DEFAULT_FOLDS
from .runstore import CACHE_DIR, RunWriter, delete_run, load_npy, planned_stages, run_status

__all__ = [
    "AnalyzeConfig",
    "AnalysisCancelled",
    "CostEstimate",
    "StageCost",
    "estimate_cost",
    "run_analysis",
    "check_config",
    "preset_config",
    "load_config_model",
    "describe_geometry_plan",
    "find_duplicates",
    "config_settings",
    "STAGES",
    "format_duration",
    "format_percent",
    "format_per_image",
    "INFLUENCE_METHODS",
    "RESIDUAL_DTYPES",
]

from .choices import (  # noqa: E402 - shared with the CLI parser
    INFLUENCE_METHODS,
    LATENT_KINDS,
    LOG_VOLUME_KINDS,
    PRESETS,
    PROBES_AUTO,
    RESIDUAL_DTYPES,
)
STAGES = ("encode", "geometry")  # the attacks' stages come around "geometry": runstore.planned_stages
_WORK_LOG_VOLUME = "_work/log_volume.npy"
_MAX_TIMED_BATCH = 128
#: The cost estimate times the geometry on real latents only when the cost model predicts at most
#: this many seconds for it; beyond (Stable Diffusion scale: minutes per sample) it uses the
#: prediction, made from one JVP and one VJP timed on this machine.
_MAX_TIMED_GEOMETRY_S = 20.0

ProgressFn = Callable[[str, int, int], Any]


class AnalysisCancelled(LdminvError):
    """The analysis was stopped on request (``should_stop``); the run folder is resumable."""


@dataclass
class AnalyzeConfig:
    """Settings of one analysis (mirrors ``python -m ldminv_core analyze``).

    Attributes:
        model: diffusers pipeline folder or hub id.
        members, heldout: image folders of the training members and of held-out images.
        out: run folder to write (created; an unfinished run there is resumed).
        attacks: names from :data:`ldminv_core.attacks.ATTACKS` (a comma string is accepted).
        timesteps: timestep spec of the maskable attacks, "start:stop:step" or "0,10,50".
        topk: k of the log-volume (sum of the top-k log singular values).
        influence: "auto" | "exact" | "hutchinson" path of the per-coordinate influence.
        probes: Hutchinson probes per sample when the influence is estimated: "auto" (the
            geometry plan's choice, :data:`ldminv_core.geometry.HUTCHINSON_RANK_PROBES`, the count
            that keeps the median rank correlation with the exact influence >= 0.98) or a number,
            used as given. run.json "geometry" records the request (``probes_requested``), the
            count used (``probes``, None when the influence is exact) and why (``probes_reason``).
        device: "auto" | "cpu" | "cuda" | "cuda:i".
        batch_size: samples per batch in every stage (also the resume granularity).
        seed: seed of every random draw (noise, probes), keyed per sample id.
        limit: use only the first ``limit`` images (sorted file names) of each folder.
        residual_dtype: "float32" (exact) or "float16" (half the disk) for residuals/*.npy.
        force: delete an existing run in ``out`` and recompute.
        latent: "mean" (the encoder mean, METHOD.md) or "sample" (one posterior sample per image,
            seeded per sample id: the paper's Stable Diffusion code); :mod:`ldminv_core.latents`.
        log_volume: "topk" (sum of the top-k log singular values) or "logdet" (0.5 * log det(J^T J),
            the whole spectrum: exact when the Jacobian is built anyway, else stochastic Lanczos
            quadrature, the paper's Stable Diffusion default).
        preset: the name of the preset the options came from (:data:`ldminv_core.choices.PRESETS`,
            applied by :func:`preset_config`); recorded in run.json, not compared on resume.
        lora: LoRA adapter paths (a folder with ``pytorch_lora_weights.safetensors`` or a
            ``.safetensors`` file), applied in order to the UNet (and the text encoder) of
            ``model`` as ``pipeline.load_lora_weights`` does (:mod:`ldminv_core.lora`).
        lora_scale: the adapters' weights: empty (1.0 each), one (for every adapter) or one per
            adapter. run.json "lora" records each adapter's file, SHA-256 and scale.
        allow_duplicates: analyze even when the two folders share images, or one holds the
            same image twice (compared by pixels after decoding and resizing:
            :func:`find_duplicates`); the run records a warning in run.json "warnings".
            Without it such data are refused with a DataLoadError.
        break_lock: take over a run folder whose lock another writer holds (only when that
            writer is known to be gone, e.g. crashed on another host sharing the folder; a live
            writer would keep writing). Not part of the compared settings.
        blind_encoder: an image model (folder, or hub id in the local Hugging Face cache; nothing
            is downloaded) whose embeddings add the ``encoder`` feature group to the blind
            baseline (:func:`ldminv_core.blind_features.load_image_encoder`); None: no such group.
            Compared on resume; run.json "blind" "encoder" records the model that made them.
    """

    model: str
    members: str
    heldout: str
    out: str
    attacks: tuple[str, ...] | str = ("sima",)
    timesteps: str | Sequence[int] = "0:300:10"
    topk: int = 50
    influence: str = "auto"
    probes: int | str = "auto"
    device: str = "auto"
    batch_size: int = 32
    seed: int = 0
    limit: int | None = None
    residual_dtype: str = "float32"
    latent: str = "mean"
    log_volume: str = "topk"
    preset: str | None = None
    lora: Sequence[str] = ()
    lora_scale: Sequence[float] | float = ()
    force: bool = False
    allow_duplicates: bool = False
    break_lock: bool = False
    blind_encoder: str | None = None


def preset_config(name: str, **options: Any) -> AnalyzeConfig:
    """An :class:`AnalyzeConfig` with the settings of preset ``name`` under ``options`` (explicit
    options win), e.g. ``preset_config("sd-paper", model=..., members=..., heldout=..., out=...)``.

    Raises:
        UnknownNameError: ``name`` is not in :data:`ldminv_core.choices.PRESETS`.
    """
    if name not in PRESETS:
        raise UnknownNameError(f"preset: expected one of {tuple(PRESETS)}, got {name!r}")
    merged = {**PRESETS[name], **{k: v for k, v in options.items() if v is not None}, "preset": name}
    return AnalyzeConfig(**merged)


# ----------------------------------------------------------------------------- validation


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _as_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < minimum:
        raise LdminvError(f"{name}: expected an integer >= {minimum}, got {_got(value)}")
    return int(value)


def _as_probes(value: Any) -> int | None:
    """None for "auto", else the probe count (an integer >= 1)."""
    if isinstance(value, str) and value.strip().lower() == PROBES_AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise LdminvError(f"probes: expected 'auto' or an integer >= 1 (Hutchinson probes per sample), got {_got(value)}")
    return int(value)


def _as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise LdminvError(f"{name}: expected True or False, got {_got(value)}")
    return bool(value)


def _as_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise UnknownNameError(f"{name}: expected one of {tuple(choices)}, got {_got(value)}")
    return value


def _as_path_text(value: Any, name: str, *, hub: bool = False) -> str:
    what = "a folder path or hub id" if hub else "a folder path"
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise LdminvError(f"{name}: expected {what} (a string), got {_got(value)}")
    text = str(os.fspath(value))
    if not text.strip():
        raise LdminvError(f"{name}: expected {what}, got nothing ({value!r})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LdminvError(
            f"{name}: the path {display_name(text)} is not valid UTF-8; rename it (run folders store paths as text)"
        ) from None
    return text


def _normalize_attacks(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        names = value.split(",")
    elif isinstance(value, (list, tuple)):
        names = list(value)
    else:
        raise UnknownNameError(
            f"attacks: expected a comma string or a list of names from {_attacks.ATTACKS}, got {_got(value)}"
        )
    out: list[str] = []
    for raw in names:
        if not isinstance(raw, str):
            raise UnknownNameError(f"attacks: expected attack names (strings), got {_got(raw)} in {value!r}")
        name = raw.strip().lower()
        if not name:
            continue
        if name not in _attacks.ATTACKS:
            raise UnknownNameError(f"attacks: unknown attack {raw!r}; expected names from {_attacks.ATTACKS}")
        if name not in out:
            out.append(name)
    if not out:
        raise UnknownNameError(f"attacks: expected at least one of {_attacks.ATTACKS}, got {value!r}")
    return tuple(out)


def _normalize_timesteps(value: Any) -> list[int]:
    if isinstance(value, str):
        return _attacks.parse_timesteps(value)
    expected = "a spec like '0:300:10' or a list of integers"
    if isinstance(value, (bytes, dict, set)) or not isinstance(value, (list, tuple, range, np.ndarray)):
        raise LdminvError(f"timesteps: expected {expected}, got {_got(value)}")
    ts: list[int] = []
    for t in list(value):
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise LdminvError(
                f"timesteps: expected integers (no fractions, no booleans), got {_got(t)} in {list(value)!r}"
            )
        ts.append(int(t))
    return _attacks.parse_timesteps(",".join(map(str, ts))) if ts else _attacks.parse_timesteps("")


def _model_ref(model: Any) -> str:
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


@dataclass(frozen=True)
class _Plan:
    """A validated configuration."""

    model: str
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
        }

    def adapters(self) -> list:
        """The LoRA adapters as :class:`ldminv_core.lora.LoraAdapter` (empty list when none)."""
        from .lora import LoraAdapter

        return [LoraAdapter(path, scale=scale) for path, scale in self.lora]


def _plan(config: AnalyzeConfig) -> _Plan:
    """Check the type and range of every option (nothing on disk is looked at)."""
    if not isinstance(config, AnalyzeConfig):
        raise LdminvError(f"config: expected an AnalyzeConfig, got {type(config).__name__}")
    model = _as_path_text(config.model, "model", hub=True)
    members = _as_path_text(config.members, "members")
    heldout = _as_path_text(config.heldout, "heldout")
    out = _as_path_text(config.out, "out")
    influence = _as_choice(config.influence, "influence", INFLUENCE_METHODS)
    residual_dtype = _as_choice(config.residual_dtype, "residual_dtype", RESIDUAL_DTYPES)
    if not isinstance(config.device, (str, torch.device)):
        raise LdminvError(f"device: expected 'auto', 'cpu' or 'cuda[:i]', got {_got(config.device)}")
    limit = None if config.limit is None else _as_int(config.limit, "limit", minimum=1)
    latent = _as_choice(config.latent, "latent", LATENT_KINDS)
    log_volume_kind = _as_choice(config.log_volume, "log_volume", LOG_VOLUME_KINDS)
    if log_volume_kind == "logdet" and "logdet" not in getattr(_geometry, "LOG_VOLUME_KINDS", ()):
        raise UnknownNameError("log_volume: 'logdet' is not available in this build of ldminv_core.geometry")
    preset = None if config.preset is None else _as_choice(config.preset, "preset", tuple(PRESETS))
    lora = _normalize_lora(config.lora, config.lora_scale)
    blind_encoder = None if config.blind_encoder is None else _model_ref(
        _as_path_text(config.blind_encoder, "blind_encoder (--blind-encoder)", hub=True))
    return _Plan(
        model=_model_ref(model),
        members=str(Path(members).expanduser().resolve()),
        heldout=str(Path(heldout).expanduser().resolve()),
        out=Path(out).expanduser().resolve(),
        attacks=_normalize_attacks(config.attacks),
        timesteps=_normalize_timesteps(config.timesteps),
        topk=_as_int(config.topk, "topk", minimum=1),
        influence=influence,
        probes=_as_probes(config.probes),
        device=str(config.device),
        batch_size=_as_int(config.batch_size, "batch_size", minimum=1),
        seed=_as_int(config.seed, "seed", minimum=0),
        limit=limit,
        residual_dtype=residual_dtype,
        force=_as_bool(config.force, "force"),
        allow_duplicates=_as_bool(config.allow_duplicates, "allow_duplicates"),
        break_lock=_as_bool(config.break_lock, "break_lock"),
        latent=latent,
        log_volume=log_volume_kind,
        preset=preset,
        lora=lora,
        blind_encoder=blind_encoder,
    )


def _normalize_lora(paths: Any, scales: Any) -> tuple[tuple[str, float], ...]:
    """(absolute path, scale) per adapter, from ``AnalyzeConfig.lora`` / ``lora_scale``."""
    from .lora import parse_lora_args

    if isinstance(paths, (str, Path)):
        paths = [paths]
    if isinstance(scales, (int, float)) and not isinstance(scales, bool):
        scales = [scales]
    if not isinstance(paths, Sequence) or not all(isinstance(p, (str, Path)) and str(p) for p in paths):
        raise LdminvError(f"lora: expected a list of adapter paths, got {_got(paths)}")
    if not isinstance(scales, Sequence) or isinstance(scales, str):
        raise LdminvError(f"lora_scale: expected a number or a list of numbers, got {_got(scales)}")
    adapters = parse_lora_args([str(p) for p in paths], list(scales))
    return tuple((str(Path(a.path).expanduser().resolve()), float(a.scale)) for a in adapters)


#: File systems that hold no ordinary files (kernel interfaces): a run folder there is refused
#: before anything is created (a folder made in a cgroup file system would even create a cgroup).
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore",
    "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "autofs", "binfmt_misc", "efivarfs", "selinuxfs",
    "rpc_pipefs", "nsfs",
})
_OUT_EXPECTED = "a folder where a run can be written (created if missing)"


def _unescape_mount_field(text: str) -> str:
    """A /proc/mounts field with its octal escapes (space = \\040, ...) decoded."""
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _filesystem_type(path: Path) -> str | None:
    """The type of the file system ``path`` (an absolute path) would live on, from the longest
    mount point above it in /proc/self/mounts; None where that table cannot be read."""
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    best, best_type = -1, None
    for line in lines:
        fields_ = line.split()
        if len(fields_) < 3:
            continue
        point = _unescape_mount_field(fields_[1])
        inside = path == Path(point) or Path(point) in path.parents
        if inside and len(point) >= best:  # later entries shadow earlier ones on the same point
            best, best_type = len(point), fields_[2]
    return best_type


def _probe_write(folder: Path) -> None:
    """Create ``folder`` (with its missing parents), write and delete a small file in it, then
    remove again the folders this call created. OSError when any step fails."""
    import tempfile

    created = []
    for p in [folder, *folder.parents]:
        if p.exists() or p.is_symlink():
            break
        created.append(p)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=".ldminv-write-test-", dir=folder)
        try:
            os.write(fd, b"ldminv")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    finally:
        for p in created:  # deepest first; a folder someone else filled meanwhile stays
            try:
                p.rmdir()
            except OSError:
                break


def _check_out(out: Path) -> None:
    """RunError naming ``out`` (``--out``) unless a run folder can be created and written there:
    the path and its nearest existing parent are folders, not on a pseudo file system (/proc,
    /sys, ...), and a probe actually creates the missing folders, writes a file and deletes both
    again (so read-only mounts, full disks and permissions are all caught before anything loads)."""
    where = f"out (--out): expected {_OUT_EXPECTED}, got {out}"
    # 1. what is on the path: a writable folder, or a writable folder to create it in
    try:
        if out.is_symlink() and not out.exists():
            raise RunError(f"{where}: a symbolic link to {os.readlink(out)}, which does not exist")
        if out.exists():
            if not out.is_dir():
                raise RunError(f"{where}: it is a file (or not a folder)")
            if not os.access(out, os.W_OK | os.X_OK):
                raise RunError(f"{where}: the folder is not writable (permission denied)")
        else:
            parent = out.parent
            while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
                parent = parent.parent
            if not parent.is_dir():
                raise RunError(f"{where}: cannot create it because {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise RunError(f"{where}: cannot create it because {parent} is not writable (permission denied)")
    except OSError as exc:  # e.g. a parent folder that may not be listed
        raise RunError(f"{where}: it cannot be examined ({exc.strerror or exc})") from exc
    # 2. where it would live: not a kernel interface (/proc, /sys, cgroups, ...)
    fs = _filesystem_type(out)
    if fs in PSEUDO_FILESYSTEMS:
        raise RunError(f"{where}: it is on a '{fs}' file system (a kernel interface, not storage); choose a folder "
                       "on a disk")
    # 3. a real write: read-only mounts, full disks and refusing file systems answer here
    try:
        _probe_write(out)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        culprit = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise RunError(f"{where}: creating it and writing a test file there failed: {reason}{culprit}") from exc


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
    import json

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
    import json

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
    if not model_given:
        check_model(plan.model)
        if plan.lora:
            from .lora import check_lora

            check_lora(plan.adapters())
    if plan.blind_encoder is not None:
        resolve_image_encoder(plan.blind_encoder)  # found locally (reads no weights)
    resolve_device(plan.device)
    _check_out(plan.out)
    if str(plan.out) in (plan.members, plan.heldout):
        raise RunError(f"out: {plan.out} is an image folder of this analysis; choose another run folder")
    if plan.out.is_dir() and run_status(plan.out) is None and any(plan.out.iterdir()):
        raise RunError(
            f"output folder {plan.out} is not empty and holds no run.json; refusing to write a run "
            "there (choose a new or empty folder)"
        )


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


def _check_model_lora(plan: _Plan, model: LoadedModel) -> None:
    """RunError when a given model does not carry exactly the configured LoRA adapters."""
    have = [(str(r.get("path")), float(r.get("scale"))) for r in getattr(model, "lora", ())]
    want = [(p, s) for p, s in plan.lora]
    if have != want:
        shown = lambda items: ", ".join(f"{p} (scale {s:g})" for p, s in items) or "none"
        raise RunError(
            f"model: the given model carries LoRA adapters {shown(have)} but the configuration asks for "
            f"{shown(want)}; load it with ldminv_core.analyze.load_config_model(config)"
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
    """The model of ``plan`` on ``device``, with its LoRA adapters applied."""
    return load_model(plan.model, device=device, lora=plan.adapters() or None)


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


def _attack_spec(name: str, timesteps: list[int], residual_dtype: str) -> dict:
    if name in _attacks.MASKABLE_ATTACKS:
        return {"kind": "terms", "timesteps": list(timesteps), "p": _attacks.DEFAULT_P[name], "dtype": residual_dtype}
    return {
        "kind": "scores",
        "timesteps": list(_attacks.PFAMI_TIMESTEPS),
        "p": 2,
        "strengths": list(_attacks.PFAMI_STRENGTHS),
    }


def _versions() -> dict:
    import diffusers
    import transformers

    from . import __version__

    return {
        "ldminv": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _load_images(plan: _Plan, model: LoadedModel) -> tuple[ImageSet, ImageSet]:
    kw = dict(channels=model.image_channels, resolution=model.resolution, limit=plan.limit)
    return load_image_folder(plan.members, **kw), load_image_folder(plan.heldout, **kw)


def find_duplicates(members: ImageSet, heldout: ImageSet) -> dict:
    """Images with the same pixels (:func:`ldminv_core.loading.pixel_hash`: the loaded tensor
    rounded to 8 bits, after the loader's decode and resize) across and within the two splits.

    Returns:
        {"across": n, "within_members": n, "within_heldout": n, "pairs": [(a, b), ...]} where
        each pair names two files ("member NAME" / "held-out NAME") of one duplicate group (the
        first file of a group against each other one), across-split pairs first.
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for split, images in (("member", members), ("held-out", heldout)):
        hashes = images.hashes or [None] * len(images)
        for path, h in zip(images.paths, hashes):
            if h is not None:
                groups.setdefault(h, []).append((split, display_name(Path(path).name)))
    counts = {"across": 0, "within_members": 0, "within_heldout": 0}
    across, within = [], []
    for group in groups.values():
        if len(group) < 2:
            continue
        first = group[0]
        for other in group[1:]:
            pair = (f"{first[0]} {first[1]}", f"{other[0]} {other[1]}")
            if first[0] != other[0]:
                counts["across"] += 1
                across.append(pair)
            else:
                counts["within_members" if first[0] == "member" else "within_heldout"] += 1
                within.append(pair)
    return {**counts, "pairs": across + within}


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


def _check_finite(arr: np.ndarray, *, stage: str, file: str, start: int, paths: Sequence[str]) -> None:
    """NonFiniteError naming the stage, the array file and the first samples whose values are
    NaN or infinite (checked per batch before it is recorded, so the run stays resumable)."""
    if np.isfinite(arr).all():
        return
    rows = np.asarray(arr).reshape(len(arr), -1)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    ids = [int(start + i) for i in bad[:5]]
    named = ", ".join(f"{i} ({display_name(Path(paths[i]).name)})" if i < len(paths) else str(i) for i in ids)
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    hint = ""
    if arr.dtype == np.float16:
        hint = " float16 overflows above 65504: rerun with residual_dtype float32 (--residual-dtype float32 --force)."
    raise NonFiniteError(
        f"stage {stage!r}: NaN or infinite values in {file} for sample id(s) {named}{more}; the batch starting at "
        f"sample {start} was not recorded (the run stays resumable, but the same settings will give the same "
        f"values).{hint} Check the model's weights and these images."
    )


def _samples_table(members: ImageSet, heldout: ImageSet) -> pd.DataFrame:
    n = len(members) + len(heldout)
    return pd.DataFrame(
        {
            "sample_id": np.arange(n, dtype=np.int64),
            "path": [str(p) for p in members.paths + heldout.paths],
            "split": ["member"] * len(members) + ["heldout"] * len(heldout),
            "caption": pd.array(list(members.captions) + list(heldout.captions), dtype="object"),
            "log_volume": np.full(n, np.nan, dtype=np.float64),
        }
    )


def _geometry_methods(plan: _Plan, model: LoadedModel) -> tuple[str, str]:
    d = math.prod(model.latent_shape)
    pixels = math.prod(model.image_shape)
    infl = _geometry.resolve_influence_method(plan.influence, d)
    lv = _geometry.resolve_log_volume_method("auto", d=d, p=pixels, k=plan.topk, influence_method=infl,
                                             **_log_volume_kwargs(plan))
    return infl, lv


def _make_geometry_plan(plan: _Plan, decode: Callable, z1: torch.Tensor) -> "_geometry.GeometryPlan":
    """The geometry paths of this analysis, by the cost model timed on one latent ``z1`` (1, C, h, w)."""
    return _geometry.plan_geometry(decode, z1, k=plan.topk, influence=plan.influence, log_volume=plan.log_volume,
                                   probes=plan.probes, measure=True)


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
    from .geometry_plan import probes_reason

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


# ----------------------------------------------------------------------------- cost estimate


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
        from .choices import attack_label

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
        cols = ("stage", "images", "encoder", "decoder JVP/VJP", "UNet calls", "per image", "est. time", "share")
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
    plan = _plan(config)
    _preflight(plan, model_given=model is not None)
    t0 = time.perf_counter()
    if model is None:
        model = _load_plan_model(plan, resolve_device(plan.device))
    _check_timesteps_for_model(plan, model)
    _check_model_lora(plan, model)
    members, heldout = _load_images(plan, model)
    run_warnings = _check_duplicates(plan, members, heldout)
    load_seconds = time.perf_counter() - t0
    n = len(members) + len(heldout)
    dev = model.device

    # a batch of the configured size (capped), built by repeating a few real images
    b = max(1, min(plan.batch_size, n, _MAX_TIMED_BATCH))
    few = torch.cat([members.images[:2], heldout.images[:2]])
    reps = -(-b // few.shape[0])
    images = few.repeat(reps, 1, 1, 1)[:b]
    model.encode(images[:1])
    enc_s = _timed(lambda: model.encode(images), dev) / b
    z = model.encode(images).float()

    decode = model.decoder_fn()
    gp = _make_geometry_plan(plan, decode, z[:1])
    infl, lv = gp.influence_method, gp.log_volume_method
    geo_b = min(2, b)
    predicted = gp.predicted_seconds_per_sample
    geometry_timed = predicted is None or predicted * geo_b <= _MAX_TIMED_GEOMETRY_S
    if geometry_timed:  # the plan's timing calls warmed the decoder products up
        geo_s = _timed(lambda: _geometry.decoder_geometry(decode, z[:geo_b], plan=gp, seed=plan.seed,
                                                          sample_ids=list(range(geo_b))), dev) / geo_b
    else:
        geo_s = float(predicted)

    pred = model.predictor
    cond = None
    if pred.is_conditional:
        caps = list(members.captions[:2]) + list(heldout.captions[:2])
        cond = pred.encode_prompts((caps * reps)[:b])
    call = lambda: pred(z, plan.timesteps[0], cond)
    call()
    unet_s = _timed(call, dev) / b

    products = int(sum(gp.products.values()))
    est = CostEstimate(
        n_members=len(members),
        n_heldout=len(heldout),
        latent_shape=model.latent_shape,
        influence_method=infl,
        log_volume_method=lv,
        device=str(dev),
        timed_batch=b,
        warnings=run_warnings,
        skipped={"members": list(members.report.skipped), "heldout": list(heldout.report.skipped)},
        geometry_plan=gp,
        geometry_timed=geometry_timed,
    )
    d = math.prod(model.latent_shape)
    itemsize = np.dtype(plan.residual_dtype).itemsize
    n_terms = sum(1 for a in plan.attacks if a in _attacks.MASKABLE_ATTACKS)
    est.disk_bytes = int(n * d * 4 * 2 + n * len(plan.timesteps) * d * itemsize * n_terms + n * 8 * len(plan.attacks))
    est.stages.append(StageCost("load", n, seconds=load_seconds))
    est.stages.append(StageCost("encode", n, encoder_calls=n, seconds=enc_s * n))
    order = planned_stages({"attacks": {a: {"kind": "terms" if a in _attacks.MASKABLE_ATTACKS else "scores"}
                                        for a in plan.attacks}, "blind": {}})
    for name in order[1:]:  # in the order run_analysis computes them
        if name == "blind":  # reads the files (and runs a named image model): timed on four real ones
            files = [*members.paths[:2], *heldout.paths[:2]]
            t_enc = time.perf_counter()
            encoder = load_image_encoder(plan.blind_encoder, device=dev) if plan.blind_encoder is not None else None
            enc_load_s = time.perf_counter() - t_enc
            blind_s = _timed(lambda: blind_features(files, encoder=encoder), dev) / max(len(files), 1)
            est.stages.append(StageCost("blind", n, seconds=enc_load_s + blind_s * n))
            del encoder
        elif name == "geometry":
            est.stages.append(StageCost("geometry", n, decoder_products=products * n, seconds=geo_s * n))
        else:
            calls = _unet_calls_per_sample(name, plan.timesteps) * n
            est.stages.append(StageCost(name, n, unet_calls=calls, seconds=unet_s * calls))
    return est


# ----------------------------------------------------------------------------- the pipeline


def _geometry_rows(plan: _Plan, model: LoadedModel, decode, z_all: np.ndarray, start: int, stop: int,
                   methods: dict, folder: Path, paths: Sequence[str],
                   within: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Influence (B, C, h, w) float32 and log-volume (B,) float64 of samples start..stop-1, by the
    paths in ``methods`` (run.json "geometry": influence, log_volume_method, probes_used).
    ``within`` is told the samples of the batch finished so far (a float) after every decoder call."""
    zb = torch.from_numpy(np.array(z_all[start:stop])).to(model.device, model.dtype)
    geo = _geometry.decoder_geometry(
        decode, zb, k=plan.topk, influence=methods["influence"], log_volume_method=methods["log_volume_method"],
        probes=_probes_to_run(plan, methods), seed=plan.seed, sample_ids=list(range(start, stop)),
        progress=within, **_log_volume_kwargs(plan),
    )
    infl_b = geo.influence.detach().to("cpu", torch.float32).numpy()
    lv_b = geo.log_volume.detach().to("cpu", torch.float64).numpy()
    _check_finite(infl_b, stage="geometry", file=str(folder / "influence.npy"), start=start, paths=paths)
    _check_finite(lv_b, stage="geometry", file=f"{folder / 'samples.parquet'} (log_volume)", start=start, paths=paths)
    return infl_b, lv_b


#: Least seconds between two progress reports from inside a batch (the geometry's decoder calls).
WITHIN_BATCH_REPORT_S = 0.25


def _within_batch(progress: ProgressFn, stage: str, *, start: int, total: int) -> Callable[[float], None]:
    """A callback for work inside one batch: ``progress(stage, start + done, total)`` with ``done``
    the batch's samples finished so far (a float, two decimals), at most every
    :data:`WITHIN_BATCH_REPORT_S` seconds."""
    last = -math.inf

    def report(done: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < WITHIN_BATCH_REPORT_S:
            return
        last = now
        progress(stage, round(start + float(done), 2), total)

    return report


def _attack_rows(name: str, plan: _Plan, model: LoadedModel, z_all: np.ndarray, captions: Sequence[str | None],
                 start: int, stop: int, dtype: np.dtype, file: str, paths: Sequence[str]) -> np.ndarray:
    """Terms (B, T, C, h, w) or scores (B,) of attack ``name`` for samples start..stop-1, in ``dtype``."""
    zb = torch.from_numpy(np.array(z_all[start:stop]))
    caps = list(captions[start:stop]) if model.is_conditional else None
    ids = np.arange(start, stop)
    if name in _attacks.MASKABLE_ATTACKS:
        res = _attacks.attack_terms(
            name, model.predictor, zb, timesteps=plan.timesteps, captions=caps,
            sample_ids=ids, seed=plan.seed, batch_size=plan.batch_size,
        )
    else:
        res = _attacks.pfami_scores(
            model.predictor, zb, captions=caps, sample_ids=ids, seed=plan.seed, batch_size=plan.batch_size,
        )
    with np.errstate(over="ignore"):
        batch = res.detach().cpu().numpy().astype(dtype)
    _check_finite(batch, stage=name, file=file, start=start, paths=paths)
    return batch


def _stage_arrays(name: str, plan: _Plan, n: int, lat: tuple[int, ...]) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(relpath, shape, dtype) of the arrays stage ``name`` fills."""
    if name == "geometry":
        return [("influence.npy", (n, *lat), np.dtype(np.float32)), (_WORK_LOG_VOLUME, (n,), np.dtype(np.float64))]
    if name in _attacks.MASKABLE_ATTACKS:
        return [(f"residuals/{name}.npy", (n, len(plan.timesteps), *lat), np.dtype(plan.residual_dtype))]
    return [(f"scores/{name}.npy", (n,), np.dtype(np.float32))]


def _open_existing(folder: Path, relpath: str, shape: tuple[int, ...], dtype: np.dtype) -> np.memmap:
    """Open an array rank 0 created, to write this rank's rows (RunError when it does not match)."""
    path = folder / relpath
    try:
        arr = np.lib.format.open_memmap(path, mode="r+")
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot be opened to write this rank's rows ({exc})") from exc
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise RunError(f"{path}: expected shape {tuple(shape)} {dtype}, found {arr.shape} {arr.dtype}")
    return arr


def _run_follower(plan: _Plan, ctx: DistContext, model: LoadedModel | None) -> Path:
    """A rank other than 0: load the model, wait for rank 0's set-up and encode stage, then fill
    this rank's batches of every remaining stage (collectives in the order rank 0 makes them)."""
    import json

    if model is None:
        model = _load_plan_model(plan, _rank_device(plan, ctx))
    _check_timesteps_for_model(plan, model)
    _check_model_lora(plan, model)
    ctx.agree()  # rank 0's set-up and encode stage are done
    data = json.loads((plan.out / "run.json").read_text(encoding="utf-8"))
    samples = pd.read_parquet(plan.out / "samples.parquet")
    n, lat = len(samples), tuple(model.latent_shape)
    captions = [None if (c is None or (isinstance(c, float) and math.isnan(c))) else str(c)
                for c in samples["caption"].tolist()]
    paths = samples["path"].tolist()
    z_all = load_npy(plan.out / "latents.npy", mmap_mode="r")
    ledger = RankLedger(plan.out, ctx, batch_size=plan.batch_size)
    decode = model.decoder_fn()
    for name in planned_stages(data)[1:]:
        if data.get("stages", {}).get(name):
            continue
        ctx.agree()  # rank 0 created the stage's arrays
        arrays = [_open_existing(plan.out, rel, shape, dt) for rel, shape, dt in _stage_arrays(name, plan, n, lat)]
        stage = _Stage(None, name, n, plan.batch_size, None, None, ledger=ledger,
                       prefix=int(data.get("progress", {}).get(name, 0)))
        methods = {}
        if name == "geometry":  # rank 0 recorded the paths before creating the arrays
            methods = json.loads((plan.out / "run.json").read_text(encoding="utf-8"))["geometry"]
        for start, stop in stage.batches(arrays):
            if name == "geometry":
                arrays[0][start:stop], arrays[1][start:stop] = _geometry_rows(
                    plan, model, decode, z_all, start, stop, methods, plan.out, paths)
            else:
                arrays[0][start:stop] = _attack_rows(name, plan, model, z_all, captions, start, stop, arrays[0].dtype,
                                                     str(plan.out / _stage_arrays(name, plan, n, lat)[0][0]), paths)
        del arrays
        ctx.agree()  # every rank computed its batches
        ctx.agree()  # rank 0 checked and recorded the stage
    return plan.out


def _rank_device(plan: _Plan, ctx: DistContext) -> torch.device:
    """cuda:LOCAL_RANK for "auto"/"cuda" on a machine with GPUs under a launcher, else the option."""
    if ctx.active and plan.device in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device(f"cuda:{ctx.local_rank % torch.cuda.device_count()}")
    return resolve_device(plan.device)


class _Stage:
    """Batch loop of one stage with progress records, callbacks and cancellation.

    Without a ledger (one process, no rank records in the folder) progress is run.json's
    prefix counter. With a :class:`~ldminv_core.distributed.RankLedger` the stage's batches not
    yet recorded by any rank (nor covered by the prefix counter) that belong to this rank are
    done, each recorded in this rank's file once its rows are flushed.
    """

    def __init__(
        self,
        writer: RunWriter | None,
        name: str,
        n: int,
        batch_size: int,
        progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
        *,
        ledger: "RankLedger | None" = None,
        prefix: int = 0,
    ) -> None:
        self.writer, self.name, self.n, self.batch_size = writer, name, n, batch_size
        self.progress, self.should_stop = progress, should_stop
        self.ledger, self.prefix = ledger, prefix

    def _cancelled(self, stop: int) -> AnalysisCancelled:
        where = self.writer.path if self.writer is not None else "the run folder"
        return AnalysisCancelled(
            f"analysis of {where} cancelled during stage {self.name!r} after "
            f"{stop}/{self.n} samples; run it again with the same settings to resume"
        )

    def batches(self, arrays: Sequence[np.memmap]) -> Iterator[tuple[int, int]]:
        """Yield (start, stop) of each batch still to do; after the caller has filled the
        batch's rows, flush ``arrays``, record progress, report it and honour should_stop."""
        if self.ledger is not None:
            yield from self._ledger_batches(arrays)
            return
        assert self.writer is not None
        done = self.writer.progress(self.name)
        if done % self.batch_size and done != self.n:
            done -= done % self.batch_size  # never happens with a fixed batch size; be safe
        if self.progress is not None:
            self.progress(self.name, done, self.n)
        for start in range(done, self.n, self.batch_size):
            stop = min(self.n, start + self.batch_size)
            yield start, stop
            for arr in arrays:
                arr.flush()
            self.writer.set_progress(self.name, stop)
            if self.progress is not None:
                self.progress(self.name, stop, self.n)
            if self.should_stop is not None and self.should_stop():
                raise self._cancelled(stop)

    def missing(self) -> list[int]:
        """Batches of the stage no rank (and no prefix counter) has recorded yet."""
        assert self.ledger is not None
        nb = -(-self.n // self.batch_size)
        covered = self.ledger.done(self.name) | {b for b in range(nb) if min(self.n, (b + 1) * self.batch_size) <= self.prefix}
        return [b for b in range(nb) if b not in covered]

    def _ledger_batches(self, arrays: Sequence[np.memmap]) -> Iterator[tuple[int, int]]:
        ledger = self.ledger
        assert ledger is not None
        todo = self.missing()
        nb = -(-self.n // self.batch_size)
        mine = [b for b in todo if ledger.ctx.owns(b)]
        finished = nb - len(todo)
        world = ledger.ctx.world_size
        if self.progress is not None:
            self.progress(self.name, min(self.n, finished * self.batch_size), self.n)
        for i, b in enumerate(mine):
            start, stop = b * self.batch_size, min(self.n, (b + 1) * self.batch_size)
            t0 = time.perf_counter()
            yield start, stop
            for arr in arrays:
                arr.flush()
            ledger.record(self.name, b, time.perf_counter() - t0)
            if self.progress is not None:  # all ranks advance at about this rank's pace
                self.progress(self.name, min(self.n, (finished + (i + 1) * world) * self.batch_size), self.n)
            if self.should_stop is not None and self.should_stop():
                raise self._cancelled(stop)


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
        precomputed: a saved geometry stage (:mod:`ldminv_core.precomputed`) used instead of
            computing the geometry when it provably applies (same VAE files, settings, samples
            and latents); run.json "geometry" records whether it was used and why.
        geometry_plan: the geometry paths to use (:attr:`CostEstimate.geometry_plan`), when it
            was made for these settings; else the cost model picks them on the first latent.
            run.json "geometry" records the paths, the plan (products, measured cost of one
            product, predicted seconds per sample) and, once done, the measured seconds per sample.

    Every option, both folders, the model folder and the output folder are validated before
    anything is loaded or deleted (:func:`check_config`). A folder that already holds a
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
    plan = _plan(config)
    if _complete_run_matches(plan):
        return plan.out
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


def blind_stage(writer: RunWriter, captions: Sequence[str | None], paths: Sequence[str], *,
                progress: ProgressFn | None, add_time: Callable[[str, float], None],
                encoder: str | None = None, device: "str | torch.device" = "cpu") -> None:
    """The "blind" stage: model-free features of every image file (:mod:`ldminv_core.blind_features`)
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
    # the run needs first (about 17 ms per fit on 600 images: a few seconds), kept in .ldminv-cache
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


def _run_main(plan: _Plan, ctx: DistContext, *, progress: ProgressFn | None, should_stop: Callable[[], bool] | None,
              model: LoadedModel | None, precomputed: "PrecomputedGeometry | None",
              geometry_plan: "_geometry.GeometryPlan | None" = None) -> Path:
    """Rank 0 (or the only process): everything of :func:`run_analysis` after validation."""
    _preflight(plan, model_given=model is not None)
    status = run_status(plan.out)
    if plan.force and status is not None:
        delete_run(plan.out, foreign="delete")  # --force: an explicit start over
        status = None
    settings = _settings_against(plan, _read_stored_run(plan.out)) if status is not None else plan.settings()
    session_start = time.perf_counter()

    writer: RunWriter | None = None
    if status is not None:
        # an unfinished run: settings mismatch or a live writer fail here, before any loading
        writer = RunWriter(plan.out, settings=settings, force_unlock=plan.break_lock)
    try:
        t0 = time.perf_counter()
        if model is None:
            model = _load_plan_model(plan, _rank_device(plan, ctx))
        _check_timesteps_for_model(plan, model)
        _check_model_lora(plan, model)
        infl_method, lv_method = _geometry_methods(plan, model)
        images: torch.Tensor | None = None
        if writer is None or not writer.stage_done("encode"):
            members, heldout = _load_images(plan, model)
            # a resumed run keeps the allow_duplicates of the session that started it
            allowed = plan.allow_duplicates or bool(writer is not None and writer.data.get("allow_duplicates"))
            run_warnings = _check_duplicates(plan, members, heldout, allowed=allowed)
            samples = _samples_table(members, heldout)
            images = torch.cat([members.images, heldout.images])
            info = {
                "model": plan.model,
                "model_class": type(model.unet).__name__,
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
                    "influence": infl_method,
                    **_probes_record(plan, infl_method),
                    "log_volume_method": lv_method,
                    "log_volume": plan.log_volume,
                },
                "attacks": {a: _attack_spec(a, plan.timesteps, plan.residual_dtype) for a in plan.attacks},
                "load_report": {"members": members.report.as_dict(), "heldout": heldout.report.as_dict()},
                "allow_duplicates": allowed,
                "blind": {"file": BLIND_FILE, "groups": []},
                "timings": {},
                "sessions": [],
            }
            if writer is None:
                writer = RunWriter(plan.out, settings=settings, samples=samples, info=info,
                                   force_unlock=plan.break_lock)
            else:
                stored = writer.samples
                if stored["path"].tolist() != samples["path"].tolist() or stored["split"].tolist() != samples["split"].tolist():
                    raise RunError(
                        f"run folder {plan.out} holds an unfinished run over other images ({len(stored)} "
                        f"stored, {len(samples)} found now); re-run on the same folders or pass --force"
                    )
            writer.update(warnings=run_warnings)
        assert writer is not None
        data = writer.data
        _check_lora_hashes(plan, model, data.get("lora"))
        sessions = list(data.get("sessions", []))
        sessions.append(
            {
                "host": socket.gethostname(),
                "device": str(model.device),
                "cpu_threads": torch.get_num_threads(),
                "resumed": writer.resumed,
            }
        )
        writer.update(device=str(model.device), dtype=str(model.dtype).replace("torch.", ""), sessions=sessions)
        timings = dict(data.get("timings", {}))

        def add_time(stage: str, seconds: float) -> None:
            timings[stage] = round(float(timings.get(stage, 0.0)) + seconds, 3)
            writer.update(timings=timings)

        add_time("load", time.perf_counter() - t0)
        n = len(writer.samples)
        lat = tuple(model.latent_shape)
        captions = writer.samples["caption"].tolist()
        captions = [None if (c is None or (isinstance(c, float) and math.isnan(c))) else str(c) for c in captions]
        sample_paths = writer.samples["path"].tolist()
        stage_args = (plan.batch_size, progress, should_stop)

        # 1. encode
        if not writer.stage_done("encode"):
            t0 = time.perf_counter()
            assert images is not None
            latents = writer.open_array("latents.npy", (n, *lat), np.float32, stage="encode")
            stage = _Stage(writer, "encode", n, *stage_args)
            try:
                for start, stop in stage.batches([latents]):
                    z = encode_latents(model, images[start:stop], latent=plan.latent, seed=plan.seed,
                                       sample_ids=range(start, stop)).detach().to("cpu", torch.float32).numpy()
                    _check_finite(z, stage="encode", file=str(writer.path / "latents.npy"), start=start,
                                  paths=sample_paths)
                    latents[start:stop] = z
            finally:
                add_time("encode", time.perf_counter() - t0)
            del latents
            writer.mark_stage_done("encode")
        images = None

        # 2. blind features: what the files alone show (METHOD.md section 6), before the model's stages
        if "blind" in planned_stages(writer.data) and not writer.stage_done("blind"):
            blind_stage(writer, captions, sample_paths, progress=progress, add_time=add_time,
                        encoder=plan.blind_encoder, device=model.device)
        z_all = load_npy(writer.path / "latents.npy", mmap_mode="r")
        # several processes, or a folder one of their sessions worked on: per-rank batch records
        ledger = RankLedger(writer.path, ctx, batch_size=plan.batch_size) \
            if ctx.active or RankLedger.present(writer.path) else None
        if ctx.active:
            writer.update(distributed={"world_size": ctx.world_size, "backend": "gloo",
                                       "assignment": "batch b -> rank b % world_size"})
        ctx.agree()  # set-up and encode done: the other ranks start

        def stage_loop(name: str, arrays: list, fill: Callable[[int, int], None]) -> None:
            """Fill this rank's batches of ``name``; with a ledger, wait for every rank and check
            that every batch of the stage is on disk before the caller records it."""
            ctx.agree()  # the arrays exist: the other ranks open them
            stage = _Stage(writer, name, n, *stage_args, ledger=ledger, prefix=writer.progress(name))
            for start, stop in stage.batches(arrays):
                fill(start, stop)
            ctx.agree()  # every rank computed its batches
            if ledger is not None:
                missing = stage.missing()
                if missing:
                    raise RunError(
                        f"stage {name!r}: batches {missing[:5]}{' ...' if len(missing) > 5 else ''} of "
                        f"{-(-n // plan.batch_size)} are not recorded by any rank in {writer.path / 'ranks'}; the "
                        "stage is not marked done (run the same command again to compute them)"
                    )
                writer.set_progress(name, n)

        def reuse_geometry() -> bool:
            """Write the precomputed geometry when it applies; record the decision either way."""
            if precomputed is None:
                return False
            t0 = time.perf_counter()
            settings_now = {"topk": plan.topk, "influence": infl_method,
                            "probes": _probes_record(plan, infl_method)["probes"],
                            "log_volume_method": lv_method, "seed": plan.seed, **_log_volume_kwargs(plan)}
            try:
                digest = _precomputed.vae_digest(plan.model)
            except RunError as exc:
                ok, why = False, str(exc)
            else:
                ok, why = precomputed.check(samples=writer.samples, latents=np.asarray(z_all),
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
            add_time("geometry", time.perf_counter() - t0)
            writer.mark_stage_done("geometry")
            if progress is not None:
                progress("geometry", n, n)
            return True

        def geometry_paths(decode: Callable) -> dict:
            """The geometry paths of this run: recorded in run.json once (a resumed run keeps them),
            chosen by the cost model on the first latent (or the given plan when it fits)."""
            geo_info = dict(writer.data.get("geometry", {}))
            if "plan" not in geo_info and writer.progress("geometry") == 0:
                gp = geometry_plan if _plan_fits(geometry_plan, plan, math.prod(lat)) else None
                if gp is None:
                    z1 = torch.from_numpy(np.array(z_all[:1])).to(model.device, model.dtype)
                    gp = _make_geometry_plan(plan, decode, z1)
                geo_info.update(influence=gp.influence_method, log_volume_method=gp.log_volume_method,
                                probes_requested=_requested_probes(plan), probes=gp.probes_used,
                                probes_used=gp.probes_used, probes_reason=gp.probes_reason(), plan=gp.as_dict(),
                                plan_summary=describe_geometry_plan(gp))
                writer.update(geometry=geo_info)
            return geo_info  # an older unfinished run without a plan: its recorded paths

        def geometry_stage() -> None:
            t0 = time.perf_counter()
            if progress is not None:  # the stage has begun (choosing its paths times the decoder first)
                progress("geometry", writer.progress("geometry"), n)
            decode = model.decoder_fn()
            methods = geometry_paths(decode)
            influence = writer.open_array("influence.npy", (n, *lat), np.float32, stage="geometry")
            log_vol = writer.open_array(_WORK_LOG_VOLUME, (n,), np.float64, stage="geometry")

            def fill(start: int, stop: int) -> None:
                # one geometry sample can take minutes: report within the batch, per decoder call
                within = None if progress is None or ledger is not None else \
                    _within_batch(progress, "geometry", start=start, total=n)
                influence[start:stop], log_vol[start:stop] = _geometry_rows(
                    plan, model, decode, z_all, start, stop, methods, writer.path, sample_paths, within)

            try:
                stage_loop("geometry", [influence, log_vol], fill)
            finally:
                add_time("geometry", time.perf_counter() - t0)
            samples = writer.samples
            samples["log_volume"] = np.asarray(log_vol, dtype=np.float64)
            writer.update_samples(samples)
            del influence, log_vol
            geo_info = dict(writer.data.get("geometry", {}))
            geo_info["measured_seconds_per_sample"] = round(float(timings.get("geometry", 0.0)) / max(n, 1), 6)
            writer.update(geometry=geo_info)
            writer.mark_stage_done("geometry")
            ctx.agree()  # recorded

        def attack_stage(name: str) -> None:
            t0 = time.perf_counter()
            maskable = name in _attacks.MASKABLE_ATTACKS
            if maskable:
                shape = (n, len(plan.timesteps), *lat)
                relpath = f"residuals/{name}.npy"
                out = writer.open_array(relpath, shape, np.dtype(plan.residual_dtype), stage=name)
            else:
                relpath = f"scores/{name}.npy"
                out = writer.open_array(relpath, (n,), np.float32, stage=name)

            def fill(start: int, stop: int) -> None:
                out[start:stop] = _attack_rows(name, plan, model, z_all, captions, start, stop, out.dtype,
                                               str(writer.path / relpath), sample_paths)

            try:
                stage_loop(name, [out], fill)
            finally:
                add_time(name, time.perf_counter() - t0)
            del out
            writer.mark_stage_done(name)
            ctx.agree()  # recorded

        # 3-5. the attacks with per-coordinate terms, the geometry, the score-only attacks; a
        # precomputed geometry that applies costs nothing, so it lands first
        if precomputed is not None and not writer.stage_done("geometry"):
            reuse_geometry()
        for name in planned_stages(writer.data)[1:]:
            if writer.stage_done(name):
                continue
            if name == "geometry":
                geometry_stage()
            else:
                attack_stage(name)

        # 6. finish
        if ledger is not None and ctx.active:
            ranks = []
            for r in range(ctx.world_size):
                rec = RankLedger(writer.path, DistContext(rank=r, world_size=ctx.world_size), batch_size=plan.batch_size)
                ranks.append(rec.summary())
            writer.update(distributed={**writer.data.get("distributed", {}), "ranks": ranks})
        writer.remove("_work")
        add_time("total", time.perf_counter() - session_start)
        return writer.finish()
    finally:
        if writer is not None:
            writer.close()
