"""The rows a stage writes for one batch of samples: the decoder geometry's influence and
log-volume (:func:`_geometry_rows`) and an attack's terms or scores (:func:`_attack_rows`), each
checked finite before it is recorded; and the arrays each stage fills (:func:`_stage_arrays`)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import attacks as _attacks
from .. import geometry as _geometry
from ..errors import NonFiniteError, RunError
from ldminv_core.models.loading import LoadedModel
from ldminv_core.data.safe_files import display_name
from .geometry_paths import _decoder_engine, _log_volume_kwargs, _probes_to_run
from .plan import _Plan

#: The geometry stage's per-sample log-volumes, moved into samples.parquet when the stage is done.
_WORK_LOG_VOLUME = "_work/log_volume.npy"


def _check_finite(arr: np.ndarray, *, stage: str, file: str, start: int, paths: Sequence[str]) -> None:
    """NonFiniteError naming the stage, the array file and the first samples whose values are
    NaN or infinite (checked per batch before it is recorded, so the run stays resumable)."""
    if np.isfinite(arr).all():
        return
    rows = np.asarray(arr).reshape(len(arr), -1)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    ids = [int(start + i) for i in bad[:5]]
    named = ", ".join(f"{i} ({display_name(Path(paths[i]).name)})" if i < len(paths) else str(i) for i in ids)
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    hint = ""
    if arr.dtype == np.float16:
        hint = " float16 overflows above 65504: rerun with residual_dtype float32 (--residual-dtype float32 --force)."
    raise NonFiniteError(
        f"stage {stage!r}: NaN or infinite values in {file} for sample id(s) {named}{more}; the batch starting at "
        f"sample {start} was not recorded (the run stays resumable, but the same settings will give the same "
        f"values).{hint} Check the model's weights and these images."
    )


def _geometry_rows(plan: _Plan, model: LoadedModel, decode, z_all: np.ndarray, start: int, stop: int,
                   methods: dict, folder: Path, paths: Sequence[str],
                   within: Callable[[float], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Influence (B, C, h, w) float32 and log-volume (B,) float64 of samples start..stop-1, by the
    paths in ``methods`` (run.json "geometry": influence, log_volume_method, probes_used).
    ``within`` is told the samples of the batch finished so far (a float) after every decoder call."""
    zb = torch.from_numpy(np.array(z_all[start:stop])).to(model.device, model.dtype)
    geo = _geometry.decoder_geometry(
        decode, zb, k=plan.topk, influence=methods["influence"], log_volume_method=methods["log_volume_method"],
        probes=_probes_to_run(plan, methods), seed=plan.seed, sample_ids=list(range(start, stop)),
        progress=within, engine=_decoder_engine(decode), **_log_volume_kwargs(plan),
    )
    infl_b = geo.influence.detach().to("cpu", torch.float32).numpy()
    lv_b = geo.log_volume.detach().to("cpu", torch.float64).numpy()
    _check_finite(infl_b, stage="geometry", file=str(folder / "influence.npy"), start=start, paths=paths)
    _check_finite(lv_b, stage="geometry", file=f"{folder / 'samples.parquet'} (log_volume)", start=start, paths=paths)
    return infl_b, lv_b


def _attack_rows(name: str, plan: _Plan, model: LoadedModel, z_all: np.ndarray, captions: Sequence[str | None],
                 start: int, stop: int, dtype: np.dtype, file: str, paths: Sequence[str]) -> np.ndarray:
    """Terms (B, T, C, h, w) or scores (B,) of attack ``name`` for samples start..stop-1, in ``dtype``."""
    zb = torch.from_numpy(np.array(z_all[start:stop]))
    caps = list(captions[start:stop]) if model.predictor.is_conditional else None
    ids = np.arange(start, stop)
    if name in _attacks.MASKABLE_ATTACKS:
        res = _attacks.attack_terms(
            name, model.predictor, zb, timesteps=_attacks.evaluated_timesteps(name, plan.timesteps), captions=caps,
            sample_ids=ids, seed=plan.seed, batch_size=plan.batch_size,
        )
    else:
        res = _attacks.pfami_scores(
            model.predictor, zb, captions=caps, sample_ids=ids, seed=plan.seed, batch_size=plan.batch_size,
            variants_per_call=pfami_variants_per_call(model.device),
        )
    with np.errstate(over="ignore"):
        batch = res.detach().cpu().numpy().astype(dtype)
    _check_finite(batch, stage=name, file=file, start=start, paths=paths)
    return batch


def pfami_variants_per_call(device: torch.device) -> int | None:
    """PFAMI variants (the latent and its neighbours) per denoiser call in an analysis on ``device``:
    all of them on a CPU (11 times fewer, larger calls: about twice the samples per second on the
    demo's UNet), one on an accelerator (``batch_size`` stays the memory bound the user chose)."""
    return None if torch.device(device).type == "cpu" else 1


def _stage_arrays(name: str, plan: _Plan, n: int, lat: tuple[int, ...]) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """(relpath, shape, dtype) of the arrays stage ``name`` fills."""
    if name == "geometry":
        return [("influence.npy", (n, *lat), np.dtype(np.float32)), (_WORK_LOG_VOLUME, (n,), np.dtype(np.float64))]
    if name in _attacks.MASKABLE_ATTACKS:
        t_count = len(_attacks.stored_timesteps(name, plan.timesteps))
        return [(f"residuals/{name}.npy", (n, t_count, *lat), np.dtype(plan.residual_dtype))]
    return [(f"scores/{name}.npy", (n,), np.dtype(np.float32))]


def _open_existing(folder: Path, relpath: str, shape: tuple[int, ...], dtype: np.dtype) -> np.memmap:
    """Open an array rank 0 created, to write this rank's rows (RunError when it does not match)."""
    path = folder / relpath
    try:
        arr = np.lib.format.open_memmap(path, mode="r+")
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot be opened to write this rank's rows ({exc})") from exc
    if arr.shape != tuple(shape) or arr.dtype != dtype:
        raise RunError(f"{path}: expected shape {tuple(shape)} {dtype}, found {arr.shape} {arr.dtype}")
    return arr
