"""Checks of what a custom-model adapter file returns (:mod:`.custom_adapter`): its declared
shapes, schedule, prediction type and conditioning, and one probe call of every callable it
gives (shapes, dtypes, device, finite values; the decoder also under ``torch.func``, as the
decoder geometry takes it). Every refusal is an :class:`AdapterError` that names the adapter
file, the field or function at fault, what was expected and what arrived.

The checks read the adapter by attribute only (any object with the fields of
:class:`~.custom_adapter.ModelAdapter`), so this module imports nothing of the other
``custom_*`` modules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..errors import LdminvError, ModelLoadError
from .schedules import FLOW_PREDICTION, PREDICTION_TYPES, DDPMSchedule, FlowMatchSchedule, NoiseSchedule

if TYPE_CHECKING:  # pragma: no cover
    from .custom_adapter import ModelAdapter

__all__ = ["AdapterError", "AdapterSpec", "check_declarations", "probe_adapter", "PROBE_BATCH"]

#: Rows of the probe batch every callable is called on once when the adapter is loaded.
PROBE_BATCH = 2


class AdapterError(ModelLoadError):
    """A custom-model adapter file cannot be used: it does not import, lacks its build function,
    or what it returns does not fit the adapter interface (the message names the file and the
    field or function, with the expected and the received shape / dtype / value)."""


@dataclass(frozen=True)
class AdapterSpec:
    """The checked declarations of an adapter.

    Attributes:
        image_shape: (C, H, W) of the images, C in (1, 3), H == W.
        latent_shape: (c, h, w) of one latent.
        schedule: :class:`~.schedules.DDPMSchedule` (alphas_cumprod) or
            :class:`~.schedules.FlowMatchSchedule` (rectified flow with T timesteps).
        prediction_type: "epsilon", "v_prediction", "sample" (DDPM family) or "flow".
        conditioning: "none", "label" (class labels) or "caption" (text via encode_prompts).
        scaling_factor, shift_factor: z = (E(x).mean - shift_factor) * scaling_factor.
    """

    image_shape: tuple[int, int, int]
    latent_shape: tuple[int, int, int]
    schedule: NoiseSchedule
    prediction_type: str
    conditioning: str
    scaling_factor: float
    shift_factor: float


def _shape3(value: Any, name: str, where: str) -> tuple[int, int, int]:
    ok = isinstance(value, (tuple, list, torch.Size)) and len(value) == 3 and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok:
        raise AdapterError(f"{where}: {name}: expected three positive integers (C, H, W), got {value!r}")
    return tuple(int(v) for v in value)  # type: ignore[return-value]


def _number(value: Any, name: str, where: str, *, nonzero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)) \
            or (nonzero and float(value) == 0.0):
        what = "a finite non-zero number" if nonzero else "a finite number"
        raise AdapterError(f"{where}: {name}: expected {what}, got {value!r}")
    return float(value)


def _schedule(adapter: "ModelAdapter", where: str) -> tuple[NoiseSchedule, str]:
    """The adapter's noise schedule and prediction type, checked against each other."""
    alphas, flow_t, kind = adapter.alphas_cumprod, adapter.flow_timesteps, adapter.prediction_type
    if (alphas is None) == (flow_t is None):
        raise AdapterError(
            f"{where}: expected exactly one schedule: alphas_cumprod (a (T,) tensor, DDPM family) or "
            f"flow_timesteps (T of a rectified-flow model), got alphas_cumprod={'None' if alphas is None else 'set'} "
            f"and flow_timesteps={flow_t!r}")
    try:
        schedule: NoiseSchedule = DDPMSchedule(alphas) if alphas is not None else FlowMatchSchedule(flow_t)
    except (LdminvError, TypeError, RuntimeError) as exc:
        name = "alphas_cumprod" if alphas is not None else "flow_timesteps"
        raise AdapterError(f"{where}: {name}: {exc}") from exc
    allowed = (FLOW_PREDICTION,) if flow_t is not None else PREDICTION_TYPES
    if kind not in allowed:
        raise AdapterError(
            f"{where}: prediction_type: with {'flow_timesteps' if flow_t is not None else 'alphas_cumprod'} "
            f"expected one of {allowed}, got {kind!r}")
    return schedule, kind


