"""The two basic layers of the layer-by-layer decoder products: a convolution and a GroupNorm
(optionally followed by SiLU), each with its primal pass, tangent (forward) and adjoint (reverse)
map, and the checks that a module is exactly the plain layer these maps assume.

Used by :mod:`.tangents` (the decoder's blocks) and :mod:`.norm_conv` (the two fused). Tangents
and adjoints are batches of directions in channels-last memory format.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["_Unsupported", "_require", "_plain", "_Conv", "_NormAct"]

_CL = torch.channels_last


class _Unsupported(Exception):
    """A module of the decoder has no hand-written derivative here (message: which, why)."""


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise _Unsupported(what)


def _plain(module: nn.Module, cls: type | tuple[type, ...], where: str) -> None:
    """``module`` is exactly ``cls`` (no subclass, e.g. a LoRA wrapper), in eval mode, hook-free."""
    classes = cls if isinstance(cls, tuple) else (cls,)
    _require(type(module) in classes, f"{where} is a {type(module).__name__}, not {'/'.join(c.__name__ for c in classes)}")
    _require(not module.training, f"{where} is in training mode")
    _require(not (module._forward_hooks or module._forward_pre_hooks), f"{where} has forward hooks")


class _Conv:
    """``Conv2d``: y = conv(x) + b; derivative conv(t) (channels-last weight)."""

    def __init__(self, conv: nn.Module, where: str) -> None:
        _plain(conv, nn.Conv2d, where)
        _require(conv.padding_mode == "zeros", f"{where} pads with {conv.padding_mode!r}")
        _require(isinstance(conv.padding, tuple), f"{where} uses padding={conv.padding!r}")
        self.conv = conv
        self.kw = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups)
        self.weight = conv.weight.detach().contiguous(memory_format=_CL)

    def primal(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        return self.conv(x), tuple(x.shape[1:])

    def tangent(self, st: Any, t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, self.weight, None, **self.kw)

    def adjoint(self, st: Any, g: torch.Tensor) -> torch.Tensor:
        return torch.nn.grad.conv2d_input((g.shape[0], *st), self.weight, g, **self.kw)


class _NormAct:
    """``GroupNorm`` optionally followed by SiLU, on (N, C, H, W) tensors.

    With xhat the normalised input, y = gamma * xhat + beta and s = silu(y) (or y), the
    derivative along t is A * (t - mean_g t) - B * mean_g(t * xhat), where the means run over
    each group's channels and positions, A = gamma * rstd * silu'(y) and B = A * xhat. Kept per
    latent: A and xhat (two activation-sized tensors).
    """

    def __init__(self, norm: nn.Module, act: nn.Module | None, where: str) -> None:
        _plain(norm, nn.GroupNorm, where)
        _require(norm.affine, f"{where} has no affine parameters")
        if act is not None:
            _plain(act, nn.SiLU, f"{where}'s activation")
        self.norm, self.act = norm, act
        self.groups = int(norm.num_groups)

    def primal(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        n, c, h, w = x.shape
        g = self.groups
        xg = x.reshape(n, g, -1)
        var, mean = torch.var_mean(xg, dim=-1, correction=0, keepdim=True)
        rstd = torch.rsqrt(var + self.norm.eps)
        xhat = ((xg - mean) * rstd).reshape(n, c, h, w)
        gamma = self.norm.weight.view(1, c, 1, 1)
        y = xhat * gamma + self.norm.bias.view(1, c, 1, 1)
        scale = gamma * rstd.reshape(n, g, 1).repeat_interleave(c // g, dim=1).view(n, c, 1, 1)
        if self.act is not None:
            sig = torch.sigmoid(y)
            out = y * sig
            scale = scale * (sig * (1.0 + y * (1.0 - sig)))
        else:
            out = y
        # (n, H*W, C) channels-last views of the primal coefficients (a tangent takes one sample's).
        a = scale.expand(n, c, h, w)
        st = tuple(u.permute(0, 2, 3, 1).reshape(n, h * w, c).contiguous() for u in (a, xhat))
        return out, st

    def tangent(self, st: Any, t: torch.Tensor) -> torch.Tensor:
        m, c, h, w = t.shape
        a, xhat = st
        g = self.groups
        count = float(h * w * (c // g))
        t3 = t.permute(0, 2, 3, 1).reshape(m, h * w, c)  # a view for channels-last t
        mu = t3.sum(1).view(m, g, -1).sum(-1, keepdim=True) / count
        nu = (t3 * xhat).sum(1).view(m, g, -1).sum(-1, keepdim=True) / count
        mu = mu.expand(m, g, c // g).reshape(m, 1, c)
        nu = nu.expand(m, g, c // g).reshape(m, 1, c)
        out = (t3 - mu).addcmul_(nu, xhat, value=-1.0).mul_(a)
        return out.view(m, h, w, c).permute(0, 3, 1, 2)

    def adjoint(self, st: Any, g: torch.Tensor) -> torch.Tensor:
        """The transpose: with ag = A * g, ag - mean_g(ag) - xhat * mean_g(ag * xhat)."""
        m, c, h, w = g.shape
        a, xhat = st
        gr = self.groups
        count = float(h * w * (c // gr))
        ag = g.permute(0, 2, 3, 1).reshape(m, h * w, c) * a
        mu = ag.sum(1).view(m, gr, -1).sum(-1, keepdim=True) / count
        nu = (ag * xhat).sum(1).view(m, gr, -1).sum(-1, keepdim=True) / count
        mu = mu.expand(m, gr, c // gr).reshape(m, 1, c)
        nu = nu.expand(m, gr, c // gr).reshape(m, 1, c)
        ag.sub_(mu).addcmul_(nu, xhat, value=-1.0)
        return ag.view(m, h, w, c).permute(0, 3, 1, 2)
