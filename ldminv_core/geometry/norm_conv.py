"""A GroupNorm (+ SiLU) followed by a convolution, differentiated as one layer.

The tangent of a GroupNorm + SiLU is ``A * t - A * mean_g(t) - B * mean_g(t * xhat)`` (see
:class:`ldminv_core.geometry.basic_layers._NormAct`: A = gamma * rstd * silu'(y), B = A * xhat,
the means per group and direction). A convolution is linear and the two means are one number
per (direction, group), so the convolution of that tangent is

    conv(A * t) - sum_g mean_g(t) * conv(A * 1_g) - sum_g mean_g(t * xhat) * conv(B * 1_g),

where ``conv(A * 1_g)`` and ``conv(B * 1_g)`` (A or B on the channels of group g, zero
elsewhere) depend on the latent only: they are made once per latent in the primal pass
(2 * groups images of one convolution). The directions then take one product, the
convolution, and a rank-2g update of its output (one matrix product), instead of three passes
over the normalised tangent before the convolution: 12 % less time on those layers of the demo
decoder (1 thread). The two group sums themselves are one matrix product of the flattened
directions with a (positions * channels, 2g) matrix made in the primal pass (each group's
indicator, then xhat on it): one pass over the directions instead of three. Used where the
precomputed images and that matrix hold at most :data:`FUSE_MAX_VALUES` values each per latent;
elsewhere (a large decoder) the two layers run one after the other as before. The adjoint is
the two layers' adjoints in turn.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["NormConv", "FUSE_MAX_VALUES"]

#: Largest size (values per latent) of the precomputed images conv(A * 1_g), conv(B * 1_g).
FUSE_MAX_VALUES = 2**18

_CL = torch.channels_last


class NormConv:
    """``norm_act`` (a ``_NormAct``) then ``conv`` (a ``_Conv``) of the layer-by-layer engine."""

    def __init__(self, norm_act: Any, conv: Any) -> None:
        self.norm_act, self.conv = norm_act, conv

    def _group_masks(self, c: int, like: torch.Tensor) -> torch.Tensor:
        """(g, c): 1 where channel c belongs to group g, in ``like``'s dtype and device."""
        g = self.norm_act.groups
        channels = torch.arange(c, device=like.device) // (c // g)
        return (channels == torch.arange(g, device=like.device)[:, None]).to(like)

    def _images(self, st_norm: Any, n: int, c: int, h: int, w: int) -> torch.Tensor:
        """(n, 2g, K): conv(A * 1_g) then conv(B * 1_g) of each latent, channels-last flattened,
        divided by the group's element count (so that the group sums below are means)."""
        a, xhat = st_norm  # (n, h*w, c) each
        g = self.norm_act.groups
        masks = self._group_masks(c, a)
        a4 = a.view(n, 1, h, w, c) * masks.view(1, g, 1, 1, c)
        b4 = (a * xhat).view(n, 1, h, w, c) * masks.view(1, g, 1, 1, c)
        ab = torch.cat([a4, b4], 1).reshape(n * 2 * g, h, w, c).permute(0, 3, 1, 2)
        out = F.conv2d(ab, self.conv.weight, None, **self.conv.kw)
        return out.permute(0, 2, 3, 1).reshape(n, 2 * g, -1) / float(h * w * (c // g))

    def _summing(self, st_norm: Any, n: int, c: int) -> torch.Tensor:
        """(n, h*w*c, 2g): per group, its indicator then xhat on it, channels-last flattened, so
        that one matrix product of the flattened directions gives both group sums."""
        _, xhat = st_norm  # (n, h*w, c)
        g = self.norm_act.groups
        masks = self._group_masks(c, xhat).t()  # (c, g)
        ones = masks.expand(*xhat.shape, g)
        return torch.cat([ones, xhat.unsqueeze(-1) * masks], -1).reshape(n, -1, 2 * g)

    def primal(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        y, st_norm = self.norm_act.primal(x)
        out, st_conv = self.conv.primal(y)
        n, c, h, w = x.shape
        fits = 2 * self.norm_act.groups * max(out[0].numel(), x[0].numel()) <= FUSE_MAX_VALUES
        if not fits:
            return out, (st_norm, st_conv, None, None)
        return out, (st_norm, st_conv, self._images(st_norm, n, c, h, w), self._summing(st_norm, n, c))

    def tangent(self, st: Any, t: torch.Tensor) -> torch.Tensor:
        st_norm, st_conv, images, summing = st
        if images is None:
            return self.conv.tangent(st_conv, self.norm_act.tangent(st_norm, t))
        m, c, h, w = t.shape
        a, _ = st_norm
        flat = t.permute(0, 2, 3, 1).reshape(m, h * w * c)  # a view for channels-last t
        sums = flat @ summing[0]  # (m, 2g): each group's sum of t, then of t * xhat
        scaled = (flat.view(m, h * w, c) * a).view(m, h, w, c).permute(0, 3, 1, 2)
        out = self.conv.tangent(st_conv, scaled).contiguous(memory_format=_CL)
        out_flat = out.permute(0, 2, 3, 1).view(m, -1)  # a view: the update lands in ``out``
        out_flat.addmm_(sums, images[0], alpha=-1.0)
        return out

    def adjoint(self, st: Any, g: torch.Tensor) -> torch.Tensor:
        st_norm, st_conv, _, _ = st
        return self.norm_act.adjoint(st_norm, self.conv.adjoint(st_conv, g))
