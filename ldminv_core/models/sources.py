"""Where a model comes from: a local diffusers pipeline folder or a Hugging Face hub id (the local
cache first; an offline machine fails at once with a clear message), the folder's layout and
its safetensors weights, and :func:`check_model`, the cheap check made before loading weights.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelLoadError
from .configs import read_checked_configs

__all__ = ["Source", "locate", "check_folder_layout", "check_source_arg", "check_model",
           "model_conditioning"]

_HUB_HOST = ("huggingface.co", 443)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


class Source:
    """Where the components come from: a local folder, or a hub repo (cached or online)."""

    def __init__(self, ref: str, *, hub: bool, local_only: bool) -> None:
        self.ref = ref
        self.hub = hub
        self.local_only = local_only

    def describe(self) -> str:
        return f"hub model {self.ref!r}" if self.hub else f"model folder {self.ref}"

    def has(self, subfolder: str, filename: str) -> bool:
        if not self.hub:
            return (Path(self.ref) / subfolder / filename).is_file()
        try:
            self._hub_file(subfolder, filename)
            return True
        except Exception:  # noqa: BLE001 - any miss means "not there"
            return False

    def _hub_file(self, subfolder: str, filename: str) -> str:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(self.ref, filename, subfolder=subfolder, local_files_only=self.local_only)

    def config(self, subfolder: str, filename: str) -> dict:
        if self.hub:
            try:
                path = Path(self._hub_file(subfolder, filename))
            except Exception as exc:  # noqa: BLE001
                raise ModelLoadError(
                    f"{self.describe()}: cannot fetch {subfolder}/{filename} ({type(exc).__name__}: {exc})"
                ) from exc
        else:
            path = Path(self.ref) / subfolder / filename
        try:
            with open(path, encoding="utf-8") as fh:
                cfg = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{self.describe()}: cannot read {subfolder}/{filename}: {exc}") from exc
        if not isinstance(cfg, dict):
            raise ModelLoadError(f"{self.describe()}: {subfolder}/{filename} is not a JSON object")
        return cfg

    def load(self, what: str, fn: Callable[..., Any], subfolder: str, **kwargs: Any) -> Any:
        try:
            return fn(self.ref, subfolder=subfolder, local_files_only=self.local_only, **kwargs)
        except Exception as exc:  # noqa: BLE001 - wrap library errors with the component name
            detail = " ".join(str(exc).split())
            if len(detail) > 400:
                detail = detail[:400] + " ..."
            raise ModelLoadError(
                f"{self.describe()}: cannot load {what} from {subfolder}/ ({type(exc).__name__}: {detail})"
            ) from exc


def _online(timeout: float = 2.0) -> bool:
    """Quick check that the hub is reachable (DNS + TCP within ``timeout`` seconds)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(_HUB_HOST, timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def locate(source: str | Path) -> Source:
    """Resolve ``source`` to a local folder or a hub repo, failing early with specifics."""
    if isinstance(source, Path) or os.path.exists(str(source)):
        root = Path(source).expanduser()
        if not root.exists():
            raise ModelLoadError(f"model: folder {root} does not exist")
        if not root.is_dir():
            raise ModelLoadError(
                f"model: {root} is a file; expected a diffusers pipeline folder with vae/, unet/ and "
                "scheduler/ (convert single-file checkpoints with diffusers' from_single_file + save_pretrained)"
            )
        return Source(str(root.resolve()), hub=False, local_only=True)
    text = str(source)
    looks_like_path = text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1
    if looks_like_path:
        raise ModelLoadError(f"model: folder {Path(text).expanduser()} does not exist")
    if not _HUB_ID.match(text):
        raise ModelLoadError(
            f"model: folder {Path(text).expanduser()} does not exist, and {text!r} is not a hub id (owner/name)"
        )
    cached = Source(text, hub=True, local_only=True)
    if cached.has("unet", "config.json"):
        return cached
    if not _online():
        raise ModelLoadError(
            f"model: hub id {text!r} is not in the local Hugging Face cache and huggingface.co cannot be "
            f"reached (offline), and no local folder {Path(text).resolve()} exists; pass a local diffusers "
            "pipeline folder instead (e.g. one written by StableDiffusionPipeline.save_pretrained)"
        )
    return Source(text, hub=True, local_only=False)


def check_folder_layout(src: Source) -> None:
    """Name the first missing sub-folder or file of a local pipeline folder."""
    root = Path(src.ref)
    if not (root / "vae").is_dir() and (root / "vqvae").is_dir():
        raise ModelLoadError(
            f"model folder {root}: has vqvae/ (a VQ autoencoder); only AutoencoderKL models in vae/ are supported"
        )
    required = [("vae", "config.json"), ("unet", "config.json"), ("scheduler", "scheduler_config.json")]
    for sub, name in required:
        if not (root / sub).is_dir():
            raise ModelLoadError(
                f"model folder {root} is not a diffusers latent diffusion model: sub-folder {sub}/ is missing "
                "(expected vae/, unet/, scheduler/ as written by save_pretrained)"
            )
        if not (root / sub / name).is_file():
            raise ModelLoadError(f"model folder {root}: {sub}/{name} is missing")
    for sub in ("vae", "unet"):
        _check_weights(root, sub, "diffusion_pytorch_model")
    if (root / "text_encoder").is_dir():
        _check_weights(root, "text_encoder", "model")


def _check_weights(root: Path, sub: str, stem: str) -> None:
    """``sub/`` must hold safetensors weights: pickled ``.bin``/``.pt``/``.ckpt`` files can run
    code when loaded, so a folder with only those is refused (convert it once with
    ``save_pretrained(..., safe_serialization=True)`` in a trusted environment)."""
    names = [p.name for p in (root / sub).iterdir()]
    if any(n.startswith(stem) and (n.endswith(".safetensors") or n.endswith(".safetensors.index.json"))
           for n in names):
        return
    pickles = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")))
    if pickles:
        raise ModelLoadError(
            f"model folder {root}: {sub}/ holds only pickled weights ({', '.join(pickles[:3])}); ldminv loads "
            f"safetensors only ({stem}.safetensors), because a pickle can run code when loaded; convert it in a "
            "trusted environment with from_pretrained(...) + save_pretrained(..., safe_serialization=True)"
        )
    raise ModelLoadError(f"model folder {root}: {sub}/ has no weights (expected {stem}.safetensors)")


def check_source_arg(source: Any) -> None:
    if isinstance(source, Path):
        return
    if not isinstance(source, str) or not source.strip():
        got = repr(source) if isinstance(source, str) else f"{source!r} ({type(source).__name__})"
        raise ModelLoadError(f"model: expected a diffusers pipeline folder or a hub id (a string), got {got}")


def model_conditioning(source: str | Path) -> tuple[str, str]:
    """What the model's UNet is conditioned on, read from ``unet/config.json`` (no weights):
    ("text-conditioned" (UNet2DConditionModel) | "class-conditional" (class embeddings) |
    "unconditional", where that was read: the config's class name and file)."""
    src = locate(source)
    cfg = src.config("unet", "config.json")
    cls = cfg.get("_class_name")
    if cls == "UNet2DConditionModel":
        kind = "text-conditioned"
    elif cfg.get("num_class_embeds") is not None or cfg.get("class_embed_type") is not None:
        kind = "class-conditional"
    else:
        kind = "unconditional"
    return kind, f"_class_name {cls!r} in {src.describe()}/unet/config.json"


def check_model(source: str | Path) -> str:
    """Cheap checks of a model before loading its weights: the folder (or cached hub id)
    exists, has the diffusers layout with safetensors weights, and its vae/unet/scheduler
    configs are JSON objects whose values have the types the loader needs. Returns the
    resolved reference (absolute folder or hub id).

    Raises:
        ModelLoadError: naming the folder, the config file and the key at fault.
    """
    check_source_arg(source)
    src = locate(source)
    if not src.hub:
        check_folder_layout(src)
    read_checked_configs(src)
    return src.ref
