"""Layer-by-layer decoder products (ldminv_core.geometry.tangents) against autograd oracles.

The oracle is ``torch.autograd.functional.jacobian`` (reverse mode, one backward pass per
output value), independent of both the hand-written derivatives and torch.func's forward mode.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from diffusers import AutoencoderKL
from diffusers.models.attention_processor import AttnProcessor

from ldminv_core import geometry as geo
from ldminv_core.geometry import tangents
from ldminv_core.errors import UnknownNameError
from ldminv_core.geometry.tangents import TangentEngine, VaeDecoder, engine_for, unsupported_reason

SF = 0.7


def _vae(*, image_channels=1, blocks=(8, 16), layers=1, groups=4, attention=True, post_quant=True, seed=0):
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=image_channels, out_channels=image_channels, latent_channels=4,
        block_out_channels=blocks, down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks), layers_per_block=layers,
        norm_num_groups=groups, sample_size=8, mid_block_add_attention=attention,
        use_post_quant_conv=post_quant,
    ).eval().requires_grad_(False)
    # random GroupNorm affine parameters, so that gamma / beta enter the derivative
    gen = torch.Generator().manual_seed(seed + 100)
    for m in vae.decoder.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=gen))
            m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=gen))
    return vae


LAYOUTS = {
    "gray-attention": dict(),
    "rgb-3-levels-2-layers": dict(image_channels=3, blocks=(4, 8, 8), layers=2, groups=2),
    "no-attention-no-post-quant": dict(attention=False, post_quant=False),
    "plain-attention-processor": dict(seed=3),
}


def _oracle(decode, z1: torch.Tensor) -> torch.Tensor:
    """(P, d) float64 Jacobian of decode at one latent (C, h, w), reverse mode."""
    jac = torch.autograd.functional.jacobian(lambda x: decode(x[None])[0], z1)
    return jac.reshape(-1, z1.numel()).double()


@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.slow
def test_jvp_and_vjp_match_the_autograd_jacobian(name):
    vae = _vae(**LAYOUTS[name])
    if name == "plain-attention-processor":
        vae.set_attn_processor(AttnProcessor())
    decode = VaeDecoder(vae, scaling_factor=SF, shift_factor=0.25 if name == "gray-attention" else None)
    assert unsupported_reason(decode) is None
    z1 = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(1))  # non-square, odd: no shape is special
    jac = _oracle(decode, z1)
    p, d = jac.shape
    lin = TangentEngine(decode).linearize(z1)
    with torch.no_grad():
        assert torch.allclose(lin.output, decode(z1[None]), rtol=1e-5, atol=1e-5)
    cols = lin.jvp(torch.eye(d).reshape(d, *z1.shape)).reshape(d, p).T.double()
    rows = lin.vjp(torch.eye(p).reshape(p, *lin.output.shape[1:])).reshape(p, d).double()
    scale = jac.abs().max()
    assert float((cols - jac).abs().max() / scale) < 1e-5
    assert float((rows - jac).abs().max() / scale) < 1e-5
    assert lin.jvp(torch.randn(3, *z1.shape)).is_contiguous()


def test_the_plain_layers_behind_the_fused_ones_match_the_autograd_jacobian(monkeypatch):
    """With the fusions off (GroupNorm + SiLU + convolution as one layer, upsampling + convolution
    as one low-resolution convolution), the layers one after the other give the same Jacobian."""
    from ldminv_core.geometry import norm_conv

    vae = _vae(**LAYOUTS["rgb-3-levels-2-layers"])
    decode = VaeDecoder(vae, scaling_factor=SF)
    z1 = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(4))
    jac = _oracle(decode, z1)
    p, d = jac.shape
    eye = torch.eye(d).reshape(d, *z1.shape)
    fused_engine = TangentEngine(decode)
    ups = [layer for layer in fused_engine._chain.layers if isinstance(layer, tangents._Upsample)]
    assert ups and all(up.fused is not None for up in ups)
    fused = fused_engine.linearize(z1).jvp(eye).reshape(d, p).T.double()
    monkeypatch.setattr(norm_conv, "FUSE_MAX_VALUES", 0)
    plain_engine = TangentEngine(decode)
    for up in plain_engine._chain.layers:
        if isinstance(up, tangents._Upsample):
            up.fused = None
    lin = plain_engine.linearize(z1)
    assert all(st[2] is None for layer, st in zip(lin._chain.layers, lin._states) if isinstance(layer, norm_conv.NormConv))
    plain = lin.jvp(eye).reshape(d, p).T.double()
    scale = jac.abs().max()
    for cols in (fused, plain):
        assert float((cols - jac).abs().max() / scale) < 1e-5


@pytest.mark.slow
def test_decoder_geometry_takes_the_layerwise_products_and_matches_torch_func():
    """Every geometry path gives the same numbers with either engine (same seeds, same paths)."""
    vae = _vae(seed=5)
    decode = VaeDecoder(vae, scaling_factor=SF)
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    for kw in (dict(influence="exact", log_volume_method="exact"),
               dict(influence="hutchinson", probes=8, log_volume_method="matrix_free", k=5),
               dict(influence="hutchinson", probes=4, log_volume_method="slq", log_volume="logdet",
                    slq_probes=4, slq_steps=8)):
        a = geo.decoder_geometry(decode, z, **{"k": 10, **kw})
        b = geo.decoder_geometry(decode, z, engine="torch.func", **{"k": 10, **kw})
        assert (a.engine, b.engine) == ("layerwise", "torch.func")
        assert a.log_volume_method == b.log_volume_method
        torch.testing.assert_close(a.log_volume, b.log_volume, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(a.influence, b.influence, rtol=1e-4, atol=1e-4)
    jac = geo.jacobian(decode, z[:1])[0].double()
    torch.testing.assert_close(jac, _oracle(decode, z[0]), rtol=1e-5, atol=1e-6)


def test_other_callables_and_unknown_layouts_use_torch_func_with_the_reason():
    vae = _vae(seed=6)
    z = torch.randn(1, 4, 4, 4)
    plain = lambda x: vae.decode(x / SF).sample  # noqa: E731
    assert "not a VaeDecoder" in unsupported_reason(plain)
    assert geo.decoder_geometry(plain, z, k=5, influence="exact").engine == "torch.func"
    with pytest.raises(UnknownNameError, match="layer-by-layer"):
        geo.decoder_geometry(plain, z, k=5, influence="exact", engine="layerwise")
    with pytest.raises(UnknownNameError, match="engine"):
        geo.decoder_geometry(plain, z, k=5, engine="fast")

    hooked = _vae(seed=6)
    hooked.decoder.conv_out.register_forward_hook(lambda m, i, o: o * 2)
    assert "forward hooks" in unsupported_reason(VaeDecoder(hooked, scaling_factor=SF))
    training = _vae(seed=6).train()
    assert "training mode" in unsupported_reason(VaeDecoder(training, scaling_factor=SF))
    tiled = _vae(seed=6)
    tiled.enable_tiling()
    assert "tiled" in unsupported_reason(VaeDecoder(tiled, scaling_factor=SF))
    relu = _vae(seed=6)
    relu.decoder.conv_act = torch.nn.ReLU()
    reason = unsupported_reason(VaeDecoder(relu, scaling_factor=SF))
    assert "conv_norm_out's activation" in reason and "ReLU" in reason
    # the hooked decoder's geometry is still right (torch.func sees the hook)
    g = geo.decoder_geometry(VaeDecoder(hooked, scaling_factor=SF), z, k=5, influence="exact")
    assert g.engine == "torch.func"


def test_a_disagreeing_engine_is_dropped_with_a_warning(monkeypatch):
    """The first use compares with torch.func; a mismatch warns and falls back, once per decoder."""
    decode = VaeDecoder(_vae(seed=8), scaling_factor=SF)
    z = torch.randn(1, 4, 4, 4)
    calls = []

    def bad_verify(engine, z1, **kw):
        calls.append(1)
        return 0.5

    monkeypatch.setattr(tangents, "verify", bad_verify)
    with pytest.warns(RuntimeWarning, match="differ from torch.func's by 5.00e-01"):
        g = geo.decoder_geometry(decode, z, k=5, influence="exact")
    assert g.engine == "torch.func"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert geo.decoder_geometry(decode, z, k=5, influence="exact").engine == "torch.func"
    assert len(calls) == 1
    engine, why = engine_for(decode, z)
    assert engine is None and "5.00e-01" in why


def test_verify_measures_the_difference_from_torch_func():
    decode = VaeDecoder(_vae(seed=9), scaling_factor=SF)
    z = torch.randn(1, 4, 4, 4)
    engine = TangentEngine(decode)
    assert tangents.verify(engine, z) < 1e-5
    # a wrong derivative (conv_out's weight doubled in the engine only) is caught
    conv_out = engine._chain.layers[-1].conv  # conv_norm_out + conv_out, differentiated as one layer
    conv_out.weight = conv_out.weight * 2
    assert tangents.verify(engine, z) > 0.5
