"""LoRA adapters: load diffusers / PEFT LoRA weights into a loaded latent diffusion model.

Most Stable Diffusion fine-tunes are LoRA adapters: a small ``pytorch_lora_weights.safetensors``
next to an unchanged base model, as ``StableDiffusionPipeline.save_lora_weights`` (and the
diffusers training scripts) write it. :func:`apply_lora` loads one or more such files into
``model.unet`` and, when the file has text-encoder tensors, ``model.text_encoder`` of a
:class:`ldminv_core.loading.LoadedModel`, with a scale per adapter, the way
``StableDiffusionPipeline.load_lora_weights`` + ``set_adapters`` + ``fuse_lora`` do:

- UNet2DConditionModel: diffusers' ``UNet2DConditionModel.load_lora_adapter``, ``set_adapters``,
  ``fuse_lora`` / ``unload_lora``;
- the CLIP text encoder: ``StableDiffusionLoraLoaderMixin.load_lora_into_text_encoder`` and
  diffusers' text-encoder helpers (``set_adapters_for_text_encoder``,
  ``fuse_text_encoder_lora``);
- UNet2DModel (unconditional; diffusers gives it no LoRA loader because it does not inherit
  ``PeftAdapterMixin``): the PEFT calls those loaders make, ``peft.inject_adapter_in_model`` +
  ``peft.set_peft_model_state_dict``, with the ``LoraConfig`` from diffusers' own helper
  (``_create_lora_config``: the file's adapter metadata, else ranks and alphas from the tensors).

The command line's repeatable ``--lora PATH`` / ``--lora-scale S`` map to adapters with
:func:`parse_lora_args`.

Every file format diffusers' ``lora_state_dict`` reads is accepted (PEFT ``lora_A``/``lora_B``
names, older diffusers ``lora.down``/``lora.up`` names, Kohya ``lora_unet_``/``lora_te_``
files), but only from safetensors files: pickled ``.bin``/``.pt``/``.ckpt`` files can run code
when loaded and are refused. Before the model is touched, every adapted module name and every
factor shape is checked against the UNet / text encoder, so a LoRA made for another model is
refused with the names at fault instead of being half-applied.

With ``fuse=True`` (the default) the adapters are merged into the weights,
``W <- W + scale * (alpha / r) * B @ A`` per adapted Linear / Conv layer, and the PEFT layers
are removed: the model is then indistinguishable from a checkpoint with merged weights. With
``fuse=False`` the PEFT layers stay (same outputs up to rounding, slower forwards).
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .errors import LdminvError, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from .loading import LoadedModel

__all__ = ["LoraAdapter", "apply_lora", "check_lora", "parse_lora_args", "LORA_WEIGHT_NAME", "PEFT_REQUIREMENT"]

#: The file name ``save_lora_weights`` writes.
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
#: The peft version ldminv is tested with (see requirements.txt).
PEFT_REQUIREMENT = "peft==0.21.2"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_PREFIXES = ("unet", "text_encoder")
_ADAPTER_PREFIX = "ldminv_lora_"
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024


# ----------------------------------------------------------------------------- adapter spec


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
        scale = self.scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(float(scale)):
            raise ModelLoadError(
                f"lora scale of {text}: expected a finite number, got {scale!r} ({type(scale).__name__})"
            )
        object.__setattr__(self, "path", text)
        object.__setattr__(self, "scale", float(scale))


def _as_adapters(adapters: Any) -> list[LoraAdapter]:
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


# ----------------------------------------------------------------------------- files


def _resolve_file(adapter: LoraAdapter, index: int) -> Path:
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


def _read_safetensors(file: Path, index: int) -> tuple[bytes, dict]:
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
    for i, adapter in enumerate(_as_adapters(adapters)):
        file = _resolve_file(adapter, i)
        _, header = _read_safetensors(file, i)
        if not [k for k in header if k != "__metadata__"]:
            raise ModelLoadError(f"lora[{i}] {file}: the file holds no tensors")
        files.append(file)
    return files


# ----------------------------------------------------------------------------- reading


@dataclass
class _Part:
    """The tensors of one adapter for one component (unet or text_encoder)."""

    prefix: str | None  # key prefix in the diffusers state dict ("unet", "text_encoder", None = bare keys)
    peft: dict[str, torch.Tensor]  # PEFT-format keys relative to the component
    metadata: dict | None  # diffusers' lora_adapter_metadata for the component (prefixed like the keys)


@dataclass
class _Plan:
    adapter: LoraAdapter
    index: int
    file: Path
    sha256: str
    n_tensors: int
    state_dict: dict[str, torch.Tensor]
    network_alphas: dict | None
    parts: dict[str, _Part] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return f"lora[{self.index}] {self.file}"


def _require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError(
            f"lora: LoRA adapters need the peft package, which is not installed (pip install {PEFT_REQUIREMENT})"
        ) from exc
    from diffusers.utils import USE_PEFT_BACKEND

    if not USE_PEFT_BACKEND:
        import peft

        raise ModelLoadError(
            f"lora: diffusers does not accept the installed peft {getattr(peft, '__version__', '?')} as its "
            f"LoRA backend (expected {PEFT_REQUIREMENT})"
        )


def _read_plan(adapter: LoraAdapter, index: int, model: Any) -> _Plan:
    """Read, hash and check one adapter file against the model (the model is not modified)."""
    import safetensors.torch
    from diffusers.loaders import StableDiffusionLoraLoaderMixin

    file = _resolve_file(adapter, index)
    what = f"lora[{index}] {file}"
    data, header = _read_safetensors(file, index)
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        tensors = safetensors.torch.load(data)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelLoadError(f"{what}: cannot read as safetensors ({type(exc).__name__}: {exc})") from exc
    del data
    if not tensors:
        raise ModelLoadError(f"{what}: the file holds no tensors")
    keys = list(tensors)
    if any("dora_scale" in k or "lora_magnitude_vector" in k for k in keys):
        raise ModelLoadError(f"{what}: a DoRA adapter (dora_scale / lora_magnitude_vector tensors); only LoRA is supported")
    if any(".lokr_" in k or ".hada_" in k or "lokr_w" in k or "hada_w" in k for k in keys):
        raise ModelLoadError(f"{what}: a LoKr / LoHa adapter; only LoRA (lora_A/lora_B or lora.down/lora.up) is supported")
    for k, v in tensors.items():
        if not v.dtype.is_floating_point:
            raise ModelLoadError(f"{what}: tensor {k!r} has dtype {v.dtype}; expected floating-point LoRA factors")
        if not bool(torch.isfinite(v).all()):
            raise ModelLoadError(f"{what}: tensor {k!r} holds NaN or infinite values")

    metadata = None
    raw_meta = (header.get("__metadata__") or {}).get("lora_adapter_metadata")
    if raw_meta:
        try:
            metadata = json.loads(raw_meta)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"{what}: the lora_adapter_metadata of the file is not JSON ({exc})") from exc
        if not isinstance(metadata, dict):
            raise ModelLoadError(f"{what}: the lora_adapter_metadata of the file is not a JSON object")

    try:
        state_dict, network_alphas = StableDiffusionLoraLoaderMixin.lora_state_dict(dict(tensors))
    except Exception as exc:  # noqa: BLE001 - conversion of unknown key layouts
        raise ModelLoadError(
            f"{what}: diffusers cannot read the tensor names as a Stable Diffusion LoRA "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        ) from exc
    not_lora = [k for k in state_dict if "lora" not in k]
    if not_lora:
        raise ModelLoadError(
            f"{what}: {len(not_lora)} tensor(s) are not LoRA factors (e.g. {not_lora[0]!r}); expected names "
            "with lora_A/lora_B (PEFT) or lora.down/lora.up, as save_lora_weights writes them"
        )
    plan = _Plan(adapter, index, file, sha256, len(tensors), state_dict, network_alphas or None)

    groups: dict[str | None, dict[str, torch.Tensor]] = {p: {} for p in _PREFIXES}
    other: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        head = k.split(".", 1)[0]
        (groups[head] if head in groups else other)[k] = v
    unet_children = {n for n, _ in model.unet.named_children()}
    if other and not any(groups.values()) and {k.split(".", 1)[0] for k in other} <= unet_children:
        groups = {None: other}  # bare UNet keys, as UNet2DConditionModel.save_lora_adapter writes them
    elif other:
        all_heads = {k.split(".", 1)[0] for k in other}
        heads = sorted(all_heads - unet_children) or sorted(all_heads)
        raise ModelLoadError(
            f"{what}: {len(other)} tensor(s) belong to neither the UNet nor the text encoder (names starting with "
            f"{', '.join(repr(h + '.') for h in heads[:4])}, e.g. {next(iter(other))!r}); expected 'unet.' and "
            "'text_encoder.' names: the LoRA was made for another pipeline (e.g. SDXL's text_encoder_2)"
        )

    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    for prefix, part in groups.items():
        if not part:
            continue
        component = "text_encoder" if prefix == "text_encoder" else "unet"
        module = getattr(model, component, None)
        if module is None:
            raise ModelLoadError(
                f"{what}: the file holds {len(part)} text-encoder tensor(s) but the model "
                f"({type(model.unet).__name__}) has no text encoder; the LoRA was made for another model"
            )
        sub = {k.removeprefix(f"{prefix}."): v for k, v in part.items()} if prefix else dict(part)
        meta = None
        if metadata:
            meta = {k: v for k, v in metadata.items() if k.startswith(f"{prefix}.")} if prefix else dict(metadata)
            meta = meta or None
        try:
            if component == "unet":
                peft_sd = sub if "lora_A" in next(iter(sub)) else convert_unet_state_dict_to_peft(sub)
            else:
                peft_sd = convert_state_dict_to_peft(convert_state_dict_to_diffusers(sub))
                if not hasattr(module, "text_model"):
                    peft_sd = {k.removeprefix("text_model."): v for k, v in peft_sd.items()}
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"{what}: cannot convert the {component} tensor names to PEFT names "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
            ) from exc
        _check_against(module, peft_sd, what, component)
        plan.parts[component] = _Part(prefix, peft_sd, meta)
    return plan


_LORA_A = (".lora_A.weight", ".lora_embedding_A")
_LORA_B = (".lora_B.weight", ".lora_embedding_B")


def _modules_of(peft_sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in peft_sd.items():
        name, sep, rest = k.partition(".lora_")
        out.setdefault(name if sep else k, {})["lora_" + rest if sep else k] = v
    return out


def _check_against(module: torch.nn.Module, peft_sd: dict[str, torch.Tensor], what: str, component: str) -> None:
    """ModelLoadError unless every adapted module exists in ``module`` and takes the factors' shapes."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    named = dict(module.named_modules())
    by_module = _modules_of(peft_sd)
    cls = type(module).__name__
    missing = [m for m in by_module if m not in named]
    if missing:
        examples = [n for n, m in named.items() if isinstance(m, torch.nn.Linear)][:2]
        raise ModelLoadError(
            f"{what}: {len(missing)} of the {len(by_module)} {component} module(s) the LoRA adapts do not exist in "
            f"this model's {component} ({cls}), e.g. {', '.join(repr(m) for m in missing[:3])}; the LoRA was made "
            f"for another model (this {component} has modules such as {', '.join(map(repr, examples))})"
        )
    for name, factors in by_module.items():
        layer = named[name]
        if isinstance(layer, BaseTunerLayer):
            layer = layer.get_base_layer()
        a = next((factors[k[1:]] for k in _LORA_A if k[1:] in factors), None)
        b = next((factors[k[1:]] for k in _LORA_B if k[1:] in factors), None)
        if a is None or b is None:
            raise ModelLoadError(
                f"{what}: {component} module {name!r} has {sorted(factors)} but needs both the lora_A and the "
                "lora_B factor"
            )
        ok = True
        if isinstance(layer, torch.nn.Linear):
            ok = a.ndim == 2 and b.ndim == 2 and a.shape[1] == layer.in_features and b.shape == (
                layer.out_features, a.shape[0])
        elif isinstance(layer, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            nd = layer.weight.ndim
            ok = (
                a.ndim == nd and b.ndim == nd and a.shape[1] in (layer.in_channels, layer.in_channels // layer.groups)
                and tuple(a.shape[2:]) == tuple(layer.kernel_size) and tuple(b.shape[:2]) == (layer.out_channels, a.shape[0])
            )
        elif isinstance(layer, torch.nn.Embedding):
            ok = a.ndim == 2 and b.ndim == 2 and a.shape[1] == layer.num_embeddings and b.shape == (
                layer.embedding_dim, a.shape[0])
        else:
            raise ModelLoadError(
                f"{what}: {component} module {name!r} is a {type(layer).__name__}, which LoRA cannot adapt (expected "
                "a Linear, Conv or Embedding layer); the LoRA was made for another model"
            )
        if not ok:
            raise ModelLoadError(
                f"{what}: {component} module {name!r} ({type(layer).__name__}, weight "
                f"{tuple(layer.weight.shape)}) does not fit the LoRA factors A {tuple(a.shape)}, B {tuple(b.shape)}; "
                "the LoRA was made for another model"
            )


# ----------------------------------------------------------------------------- applying


def _tuner_layers(module: torch.nn.Module | None) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if module is None:
        return []
    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def _load_generic(unet: torch.nn.Module, plan: _Plan, part: _Part, name: str) -> None:
    """PEFT injection for a UNet without diffusers' PeftAdapterMixin (UNet2DModel), deriving the
    LoraConfig as diffusers' load_lora_adapter does."""
    from diffusers.utils.peft_utils import _create_lora_config
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    sd = part.peft
    meta = part.metadata
    if meta and part.prefix:
        meta = {k.removeprefix(f"{part.prefix}."): v for k, v in meta.items()}
    alphas = None
    if not meta and plan.network_alphas and part.prefix:
        alphas = {
            k.removeprefix(f"{part.prefix}."): v
            for k, v in plan.network_alphas.items()
            if k.startswith(f"{part.prefix}.")
        } or None
    rank = {f"^{k}": v.shape[1] for k, v in sd.items() if "lora_B" in k and v.ndim > 1}
    config = _create_lora_config(
        sd, alphas, meta or None, rank, model_state_dict=unet.state_dict(), adapter_name=name
    )
    inject_adapter_in_model(config, unet, adapter_name=name, state_dict=sd)
    result = set_peft_model_state_dict(unet, sd, adapter_name=name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if ".lora_" in k]
    if unexpected:
        raise ModelLoadError(f"{plan.what}: {len(unexpected)} unet tensor(s) were not used, e.g. {unexpected[0]!r}")


def _load_plan(model: Any, plan: _Plan, name: str) -> None:
    from diffusers.loaders import PeftAdapterMixin, StableDiffusionLoraLoaderMixin

    unet_part = plan.parts.get("unet")
    if unet_part is not None:
        if isinstance(model.unet, PeftAdapterMixin):
            prefix = unet_part.prefix
            model.unet.load_lora_adapter(
                plan.state_dict if prefix else unet_part.peft,
                prefix=prefix,
                network_alphas=None if unet_part.metadata or not prefix else plan.network_alphas,
                adapter_name=name,
                metadata=unet_part.metadata,
            )
        else:
            _load_generic(model.unet, plan, unet_part, name)
    te_part = plan.parts.get("text_encoder")
    if te_part is not None:
        StableDiffusionLoraLoaderMixin.load_lora_into_text_encoder(
            plan.state_dict,
            network_alphas=None if te_part.metadata else plan.network_alphas,
            text_encoder=model.text_encoder,
            adapter_name=name,
            metadata=te_part.metadata,
        )
    # every module the file adapts must now carry the adapter
    for component, part in plan.parts.items():
        named = dict(getattr(model, component).named_modules())
        lost = [
            m for m in _modules_of(part.peft)
            if name not in getattr(named.get(m), "lora_A", {}) and name not in getattr(named.get(m), "lora_embedding_A", {})
        ]
        if lost:
            raise ModelLoadError(
                f"{plan.what}: {len(lost)} {component} module(s) did not take the adapter, e.g. {lost[0]!r}"
            )


def _set_scales(model: Any, names: list[str], scales: list[float], targets: list[list[str]]) -> None:
    from diffusers.loaders import PeftAdapterMixin
    from diffusers.loaders.lora_base import set_adapters_for_text_encoder
    from diffusers.utils import set_weights_and_activate_adapters

    for component in _PREFIXES:
        pairs = [(n, s) for n, s, t in zip(names, scales, targets) if component in t]
        if not pairs:
            continue
        ns, ws = [p[0] for p in pairs], [p[1] for p in pairs]
        module = getattr(model, component)
        if component == "text_encoder":
            set_adapters_for_text_encoder(ns, module, ws)
        elif isinstance(module, PeftAdapterMixin):
            module.set_adapters(ns, ws)
        else:
            set_weights_and_activate_adapters(module, ns, ws)


def _drop_peft_state(module: torch.nn.Module) -> None:
    if hasattr(module, "peft_config"):
        try:
            del module.peft_config
        except AttributeError:
            pass
    if getattr(module, "_hf_peft_config_loaded", None):
        module._hf_peft_config_loaded = False


def _fuse(model: Any, names: list[str]) -> None:
    from diffusers.loaders import PeftAdapterMixin
    from diffusers.loaders.lora_base import fuse_text_encoder_lora
    from diffusers.utils import recurse_remove_peft_layers

    unet = model.unet
    if _tuner_layers(unet):
        if isinstance(unet, PeftAdapterMixin):
            unet.fuse_lora(lora_scale=1.0, adapter_names=names)
            unet.unload_lora()
        else:
            for layer in _tuner_layers(unet):
                layer.merge(adapter_names=names)
            recurse_remove_peft_layers(unet)
            _drop_peft_state(unet)
    te = model.text_encoder
    if _tuner_layers(te):
        fuse_text_encoder_lora(te, lora_scale=1.0, adapter_names=names)
        recurse_remove_peft_layers(te)
        _drop_peft_state(te)


def _undo(model: Any) -> None:
    """Remove every PEFT layer (unmerging first), restoring the base weights after a failure."""
    from diffusers.utils import recurse_remove_peft_layers

    for module in (model.unet, model.text_encoder):
        layers = _tuner_layers(module)
        if not layers:
            continue
        for layer in layers:
            if getattr(layer, "merged", False):
                layer.unmerge()
        recurse_remove_peft_layers(module)
        _drop_peft_state(module)


def _finish(model: Any) -> None:
    for module in (model.unet, model.text_encoder):
        if module is None:
            continue
        params = list(module.parameters())
        if any(p.dtype != model.dtype for p in params):
            module.to(dtype=model.dtype)
        if any(p.device != torch.device(model.device) for p in params):
            module.to(device=model.device)
        module.eval()
        module.requires_grad_(False)
    predictor = getattr(model, "predictor", None)
    if predictor is not None and hasattr(predictor, "_empty_cond"):
        predictor._empty_cond = None  # cached empty-prompt embedding of the old text encoder


def apply_lora(model: "LoadedModel", adapters: Sequence[LoraAdapter], *, fuse: bool = True) -> list[dict]:
    """Load LoRA adapters into ``model.unet`` (and ``model.text_encoder``), in place.

    Each adapter's tensors are checked against the model first (every adapted module must
    exist and take the factors' shapes; nothing is modified when one adapter fails these
    checks), then loaded with diffusers' loaders (see the module docstring), weighted by its
    ``scale`` with ``set_adapters``, and with ``fuse`` merged into the weights. Adapters stack:
    the effective weight of an adapted layer is ``W + sum_i scale_i * (alpha_i / r_i) * B_i @ A_i``.
    The modules keep the model's device and dtype, stay in eval mode without parameter
    gradients, and ``model.lora`` gets the records appended.

    Args:
        model: a :class:`ldminv_core.loading.LoadedModel` (UNet2DModel or UNet2DConditionModel).
        adapters: the adapters, applied in order (a bare path means scale 1.0).
        fuse: merge the adapters into the weights and remove the PEFT layers (default); False
            keeps the PEFT layers active (same outputs up to float rounding).

    Returns:
        One record per adapter: ``{"path": absolute path given, "file": the weight file,
        "sha256": hex digest of the file's bytes, "scale": float, "adapter_name": str,
        "targets": ["unet"] / ["unet", "text_encoder"] / ["text_encoder"], "n_tensors": number
        of tensors in the file, "fused": bool}``.

    Raises:
        ModelLoadError: peft not installed; an adapter path missing, a folder without a
            safetensors weight file, a pickled or other non-safetensors file, a corrupt file;
            tensors that match no module of the UNet / text encoder or do not fit their shapes
            (a LoRA made for another model), text-encoder tensors for a model without one,
            DoRA / LoKr files; a scale that is not a finite number; the model already holding
            unfused adapters. Messages name the adapter index and file.
    """
    items = _as_adapters(adapters)
    if not isinstance(fuse, bool):
        raise ModelLoadError(f"fuse: expected True or False, got {fuse!r} ({type(fuse).__name__})")
    unet = getattr(model, "unet", None)
    from diffusers import UNet2DConditionModel, UNet2DModel

    if not isinstance(unet, (UNet2DModel, UNet2DConditionModel)):
        raise ModelLoadError(
            f"model: expected a LoadedModel with a diffusers UNet2DModel or UNet2DConditionModel, got "
            f"{type(model).__name__} with unet {type(unet).__name__}"
        )
    if not items:
        return []
    _require_peft()
    held = [c for c in _PREFIXES if _tuner_layers(getattr(model, c, None))]
    if held:
        raise ModelLoadError(
            f"lora: the model's {' and '.join(held)} already hold(s) unfused LoRA adapters (from "
            "apply_lora(..., fuse=False)); apply all adapters in one call, or fuse the earlier ones"
        )
    plans = [_read_plan(a, i, model) for i, a in enumerate(items)]

    used: set[str] = set()
    for r in getattr(model, "lora", ()) or ():
        used.add(str(r.get("adapter_name")))
    names: list[str] = []
    k = 0
    for _ in plans:
        while f"{_ADAPTER_PREFIX}{k}" in used:
            k += 1
        names.append(f"{_ADAPTER_PREFIX}{k}")
        used.add(names[-1])
    targets = [[c for c in _PREFIXES if c in p.parts] for p in plans]
    try:
        with warnings.catch_warnings():
            # PEFT warns whenever a second adapter joins a module that already holds one: the
            # multi-adapter case diffusers' own load_lora_weights + set_adapters goes through.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            for plan, name in zip(plans, names):
                _load_plan(model, plan, name)
        _set_scales(model, names, [p.adapter.scale for p in plans], targets)
        if fuse:
            _fuse(model, names)
    except ModelLoadError:
        _undo(model)
        raise
    except Exception as exc:  # noqa: BLE001 - diffusers / peft / torch errors, restored and named
        _undo(model)
        files = ", ".join(str(p.file) for p in plans)
        raise ModelLoadError(
            f"lora: loading {files} failed ({type(exc).__name__}: {' '.join(str(exc).split())[:400]}); "
            "the model was left without the adapters"
        ) from exc
    finally:
        _finish(model)

    records = [
        {
            "path": str(Path(p.adapter.path).expanduser().resolve()),
            "file": str(p.file),
            "sha256": p.sha256,
            "scale": p.adapter.scale,
            "adapter_name": name,
            "targets": t,
            "n_tensors": p.n_tensors,
            "fused": fuse,
        }
        for p, name, t in zip(plans, names, targets)
    ]
    if hasattr(model, "lora"):
        model.lora = tuple(getattr(model, "lora", ()) or ()) + tuple(records)
    return records
