"""Applying LoRA adapters to a loaded model, the way the family's pipeline ``load_lora_weights`` +
``set_adapters`` + ``fuse_lora`` do (the family's loader: :data:`~.lora_plan.LORA_LOADERS`):

- a denoiser with diffusers' ``PeftAdapterMixin`` (UNet2DConditionModel of SD 1.x/2.x and SDXL,
  SD3Transformer2DModel, FluxTransformer2DModel): its ``load_lora_adapter`` (what the mixins'
  ``load_lora_into_unet`` / ``load_lora_into_transformer`` call), ``set_adapters``,
  ``fuse_lora`` / ``unload_lora``;
- the CLIP text encoders the family's mixin adapts: its ``load_lora_into_text_encoder`` and
  diffusers' text-encoder helpers (``set_adapters_for_text_encoder``, ``fuse_text_encoder_lora``);
- UNet2DModel (unconditional and class-conditional; diffusers gives it no LoRA loader because it
  does not inherit ``PeftAdapterMixin``): the PEFT calls those loaders make,
  ``peft.inject_adapter_in_model`` + ``peft.set_peft_model_state_dict``, with the ``LoraConfig``
  from diffusers' own helper (``_create_lora_config``: the file's adapter metadata, else ranks
  and alphas from the tensors).

DiT takes no LoRA (diffusers has no loader for it; :data:`~.lora_plan.NO_LORA_LOADER` says why).
With ``fuse=True`` (the default) the adapters are merged into the weights,
``W <- W + scale * (alpha / r) * B @ A`` per adapted Linear / Conv layer, and the PEFT layers
are removed: the model is then indistinguishable from a checkpoint with merged weights. With
``fuse=False`` the PEFT layers stay (same outputs up to rounding, slower forwards). A failure
leaves the model without any of the adapters.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .._validation import check_bool
from ..errors import ModelLoadError
from .lora_files import LoraAdapter, as_adapters
from .lora_plan import LoraLoader, LoraPart, LoraPlan, component_module, lora_loader, modules_of, read_plan, require_peft

if TYPE_CHECKING:  # pragma: no cover
    from .loading import LoadedModel

__all__ = ["apply_lora"]

_ADAPTER_PREFIX = "ldminv_lora_"


def _tuner_layers(module: torch.nn.Module | None) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    if module is None:
        return []
    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def _load_generic(unet: torch.nn.Module, plan: LoraPlan, part: LoraPart, name: str) -> None:
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


def _load_plan(model: Any, plan: LoraPlan, name: str) -> None:
    from diffusers.loaders import PeftAdapterMixin
    import diffusers.loaders

    loader = plan.loader
    part = plan.parts.get(loader.denoiser)
    if part is not None:
        if isinstance(model.unet, PeftAdapterMixin):
            model.unet.load_lora_adapter(
                plan.state_dict if part.prefix else part.peft,
                prefix=part.prefix,
                network_alphas=None if part.metadata or not part.prefix else plan.network_alphas,
                adapter_name=name,
                metadata=part.metadata,
            )
        else:
            _load_generic(model.unet, plan, part, name)
    mixin = getattr(diffusers.loaders, loader.mixin)
    for component in loader.text_encoders:
        te_part = plan.parts.get(component)
        if te_part is not None:
            mixin.load_lora_into_text_encoder(
                plan.state_dict,
                network_alphas=None if te_part.metadata else plan.network_alphas,
                text_encoder=getattr(model, component),
                prefix=component,
                adapter_name=name,
                metadata=te_part.metadata,
            )
    # every module the file adapts must now carry the adapter
    for component, part in plan.parts.items():
        named = dict(component_module(model, loader, component).named_modules())
        lost = [
            m for m in modules_of(part.peft)
            if name not in getattr(named.get(m), "lora_A", {}) and name not in getattr(named.get(m), "lora_embedding_A", {})
        ]
        if lost:
            raise ModelLoadError(
                f"{plan.what}: {len(lost)} {component} module(s) did not take the adapter, e.g. {lost[0]!r}"
            )


def _set_scales(model: Any, loader: LoraLoader, names: list[str], scales: list[float],
                targets: list[list[str]]) -> None:
    from diffusers.loaders import PeftAdapterMixin
    from diffusers.loaders.lora_base import set_adapters_for_text_encoder
    from diffusers.utils import set_weights_and_activate_adapters

    for component in loader.components:
        pairs = [(n, s) for n, s, t in zip(names, scales, targets) if component in t]
        if not pairs:
            continue
        ns, ws = [p[0] for p in pairs], [p[1] for p in pairs]
        module = component_module(model, loader, component)
        if component != loader.denoiser:
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


def _modules(model: Any) -> list[torch.nn.Module]:
    """The denoiser and every text encoder of ``model`` (a LoRA may only touch these)."""
    names = ("unet", "text_encoder", "text_encoder_2", "text_encoder_3")
    return [m for m in (getattr(model, n, None) for n in names) if isinstance(m, torch.nn.Module)]


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
    for te in _modules(model)[1:]:
        if _tuner_layers(te):
            fuse_text_encoder_lora(te, lora_scale=1.0, adapter_names=names)
            recurse_remove_peft_layers(te)
            _drop_peft_state(te)


def _undo(model: Any) -> None:
    """Remove every PEFT layer (unmerging first), restoring the base weights after a failure."""
    from diffusers.utils import recurse_remove_peft_layers

    for module in _modules(model):
        layers = _tuner_layers(module)
        if not layers:
            continue
        for layer in layers:
            if getattr(layer, "merged", False):
                layer.unmerge()
        recurse_remove_peft_layers(module)
        _drop_peft_state(module)


def _finish(model: Any) -> None:
    for module in _modules(model):
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


def _check_model(model: Any) -> LoraLoader:
    """The family's LoRA loader, after checking the denoiser takes diffusers' or PEFT's loading."""
    from diffusers import UNet2DModel
    from diffusers.loaders import PeftAdapterMixin

    loader = lora_loader(model)
    if not isinstance(model.unet, (PeftAdapterMixin, UNet2DModel)):
        raise ModelLoadError(
            f"model: expected a {loader.family} denoiser with diffusers' PeftAdapterMixin (load_lora_adapter) or a "
            f"UNet2DModel, got {type(model.unet).__name__}"
        )
    return loader


