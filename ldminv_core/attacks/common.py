"""What every attack shares: the checks of its inputs, the seeded per-sample noise, |.|^p, and the
driver that runs one attack's batch kernel over the latents.

Seeded noise: the noise of sample id ``s`` comes from a CPU ``torch.Generator`` seeded with
``SeedSequence([seed, s, stream])`` and is drawn in one call per sample, so results do not depend
on the batch size or on which samples share a batch, and resuming a run reproduces the same
arrays.

A batch kernel takes ``(predictor, z, cond, noise=..., **options)``: one batch of float32
latents z (B, C, h, w) on the device, ``cond`` (B, L, D) or None, ``noise`` (B, T, C, h, w) or
None, and returns float32 results on the device.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from .._validation import check_int, check_real
from ..errors import LdminvError, ShapeError
from ..models.noise_prediction import NoisePrediction

__all__ = ["ProgressCallback", "check_predictor", "check_z0", "check_p", "check_sample_ids", "check_captions",
           "check_seed", "check_batch_size", "sample_noise", "power", "run_batches"]

ProgressCallback = Callable[[int], Any]


def check_predictor(predictor: Any) -> None:
    """LdminvError unless ``predictor`` is a noise-prediction view of a model."""
    if not isinstance(predictor, NoisePrediction):
        raise LdminvError(f"predictor: expected a NoisePredictor, got {type(predictor).__name__}")


def check_z0(predictor: NoisePrediction, z0: Any) -> Any:
    """``z0`` (N, C, h, w) tensor or numeric array, checked against the predictor."""
    if not isinstance(z0, (torch.Tensor, np.ndarray)):
        raise LdminvError(f"z0: expected a torch.Tensor or numpy array (N, C, h, w), got {type(z0).__name__}")
    if isinstance(z0, np.ndarray) and z0.dtype.kind not in "fiu":
        raise LdminvError(f"z0: expected a numeric array, got dtype {z0.dtype}")
    predictor.check_latents(z0, "z0")
    return z0


def check_p(p: Any, name: str) -> float:
    """The exponent of |.|^p of attack ``name``: a positive finite number."""
    return check_real(p, "p", low=0.0, low_open=True, what=f"a positive finite exponent for attack {name!r}")


def check_seed(seed: Any) -> int:
    """The noise seed: an integer >= 0."""
    return check_int(seed, "seed", minimum=0)


def check_batch_size(batch_size: Any) -> int:
    """Samples per forward: an integer >= 1."""
    return check_int(batch_size, "batch_size", minimum=1)


def check_sample_ids(sample_ids: Any, n: int) -> np.ndarray:
    """sample_ids as an int64 array (n,) of non-negative ids (default arange(n))."""
    if sample_ids is None:
        return np.arange(n, dtype=np.int64)
    if isinstance(sample_ids, torch.Tensor):
        sample_ids = sample_ids.detach().cpu().numpy()
    ids = np.asarray(sample_ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ShapeError(f"sample_ids: expected shape ({n},) (one id per latent), got {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise LdminvError(f"sample_ids: expected integers, got dtype {ids.dtype}")
    if (ids < 0).any():
        raise LdminvError(f"sample_ids: expected non-negative ids, got {ids[ids < 0][:5].tolist()}")
    return ids.astype(np.int64)


def check_captions(captions: Any, n: int) -> list[str | int | None] | None:
    """``captions`` as a list of n strings or None entries (None stays None); integer class
    labels stand in for captions with class-conditional models
    (:mod:`ldminv_core.models.class_conditional`)."""
    if captions is None:
        return None
    if isinstance(captions, str):
        raise LdminvError("captions: expected a sequence of N strings (or None), got a single string")
    caps = list(captions)
    if len(caps) != n:
        raise ShapeError(f"captions: expected {n} captions (one per latent), got {len(caps)}")
    for i, c in enumerate(caps):
        if c is not None and not isinstance(c, (str, int, np.integer)) or isinstance(c, bool):
            raise LdminvError(f"captions[{i}]: expected a string, an integer class label or None, got {type(c).__name__}")
    return caps


def _noise_seed(seed: int, sample_id: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, sample_id, stream]).generate_state(1)[0])


def sample_noise(seed: int, sample_ids: np.ndarray, stream: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Standard normal noise (len(sample_ids), *shape), float32 on CPU, one generator per sample."""
    out = torch.empty((len(sample_ids), *shape), dtype=torch.float32)
    gen = torch.Generator()
    for i, sid in enumerate(sample_ids.tolist()):
        gen.manual_seed(_noise_seed(seed, sid, stream))
        torch.randn(shape, generator=gen, out=out[i])
    return out


def power(diff: torch.Tensor, p: float) -> torch.Tensor:
    """|diff|^p, in place on ``diff``."""
    if p == 2.0:
        return diff.square_()
    if p == 4.0:
        return diff.square_().square_()
    return diff.abs_().pow_(p)


def _batch_latents(pred: NoisePrediction, z0: Any, start: int, stop: int) -> torch.Tensor:
    if isinstance(z0, np.ndarray):  # e.g. a read-only memmap: copy just this batch
        return torch.tensor(np.asarray(z0[start:stop]), dtype=torch.float32, device=pred.device)
    return z0[start:stop].to(pred.device, torch.float32)


def _batch_cond(pred: NoisePrediction, captions: list[str | None] | None, shared: torch.Tensor | None,
                start: int, stop: int) -> torch.Tensor | None:
    if not pred.is_conditional:
        return None
    if shared is not None:
        return shared.expand(stop - start, -1, -1)
    return pred.encode_prompts(captions[start:stop])


def run_batches(
    pred: NoisePrediction,
    z0: Any,
    out: torch.Tensor,
    kernel: Callable[..., torch.Tensor],
    *,
    captions: list[str | None] | None,
    sample_ids: np.ndarray,
    seed: int,
    stream: int | None,
    noise_steps: int,
    batch_size: int,
    progress: ProgressCallback | None,
    pass_captions: bool = False,
    **kernel_kwargs: Any,
) -> torch.Tensor:
    """Run ``kernel`` over batches of z0 (N, C, h, w), writing each batch's result into ``out``
    (CPU, first dimension N); ``stream`` None: the kernel draws no noise; ``pass_captions``: the
    kernel also gets the batch's captions (``captions=``, a list of strings)."""
    n = z0.shape[0]
    latent_shape = tuple(z0.shape[1:])
    shared_cond = pred._empty_prompt() if pred.is_conditional and captions is None else None
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            zb = _batch_latents(pred, z0, start, stop)
            cond = _batch_cond(pred, captions, shared_cond, start, stop)
            noise = None
            if stream is not None:
                noise = sample_noise(seed, sample_ids[start:stop], stream, (noise_steps, *latent_shape))
                noise = noise.to(pred.device)
            if pass_captions:
                kernel_kwargs["captions"] = list(captions[start:stop])
            result = kernel(pred, zb, cond, noise=noise, **kernel_kwargs)
            out[start:stop] = result.to("cpu", out.dtype)
            if progress is not None:
                progress(stop)
    return out
