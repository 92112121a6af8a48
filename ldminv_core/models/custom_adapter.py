"""Custom PyTorch models through an adapter file (METHOD.md section 5, last bullet): the
interface a user's file returns (:class:`ModelAdapter`), the loader behind
``python -m ldminv_core analyze --model-adapter FILE.py [--model PATH]``
(:func:`load_custom_model`), and the safe state-dict reader adapter files load weights with
(:func:`load_state_dict`).

An adapter file is plain Python that builds the model with the user's own code (for instance
their checkout of a paper's repository; ``examples/ldm_light_adapter.py`` does this for the
paper's ``ldm_light`` checkpoints) and defines::

    def build_adapter(model_path: str | None, *, device: torch.device, dtype: torch.dtype) -> ModelAdapter:
        ...

``model_path`` is ``--model`` (an absolute path when it exists, e.g. a folder of checkpoints) or
None. The function returns a :class:`ModelAdapter` (or a dict of its fields). The loader imports
the file by path, calls the function, checks every declaration and calls every callable once on a
probe batch (:mod:`.custom_checks`: shapes, dtypes, device, finite values, the decoder under
``torch.func``), then wraps it as a :class:`~.custom_model.CustomLoadedModel` (family
``"custom"``), so the attacks, the geometry (torch.func engine), the runs and the evaluation run
unchanged. run.json records the family, the adapter file's path and SHA-256; a resumed run refuses
a changed adapter file.

Weights: adapter files should read checkpoints with :func:`load_state_dict`, which only ever calls
``torch.load(path, map_location="cpu", weights_only=True)`` (tensors and plain containers; no
code runs) and refuses anything but a mapping of parameter names to tensors, e.g. a pickled
full model.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .custom_checks import AdapterError, check_declarations, probe_adapter
from .custom_model import CUSTOM_FAMILY, CustomLoadedModel, _place_modules, build_custom_model
from .loading import resolve_device

__all__ = ["ADAPTER_FUNCTION", "AdapterError", "CUSTOM_FAMILY", "CustomLoadedModel", "ModelAdapter",
           "adapter_file_sha256", "check_adapter_file", "load_custom_model", "load_state_dict"]

ADAPTER_FUNCTION = "build_adapter"
"""The function an adapter file defines: ``build_adapter(model_path, *, device, dtype) -> ModelAdapter``."""


@dataclass
class ModelAdapter:
    """What an adapter file's ``build_adapter`` returns: a latent diffusion model as ldminv needs it.

    Every tensor an adapter takes or returns is on the ``device`` and in the ``dtype``
    ``build_adapter`` was called with.

    Attributes:
        encode: ``images (N, C, H, W) in [-1, 1] -> (N, c, h, w)``: the encoder's mean E(x).mean,
            unscaled (ldminv analyses ``(E(x).mean - shift_factor) * scaling_factor``).
        decode: ``latents (N, c, h, w) -> images (N, C, H, W)`` (roughly in [-1, 1]), taking
            unscaled latents; differentiable by ``torch.func`` (the decoder geometry's JVPs).
        model_output: ``(z_t (B, c, h, w), t (B,), cond) -> (B, c, h, w)`` (or (B, 2c, h, w) with a
            learned variance, whose first half is used): the raw network output at the scaled
            latents ``z_t``. ``t`` is int64 timesteps for the DDPM family and the float32 sigma * T
            for rectified flow; ``cond`` is None (unconditional), (B,) int64 class labels
            (``num_classes`` set) or (B, L, D) states of ``encode_prompts``.
        image_shape: (C, H, W) of the images, C in (1, 3), H == W (image folders are resized to it).
        latent_shape: (c, h, w) of one latent.
        prediction_type: "epsilon", "v_prediction" or "sample" with ``alphas_cumprod``; "flow"
            (the velocity e - z0) with ``flow_timesteps``.
        alphas_cumprod: (T,) cumulative products of the DDPM schedule (DDPM / DDIM family), or None.
        flow_timesteps: T of a rectified-flow model (sigma = t / T), or None. Exactly one of the two.
        scaling_factor, shift_factor: the latent scaling, as a diffusers VAE config's (1 and 0 when
            the model's diffusion runs on the raw encoder mean).
        num_classes: classes 0..num_classes-1 of a class-conditional model (labels from the
            images' metadata ``label`` column), else None.
        null_class: the "no class" label used for an image without one (None: such images are refused).
        encode_prompts: ``list[str] -> (B, L, D)`` for a text-conditioned model (captions from the
            metadata ``text`` column, "" without one), else None.
        posterior_std: ``images -> (N, c, h, w)`` standard deviation of q(z | x) (unscaled), needed by
            ``--latent sample`` only.
        vae, denoiser: the user's modules behind the callables (optional): ldminv puts them in eval
            mode without parameter gradients, and run.json's model_class names the denoiser's class.
    """

    encode: Callable[[torch.Tensor], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    model_output: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]
    prediction_type: str = "epsilon"
    alphas_cumprod: Any = None
    flow_timesteps: int | None = None
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    num_classes: int | None = None
    null_class: int | None = None
    encode_prompts: Callable[[list[str]], torch.Tensor] | None = None
    posterior_std: Callable[[torch.Tensor], torch.Tensor] | None = None
    vae: torch.nn.Module | None = None
    denoiser: torch.nn.Module | None = None


# ---------------------------------------------------------------------------- weights

def load_state_dict(path: str | os.PathLike, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict read safely: ``torch.load(path, map_location="cpu", weights_only=True)``.

    Args:
        path: a ``.pt`` / ``.pth`` / ``.bin`` file written by ``torch.save(module.state_dict(), path)``.
        key: take ``checkpoint[key]`` (e.g. ``"state_dict"``) when the file wraps the state dict.

    Returns:
        {parameter name: tensor}, on the CPU (``module.load_state_dict`` moves them).

    Raises:
        ModelLoadError (AdapterError): the file is missing; it holds a pickled full model or
            other Python objects (``weights_only=True`` refuses to run their code); it is not a
            mapping of str -> tensor (the first offending key named); ``key`` is missing.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise AdapterError(f"{p}: state dict file not found (expected a file written by torch.save(module.state_dict()))")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError, ... : all mean "not plain weights"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdapterError(
            f"{p}: not a state dict that torch.load(weights_only=True) can read: a pickled full model (torch.save(model)) "
            f"or other Python objects would run code on loading, which ldminv never does; save "
            f"torch.save(model.state_dict(), path) instead ({type(exc).__name__}: {first})") from exc
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            raise AdapterError(f"{p}: expected a mapping with the key {key!r}, got {type(obj).__name__}"
                               + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else ""))
        obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise AdapterError(f"{p}: expected a state dict (a non-empty mapping of parameter names to tensors), got "
                           f"{type(obj).__name__}")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise AdapterError(
                f"{p}: expected a state dict (a mapping of parameter names to tensors), but entry {name!r} is "
                f"{type(value).__name__}; pass key= when the weights sit under one entry of a checkpoint")
    return dict(obj)


# ---------------------------------------------------------------------------- the adapter file

def check_adapter_file(path: str | os.PathLike) -> Path:
    """The absolute path of an adapter file (AdapterError unless it is a readable ``.py`` file)."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise AdapterError(f"model_adapter (--model-adapter): expected the path of a Python file, got {path!r}")
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise AdapterError(f"model_adapter (--model-adapter): {p} is not a file; expected a Python file defining "
                           f"{ADAPTER_FUNCTION}(model_path, *, device, dtype)")
    if p.suffix != ".py":
        raise AdapterError(f"model_adapter (--model-adapter): {p}: expected a Python file (.py), got {p.suffix or 'no suffix'!r}")
    if not os.access(p, os.R_OK):
        raise AdapterError(f"model_adapter (--model-adapter): {p} cannot be read (permissions)")
    return p


def adapter_file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of an adapter file's bytes (recorded in run.json; a changed file ends a resume)."""
    return hashlib.sha256(check_adapter_file(path).read_bytes()).hexdigest()


def _import_build(path: Path, sha: str) -> Callable[..., Any]:
    """``build_adapter`` of the file at ``path``, imported by path under a name of its own."""
    name = f"ldminv_adapter_{sha[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AdapterError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling inside the file look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: name it and what it raised
        sys.modules.pop(name, None)
        raise AdapterError(f"{path}: importing the adapter file raised {type(exc).__name__}: {exc}") from exc
    build = getattr(module, ADAPTER_FUNCTION, None)
    if not callable(build):
        found = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
        raise AdapterError(
            f"{path}: defines no function {ADAPTER_FUNCTION}(model_path, *, device, dtype) "
            f"({'got ' + type(build).__name__ if build is not None else 'found callables: ' + (', '.join(found[:8]) or 'none')})")
    return build


def _as_adapter(result: Any, where: str) -> ModelAdapter:
    """``result`` as a :class:`ModelAdapter` (a dict of its fields is accepted)."""
    if isinstance(result, ModelAdapter):
        return result
    if isinstance(result, Mapping):
        known = {f.name for f in fields(ModelAdapter)}
        unknown = sorted(str(k) for k in result if k not in known)
        if unknown:
            raise AdapterError(f"{where}: unknown adapter field(s) {unknown}; expected fields of ModelAdapter: "
                               f"{sorted(known)}")
        try:
            return ModelAdapter(**result)
        except TypeError as exc:
            raise AdapterError(f"{where}: {exc} (required: encode, decode, model_output, image_shape, "
                               "latent_shape)") from exc
    raise AdapterError(f"{where}: returned {type(result).__name__}; expected a "
                       "ldminv_core.models.custom_adapter.ModelAdapter (or a dict of its fields)")


def load_custom_model(
    adapter_file: str | os.PathLike,
    *,
    model_path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> CustomLoadedModel:
    """Load a custom model through its adapter file.

    Args:
        adapter_file: a ``.py`` file defining ``build_adapter(model_path, *, device, dtype)``.
        model_path: passed to ``build_adapter`` (absolute when it exists), or None.
        device: "cpu", "cuda", "cuda:i" or "auto".
        dtype: the floating dtype the adapter builds its modules in.

    Returns:
        :class:`~.custom_model.CustomLoadedModel`: images (N, *image_shape), latents
        (N, *latent_shape); ``family.name == "custom"``; ``adapter_record`` holds the file's path
        and SHA-256.

    Raises:
        AdapterError (a ModelLoadError): the file is not a readable .py file, does not import,
            lacks ``build_adapter``, or the function raises (its error named); what it returns does
            not fit :class:`ModelAdapter` (the field or function named, with the expected and the
            received shape / dtype).
    """
    # 1. the adapter file and its SHA-256
    path = check_adapter_file(adapter_file)
    sha = adapter_file_sha256(path)
    dev = resolve_device(device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise AdapterError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    ref = None
    if model_path is not None:
        p = Path(model_path).expanduser()
        ref = str(p.resolve()) if p.exists() else str(model_path)
    # 2. import it by path; call build_adapter with the user's own code behind it
    build = _import_build(path, sha)
    where = f"{path}: {ADAPTER_FUNCTION}()"
    try:
        result = build(ref, device=dev, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - the user's code: name the file, the function, the error
        raise AdapterError(f"{where} raised {type(exc).__name__}: {exc}") from exc
    adapter = _as_adapter(result, where)
    # 3. the declarations, the modules in eval mode, one probe call of every callable
    spec = check_declarations(adapter, where)
    _place_modules(adapter, where)
    probe_adapter(adapter, spec, device=dev, dtype=dtype, where=where)
    # 4. the LoadedModel the rest of ldminv sees
    record = {"path": str(path), "file": path.name, "sha256": sha, "function": ADAPTER_FUNCTION, "model_path": ref}
    return build_custom_model(adapter, spec, record=record, source=ref or str(path), device=dev, dtype=dtype)
