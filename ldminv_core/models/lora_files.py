"""LoRA adapter files: the :class:`LoraAdapter` spec, the command line's ``--lora`` /
``--lora-scale``, and the cheap checks of the files (safetensors only, never pickles) made before
a model is loaded. Reading the tensors against a model is :mod:`ldminv_core.models.lora_plan`;
applying them is :mod:`ldminv_core.models.lora_apply`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .._validation import check_real
from ..errors import LdminvError, ModelLoadError

__all__ = ["LoraAdapter", "check_lora", "parse_lora_args", "as_adapters", "resolve_file", "read_safetensors",
           "LORA_WEIGHT_NAME", "PEFT_REQUIREMENT"]

#: The file name ``save_lora_weights`` writes.
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
#: The peft version ldminv is tested with (see requirements.txt).
PEFT_REQUIREMENT = "peft==0.21.2"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class LoraAdapter:
    """One LoRA adapter to apply.

    Attributes:
        path: a folder holding ``pytorch_lora_weights.safetensors`` (as ``save_lora_weights``
            writes it; a folder with exactly one other ``.safetensors`` file also works), or the
            path of a ``.safetensors`` file.
        scale: the adapter's weight (diffusers' ``set_adapters`` weight / ``lora_scale``): the
            update added to each adapted weight is ``scale * (alpha / r) * B @ A``. Any finite
            number (0 disables the adapter, negative values subtract it).

    Raises:
        ModelLoadError: ``path`` is not a non-empty string / path, or ``scale`` is not a
            finite number.
    """

    path: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        path = self.path
        text = os.fspath(path) if isinstance(path, (str, os.PathLike)) and not isinstance(path, bool) else None
        if not isinstance(text, str) or not text.strip():
            raise ModelLoadError(
                f"lora path: expected a .safetensors file or a folder holding {LORA_WEIGHT_NAME} (a string), "
                f"got {path!r} ({type(path).__name__})"
            )
        scale = check_real(self.scale, f"lora scale of {text}", error=ModelLoadError)
        object.__setattr__(self, "path", text)
        object.__setattr__(self, "scale", scale)


def as_adapters(adapters: Any) -> list[LoraAdapter]:
    """``adapters`` (one adapter, a path, or a sequence of them) as a list of LoraAdapter."""
    if isinstance(adapters, (LoraAdapter, str, os.PathLike)):
        adapters = [adapters]
    if adapters is None or isinstance(adapters, (bytes, dict)) or not hasattr(adapters, "__iter__"):
        raise ModelLoadError(
            f"lora: expected a sequence of LoraAdapter(path, scale), got {adapters!r} ({type(adapters).__name__})"
        )
    out: list[LoraAdapter] = []
    for i, item in enumerate(adapters):
        if isinstance(item, LoraAdapter):
            out.append(item)
        elif isinstance(item, (str, os.PathLike)):
            out.append(LoraAdapter(item))
        else:
            raise ModelLoadError(
                f"lora[{i}]: expected a LoraAdapter(path, scale) or a path, got {item!r} ({type(item).__name__})"
            )
    return out


def parse_lora_args(paths: Sequence[str], scales: Sequence[float]) -> list[LoraAdapter]:
    """The adapters of the command line's repeatable ``--lora PATH`` and ``--lora-scale S``.

    No scale gives every adapter 1.0, one scale applies to every adapter, otherwise there must
    be one scale per path (paired in order). Nothing is read from disk here.

    Raises:
        LdminvError: a ``--lora-scale`` without any ``--lora``, or a number of scales that is
            neither 0, 1 nor the number of paths.
        ModelLoadError: a path that is not a non-empty string, a scale that is not a finite
            number (both :class:`LdminvError` subclasses).
    """
    paths = [] if paths is None else list(paths)
    scales = [] if scales is None else list(scales)
    if not paths:
        if scales:
            raise LdminvError(f"--lora-scale: given ({len(scales)} value(s)) without any --lora PATH")
        return []
    if not scales:
        scales = [1.0] * len(paths)
    elif len(scales) == 1:
        scales = scales * len(paths)
    elif len(scales) != len(paths):
        raise LdminvError(
            f"--lora-scale: expected no value, one value for all adapters or one per --lora ({len(paths)}), "
            f"got {len(scales)}"
        )
    return [LoraAdapter(p, s) for p, s in zip(paths, scales)]


def resolve_file(adapter: LoraAdapter, index: int) -> Path:
    """The safetensors weight file of ``adapter`` (absolute), or ModelLoadError."""
    given = Path(adapter.path).expanduser()
    what = f"lora[{index}] {given}"
    if not given.exists():
        raise ModelLoadError(
            f"{what}: does not exist (expected a .safetensors file or a folder holding {LORA_WEIGHT_NAME})"
        )
    given = given.resolve()
    what = f"lora[{index}] {given}"
    if given.is_dir():
        default = given / LORA_WEIGHT_NAME
        if default.is_file():
            return default
        try:
            names = sorted(p.name for p in given.iterdir() if p.is_file())
        except OSError as exc:
            raise ModelLoadError(f"{what}: cannot list the folder ({type(exc).__name__}: {exc})") from exc
        safes = [n for n in names if n.endswith(".safetensors")]
        if len(safes) == 1:
            return given / safes[0]
        if len(safes) > 1:
            raise ModelLoadError(
                f"{what}: the folder has no {LORA_WEIGHT_NAME} but several .safetensors files "
                f"({', '.join(safes[:4])}{' ...' if len(safes) > 4 else ''}); pass the weight file itself"
            )
        pickles = [n for n in names if n.lower().endswith(_PICKLE_SUFFIXES)]
        if pickles:
            raise ModelLoadError(
                f"{what}: the folder holds only pickled weights ({', '.join(pickles[:3])}); ldminv loads LoRA "
                f"weights from safetensors files only ({LORA_WEIGHT_NAME}), because a pickle can run code when "
                "loaded; convert it once in a trusted environment (safetensors.torch.save_file(torch.load(f), ...))"
            )
        raise ModelLoadError(
            f"{what}: the folder holds no LoRA weight file (expected {LORA_WEIGHT_NAME}, as "
            "StableDiffusionPipeline.save_lora_weights writes it)"
        )
    if not given.is_file():
        raise ModelLoadError(f"{what}: not a regular file or folder (expected a .safetensors file)")
    suffix = given.suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{what}: a pickled {suffix} file; ldminv loads LoRA weights from .safetensors files only, because a "
            "pickle can run code when loaded; convert it once in a trusted environment"
        )
    if suffix != ".safetensors":
        raise ModelLoadError(f"{what}: expected a .safetensors file, got a {suffix or 'suffix-less'} file")
    return given


def read_safetensors(file: Path, index: int) -> tuple[bytes, dict]:
    """(file bytes, header) after checking the bytes are a safetensors file."""
    what = f"lora[{index}] {file}"
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{what}: cannot read ({type(exc).__name__}: {exc.strerror or exc})") from exc
    if len(data) < 8:
        raise ModelLoadError(f"{what}: not a safetensors file ({len(data)} bytes, too short for the header)")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or n > _SAFETENSORS_MAX_HEADER or 8 + n > len(data):
        raise ModelLoadError(
            f"{what}: not a safetensors file (the header length {n} does not fit the file of {len(data)} bytes)"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{what}: not a safetensors file (the header is not JSON: {exc})") from exc
    if not isinstance(header, dict):
        raise ModelLoadError(f"{what}: not a safetensors file (the header is not a JSON object)")
    return data, header


def check_lora(adapters: Sequence[LoraAdapter] | LoraAdapter | str | os.PathLike) -> list[Path]:
    """Cheap checks of LoRA adapters before a model is loaded: each path exists and names
    (or is a folder holding) a safetensors file with at least one tensor. Returns the weight
    files (absolute), one per adapter.

    Raises:
        ModelLoadError: naming the adapter index, the path, what was expected and what was found.
    """
    files = []
    for i, adapter in enumerate(as_adapters(adapters)):
        file = resolve_file(adapter, i)
        _, header = read_safetensors(file, i)
        if not [k for k in header if k != "__metadata__"]:
            raise ModelLoadError(f"lora[{i}] {file}: the file holds no tensors")
        files.append(file)
    return files
