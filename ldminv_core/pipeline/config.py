"""The settings of one analysis (:class:`AnalyzeConfig`, :func:`preset_config`) and the
normalisation of the options that take several spellings: image and model paths, attack names,
timesteps, probes and LoRA adapters. :mod:`.plan` turns a config into a checked plan."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._validation import describe
from ..choices import PRESETS, PROBES_AUTO
from ..errors import LdminvError, UnknownNameError
from ..timestep_spec import parse_timesteps
from ldminv_core.data.safe_files import display_name


def _attack_module():
    """``ldminv_core.attacks``, imported when an option is checked (it imports torch; building an
    AnalyzeConfig must not: the dashboard's server builds the first start's configs without it)."""
    from .. import attacks

    return attacks

__all__ = ["AnalyzeConfig", "preset_config"]


@dataclass
class AnalyzeConfig:
    """Settings of one analysis (mirrors ``python -m ldminv_core analyze``).

    Attributes:
        model: diffusers pipeline folder or hub id; with ``model_adapter``, the path handed to the
            adapter's ``build_adapter`` (e.g. a folder of checkpoints), or None.
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
            seeded per sample id: the paper's Stable Diffusion code); :mod:`ldminv_core.models.latents`.
        log_volume: "topk" (sum of the top-k log singular values) or "logdet" (0.5 * log det(J^T J),
            the whole spectrum: exact when the Jacobian is built anyway, else stochastic Lanczos
            quadrature, the paper's Stable Diffusion default).
        preset: the name of the preset the options came from (:data:`ldminv_core.choices.PRESETS`,
            applied by :func:`preset_config`); recorded in run.json, not compared on resume.
        lora: LoRA adapter paths (a folder with ``pytorch_lora_weights.safetensors`` or a
            ``.safetensors`` file), applied in order to the UNet (and the text encoder) of
            ``model`` as ``pipeline.load_lora_weights`` does (:mod:`ldminv_core.models.lora_apply`).
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
            baseline (:func:`ldminv_core.models.blind_encoder.load_image_encoder`); None: no such group.
            Compared on resume; run.json "blind" "encoder" records the model that made them.
        blind_stage: compute the blind baseline's features as the run's "blind" stage (the
            default). False leaves them to the first evaluation that asks for them
            (:func:`ldminv_core.data.blind_features.run_blind_features`, computed from the files and
            cached beside the run): the dashboard's quick demo preview, whose first number must not
            wait for them. Compared on resume.
        model_adapter: a Python file defining ``build_adapter(model_path, *, device, dtype)`` that
            builds a custom (non-diffusers) PyTorch model with the user's own code
            (:mod:`ldminv_core.models.custom_adapter`); ``model`` is then optional and passed to it.
            The settings hold its path and SHA-256 (a changed file is not resumed); run.json records
            family "custom" and "adapter".
        model_config: with ``model`` a single-file checkpoint (``.safetensors`` in the original
            layout), a diffusers pipeline folder of the same model whose configs convert it
            (:mod:`ldminv_core.models.single_file`; once, offline, cached); run.json records the
            file and its SHA-256 under "single_file". None otherwise.
        workers: how many batches of an attack stage are computed at once, each on its own thread
            (:mod:`ldminv_core.pipeline.workers`): "auto" (one per usable core, at most
            :data:`~ldminv_core.pipeline.workers.MAX_AUTO_WORKERS`, on a CPU; one on a GPU, under a
            launcher, or with a model adapter) or a number. The batches are the same whatever the
            number, and so are the results, bit for bit, at the same intra-op threads per worker (each
            worker gets the process' threads divided among the workers); run.json "sessions" records
            the choice. Not a compared setting: a run may be resumed with other workers.
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
    model_adapter: str | None = None
    model_config: str | None = None
    blind_stage: bool = True
    workers: int | str = "auto"


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




def _as_probes(value: Any) -> int | None:
    """None for "auto", else the probe count (an integer >= 1)."""
    if isinstance(value, str) and value.strip().lower() == PROBES_AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise LdminvError(f"probes: expected 'auto' or an integer >= 1 (Hutchinson probes per sample), got {describe(value)}")
    return int(value)


def _as_path_text(value: Any, name: str, *, hub: bool = False) -> str:
    what = "a folder path or hub id" if hub else "a folder path"
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise LdminvError(f"{name}: expected {what} (a string), got {describe(value)}")
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
            f"attacks: expected a comma string or a list of names from {_attack_module().ATTACKS}, got {describe(value)}"
        )
    out: list[str] = []
    for raw in names:
        if not isinstance(raw, str):
            raise UnknownNameError(f"attacks: expected attack names (strings), got {describe(raw)} in {value!r}")
        name = raw.strip().lower()
        if not name:
            continue
        if name not in _attack_module().ATTACKS:
            raise UnknownNameError(f"attacks: unknown attack {raw!r}; expected names from {_attack_module().ATTACKS}")
        if name not in out:
            out.append(name)
    if not out:
        raise UnknownNameError(f"attacks: expected at least one of {_attack_module().ATTACKS}, got {value!r}")
    return tuple(out)


def _normalize_timesteps(value: Any) -> list[int]:
    if isinstance(value, str):
        return parse_timesteps(value)
    expected = "a spec like '0:300:10' or a list of integers"
    if isinstance(value, (bytes, dict, set)) or not isinstance(value, (list, tuple, range, np.ndarray)):
        raise LdminvError(f"timesteps: expected {expected}, got {describe(value)}")
    ts: list[int] = []
    for t in list(value):
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, np.integer)):
            raise LdminvError(
                f"timesteps: expected integers (no fractions, no booleans), got {describe(t)} in {list(value)!r}"
            )
        ts.append(int(t))
    return parse_timesteps(",".join(map(str, ts))) if ts else parse_timesteps("")


def _model_ref(model: Any) -> str:
    path = Path(str(model)).expanduser()
    return str(path.resolve()) if path.exists() else str(model)



def _adapter_ref(value: Any) -> tuple[str, str]:
    """(absolute path, SHA-256) of ``AnalyzeConfig.model_adapter`` (AdapterError unless a readable .py file)."""
    from ldminv_core.models.custom_adapter import adapter_file_sha256, check_adapter_file

    path = check_adapter_file(_as_path_text(value, "model_adapter (--model-adapter)"))
    return str(path), adapter_file_sha256(path)


def _normalize_lora(paths: Any, scales: Any) -> tuple[tuple[str, float], ...]:
    """(absolute path, scale) per adapter, from ``AnalyzeConfig.lora`` / ``lora_scale``."""
    from ldminv_core.models.lora_files import parse_lora_args

    if isinstance(paths, (str, Path)):
        paths = [paths]
    if isinstance(scales, (int, float)) and not isinstance(scales, bool):
        scales = [scales]
    if not isinstance(paths, Sequence) or not all(isinstance(p, (str, Path)) and str(p) for p in paths):
        raise LdminvError(f"lora: expected a list of adapter paths, got {describe(paths)}")
    if not isinstance(scales, Sequence) or isinstance(scales, str):
        raise LdminvError(f"lora_scale: expected a number or a list of numbers, got {describe(scales)}")
    adapters = parse_lora_args([str(p) for p in paths], list(scales))
    return tuple((str(Path(a.path).expanduser().resolve()), float(a.scale)) for a in adapters)

