"""Single-file checkpoints: one ``.safetensors`` file in the original (Stability AI / Black Forest
Labs) key layout, as model hubs share them (``v1-5-pruned-emaonly.safetensors``,
``sd_xl_base_1.0.safetensors``, ``sd3_medium.safetensors``, ``flux1-dev.safetensors``).

Such a file is converted once, offline, by diffusers' own ``from_single_file`` on the family's
pipeline class with a local config folder of the same model (``--model-config DIR``: a diffusers
pipeline folder with ``model_index.json``, each component's config and the tokenizers; weights only
for the components the file does not hold, e.g. Flux's VAE and text encoders), saved as a diffusers
pipeline folder under ``$LDMINV_HOME/single-file/`` keyed by the file's SHA-256 and a fingerprint of
the config folder, and loaded from there by :func:`ldminv_core.models.loading.load_model` unchanged.
run.json records the original file and its SHA-256 (``"single_file"``).

Nothing is downloaded and nothing is unpickled: a ``.ckpt`` / ``.pt`` / ``.bin`` file is refused
(a pickle can run code when loaded), and so are a missing or mismatched config folder, each with
the one command that converts (:func:`convert_command`).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .build_lock import MODEL_BUILD_LOCK
from ..errors import ModelLoadError, RunError

__all__ = ["SingleFilePlan", "RECORD_FILE", "is_single_file", "convert_command", "single_file_cache_root",
           "check_single_file", "check_single_file_option", "resolve_single_file", "convert_single_file",
           "check_single_file_unchanged"]

SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
RECORD_FILE = "ldminv_single_file.json"
_CACHE_DIR = "single-file"
_HASHES_FILE = "sha256.json"
_WEIGHT_SUFFIXES = (SUFFIX, ".safetensors.index.json") + PICKLE_SUFFIXES + (".gguf", ".msgpack", ".h5", ".onnx")
_NOT_LOADED = ("safety_checker", "feature_extractor", "image_encoder")  # never part of an audited model


@dataclass(frozen=True)
class _Layout:
    """Where a family's components sit in its original single-file layout (key prefixes)."""

    label: str
    components: dict[str, tuple[str, ...]]
    example: str  # a hub repository whose diffusers folder is a fitting --model-config


_UNET = "model.diffusion_model."
_LAYOUTS: dict[str, _Layout] = {
    "sd": _Layout("Stable Diffusion 1.x / 2.x (LDM UNet, CLIP / OpenCLIP text encoder)",
                  {"unet": (_UNET,), "vae": ("first_stage_model.",), "text_encoder": ("cond_stage_model.",)},
                  "stable-diffusion-v1-5/stable-diffusion-v1-5 (SD 1.x) or stabilityai/stable-diffusion-2-1 (SD 2.x)"),
    "sdxl": _Layout("Stable Diffusion XL (LDM UNet with label_emb, two text encoders under conditioner.)",
                    {"unet": (_UNET,), "vae": ("first_stage_model.",),
                     "text_encoder": ("conditioner.embedders.0.transformer.",),
                     "text_encoder_2": ("conditioner.embedders.1.model.", "conditioner.embedders.0.model.")},
                    "stabilityai/stable-diffusion-xl-base-1.0"),
    "sd3": _Layout("Stable Diffusion 3 / 3.5 (MMDiT joint_blocks)",
                   {"transformer": (_UNET, "joint_blocks."), "vae": ("first_stage_model.",),
                    "text_encoder": ("text_encoders.clip_l.",), "text_encoder_2": ("text_encoders.clip_g.",),
                    "text_encoder_3": ("text_encoders.t5xxl.",)},
                   "stabilityai/stable-diffusion-3-medium-diffusers"),
    "flux": _Layout("Flux (double_blocks / single_blocks)",
                    {"transformer": (_UNET, "double_blocks."), "vae": ("vae.", "first_stage_model."),
                     "text_encoder": ("text_encoders.clip_l.",), "text_encoder_2": ("text_encoders.t5xxl.",)},
                    "black-forest-labs/FLUX.1-dev (or FLUX.1-schnell)"),
}


