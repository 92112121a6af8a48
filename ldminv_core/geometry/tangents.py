"""Jacobian-vector products of diffusers' ``AutoencoderKL`` decoder, layer by layer.

:mod:`ldminv_core.geometry` needs ``J(z) V`` for many directions ``V`` at one latent ``z``
(the exact path: every coordinate direction). ``torch.func.vmap(jvp(...))`` does this for any
callable, but it carries dual tensors through every operation, and on a CPU its batched
forward-mode GroupNorm and its NCHW convolutions cost more than the decoder's own forward
pass on the same batch (``benchmarks/bench_geometry_paths.py``, section ``engines``).

Here the decoder is linearised by hand, once per latent:

1. one primal pass at ``z`` (batch 1) records what each layer's derivative needs: the
   normalised activations and the SiLU slopes of every GroupNorm, the attention
   probabilities, queries, keys and values;
2. the directions then go through the layers' derivatives as an ordinary batch: a
   convolution's derivative is the same convolution without bias, nearest upsampling is
   itself, a GroupNorm + SiLU is ``A * (t - mean_g t) - B * mean_g(t * xhat)`` with ``A``, ``B``
   from step 1, attention follows the product rule through the softmax.

Two pairs of layers are differentiated as one: a GroupNorm + SiLU and the convolution after
it (:mod:`.norm_conv`), and a nearest x2 upsampling and its convolution (one convolution at
the input's resolution, :mod:`.subpixel`). Directions travel in channels-last memory format,
where oneDNN's convolutions with few channels are fastest on a CPU. The result is the same ``J V`` (to float32 rounding); tests
compare it with ``torch.autograd.functional.jacobian`` on random decoders of several
layouts.

Only the layers of the standard ``AutoencoderKL`` decoder are known (``Decoder`` with
``UNetMidBlock2D`` / ``UpDecoderBlock2D``, ``ResnetBlock2D``, ``Upsample2D``, ``Attention``,
``GroupNorm``, ``SiLU``, ``Conv2d``, ``Linear``). :func:`unsupported_reason` says why another
decoder (a spatial-norm decoder, hooks, tiling, a training-mode module, another activation)
is not, and :mod:`ldminv_core.geometry` then uses ``torch.func`` as before.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LdminvError, ModelKindError
from .basic_layers import _Conv, _NormAct, _plain, _require, _Unsupported
from .norm_conv import NormConv
from .subpixel import subpixel_conv

__all__ = ["VaeDecoder", "vae_decoder", "TangentEngine", "DecoderLinearization", "unsupported_reason", "verify", "engine_for",
           "VERIFY_RTOL"]

_CL = torch.channels_last


class VaeDecoder:
    """The decoder of scaled latents: ``z -> vae.decode(z / scaling_factor + shift_factor).sample``.

    A plain callable (latents (N, C, h, w) -> images (N, *image)) that also carries the VAE, so
    that :mod:`ldminv_core.geometry` can take the layer-by-layer JVPs of this module when the
    decoder is one it knows.
    """

    def __init__(self, vae: nn.Module, *, scaling_factor: float, shift_factor: float | None = None) -> None:
        self.vae = vae
        self.scaling_factor = float(scaling_factor)
        self.shift_factor = float(shift_factor) if shift_factor else 0.0
        self._engine: tuple[Any, str] | None = None  # set by engine_for

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        x = z / self.scaling_factor
        if self.shift_factor:
            x = x + self.shift_factor
        return self.vae.decode(x).sample

    def __repr__(self) -> str:
        return (f"VaeDecoder({type(self.vae).__name__}, scaling_factor={self.scaling_factor:g}, "
                f"shift_factor={self.shift_factor:g})")


def _config_factor(vae: nn.Module, name: str) -> float | None:
    """``vae.config.<name>`` (a diffusers config: attribute or mapping), or None when absent."""
    config = getattr(vae, "config", None)
    if config is None:
        return None
    value = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
    return None if value is None else float(value)


def vae_decoder(vae: nn.Module, *, scaling_factor: float | None = None,
                shift_factor: float | None = None) -> VaeDecoder:
    """The decoder of scaled latents of a diffusers ``AutoencoderKL``, for the fast geometry engine.

    ``geometry.decoder_geometry(geometry.vae_decoder(vae), z)`` computes what
    ``decoder_geometry(lambda z: vae.decode(z / sf + shift).sample, z)`` does, but through the
    layer-by-layer JVPs / VJPs of this module (checked against torch.func at the first latent)
    instead of torch.func: the demo's default geometry per sample took 0.24-0.42 s against
    0.51-0.77 s through the plain callable (1 thread, load 3.2; 1.8-2.1x); against the paper's
    own functions, benchmarks/bench_paper_geometry.py (1 thread, load 3.8-6.5): 28x wall, 24x CPU.

    Args:
        vae: the diffusers ``AutoencoderKL`` (any ``nn.Module`` with ``decode(x).sample``; one
            the engine does not know runs on torch.func, see :func:`unsupported_reason`).
        scaling_factor: latents are ``(encoder mean - shift_factor) * scaling_factor``; default
            ``vae.config.scaling_factor``.
        shift_factor: default ``vae.config.shift_factor`` (0 when the config has none).

    Returns:
        :class:`VaeDecoder`: latents (N, C, h, w) -> images (N, 3, H, W).

    Raises:
        ModelKindError: ``vae`` is not an ``nn.Module``.
        LdminvError: no ``scaling_factor`` given and ``vae.config`` has none.
    """
    if not isinstance(vae, nn.Module):
        raise ModelKindError(f"vae: expected a torch.nn.Module (a diffusers AutoencoderKL), got {type(vae).__name__}")
    scale = _config_factor(vae, "scaling_factor") if scaling_factor is None else float(scaling_factor)
    if scale is None:
        raise LdminvError(f"scaling_factor: expected a number (vae.config of this {type(vae).__name__} has no "
                          "scaling_factor), got None")
    if not (math.isfinite(scale) and scale != 0.0):
        raise LdminvError(f"scaling_factor: expected a finite non-zero number, got {scale!r}")
    shift = _config_factor(vae, "shift_factor") if shift_factor is None else float(shift_factor)
    return VaeDecoder(vae, scaling_factor=scale, shift_factor=shift)


# ----------------------------------------------------------------------------- layers


class _Resnet:
    """``ResnetBlock2D`` without time embedding: norm1-SiLU-conv1-norm2-SiLU-conv2 + shortcut."""

    def __init__(self, block: nn.Module, where: str) -> None:
        from diffusers.models.resnet import ResnetBlock2D

        _plain(block, ResnetBlock2D, where)
        _require(block.upsample is None and block.downsample is None, f"{where} resamples")
        _require(block.time_emb_proj is None, f"{where} takes a time embedding")
        # Without a time embedding every norm kind but "scale_shift" (which needs one) is norm2.
        _require(block.time_embedding_norm != "scale_shift", f"{where} uses scale-shift norm")
        self.na1 = _NormAct(block.norm1, block.nonlinearity, f"{where}.norm1")
        self.conv1 = _Conv(block.conv1, f"{where}.conv1")
        self.na2 = _NormAct(block.norm2, block.nonlinearity, f"{where}.norm2")
        _plain(block.dropout, nn.Dropout, f"{where}.dropout")
        self.conv2 = _Conv(block.conv2, f"{where}.conv2")
        self.main = [NormConv(self.na1, self.conv1), NormConv(self.na2, self.conv2)]
        self.shortcut = _Conv(block.conv_shortcut, f"{where}.conv_shortcut") if block.conv_shortcut is not None else None
        self.scale = float(block.output_scale_factor)

    def primal(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        h, st_main = (main := _Chain(self.main)).primal(x)
        skip, st_skip = self.shortcut.primal(x) if self.shortcut is not None else (x, None)
        return (skip + h) / self.scale, (main, st_main, st_skip)

    def tangent(self, st: Any, t: torch.Tensor) -> torch.Tensor:
        main, st_main, st_skip = st
        h = main.tangent(st_main, t)
        skip = self.shortcut.tangent(st_skip, t) if self.shortcut is not None else t
        out = h.add_(skip)
        return out.div_(self.scale) if self.scale != 1.0 else out

    def adjoint(self, st: Any, g: torch.Tensor) -> torch.Tensor:
        main, st_main, st_skip = st
        if self.scale != 1.0:
            g = g / self.scale
        h = main.adjoint(st_main, g)
        skip = self.shortcut.adjoint(st_skip, g) if self.shortcut is not None else g
        return h.add_(skip)


class _Upsample:
    """``Upsample2D`` (nearest, x2) with its optional convolution."""

    def __init__(self, up: nn.Module, where: str) -> None:
        from diffusers.models.upsampling import Upsample2D

        _plain(up, Upsample2D, where)
        _require(up.norm is None and not up.use_conv_transpose and up.interpolate, f"{where} is not nearest x2")
        conv = (up.conv if up.name == "conv" else up.Conv2d_0) if up.use_conv else None
        self.conv = _Conv(conv, f"{where}.conv") if conv is not None else None
        # the tangent: one convolution at the input's resolution (:mod:`.subpixel`) where it applies
        self.fused = subpixel_conv(conv) if conv is not None else None

    def primal(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv.primal(x) if self.conv is not None else (x, None)

    def tangent(self, st: Any, t: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(t)
        t = F.interpolate(t, scale_factor=2.0, mode="nearest")
        return self.conv.tangent(st, t) if self.conv is not None else t

    def adjoint(self, st: Any, g: torch.Tensor) -> torch.Tensor:
        if self.conv is not None:
            g = self.conv.adjoint(st, g)
        return F.avg_pool2d(g, 2).mul_(4.0)  # each input pixel feeds a 2x2 block


class _Attention:
    """Spatial self-attention (``Attention`` with a GroupNorm, as in the VAE's mid block)."""

    def __init__(self, attn: nn.Module, where: str) -> None:
        from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

        _plain(attn, Attention, where)
        _require(type(attn.processor) in (AttnProcessor, AttnProcessor2_0),
                 f"{where} uses the {type(attn.processor).__name__} processor")
        _require(attn.spatial_norm is None and attn.norm_q is None and attn.norm_k is None
                 and not attn.is_cross_attention and attn.group_norm is not None,
                 f"{where} is not a plain group-normed self-attention")
        for name in ("to_q", "to_k", "to_v"):
            _plain(getattr(attn, name), nn.Linear, f"{where}.{name}")
        _plain(attn.to_out[0], nn.Linear, f"{where}.to_out.0")
        _plain(attn.to_out[1], nn.Dropout, f"{where}.to_out.1")
        head_dim = attn.to_q.out_features // attn.heads
        # AttnProcessor2_0 calls SDPA with its default scale; AttnProcessor uses attn.scale.
        self.sm_scale = 1.0 / math.sqrt(head_dim) if type(attn.processor) is AttnProcessor2_0 else float(attn.scale)
        self.attn = attn
        self.heads = int(attn.heads)
        self.norm = _NormAct(attn.group_norm, None, f"{where}.group_norm")

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(n, L, heads * e) -> (n, heads, L, e)."""
        n, length, inner = x.shape
        return x.view(n, length, self.heads, inner // self.heads).transpose(1, 2)

    def primal(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        a = self.attn
        n, c, h, w = x.shape
        hn, st_norm = self.norm.primal(x)
        hs = hn.reshape(n, c, h * w).transpose(1, 2)
        q, k, v = (self._split(lin(hs)) for lin in (a.to_q, a.to_k, a.to_v))
        p = torch.softmax((q @ k.transpose(-1, -2)) * self.sm_scale, dim=-1)
        o = (p @ v).transpose(1, 2).reshape(n, h * w, -1)
        out = a.to_out[0](o).transpose(1, 2).reshape(n, c, h, w)
        if a.residual_connection:
            out = out + x
        return out / a.rescale_output_factor, (st_norm, q, k, v, p)

    def tangent(self, st: Any, t: torch.Tensor) -> torch.Tensor:
        a = self.attn
        m, c, h, w = t.shape
        st_norm, q, k, v, p = st
        dh = self.norm.tangent(st_norm, t).permute(0, 2, 3, 1).reshape(m, h * w, c)
        dq, dk, dv = (self._split(F.linear(dh, lin.weight)) for lin in (a.to_q, a.to_k, a.to_v))
        ds = (dq @ k.transpose(-1, -2)).add_(q @ dk.transpose(-1, -2)).mul_(self.sm_scale)
        dp = ds.mul_(p)
        dp.addcmul_(p, dp.sum(-1, keepdim=True), value=-1.0)  # p * (ds - sum_j p ds)
        do = (dp @ v).add_(p @ dv)
        o = F.linear(do.transpose(1, 2).reshape(m, h * w, -1), a.to_out[0].weight)
        out = o.view(m, h, w, c).permute(0, 3, 1, 2)
        if a.residual_connection:
            out = out + t
        return out / a.rescale_output_factor if a.rescale_output_factor != 1.0 else out

    def adjoint(self, st: Any, g: torch.Tensor) -> torch.Tensor:
        a = self.attn
        m, c, h, w = g.shape
        st_norm, q, k, v, p = st
        if a.rescale_output_factor != 1.0:
            g = g / a.rescale_output_factor
        go = g.permute(0, 2, 3, 1).reshape(m, h * w, c)
        do = self._split(go @ a.to_out[0].weight)  # (m, heads, L, e)
        dp = do @ v.transpose(-1, -2)
        dv = p.transpose(-1, -2) @ do
        ds = dp.mul_(p)
        ds.addcmul_(p, ds.sum(-1, keepdim=True), value=-1.0).mul_(self.sm_scale)
        dq = ds @ k
        dk = ds.transpose(-1, -2) @ q

        def merge(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(1, 2).reshape(m, h * w, -1)

        dh = merge(dq) @ a.to_q.weight
        dh = dh.add_(merge(dk) @ a.to_k.weight).add_(merge(dv) @ a.to_v.weight)
        out = self.norm.adjoint(st_norm, dh.view(m, h, w, c).permute(0, 3, 1, 2))
        if a.residual_connection:
            out = out + g
        return out


class _Chain:
    """The decoder as a list of layers applied in order."""

    def __init__(self, layers: list[Any]) -> None:
        self.layers = layers

    def primal(self, x: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        states = []
        for layer in self.layers:
            x, st = layer.primal(x)
            states.append(st)
        return x, states

    def tangent(self, states: list[Any], t: torch.Tensor) -> torch.Tensor:
        for layer, st in zip(self.layers, states):
            t = layer.tangent(st, t)
        return t

    def adjoint(self, states: list[Any], g: torch.Tensor) -> torch.Tensor:
        for layer, st in zip(reversed(self.layers), reversed(states)):
            g = layer.adjoint(st, g)
        return g


def _build(decode: VaeDecoder) -> _Chain:
    from diffusers import AutoencoderKL
    from diffusers.models.autoencoders.vae import Decoder
    from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, UpDecoderBlock2D

    vae = decode.vae
    _plain(vae, AutoencoderKL, "vae")
    _require(not getattr(vae, "use_tiling", False), "vae has tiled decoding on")
    _require(not getattr(vae, "use_slicing", False), "vae has sliced decoding on")
    layers: list[Any] = []
    if vae.post_quant_conv is not None:
        layers.append(_Conv(vae.post_quant_conv, "vae.post_quant_conv"))
    dec = vae.decoder
    _plain(dec, Decoder, "vae.decoder")
    layers.append(_Conv(dec.conv_in, "decoder.conv_in"))
    mid = dec.mid_block
    _plain(mid, UNetMidBlock2D, "decoder.mid_block")
    layers.append(_Resnet(mid.resnets[0], "mid_block.resnets.0"))
    for i, (attn, res) in enumerate(zip(mid.attentions, mid.resnets[1:])):
        if attn is not None:
            layers.append(_Attention(attn, f"mid_block.attentions.{i}"))
        layers.append(_Resnet(res, f"mid_block.resnets.{i + 1}"))
    for b, block in enumerate(dec.up_blocks):
        _plain(block, UpDecoderBlock2D, f"decoder.up_blocks.{b}")
        for r, res in enumerate(block.resnets):
            layers.append(_Resnet(res, f"up_blocks.{b}.resnets.{r}"))
        for u, up in enumerate(block.upsamplers or []):
            layers.append(_Upsample(up, f"up_blocks.{b}.upsamplers.{u}"))
    layers.append(NormConv(_NormAct(dec.conv_norm_out, dec.conv_act, "decoder.conv_norm_out"),
                           _Conv(dec.conv_out, "decoder.conv_out")))
    return _Chain(layers)


def unsupported_reason(decode: Any) -> str | None:
    """Why :class:`TangentEngine` cannot take ``decode``, or None when it can.

    ``decode`` must be a :class:`VaeDecoder` over a diffusers ``AutoencoderKL`` in eval mode
    whose decoder uses only the standard layers (module docstring), without hooks or
    tiled / sliced decoding.
    """
    if not isinstance(decode, VaeDecoder):
        return f"the decoder is a {type(decode).__name__}, not a VaeDecoder"
    try:
        _build(decode)
    except _Unsupported as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - an unknown layout: the generic path handles it
        return f"unexpected decoder layout ({type(exc).__name__}: {exc})"
    return None


class DecoderLinearization:
    """The decoder linearised at one latent: ``jvp(V)`` = J(z) V for a batch of directions.

    Attributes:
        output: (1, *image) the decoder's output at z (from the linearisation's own primal pass).
    """

    def __init__(self, chain: _Chain, states: list[Any], latent_shape: tuple[int, ...], scale: float,
                 output: torch.Tensor) -> None:
        self._chain = chain
        self._states = states
        self._scale = scale
        self.latent_shape = latent_shape
        self.output = output

    @torch.no_grad()
    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J(z) v for each direction: (m, C, h, w) -> (m, *image), float32, contiguous."""
        if tuple(v.shape[1:]) != self.latent_shape:
            raise ValueError(f"v: expected directions of shape (m, {', '.join(map(str, self.latent_shape))}), "
                             f"got {tuple(v.shape)}")
        t = (v / self._scale).contiguous(memory_format=_CL)
        return self._chain.tangent(self._states, t).contiguous()

    @torch.no_grad()
    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """J(z)^T u for each cotangent: (m, *image) -> (m, C, h, w), float32, contiguous."""
        if tuple(u.shape[1:]) != tuple(self.output.shape[1:]):
            raise ValueError(f"u: expected cotangents of shape (m, {', '.join(map(str, self.output.shape[1:]))}), "
                             f"got {tuple(u.shape)}")
        g = u.contiguous(memory_format=_CL)
        return (self._chain.adjoint(self._states, g) / self._scale).contiguous()


