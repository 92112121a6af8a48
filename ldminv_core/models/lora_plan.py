"""Reading one LoRA adapter file against a model, without modifying it: its tensors (hashed,
checked for DoRA / LoKr / non-finite values), the key mapping of the family's diffusers pipeline
LoRA mixin (:data:`LORA_LOADERS`: its ``lora_state_dict`` converts Kohya / A1111, older diffusers,
XLabs and BFL names), and the check that every adapted module exists in the denoiser / text
encoder and takes the factors' shapes, so a LoRA made for another model is refused with the names
at fault instead of being half-applied.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from .lora_files import PEFT_REQUIREMENT, LoraAdapter, read_safetensors, resolve_file

__all__ = ["LoraLoader", "LoraPart", "LoraPlan", "LORA_LOADERS", "NO_LORA_LOADER", "lora_loader", "require_peft",
           "read_plan", "modules_of", "component_module"]

#: family name (``Family.name``) -> (diffusers pipeline LoRA mixin whose ``lora_state_dict`` maps the
#: key formats, the denoiser's key prefix, the text encoders the mixin adapts). The denoiser is
#: ``LoadedModel.unet`` whatever its class; the text encoders are the LoadedModel attributes of the
#: same names. UNet2DModel families have no pipeline mixin of their own: the SD mixin maps the keys.
LORA_LOADERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sd": ("StableDiffusionLoraLoaderMixin", "unet", ("text_encoder",)),
    "sdxl": ("StableDiffusionXLLoraLoaderMixin", "unet", ("text_encoder", "text_encoder_2")),
    "sd3": ("SD3LoraLoaderMixin", "transformer", ("text_encoder", "text_encoder_2")),
    "flux": ("FluxLoraLoaderMixin", "transformer", ("text_encoder",)),
    "class_unet": ("StableDiffusionLoraLoaderMixin", "unet", ()),
    "unconditional": ("StableDiffusionLoraLoaderMixin", "unet", ()),
}
#: families diffusers gives no LoRA loader, and why.
NO_LORA_LOADER: dict[str, str] = {
    "dit": "diffusers has no LoRA loader for DiT: DiTPipeline has no LoRA loader mixin and its "
           "DiTTransformer2DModel / Transformer2DModel do not inherit PeftAdapterMixin (no load_lora_adapter), "
           "and no trainer writes a LoRA file format for it",
}
_COMPONENT_PREFIXES = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "prior")


@dataclass(frozen=True)
class LoraLoader:
    """How diffusers loads one family's LoRA files (a row of :data:`LORA_LOADERS`)."""

    family: str
    mixin: str
    denoiser: str
    text_encoders: tuple[str, ...]

    @property
    def components(self) -> tuple[str, ...]:
        return (self.denoiser, *self.text_encoders)


def lora_loader(model: Any) -> LoraLoader:
    """The :class:`LoraLoader` of ``model.family`` (ModelLoadError for a family without one)."""
    family = getattr(getattr(model, "family", None), "name", None)
    if family in LORA_LOADERS:
        return LoraLoader(family, *LORA_LOADERS[family])
    if family in NO_LORA_LOADER:
        raise ModelLoadError(f"lora: the model is of the {family} family, which takes no LoRA: {NO_LORA_LOADER[family]}")
    raise ModelLoadError(
        f"lora: expected a LoadedModel of a family with a LoRA loader ({', '.join(LORA_LOADERS)}), got "
        f"{type(model).__name__} of family {family!r} with denoiser {type(getattr(model, 'unet', None)).__name__}"
    )


def component_module(model: Any, loader: LoraLoader, component: str) -> torch.nn.Module | None:
    """The module of ``model`` a LoRA component adapts (the denoiser is ``model.unet``)."""
    return model.unet if component == loader.denoiser else getattr(model, component, None)


@dataclass
class LoraPart:
    """The tensors of one adapter for one component (the denoiser or a text encoder)."""

    prefix: str | None  # key prefix in the diffusers state dict ("unet", "transformer", "text_encoder", None = bare)
    peft: dict[str, torch.Tensor]  # PEFT-format keys relative to the component
    metadata: dict | None  # diffusers' lora_adapter_metadata for the component (prefixed like the keys)


