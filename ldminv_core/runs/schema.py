"""What a run folder's data must look like: the fields of run.json that reading a run uses, and the
samples table (ids in order, known splits, finite log-volumes of a finished geometry).

Trust: run.json is data, not code. Every field that is used is checked (types, attack names
against :data:`~ldminv_core.runs.layout.KNOWN_ATTACKS`), and every message names the file and the
key (or the column and the first sample ids).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import NonFiniteRunError, RunError
from .layout import ATTACK_KINDS, KNOWN_ATTACKS, RUN_FORMAT, SAMPLE_COLUMNS, SPLITS

__all__ = ["check_samples", "check_log_volume", "validate_run_json", "first_ids"]


def _is_run_json(data: dict) -> bool:
    """Whether ``data`` (a parsed run.json) is an ldminv run's (its format and a status)."""
    return data.get("format") == RUN_FORMAT and "status" in data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _type_name(v: Any) -> str:
    """``v`` as a run.json message shows it: its JSON type and its repr, cut short."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__) + f" ({v!r})"[:80]


def _validate_status_and_stages(data: dict, where: Path) -> None:
    if not isinstance(data.get("status"), str):
        raise RunError(f"{where}: key 'status': expected a string, got {_type_name(data.get('status'))}")
    stages = data.get("stages", {})
    if not isinstance(stages, dict):
        raise RunError(f"{where}: key 'stages': expected an object of stage name -> true/false, "
                       f"got {_type_name(stages)}")
    for name, value in stages.items():
        if not isinstance(value, bool):
            raise RunError(f"{where}: key 'stages.{name}': expected true or false, got {_type_name(value)}")


def _validate_attack(name: str, spec: Any, where: Path) -> None:
    """One entry of run.json's "attacks": a known name -> {kind, timesteps, dtype}."""
    if name not in KNOWN_ATTACKS:
        raise RunError(f"{where}: key 'attacks': unknown attack name {name!r}; expected names among "
                       f"{list(KNOWN_ATTACKS)}")
    if not isinstance(spec, dict):
        raise RunError(f"{where}: key 'attacks.{name}': expected an object, got {_type_name(spec)}")
    kind = spec.get("kind", "terms")
    if kind not in ATTACK_KINDS:
        raise RunError(f"{where}: key 'attacks.{name}.kind': expected one of {list(ATTACK_KINDS)}, "
                       f"got {_type_name(kind)}")
    ts = spec.get("timesteps")
    if kind == "terms" or ts is not None:
        if not (isinstance(ts, list) and all(_is_int(t) and t >= 0 for t in ts)) or (kind == "terms" and not ts):
            raise RunError(f"{where}: key 'attacks.{name}.timesteps': expected a non-empty list of "
                           f"non-negative integers, got {_type_name(ts)}")
    dtype = spec.get("dtype")
    if dtype is not None and not isinstance(dtype, str):
        raise RunError(f"{where}: key 'attacks.{name}.dtype': expected a dtype name such as "
                       f"'float32', got {_type_name(dtype)}")


def validate_run_json(data: dict, where: Path) -> None:
    """Check the fields of run.json that reading a run uses.

    Args:
        data: the parsed run.json.
        where: its path, for the messages.

    Raises:
        RunError: naming run.json and the key (``status``, ``stages``, ``latent_shape`` (C, h, w),
            ``attacks`` and each attack's ``kind`` / ``timesteps`` / ``dtype``).
    """
    _validate_status_and_stages(data, where)
    for key in ("latent_shape", "attacks"):
        if key not in data:
            raise RunError(f"{where}: key {key!r} is missing")
    shape = data["latent_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(s) and s > 0 for s in shape)):
        raise RunError(f"{where}: key 'latent_shape': expected a list of 3 positive integers (C, h, w), "
                       f"got {_type_name(shape)}")
    attacks = data["attacks"]
    if not isinstance(attacks, dict) or not attacks:
        raise RunError(f"{where}: key 'attacks': expected a non-empty object of attack name -> spec, "
                       f"got {_type_name(attacks)}")
    for name, spec in attacks.items():
        _validate_attack(name, spec, where)


def check_samples(samples: pd.DataFrame, where: str) -> pd.DataFrame:
    """``samples`` when it is a samples table: a DataFrame with sample_id 0..N-1 in order, path,
    and split values among :data:`~ldminv_core.runs.layout.SPLITS`; else RunError naming
    ``where``."""
    if not isinstance(samples, pd.DataFrame):
        raise RunError(f"{where}: expected a pandas DataFrame of samples, got {type(samples).__name__}")
    missing = [c for c in ("sample_id", "path", "split") if c not in samples.columns]
    if missing:
        raise RunError(f"{where}: expected columns {list(SAMPLE_COLUMNS)}, missing {missing}")
    ids = samples["sample_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(samples))):
        raise RunError(f"{where}: expected sample_id 0..{len(samples) - 1} in order")
    bad = sorted(set(samples["split"]) - set(SPLITS))
    if bad:
        raise RunError(f"{where}: expected split values {SPLITS}, found {bad}")
    return samples


def first_ids(samples: pd.DataFrame, bad: np.ndarray, limit: int = 5) -> str:
    """The first sample ids (and image names) where the (N,) bool ``bad`` is set, for a message."""
    idx = np.flatnonzero(bad)
    shown = ", ".join(str(int(i)) for i in samples["sample_id"].to_numpy()[idx[:limit]])
    paths = ", ".join(repr(Path(str(p)).name) for p in samples["path"].to_numpy()[idx[:min(limit, 3)]])
    more = ", ..." if idx.size > limit else ""
    return f"sample ids {shown}{more} ({paths}{', ...' if idx.size > 3 else ''})"


def check_log_volume(samples: pd.DataFrame, where: Path) -> None:
    """Refuse a finished geometry whose log-volumes are not all finite numbers.

    Raises:
        RunError: the column holds something other than numbers.
        NonFiniteRunError: NaN / infinite values (how many, and the first sample ids).
    """
    col = samples["log_volume"]
    try:
        values = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise RunError(f"{where}: column 'log_volume': expected numbers, got dtype {col.dtype} ({exc})") from exc
    bad = ~np.isfinite(values)
    n, k = len(values), int(bad.sum())
    if not k:
        return
    if k == n:
        what = "NaN" if np.isnan(values).all() else "NaN or infinite"
        raise NonFiniteRunError(
            f"{where}: column 'log_volume': all {n} values are {what}: the geometry stage wrote no "
            "log-volume, although run.json marks it done; delete the run and analyze again"
        )
    raise NonFiniteRunError(
        f"{where}: column 'log_volume': {k} of {n} values are NaN or infinite, at {first_ids(samples, bad)}; "
        "the geometry stage wrote non-finite log-volumes; delete the run and analyze again"
    )