class TangentEngine:
    """Layer-by-layer JVPs of one :class:`VaeDecoder` (module docstring).

    Built once per decoder (the structure is checked and the convolution weights are copied to
    channels-last here: change the VAE's weights and build a new engine); :meth:`linearize`
    then costs one primal pass per latent. Linearisations keep their own state, so several
    may be used at once.

    Raises:
        ValueError: the decoder is not one this module knows (:func:`unsupported_reason`).
    """

    def __init__(self, decode: VaeDecoder) -> None:
        if not isinstance(decode, VaeDecoder):
            raise ValueError(f"decode: expected a VaeDecoder, got {type(decode).__name__}")
        try:
            self._chain = _build(decode)
        except _Unsupported as exc:
            raise ValueError(f"decode: no layer-by-layer JVP for this decoder: {exc}") from None
        self.decode = decode

    @torch.no_grad()
    def linearize(self, z1: torch.Tensor) -> DecoderLinearization:
        """Linearise the decoder at one latent ``z1`` (C, h, w) or (1, C, h, w)."""
        z = z1.unsqueeze(0) if z1.ndim == 3 else z1
        if z.ndim != 4 or z.shape[0] != 1:
            raise ValueError(f"z1: expected one latent of shape (C, h, w) or (1, C, h, w), got {tuple(z1.shape)}")
        return self.linearize_many(z)[0]

    @torch.no_grad()
    def linearize_many(self, z: torch.Tensor) -> list[DecoderLinearization]:
        """Linearise the decoder at each latent of ``z`` (n, C, h, w) in one primal pass of batch n."""
        if z.ndim != 4:
            raise ValueError(f"z: expected latents of shape (n, C, h, w), got {tuple(z.shape)}")
        d = self.decode
        x = z / d.scaling_factor
        if d.shift_factor:
            x = x + d.shift_factor
        out, states = self._chain.primal(x)
        return [DecoderLinearization(self._chain, _take(states, i), tuple(z.shape[1:]), d.scaling_factor,
                                     out[i : i + 1]) for i in range(z.shape[0])]