def _conditioning(adapter: "ModelAdapter", where: str) -> str:
    num, null, prompts = adapter.num_classes, adapter.null_class, adapter.encode_prompts
    if num is None:
        if null is not None:
            raise AdapterError(f"{where}: null_class: given ({null!r}) without num_classes; expected both or neither")
        if prompts is not None and not callable(prompts):
            raise AdapterError(f"{where}: encode_prompts: expected a callable or None, got {type(prompts).__name__}")
        return "none" if prompts is None else "caption"
    if prompts is not None:
        raise AdapterError(f"{where}: expected class labels (num_classes) or text (encode_prompts), got both")
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise AdapterError(f"{where}: num_classes: expected an integer >= 1, got {num!r}")
    if null is not None and (isinstance(null, bool) or not isinstance(null, int) or not 0 <= null <= num):
        raise AdapterError(f"{where}: null_class: expected None or an integer in 0..{num} (num_classes), got {null!r}")
    return "label"


def check_declarations(adapter: "ModelAdapter", where: str) -> AdapterSpec:
    """The checked declarations of ``adapter`` (no callable is called).

    Raises:
        AdapterError: a shape, number, schedule, prediction type or conditioning field does not
            fit (named, with the expected and the received value).
    """
    for name in ("encode", "decode", "model_output"):
        if not callable(getattr(adapter, name, None)):
            raise AdapterError(f"{where}: {name}: expected a callable, got {type(getattr(adapter, name, None)).__name__}")
    if adapter.posterior_std is not None and not callable(adapter.posterior_std):
        raise AdapterError(f"{where}: posterior_std: expected a callable or None, got "
                           f"{type(adapter.posterior_std).__name__}")
    image_shape = _shape3(adapter.image_shape, "image_shape", where)
    if image_shape[0] not in (1, 3) or image_shape[1] != image_shape[2]:
        raise AdapterError(f"{where}: image_shape: expected square images with 1 (grayscale) or 3 (RGB) channels, "
                           f"got {image_shape}")
    schedule, kind = _schedule(adapter, where)
    return AdapterSpec(
        image_shape=image_shape,
        latent_shape=_shape3(adapter.latent_shape, "latent_shape", where),
        schedule=schedule,
        prediction_type=kind,
        conditioning=_conditioning(adapter, where),
        scaling_factor=_number(adapter.scaling_factor, "scaling_factor", where, nonzero=True),
        shift_factor=_number(adapter.shift_factor, "shift_factor", where),
    )


# ---------------------------------------------------------------------------- the probe calls

def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)} on {value.device}"
    return f"{type(value).__name__} {value!r}"[:200]


def check_output(value: Any, *, call: str, shapes: list[tuple[int, ...]], dtype: torch.dtype | None,
                 device: torch.device | None, where: str) -> torch.Tensor:
    """``value`` when it is a finite tensor of one of ``shapes`` in ``dtype`` on ``device``
    (None: any floating dtype / any device), else AdapterError naming ``call``."""
    dt = "floating" if dtype is None else str(dtype).replace("torch.", "")
    shown = " or ".join(str(s) for s in shapes)
    expected = f"a {dt} tensor of shape {shown}" + (f" on {device}" if device is not None else "")
    ok = isinstance(value, torch.Tensor) and tuple(value.shape) in shapes and (
        value.dtype == dtype if dtype is not None else value.is_floating_point()) and (
        device is None or value.device.type == device.type and (device.index is None or value.device == device))
    if not ok:
        raise AdapterError(f"{where}: {call}: expected {expected}, got {_describe(value)}")
    if not bool(torch.isfinite(value).all()):
        raise AdapterError(f"{where}: {call}: returned NaN or infinite values; expected finite {expected}")
    return value


def _called(fn: Callable, call: str, where: str, *args: Any) -> Any:
    try:
        with torch.no_grad():
            return fn(*args)
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: name the function and what it raised
        raise AdapterError(f"{where}: {call} raised {type(exc).__name__}: {exc}") from exc


def _fmt(shape: tuple[int, ...], dtype: torch.dtype) -> str:
    return f"{tuple(shape)} {str(dtype).replace('torch.', '')}"