@dataclass
class LoraPlan:
    """One adapter read against a model: its file, hash, diffusers state dict and per-component parts."""

    adapter: LoraAdapter
    index: int
    file: Path
    sha256: str
    n_tensors: int
    state_dict: dict[str, torch.Tensor]
    network_alphas: dict | None
    loader: LoraLoader
    parts: dict[str, LoraPart] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return f"lora[{self.index}] {self.file}"


def require_peft() -> None:
    """ModelLoadError unless peft is installed and diffusers accepts it as its LoRA backend."""
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


def _load_tensors(file: Path, index: int) -> tuple[str, dict[str, torch.Tensor], dict]:
    """(sha256 of the file's bytes, its tensors, its header), refusing DoRA / LoKr / LoHa files and
    non-floating or non-finite tensors."""
    import safetensors.torch

    what = f"lora[{index}] {file}"
    data, header = read_safetensors(file, index)
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
    return sha256, tensors, header


def _adapter_metadata(header: dict, what: str) -> dict | None:
    """diffusers' ``lora_adapter_metadata`` of the file's header (the bytes hashed), or None."""
    raw_meta = (header.get("__metadata__") or {}).get("lora_adapter_metadata")
    if not raw_meta:
        return None
    try:
        metadata = json.loads(raw_meta)
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{what}: the lora_adapter_metadata of the file is not JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ModelLoadError(f"{what}: the lora_adapter_metadata of the file is not a JSON object")
    return metadata


def _diffusers_state_dict(tensors: dict[str, torch.Tensor], loader: LoraLoader, model: Any,
                          what: str) -> tuple[dict, dict | None]:
    """(state dict, network alphas) in diffusers' names, as the family's pipeline LoRA mixin's
    ``lora_state_dict`` converts them (its ``load_lora_weights`` arguments); every tensor a LoRA factor."""
    import diffusers.loaders

    mixin = getattr(diffusers.loaders, loader.mixin)
    kwargs: dict[str, Any] = {}
    if loader.family == "sdxl":  # StableDiffusionXLLoraLoaderMixin.load_lora_weights maps SGM blocks by it
        kwargs["unet_config"] = model.unet.config
    if loader.mixin == "FluxLoraLoaderMixin":
        kwargs["return_alphas"] = True
    try:
        out = mixin.lora_state_dict(dict(tensors), **kwargs)
    except Exception as exc:  # noqa: BLE001 - conversion of unknown key layouts
        raise ModelLoadError(
            f"{what}: diffusers' {loader.mixin}.lora_state_dict cannot read the tensor names as a LoRA of the "
            f"{loader.family} family ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        ) from exc
    state_dict, network_alphas = out if isinstance(out, tuple) else (out, None)
    not_lora = [k for k in state_dict if "lora" not in k]
    if not_lora:
        raise ModelLoadError(
            f"{what}: {len(not_lora)} tensor(s) are not LoRA factors (e.g. {not_lora[0]!r}); expected names "
            "with lora_A/lora_B (PEFT) or lora.down/lora.up, as save_lora_weights writes them (Flux Control "
            "LoRAs, which also replace norm layers and widen the input, are not supported)"
        )
    return state_dict, network_alphas or None


def _layers(keys: Any, prefix: str | None) -> str:
    names = sorted({k.removeprefix(f"{prefix}.").split(".lora")[0] for k in keys})
    return ", ".join(map(repr, names[:3])) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _group(state_dict: dict[str, torch.Tensor], model: Any, loader: LoraLoader,
           what: str) -> dict[str | None, dict[str, torch.Tensor]]:
    """The tensors by key prefix (the loader's components the model has, or None for bare
    denoiser keys); tensors of any other component are refused naming their layers."""
    present = [c for c in loader.components if component_module(model, loader, c) is not None]
    groups: dict[str | None, dict[str, torch.Tensor]] = {p: {} for p in present}
    other: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in state_dict.items():
        head = k.split(".", 1)[0]
        (groups[head] if head in groups else other.setdefault(head, {}))[k] = v
    children = {n for n, _ in model.unet.named_children()}
    if not other:
        return groups
    if not any(groups.values()) and set(other) <= children:
        return {None: {k: v for part in other.values() for k, v in part.items()}}  # bare keys (save_lora_adapter)
    known = [c for c in _COMPONENT_PREFIXES if c in other]
    if known:
        comp, also = known[0], ", ".join(f"{len(other[c])} {c}" for c in known[1:])
        label, noun = ("text-encoder", "text encoder") if comp == "text_encoder" else (comp, comp)
        raise ModelLoadError(
            f"{what}: the file holds {len(other[comp])} {label} tensor(s) but the model ({type(model.unet).__name__}) "
            f"has no {noun} that diffusers' {loader.mixin} adapts in the {loader.family} family (it adapts "
            f"{', '.join(present)}); the LoRA was made for another model (its {comp} layers: "
            f"{_layers(other[comp], comp)}{f'; it also holds {also} tensor(s)' if also else ''})"
        )
    heads = sorted(set(other) - children) or sorted(other)
    raise ModelLoadError(
        f"{what}: {sum(map(len, other.values()))} tensor(s) belong to none of the {loader.family} family's LoRA "
        f"components ({', '.join(present)}): names starting with {', '.join(repr(h + '.') for h in heads[:4])}, "
        f"e.g. {next(iter(other[heads[0]]))!r}; the LoRA was made for another pipeline"
    )


def _part(prefix: str | None, part: dict[str, torch.Tensor], metadata: dict | None, model: Any,
          loader: LoraLoader, what: str) -> tuple[str, LoraPart]:
    """(component, its part in PEFT names as diffusers' loaders convert them), checked against the
    model's component."""
    from diffusers.utils import (
        convert_state_dict_to_diffusers,
        convert_state_dict_to_peft,
        convert_unet_state_dict_to_peft,
    )

    component = prefix or loader.denoiser
    module = component_module(model, loader, component)
    sub = {k.removeprefix(f"{prefix}."): v for k, v in part.items()} if prefix else dict(part)
    meta = None
    if metadata:
        meta = {k: v for k, v in metadata.items() if k.startswith(f"{prefix}.")} if prefix else dict(metadata)
        meta = meta or None
    try:
        if component == loader.denoiser:  # as PeftAdapterMixin.load_lora_adapter converts
            peft_sd = sub if "lora_A" in next(iter(sub)) else convert_unet_state_dict_to_peft(sub)
        else:  # as diffusers' load_lora_into_text_encoder converts
            peft_sd = convert_state_dict_to_peft(convert_state_dict_to_diffusers(sub))
            if not hasattr(module, "text_model"):
                peft_sd = {k.removeprefix("text_model."): v for k, v in peft_sd.items()}
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"{what}: cannot convert the {component} tensor names to PEFT names "
            f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        ) from exc
    _check_against(module, peft_sd, what, component)
    return component, LoraPart(prefix, peft_sd, meta)