def _take(state: Any, i: int) -> Any:
    """Sample ``i`` of a batched primal state: every tensor's row i (a view), the rest as is."""
    if isinstance(state, torch.Tensor):
        return state[i : i + 1]
    if isinstance(state, (tuple, list)):
        return type(state)(_take(s, i) for s in state)
    return state


#: Largest relative difference from torch.func's products that :func:`engine_for` accepts.
VERIFY_RTOL = 1e-4


def _torch_func_products(decode: Any, z1: torch.Tensor, v: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(J v, J^T u) of ``decode`` at z1 (1, C, h, w) by torch.func, one direction at a time."""
    from torch.func import jvp, vjp
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def single(x: torch.Tensor) -> torch.Tensor:
        return decode(x.unsqueeze(0)).squeeze(0)

    with sdpa_kernel(SDPBackend.MATH):
        jv = torch.stack([jvp(single, (z1[0],), (vi,))[1] for vi in v])
        pullback = vjp(single, z1[0])[1]
        ju = torch.stack([pullback(ui)[0] for ui in u])
    return jv.detach(), ju.detach()


def verify(engine: TangentEngine, z1: torch.Tensor, *, directions: int = 2, seed: int = 0) -> float:
    """Largest relative difference (Frobenius) between the engine's J v, J^T u and torch.func's.

    ``directions`` Gaussian directions and cotangents at the latent z1 (1, C, h, w).
    """
    z = z1.unsqueeze(0) if z1.ndim == 3 else z1
    lin = engine.linearize(z)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(directions, *z.shape[1:], generator=gen).to(z)
    u = torch.randn(directions, *lin.output.shape[1:], generator=gen).to(z)
    jv, ju = _torch_func_products(engine.decode, z, v, u)
    errs = [float((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny))
            for a, b in ((lin.jvp(v), jv), (lin.vjp(u), ju))]
    return max(errs)


def engine_for(decode: Any, z1: torch.Tensor) -> tuple[TangentEngine | None, str]:
    """The layer-by-layer engine of ``decode`` once checked against torch.func, or None, and why.

    The first call for a :class:`VaeDecoder` builds the engine and compares its products with
    torch.func's at ``z1`` (:func:`verify`, two directions each); the outcome is kept on the
    decoder, so later calls cost nothing. A decoder the engine does not know (any other
    callable, another layout) gives None and the reason; one whose products differ by more
    than :data:`VERIFY_RTOL` gives None and a ``RuntimeWarning``.
    """
    if not isinstance(decode, VaeDecoder):
        return None, f"the decoder is a {type(decode).__name__}, not a VaeDecoder"
    cached = getattr(decode, "_engine", None)
    if cached is not None:
        return cached
    reason = unsupported_reason(decode)
    if reason is not None:
        decode._engine = (None, reason)
        return decode._engine
    engine = TangentEngine(decode)
    err = verify(engine, z1)
    if not err <= VERIFY_RTOL:
        reason = (f"its products differ from torch.func's by {err:.2e} (relative; at most {VERIFY_RTOL:g} "
                  "accepted)")
        warnings.warn(f"layer-by-layer decoder JVPs not used: {reason}; using torch.func", RuntimeWarning,
                      stacklevel=2)
        decode._engine = (None, reason)
    else:
        decode._engine = (engine, f"checked against torch.func at the first latent (relative difference {err:.1e})")
    return decode._engine
