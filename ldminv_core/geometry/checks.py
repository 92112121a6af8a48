"""Argument checks of the decoder geometry: latents, counts, path names, the decoder's output.

Numbers and names go through :mod:`ldminv_core._validation` (``"<name>: expected <what>, got
<value> (<type>)"``); what is particular to the geometry (a latent batch, a decoder's output
shape, the default chunk of directions, the per-sample random streams) lives here.
"""
from __future__ import annotations

import os
import sys
import warnings
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from .._validation import check_choice, check_int
from ..errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError
from .constants import ENGINES, LOG_VOLUME_KINDS, Decode
from .tangents import VaeDecoder

def _check_latents(z: torch.Tensor) -> torch.Tensor:
    """``z`` (N, C, h, w), non-empty, floating-point and finite, made contiguous."""
    if not isinstance(z, torch.Tensor):
        raise ShapeError(f"z: expected a torch.Tensor of shape (N, C, h, w), got {type(z).__name__}")
    if z.ndim != 4:
        raise ShapeError(f"z: expected a latent batch of shape (N, C, h, w), got shape {tuple(z.shape)}")
    if z.numel() == 0:
        raise EmptyInputError(f"z: expected at least one latent with non-empty (C, h, w), got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise LdminvError(f"z: expected a floating-point tensor, got dtype {z.dtype}")
    bad = ~torch.isfinite(z)
    if bool(bad.any()):
        rows = torch.nonzero(bad.flatten(1).any(1)).flatten().tolist()
        raise NonFiniteError(f"z: latents hold NaN or inf values (samples {rows[:10]})")
    return z.contiguous()


def _auto_chunk(p: int) -> int:
    """Default directions per decoder call: about 260k output values, between 4 and 64
    (up to 256 for images of at most 2048 values).

    Measured on the benchmark decoders (2 CPU threads): per-direction cost is flat from about
    16 to 64 directions and grows 4-6x at 256 (the batch no longer fits the caches); on the
    demo decoder (1x32x32 images, 1 thread) 128-256 directions per call are about 20 % faster
    than 64 (benchmarks/bench_geometry_paths.py).
    """
    cap = 256 if p <= 2048 else 64
    return int(min(cap, max(4, 2**18 // max(1, p))))


def _check_chunk(chunk_size: int | None, p: int) -> int:
    """Directions per decoder call: ``chunk_size`` (an integer >= 1), or :func:`_auto_chunk`."""
    if chunk_size is None:
        return _auto_chunk(p)
    return check_int(chunk_size, "chunk_size", minimum=1)


def _check_k(k: int) -> int:
    """The number of singular values of the top-k log-volume, an integer >= 1."""
    return check_int(k, "k", minimum=1)


def _check_count(value: int, name: str, minimum: int = 1) -> int:
    """A count of probes or steps, an integer >= ``minimum``."""
    return check_int(value, name, minimum=minimum)


def _check_engine(engine: str) -> str:
    """One of :data:`~ldminv_core.geometry.ENGINES`."""
    return check_choice(engine, "engine", ENGINES)


#: The one-line change :func:`_warn_plain_callable` names.
PLAIN_CALLABLE_HINT = (
    "pass geometry.vae_decoder(vae) (or LoadedModel.decoder_fn()) instead of a plain callable for the "
    "layer-by-layer engine (2-3x faster on the demo decoder on a CPU)"
)


def _outside_caller_level() -> int:
    """``stacklevel`` of the first frame outside this package, as seen from the caller of this
    function: a warning then points at the user's line, whichever public function it came through."""
    here = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == here:
        frame, level = frame.f_back, level + 1
    return level


def _warn_plain_callable(decode: Any, engine: str) -> None:
    """A ``UserWarning`` when ``engine="auto"`` meets a decoder that is not a
    :class:`~.tangents.VaeDecoder` (its products go to torch.func); it names the one-line change
    to the layer-by-layer engine. Shown once per calling line (the warnings module's default)."""
    if engine != "auto" or isinstance(decode, VaeDecoder):
        return
    warnings.warn(
        f"ldminv geometry: decode is a plain callable ({type(decode).__name__}), so its JVPs / VJPs are taken "
        f"by torch.func. If it decodes with a diffusers AutoencoderKL, {PLAIN_CALLABLE_HINT}; pass "
        "engine='torch.func' to keep torch.func without this warning.",
        UserWarning, stacklevel=_outside_caller_level(),
    )


def _check_kind(kind: str, name: str = "log_volume") -> str:
    """One of :data:`~ldminv_core.geometry.LOG_VOLUME_KINDS`."""
    return check_choice(kind, name, LOG_VOLUME_KINDS)


def _check_iters(iters: int | None) -> int | None:
    """Krylov blocks after the start block: None (adaptive) or an integer >= 0."""
    if iters is None:
        return None
    return check_int(iters, "iters", minimum=0)


def _sample_ids(sample_ids: Sequence[int] | None, n: int) -> list[int]:
    """The ids keying each sample's random draws: ``sample_ids`` (n of them) or 0..n-1."""
    if sample_ids is None:
        return list(range(n))
    ids = [int(i) for i in sample_ids]
    if len(ids) != n:
        raise ShapeError(f"sample_ids: expected {n} ids (one per latent), got {len(ids)}")
    return ids


def _generator(seed: int, sample_id: int, stream: int) -> torch.Generator:
    """A CPU generator seeded by (seed, sample id, stream): a batch split never changes a draw."""
    state = np.random.SeedSequence([int(seed), int(sample_id), int(stream)]).generate_state(1)[0]
    return torch.Generator("cpu").manual_seed(int(state))


def _probe_decoder(decode: Decode, z: torch.Tensor) -> tuple[int, ...]:
    """Run the decoder on one sample and return its per-sample output shape."""
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            out = decode(z[:1])
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ShapeError(
            f"decode: the decoder cannot take latents of shape {tuple(z.shape[1:])} "
            f"(per sample): {exc}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(
            f"decode: expected a batch of one image for a batch of one latent, got {shape}"
        )
    return tuple(out.shape[1:])