def read_plan(adapter: LoraAdapter, index: int, model: Any) -> LoraPlan:
    """Read, hash and check one adapter file against the model (the model is not modified).

    Raises:
        ModelLoadError: naming ``lora[index]``, the file and the tensors or modules at fault; a
            model whose family takes no LoRA (see :func:`lora_loader`).
    """
    loader = lora_loader(model)
    # 1. the file's tensors and metadata
    file = resolve_file(adapter, index)
    what = f"lora[{index}] {file}"
    sha256, tensors, header = _load_tensors(file, index)
    metadata = _adapter_metadata(header, what)
    # 2. diffusers' names (the family's mixin), grouped by component
    state_dict, network_alphas = _diffusers_state_dict(tensors, loader, model, what)
    plan = LoraPlan(adapter, index, file, sha256, len(tensors), state_dict, network_alphas, loader)
    groups = _group(state_dict, model, loader, what)
    # 3. each component's part in PEFT names, checked against the model
    for prefix, part in groups.items():
        if part:
            component, lora_part = _part(prefix, part, metadata, model, loader, what)
            plan.parts[component] = lora_part
    return plan


_LORA_A = (".lora_A.weight", ".lora_embedding_A")
_LORA_B = (".lora_B.weight", ".lora_embedding_B")


def modules_of(peft_sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """PEFT keys grouped by adapted module name: {module: {"lora_A.weight": tensor, ...}}."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in peft_sd.items():
        name, sep, rest = k.partition(".lora_")
        out.setdefault(name if sep else k, {})["lora_" + rest if sep else k] = v
    return out


def _check_against(module: torch.nn.Module, peft_sd: dict[str, torch.Tensor], what: str, component: str) -> None:
    """ModelLoadError unless every adapted module exists in ``module`` and takes the factors' shapes."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    named = dict(module.named_modules())
    by_module = modules_of(peft_sd)
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
