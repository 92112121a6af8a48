"""The config files of a diffusers pipeline folder: the values the loader and diffusers rely on,
checked for their types before any weights are read, so a hand-edited ``"in_channels": "4"``
is named (file, key, value) instead of failing deep inside diffusers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._validation import check_int
from ..errors import LdminvError, ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    from .sources import Source

__all__ = ["read_checked_configs", "denoiser_folder"]


# (key, kind) of config values the loader and diffusers rely on; kind: "int", "ints" (an int or a
# list of ints), "intlist" (a list of ints), "number", "number?" (a number or null), "strlist"
_VAE_KEYS = {
    "in_channels": "int", "out_channels": "int", "latent_channels": "int", "layers_per_block": "int",
    "norm_num_groups": "int", "sample_size": "ints", "block_out_channels": "intlist",
    "scaling_factor": "number", "shift_factor": "number?", "down_block_types": "strlist",
    "up_block_types": "strlist",
}
_UNET_KEYS = {
    "in_channels": "int", "out_channels": "int", "layers_per_block": "ints", "norm_num_groups": "int",
    "sample_size": "ints", "block_out_channels": "intlist", "cross_attention_dim": "ints",
    "attention_head_dim": "ints", "down_block_types": "strlist", "up_block_types": "strlist",
}
_SCHEDULER_KEYS = {"num_train_timesteps": "int", "beta_start": "number", "beta_end": "number"}
_KIND_TEXT = {
    "int": "an integer", "ints": "an integer or a list of integers", "intlist": "a list of integers",
    "number": "a number", "number?": "a number or null", "strlist": "a list of block names (strings)",
}


def _is_int(v: Any) -> bool:
    try:
        check_int(v, "value")
    except LdminvError:
        return False
    return True


def _value_ok(value: Any, kind: str) -> bool:
    if kind == "int":
        return _is_int(value)
    if kind == "ints":
        return _is_int(value) or (isinstance(value, list) and len(value) > 0 and all(_is_int(v) for v in value))
    if kind == "intlist":
        return isinstance(value, list) and len(value) > 0 and all(_is_int(v) for v in value)
    if kind in ("number", "number?"):
        if value is None:
            return kind == "number?"
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)
    if kind == "strlist":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    raise AssertionError(kind)


def _check_config_values(where: str, name: str, cfg: dict, keys: dict[str, str]) -> None:
    """ModelLoadError naming ``name`` (e.g. "vae/config.json"), the key and the value when a
    value the loader or diffusers relies on has the wrong type (a string where an int is expected)."""
    for key, kind in keys.items():
        if key not in cfg:
            continue
        value = cfg[key]
        if key in ("cross_attention_dim", "out_channels") and value is None:  # out_channels None: = in_channels
            continue
        if not _value_ok(value, kind):
            raise ModelLoadError(
                f"{where}: {name}: {key!r} must be {_KIND_TEXT[kind]}, got {value!r} ({type(value).__name__})"
            )
        if kind in ("int", "ints", "intlist"):
            values = value if isinstance(value, list) else [value]
            if any(v < 1 for v in values) and key not in ("cross_attention_dim",):
                raise ModelLoadError(f"{where}: {name}: {key!r} must be positive, got {value!r}")


def denoiser_folder(src: "Source") -> str:
    """The denoiser's sub-folder: ``"transformer"`` when the folder has transformer/config.json
    and no unet/config.json (DiT, SD3, Flux), else ``"unet"``."""
    return "transformer" if src.has("transformer", "config.json") and not src.has("unet", "config.json") else "unet"


def read_checked_configs(src: "Source") -> tuple[dict, dict, dict]:
    """The vae, unet and scheduler configs, each checked for the types of the values used."""
    where = src.describe()
    vae_cfg = src.config("vae", "config.json")
    denoiser = denoiser_folder(src)  # "unet", or "transformer" (DiT, SD3, Flux)
    unet_cfg = src.config(denoiser, "config.json")
    sched_cfg = src.config("scheduler", "scheduler_config.json")
    _check_config_values(where, "vae/config.json", vae_cfg, _VAE_KEYS)
    _check_config_values(where, f"{denoiser}/config.json", unet_cfg, _UNET_KEYS)
    _check_config_values(where, "scheduler/scheduler_config.json", sched_cfg, _SCHEDULER_KEYS)
    return vae_cfg, unet_cfg, sched_cfg