def _probe_decoder_func(decode: Callable, z: torch.Tensor, where: str, image_shape: tuple[int, ...]) -> None:
    """decode under ``vmap(jvp)`` at one latent, as the decoder geometry's torch.func engine takes it."""
    from torch.func import jvp, vmap
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def single(z1: torch.Tensor) -> torch.Tensor:
        return decode(z1.unsqueeze(0)).squeeze(0)

    v = torch.randn((2, *z.shape[1:]), generator=torch.Generator().manual_seed(1)).to(z)
    call = "decode under torch.func (vmap of jvp, as the decoder geometry calls it)"
    try:
        with sdpa_kernel(SDPBackend.MATH):
            jv = vmap(lambda v1: jvp(single, (z[0],), (v1,))[1])(v)
    except Exception as exc:  # noqa: BLE001
        raise AdapterError(f"{where}: {call} raised {type(exc).__name__}: {exc}; the decoder must be a "
                           "differentiable torch function of the latents (no .detach(), numpy or in-place "
                           "writes into its input)") from exc
    check_output(jv, call=call, shapes=[(2, *image_shape)], dtype=None, device=None, where=where)
    if not bool(jv.abs().sum() > 0):
        raise AdapterError(f"{where}: {call}: the images do not depend on the latents (all tangents zero); the "
                           "decoder must not detach its input or run under torch.no_grad inside")


def probe_adapter(adapter: "ModelAdapter", spec: AdapterSpec, *, device: torch.device, dtype: torch.dtype,
                  where: str) -> None:
    """Call every callable of ``adapter`` once on a probe batch of :data:`PROBE_BATCH` rows.

    encode (images (B, *image_shape) in [-1, 1]) -> (B, *latent_shape); decode (those latents) ->
    (B, *image_shape); model_output (z_t (B, *latent_shape), t (B,), cond) -> (B, c or 2c, h, w);
    encode_prompts (["", "a photo"]) -> (B, L, D); posterior_std -> (B, *latent_shape) > 0; all in
    ``dtype`` on ``device`` and finite; decode also under torch.func.

    Raises:
        AdapterError: naming the function, the expected and the received shape / dtype.
    """
    b, lat, img = PROBE_BATCH, spec.latent_shape, spec.image_shape
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand((b, *img), generator=gen) * 2 - 1).to(device, dtype)
    kw = dict(dtype=dtype, device=device, where=where)
    call = f"encode(images {_fmt(images.shape, dtype)})"
    mean = check_output(_called(adapter.encode, call, where, images), call=call, shapes=[(b, *lat)], **kw)
    call = f"decode(latents {_fmt(mean.shape, dtype)})"
    check_output(_called(adapter.decode, call, where, mean), call=call, shapes=[(b, *img)], **kw)
    _probe_decoder_func(adapter.decode, mean.detach(), where, img)
    if adapter.posterior_std is not None:
        call = f"posterior_std(images {_fmt(images.shape, dtype)})"
        std = check_output(_called(adapter.posterior_std, call, where, images), call=call, shapes=[(b, *lat)], **kw)
        if not bool((std > 0).all()):
            raise AdapterError(f"{where}: {call}: expected standard deviations > 0, got a minimum of {float(std.min())}")
    cond = None
    if spec.conditioning == "caption":
        call = "encode_prompts(['', 'a photo'])"
        cond = _called(adapter.encode_prompts, call, where, ["", "a photo"])
        if not (isinstance(cond, torch.Tensor) and cond.ndim == 3 and cond.shape[0] == b):
            raise AdapterError(f"{where}: {call}: expected a tensor of shape ({b}, L, D), got {_describe(cond)}")
        check_output(cond, call=call, shapes=[tuple(cond.shape)], **kw)
    elif spec.conditioning == "label":
        cond = torch.zeros(b, dtype=torch.long, device=device)
    t_mid = spec.schedule.num_train_timesteps // 2
    ts = spec.schedule.model_timesteps(t_mid, b, device)
    z_t = torch.randn((b, *lat), generator=gen).to(device, dtype)
    cond_text = "None" if cond is None else _fmt(cond.shape, cond.dtype)
    call = f"model_output(z_t {_fmt(z_t.shape, dtype)}, t {_fmt(ts.shape, ts.dtype)}, cond {cond_text})"
    c, h, w = lat
    check_output(_called(adapter.model_output, call, where, z_t, ts, cond), call=call,
                 shapes=[(b, c, h, w), (b, 2 * c, h, w)], **kw)
