"""Influence for display: per-position maps over latent channels, and heatmaps at image size.

- :func:`influence_map`: (N, C, h, w) -> (N, h, w), the mean, max or total influence of each
  latent position over its channels;
- :func:`influence_heatmap`: the same, upsampled (bilinear) to an image's (H, W).

Both take and return torch tensors or numpy arrays alike.
"""
from __future__ import annotations

import numpy as np
import torch

from .._validation import check_choice
from ..errors import LdminvError, ShapeError

__all__ = ["influence_map", "influence_heatmap"]

_REDUCTIONS = ("mean", "max", "total")


def _as_tensor(x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, bool]:
    """``x`` as a tensor, and whether it came as a numpy array (to give one back)."""
    if isinstance(x, torch.Tensor):
        return x, False
    return torch.as_tensor(np.asarray(x)), True


def influence_map(influence: torch.Tensor | np.ndarray, *, reduce: str = "mean") -> torch.Tensor | np.ndarray:
    """Aggregate influence over latent channels into a per-position map.

    Args:
        influence: (N, C, h, w) or (C, h, w) influence (0.5 * log G_ii), torch or numpy.
        reduce: "mean" (mean log-influence over channels), "max", or "total"
            (0.5 * log sum_c G_ii: the influence of the whole position).

    Returns:
        (N, h, w) or (h, w), the same array type as the input.
    """
    x, was_numpy = _as_tensor(influence)
    if x.ndim not in (3, 4):
        raise ShapeError(f"influence: expected shape (N, C, h, w) or (C, h, w), got {tuple(x.shape)}")
    check_choice(reduce, "reduce", _REDUCTIONS)
    x = x.to(torch.float32)
    dim = x.ndim - 3
    if reduce == "mean":
        out = x.mean(dim)
    elif reduce == "max":
        out = x.amax(dim)
    else:
        out = 0.5 * torch.logsumexp(2.0 * x, dim)
    return out.numpy() if was_numpy else out


def influence_heatmap(influence: torch.Tensor | np.ndarray, *, size: tuple[int, int],
                      reduce: str | None = "mean") -> torch.Tensor | np.ndarray:
    """Upsample influence to image size for display over the image.

    Args:
        influence: (N, C, h, w) or (C, h, w), torch or numpy.
        size: (H, W) output size (bilinear, align_corners=False).
        reduce: channel aggregation as in :func:`influence_map`, or None to keep channels.

    Returns:
        (N, H, W) / (H, W) when reduced, (N, C, H, W) / (C, H, W) when ``reduce`` is None;
        the same array type as the input.
    """
    x, was_numpy = _as_tensor(influence)
    if x.ndim not in (3, 4):
        raise ShapeError(f"influence: expected shape (N, C, h, w) or (C, h, w), got {tuple(x.shape)}")
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise LdminvError(f"size: expected (H, W) with positive entries, got {size!r}")
    single = x.ndim == 3
    x = x.to(torch.float32)
    if single:
        x = x.unsqueeze(0)
    if reduce is not None:
        x = influence_map(x, reduce=reduce).unsqueeze(1)
    up = torch.nn.functional.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
    if reduce is not None:
        up = up[:, 0]
    if single:
        up = up[0]
    return up.numpy() if was_numpy else up