@dataclass(frozen=True)
class SingleFilePlan:
    """A checked single-file checkpoint and its config folder (nothing converted yet).

    Attributes:
        file: the checkpoint (absolute path).
        config: the config folder (absolute path).
        family: the ldminv family name both agree on (``"sd"``, ``"sdxl"``, ``"sd3"``, ``"flux"``).
        pipeline_class: the diffusers pipeline class whose ``from_single_file`` converts it.
        from_file: components whose weights the file holds.
        from_config: components whose weights come from the config folder's safetensors.
        left_out: components set to None (optional ones neither holds, e.g. SD3 without T5).
    """

    file: Path
    config: Path
    family: str
    pipeline_class: str
    from_file: tuple[str, ...] = ()
    from_config: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()
    components: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)


# ---------------------------------------------------------------------------- small helpers

def is_single_file(source: Any) -> bool:
    """True when ``source`` (a path text or PathLike) names an existing regular file."""
    if isinstance(source, bool) or not isinstance(source, (str, os.PathLike)) or not str(source).strip():
        return False
    return Path(os.fspath(source)).expanduser().is_file()


def convert_command(file: str | os.PathLike, *, model_config: str | os.PathLike | None = None,
                    out: str | os.PathLike | None = None) -> str:
    """The one command that converts ``file``: ``python -m ldminv_core convert FILE --model-config DIR
    --out OUT`` (placeholders where a path is not known)."""
    cfg = shlex.quote(str(Path(model_config).expanduser().resolve())) if model_config else "CONFIG_DIR"
    dest = shlex.quote(str(out)) if out else "OUT_DIR"
    src = shlex.quote(str(Path(file).expanduser().resolve()))
    return f"python -m ldminv_core convert {src} --model-config {cfg} --out {dest}"


def single_file_cache_root() -> Path:
    """``$LDMINV_HOME/single-file`` (default ``~/.cache/ldminv/single-file``): converted checkpoints."""
    from ..runs.catalog import default_runs_root

    return default_runs_root().parent / _CACHE_DIR