def _adapter_names(model: Any, count: int) -> list[str]:
    """``count`` new adapter names, skipping those the model's records already use."""
    used: set[str] = set()
    for r in getattr(model, "lora", ()) or ():
        used.add(str(r.get("adapter_name")))
    names: list[str] = []
    k = 0
    for _ in range(count):
        while f"{_ADAPTER_PREFIX}{k}" in used:
            k += 1
        names.append(f"{_ADAPTER_PREFIX}{k}")
        used.add(names[-1])
    return names


def _load_all(model: Any, plans: list[LoraPlan], names: list[str], targets: list[list[str]], fuse: bool) -> None:
    """Load, weight and (with ``fuse``) merge every adapter; on any failure remove them all."""
    try:
        with warnings.catch_warnings():
            # PEFT warns whenever a second adapter joins a module that already holds one: the
            # multi-adapter case diffusers' own load_lora_weights + set_adapters goes through.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            for plan, name in zip(plans, names):
                _load_plan(model, plan, name)
        _set_scales(model, plans[0].loader, names, [p.adapter.scale for p in plans], targets)
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


def apply_lora(model: "LoadedModel", adapters: Sequence[LoraAdapter], *, fuse: bool = True) -> list[dict]:
    """Load LoRA adapters into the denoiser ``model.unet`` (and the text encoders its family's
    diffusers LoRA mixin adapts), in place.

    Each adapter's tensors are checked against the model first (every adapted module must
    exist and take the factors' shapes; nothing is modified when one adapter fails these
    checks), then loaded with diffusers' loaders (see the module docstring), weighted by its
    ``scale`` with ``set_adapters``, and with ``fuse`` merged into the weights. Adapters stack:
    the effective weight of an adapted layer is ``W + sum_i scale_i * (alpha_i / r_i) * B_i @ A_i``.
    The modules keep the model's device and dtype, stay in eval mode without parameter
    gradients, and ``model.lora`` gets the records appended.

    Args:
        model: a :class:`ldminv_core.models.loading.LoadedModel` of a family in
            :data:`~.lora_plan.LORA_LOADERS` (sd, sdxl, sd3, flux, class_unet, unconditional).
        adapters: the adapters, applied in order (a bare path means scale 1.0).
        fuse: merge the adapters into the weights and remove the PEFT layers (default); False
            keeps the PEFT layers active (same outputs up to float rounding).

    Returns:
        One record per adapter: ``{"path": absolute path given, "file": the weight file,
        "sha256": hex digest of the file's bytes, "scale": float, "adapter_name": str,
        "targets": the components adapted, named as the file's keys are (the denoiser "unet" or
        "transformer", "text_encoder", "text_encoder_2"), "n_tensors": number of tensors in the
        file, "fused": bool}``.

    Raises:
        ModelLoadError: peft not installed; an adapter path missing, a folder without a
            safetensors weight file, a pickled or other non-safetensors file, a corrupt file;
            tensors that match no module of the denoiser / text encoder or do not fit their shapes
            (a LoRA made for another model), tensors of a component the family's loader does
            not adapt (naming the layers), a family without a LoRA loader (DiT),
            DoRA / LoKr files; a scale that is not a finite number; the model already holding
            unfused adapters. Messages name the adapter index and file.
    """
    # 1. check the arguments and that the model holds no unfused adapters
    items = as_adapters(adapters)
    fuse = check_bool(fuse, "fuse", error=ModelLoadError)
    if not items:
        return []
    loader = _check_model(model)
    require_peft()
    held = [type(m).__name__ for m in _modules(model) if _tuner_layers(m)]
    if held:
        raise ModelLoadError(
            f"lora: the model's {' and '.join(held)} already hold(s) unfused LoRA adapters (from "
            "apply_lora(..., fuse=False)); apply all adapters in one call, or fuse the earlier ones"
        )
    # 2. read every adapter against the model before touching it
    plans = [read_plan(a, i, model) for i, a in enumerate(items)]
    names = _adapter_names(model, len(plans))
    targets = [[c for c in loader.components if c in p.parts] for p in plans]
    # 3. load, weight and fuse them (all or none)
    _load_all(model, plans, names, targets, fuse)
    # 4. the records, appended to model.lora
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