def _header_keys(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the safetensors header (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - any parse failure: not a safetensors file
        raise ModelLoadError(
            f"model: {file} is a file but not a readable safetensors file ({type(exc).__name__}: {exc}); expected a "
            "diffusers pipeline folder, a hub id, or a single-file checkpoint (.safetensors as shared on model hubs) "
            "with --model-config DIR"
        ) from exc


def _family_of_keys(keys: dict[str, tuple[int, ...]]) -> str | None:
    """The family whose original layout the file's keys follow, or None."""
    def has(fragment: str, *, bare: bool) -> bool:
        return any(k.startswith(_UNET + fragment) or (bare and k.startswith(fragment)) for k in keys)

    if has("joint_blocks.", bare=True):
        return "sd3"
    if has("double_blocks.", bare=True):
        return "flux"
    if has("input_blocks.", bare=False):
        sdxl = any(k.startswith(("conditioner.", _UNET + "label_emb.0.")) for k in keys)
        return "sdxl" if sdxl else "sd"
    return None


def _what_it_is(keys: dict[str, tuple[int, ...]]) -> str:
    shown = ", ".join(sorted(keys)[:3]) or "no tensors"
    if any("lora" in k.lower() for k in keys):
        return f"it looks like a LoRA adapter (keys such as {shown}): pass it with --lora on its base model"
    return f"its keys ({len(keys)} tensors, e.g. {shown}) follow none of them"


# ---------------------------------------------------------------------------- checks (no weights read)

def _check_file(file: Path) -> dict[str, tuple[int, ...]]:
    name = file.name.lower()
    if name.endswith(PICKLE_SUFFIXES):
        raise ModelLoadError(
            f"model: {file} is a pickled checkpoint ({file.suffix}); ldminv never unpickles weights (a pickle can "
            f"run code when loaded) and reads .safetensors only. Use the model's .safetensors release, or convert "
            "the file to safetensors once in a trusted, isolated environment; then convert that with: "
            + convert_command(file.with_suffix(SUFFIX))
        )
    if not name.endswith(SUFFIX):
        raise ModelLoadError(
            f"model: {file} is a file but not a .safetensors checkpoint; expected a diffusers pipeline folder, a hub "
            f"id, or a single-file checkpoint FILE{SUFFIX} with --model-config DIR"
        )
    return _header_keys(file)


def _check_config_folder(file: Path, model_config: Any, file_family: str) -> Path:
    layout = _LAYOUTS[file_family]
    fits = (f"a diffusers pipeline folder of the same model ({layout.label}; e.g. a local copy of {layout.example}"
            ": model_index.json, the components' config.json, scheduler/ and the tokenizers)")
    if model_config is None:
        raise ModelLoadError(
            f"model: {file} is a single-file checkpoint; --model-config DIR (AnalyzeConfig(model_config=...)) is "
            f"required: {fits}. Nothing is downloaded. Convert once with: {convert_command(file)}"
        )
    if isinstance(model_config, bool) or not isinstance(model_config, (str, os.PathLike)):
        raise ModelLoadError(f"model_config (--model-config): expected a folder path, got {model_config!r}")
    config = Path(os.fspath(model_config)).expanduser().resolve()
    if not config.is_dir():
        raise ModelLoadError(
            f"model_config (--model-config): {config} is not a folder; expected {fits}. "
            f"Convert with: {convert_command(file, model_config=config)}"
        )
    if not (config / "model_index.json").is_file():
        raise ModelLoadError(
            f"model_config (--model-config): {config} has no model_index.json; diffusers' from_single_file reads "
            f"the pipeline's components from it: expected {fits}"
        )
    return config


def _components(config: Path) -> dict[str, tuple[str, str]]:
    try:
        index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model_config (--model-config): {config}/model_index.json cannot be read: {exc}") from exc
    return {k: (v[0], v[1]) for k, v in index.items() if not k.startswith("_") and isinstance(v, list)
            and len(v) == 2 and all(isinstance(x, str) for x in v)}


def _is_module(library: str, class_name: str) -> bool:
    import importlib

    import torch

    try:
        cls = getattr(importlib.import_module(library), class_name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, torch.nn.Module)


def _has_safetensors(folder: Path) -> bool:
    return folder.is_dir() and any(p.name.endswith((SUFFIX, ".safetensors.index.json")) for p in folder.iterdir())


def _check_sizes(file: Path, config: Path, keys: dict[str, tuple[int, ...]], fam: Any) -> None:
    """For UNet families: the file's first convolution and cross-attention width against unet/config.json."""
    if fam.denoiser != "unet" or not (config / "unet" / "config.json").is_file():
        return
    cfg = json.loads((config / "unet" / "config.json").read_text(encoding="utf-8"))
    conv = keys.get(_UNET + "input_blocks.0.0.weight")
    want = (int(cfg.get("block_out_channels", [0])[0]), int(cfg.get("in_channels", 4)))
    problems = []
    if conv is not None and len(conv) == 4 and tuple(conv[:2]) != want:
        problems.append(f"its first UNet convolution maps {conv[1]} -> {conv[0]} channels, the config's "
                        f"{want[1]} -> {want[0]}")
    cross = next((s for k, s in sorted(keys.items()) if k.startswith(_UNET) and k.endswith("attn2.to_k.weight")), None)
    if cross is not None and cfg.get("cross_attention_dim") and cross[-1] != cfg["cross_attention_dim"]:
        problems.append(f"its text features are {cross[-1]} wide, the config's cross_attention_dim "
                        f"{cfg['cross_attention_dim']}")
    if problems:
        raise ModelLoadError(
            f"model_config (--model-config): {config} is not the config of {file.name}: {'; '.join(problems)}; pass "
            f"the config folder of the same model, then convert with: {convert_command(file, model_config=config)}"
        )


def check_single_file(file: str | os.PathLike, *, model_config: str | os.PathLike | None) -> SingleFilePlan:
    """Check a single-file checkpoint and its config folder before any weights are read.

    Reads the safetensors header (tensor names and shapes) and the config folder's JSON files;
    decides which components the file holds and which come from the config folder.

    Raises:
        ModelLoadError: a pickle (never unpickled), a file that is not safetensors, no or a bad
            ``model_config``, a config folder of another family or other sizes, a family that
            diffusers cannot convert, a component neither the file nor the config folder holds;
            each message names the file, the folder and the command that converts.
    """
    path = Path(os.fspath(file)).expanduser().resolve()
    keys = _check_file(path)
    file_family = _family_of_keys(keys)
    if file_family is None:
        known = ", ".join(f"{name} ({lay.label})" for name, lay in _LAYOUTS.items())
        raise ModelLoadError(f"model: {path} holds no denoiser in an original layout ldminv converts ({known}); "
                             f"{_what_it_is(keys)}")
    config = _check_config_folder(path, model_config, file_family)
    from .families import detect_family

    fam = detect_family(config)
    if fam.name != file_family:
        raise ModelLoadError(
            f"model_config (--model-config): {config} is a {fam.label} folder (family {fam.name!r}) but {path.name} "
            f"holds a {_LAYOUTS[file_family].label} checkpoint (family {file_family!r}); pass a config folder of the "
            f"same model (e.g. {_LAYOUTS[file_family].example}), then: {convert_command(path)}"
        )
    import diffusers

    pipeline_class = fam.pipeline_classes[0] if fam.pipeline_classes else None
    if pipeline_class is None or not hasattr(getattr(diffusers, pipeline_class, None), "from_single_file"):
        raise ModelLoadError(f"model: diffusers {diffusers.__version__} has no from_single_file converter for the "
                             f"{fam.label} family ({pipeline_class}); convert {path.name} into a diffusers folder by hand")
    _check_sizes(path, config, keys, fam)
    return _split_components(path, config, keys, fam, pipeline_class)


def _split_components(path: Path, config: Path, keys: dict, fam: Any, pipeline_class: str) -> SingleFilePlan:
    """Which modules come from the file, which from the config folder's safetensors, which are None."""
    layout, components = _LAYOUTS[fam.name], _components(config)
    optional = {p.encoder for p in fam.text if not p.required}
    from_file, from_config, left_out = [], [], []
    for name, (library, class_name) in sorted(components.items()):
        if name in _NOT_LOADED or not _is_module(library, class_name):
            continue
        if any(k.startswith(layout.components.get(name, ("\0",))) for k in keys):
            from_file.append(name)
        elif _has_safetensors(config / name):
            from_config.append(name)
        elif name in optional:
            left_out.append(name)
        else:
            prefixes = " or ".join(layout.components.get(name, ())) or "(none known)"
            raise ModelLoadError(
                f"model: {path.name} holds no {name} ({class_name}) weights (no keys starting {prefixes}) and "
                f"{config / name}/ has no .safetensors weights: put that component's safetensors weights in the "
                f"config folder (as its diffusers pipeline has them), then: {convert_command(path, model_config=config)}"
            )
    if not any(n in from_file for n in ("unet", "transformer")):
        raise ModelLoadError(f"model: {path.name} holds no denoiser weights for {pipeline_class}")
    return SingleFilePlan(path, config, fam.name, pipeline_class, tuple(from_file), tuple(from_config),
                          tuple(left_out), components)


def check_single_file_option(source: str | os.PathLike | None, *,
                             model_config: str | os.PathLike | None = None) -> SingleFilePlan | None:
    """The preflight check of ``--model`` / ``--model-config``: a single-file checkpoint with its
    config folder (:func:`check_single_file`); None when ``source`` is not a file (a pipeline
    folder or hub id, which the caller checks) and no ``model_config`` is given.

    Raises:
        ModelLoadError: as :func:`check_single_file`; ``model_config`` given for a model that is
            not a file.
    """
    if is_single_file(source):
        return check_single_file(source, model_config=model_config)
    _no_config_for_folder(source, model_config)
    return None


def _no_config_for_folder(source: Any, model_config: Any) -> None:
    if model_config is not None:
        raise ModelLoadError(
            f"model_config (--model-config): applies to a single-file checkpoint (--model FILE{SUFFIX}), but the "
            f"model {source} is not a file; leave --model-config out for a diffusers folder or hub id"
        )


# ---------------------------------------------------------------------------- hashing and the cache

def _sha256_of(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _file_sha256(path: Path, root: Path) -> str:
    """SHA-256 of ``path``, remembered in ``root/sha256.json`` by (size, mtime) so a multi-GB
    checkpoint is hashed once per change, not once per run."""
    stat = path.stat()
    memo_file = root / _HASHES_FILE
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
        memo = memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        memo = {}
    seen = memo.get(str(path))
    if isinstance(seen, list) and seen[:2] == [stat.st_size, stat.st_mtime_ns] and isinstance(seen[2], str):
        return seen[2]
    sha = _sha256_of(path)
    memo[str(path)] = [stat.st_size, stat.st_mtime_ns, sha]
    with contextlib.suppress(OSError):
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{_HASHES_FILE}.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(memo, indent=1), encoding="utf-8")
        os.replace(tmp, memo_file)
    return sha


def _config_fingerprint(plan: SingleFilePlan) -> str:
    """SHA-256 of what the conversion reads from the config folder: its path, the content of every
    config / tokenizer file, the size and mtime of the weights it takes, and diffusers' version."""
    import diffusers

    digest = hashlib.sha256(f"{diffusers.__version__}\n{plan.config}\n".encode())
    for p in sorted(plan.config.rglob("*")):
        rel = p.relative_to(plan.config)
        if not p.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if p.name.endswith(_WEIGHT_SUFFIXES):
            if rel.parts[0] in plan.from_config:
                stat = p.stat()
                digest.update(f"{rel.as_posix()} {stat.st_size} {stat.st_mtime_ns}\n".encode())
            continue
        digest.update(f"{rel.as_posix()} {_sha256_of(p)}\n".encode())
    return digest.hexdigest()


def _record(plan: SingleFilePlan, sha: str, folder: Path) -> dict:
    import diffusers

    return {
        "file": str(plan.file),
        "name": plan.file.name,
        "sha256": sha,
        "size": plan.file.stat().st_size,
        "model_config": str(plan.config),
        "family": plan.family,
        "pipeline_class": plan.pipeline_class,
        "from_file": list(plan.from_file),
        "from_config": list(plan.from_config),
        "left_out": list(plan.left_out),
        "converted": str(folder),
        "diffusers": diffusers.__version__,
    }


def resolve_single_file(source: Any, *,
                        model_config: str | os.PathLike | None = None) -> tuple[Any, dict | None]:
    """The folder to load for ``source``: a single-file checkpoint's converted diffusers folder
    (converted once, then reused from the cache), or ``source`` itself.

    Returns:
        (folder or ``source``, record) where record (None unless a single file) holds the file,
        its SHA-256, the config folder, the family, which components came from where, and the
        converted folder; run.json stores it as ``"single_file"``.

    Raises:
        ModelLoadError: see :func:`check_single_file` and :func:`convert_single_file`;
            ``model_config`` given for a model that is not a file.
    """
    if not is_single_file(source):
        from .sources import check_source_arg

        _no_config_for_folder(source, model_config)
        check_source_arg(source)
        return source, None  # a folder or hub id: load_model checks the rest
    plan = check_single_file(source, model_config=model_config)
    root = single_file_cache_root()
    sha = _file_sha256(plan.file, root)
    folder = root / f"{sha[:16]}-{_config_fingerprint(plan)[:12]}"
    if not (folder / RECORD_FILE).is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".converting-{folder.name}-{uuid.uuid4().hex[:8]}"
        try:
            _convert(plan, staging, sha)
            try:
                os.rename(staging, folder)
            except OSError:  # another process finished the same conversion first: use that one
                if not (folder / RECORD_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
    return str(folder), {**_record(plan, sha, folder), "converted_at": record.get("converted_at")}


def convert_single_file(file: str | os.PathLike, *, model_config: str | os.PathLike | None,
                        out: str | os.PathLike) -> dict:
    """Convert ``file`` into a diffusers pipeline folder ``out`` (new or empty), as ``ldminv convert``.

    Returns:
        the record written to ``out/ldminv_single_file.json`` (see :func:`resolve_single_file`).

    Raises:
        ModelLoadError: see :func:`check_single_file`; ``out`` exists and is not an empty folder;
            diffusers cannot convert the file with these configs.
    """
    plan = check_single_file(file, model_config=model_config)
    dest = Path(os.fspath(out)).expanduser().resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ModelLoadError(f"out: {dest} exists and is not an empty folder; choose a new folder")
    sha = _sha256_of(plan.file)
    _convert(plan, dest, sha)
    return json.loads((dest / RECORD_FILE).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- the conversion

@contextlib.contextmanager
def _unused_weights() -> Iterator[list[str]]:
    """Collect diffusers' "weights ... were not used" warnings while converting (tensors of the file
    that no module of the config took: the config is not the file's architecture)."""
    seen: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            if "were not used when initializing" in text:
                seen.append(" ".join(text.split())[:300])

    logger = logging.getLogger("diffusers.loaders.single_file_model")
    handler, level, propagate = _Catch(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _config_parts(plan: SingleFilePlan) -> dict[str, Any]:
    """The modules the file lacks, loaded from the config folder (safetensors only), and None for
    the parts an audit never loads or the family may lack."""
    import importlib

    parts: dict[str, Any] = {name: None for name in _NOT_LOADED if name in plan.components}
    for name in plan.left_out:
        parts[name] = None
        tokenizer = name.replace("text_encoder", "tokenizer")
        if tokenizer in plan.components:
            parts[tokenizer] = None
    for name in plan.from_config:
        library, class_name = plan.components[name]
        cls = getattr(importlib.import_module(library), class_name)
        try:
            with MODEL_BUILD_LOCK:
                parts[name] = cls.from_pretrained(str(plan.config), subfolder=name, use_safetensors=True,
                                                  local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - name the component
            raise ModelLoadError(f"model_config (--model-config): cannot load {name} ({class_name}) from "
                                 f"{plan.config / name}/ ({type(exc).__name__}: {exc})") from exc
    return parts


def _convert(plan: SingleFilePlan, out: Path, sha: str) -> None:
    """``from_single_file`` with the local configs (offline), checks, ``save_pretrained`` to ``out``."""
    import diffusers
    import torch

    pipeline_cls = getattr(diffusers, plan.pipeline_class)
    parts = _config_parts(plan)
    with _unused_weights() as unused:
        try:
            pipe = pipeline_cls.from_single_file(str(plan.file), config=str(plan.config), local_files_only=True,
                                                 **parts)
        except Exception as exc:  # noqa: BLE001 - wrap library errors with the file and the folder
            detail = " ".join(str(exc).split())[:500]
            raise ModelLoadError(
                f"model: diffusers' {plan.pipeline_class}.from_single_file could not convert {plan.file.name} with the "
                f"configs of {plan.config} ({type(exc).__name__}: {detail}); the config folder must be the same "
                f"model's. Command: {convert_command(plan.file, model_config=plan.config)}"
            ) from exc
    if unused:
        raise ModelLoadError(f"model_config (--model-config): {plan.config} does not fit {plan.file.name}: "
                             f"{unused[0]}; pass the config folder of the same model")
    for name in plan.from_file:
        module = getattr(pipe, name, None)
        if not isinstance(module, torch.nn.Module):
            continue
        empty = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if empty:
            raise ModelLoadError(
                f"model: {plan.file.name} lacks {len(empty)} tensor(s) of {name} that {plan.config} configures "
                f"(e.g. {', '.join(empty[:3])}); the config folder is not this checkpoint's model"
            )
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(str(out), safe_serialization=True)
    _keep_config_files(plan, out)
    record = {**_record(plan, sha, out), "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / RECORD_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")


def _keep_config_files(plan: SingleFilePlan, out: Path) -> None:
    """The config folder's own scheduler and tokenizer files, byte for byte, in place of the saved
    ones: a pipeline's constructor may rewrite a scheduler config (StableDiffusionPipeline sets
    steps_offset 1 and clip_sample False), and the audited model is the config folder's."""
    for name in plan.components:
        source = plan.config / name
        if name in _NOT_LOADED or name in (*plan.from_file, *plan.from_config) or not source.is_dir():
            continue
        if name in plan.left_out or not (out / name).is_dir():
            continue
        shutil.rmtree(out / name)
        shutil.copytree(source, out / name, ignore=lambda _, names: [
            n for n in names if n.startswith(".") or n.endswith(_WEIGHT_SUFFIXES)])


# ---------------------------------------------------------------------------- resuming a run

def check_single_file_unchanged(now: dict | None, recorded: dict | None) -> None:
    """RunError when a resumed run's single-file checkpoint changed since the run started (its
    SHA-256 differs from the one run.json recorded)."""
    if not recorded or not now or recorded.get("sha256") in (None, now.get("sha256")):
        return
    raise RunError(
        f"model: {now.get('file')} changed since this run started (SHA-256 {str(recorded.get('sha256'))[:12]}... "
        f"recorded, {str(now.get('sha256'))[:12]}... now); the stored terms belong to the old checkpoint: restore "
        "it or pass --force"
    )
