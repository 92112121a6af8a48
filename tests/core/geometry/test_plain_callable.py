"""A plain-callable decoder in the Python API: the fast path named, or taken.

``geometry.vae_decoder(vae)`` gives the same log-volume and influence as the plain callable
``lambda z: vae.decode(z / sf).sample`` (the oracle: the torch.func engine on that callable, and
the autograd Jacobian of the same decoder) while running the layer-by-layer engine; the plain
callable under ``engine="auto"`` warns once per call naming ``vae_decoder``; an explicit
``engine="torch.func"`` does not warn; a custom adapter analysed through the CLI (a plain-callable
decoder inside ldminv) shows no such warning.
"""
from __future__ import annotations

import textwrap
import warnings

import pytest
import torch

from ldminv_core import geometry
from ldminv_core.errors import LdminvError, ModelKindError
from tests.tiny_models import TINY_LATENT_SHAPE, TINY_SCALING_FACTOR, tiny_vae, write_image_folder


@pytest.fixture(scope="module")
def vae():
    return tiny_vae(image_channels=3).requires_grad_(False)


@pytest.fixture(scope="module")
def z():
    return torch.randn(3, *TINY_LATENT_SHAPE, generator=torch.Generator().manual_seed(5))


def _plain(vae):
    return lambda x: vae.decode(x / TINY_SCALING_FACTOR).sample


def _hint_warnings(record) -> list[warnings.WarningMessage]:
    return [w for w in record if issubclass(w.category, UserWarning) and "vae_decoder" in str(w.message)]


def test_vae_decoder_reads_the_config_and_matches_the_plain_callable(vae, z):
    dec = geometry.vae_decoder(vae)
    assert isinstance(dec, geometry.VaeDecoder)
    assert dec.scaling_factor == vae.config.scaling_factor == TINY_SCALING_FACTOR and dec.shift_factor == 0.0
    with torch.no_grad():
        torch.testing.assert_close(dec(z), _plain(vae)(z), rtol=0, atol=0)
    explicit = geometry.vae_decoder(vae, scaling_factor=0.25, shift_factor=0.1)
    assert (explicit.scaling_factor, explicit.shift_factor) == (0.25, 0.1)
    with pytest.raises(ModelKindError, match=r"vae: expected a torch.nn.Module.*got function"):
        geometry.vae_decoder(_plain(vae))
    no_config = torch.nn.Conv2d(4, 3, 1)
    with pytest.raises(LdminvError, match=r"scaling_factor: expected a number .*Conv2d has no scaling_factor"):
        geometry.vae_decoder(no_config)
    with pytest.raises(LdminvError, match=r"scaling_factor: expected a finite non-zero number, got 0.0"):
        geometry.vae_decoder(vae, scaling_factor=0.0)


def test_vae_decoder_runs_layerwise_and_equals_the_plain_callable_path(vae, z):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = geometry.decoder_geometry(_plain(vae), z, k=8, influence="exact", log_volume_method="exact")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fast = geometry.decoder_geometry(geometry.vae_decoder(vae), z, k=8, influence="exact",
                                         log_volume_method="exact")
    assert not _hint_warnings(record)
    assert fast.engine == "layerwise" and plain.engine == "torch.func"
    torch.testing.assert_close(fast.log_volume, plain.log_volume, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.influence, plain.influence, rtol=1e-5, atol=1e-5)
    # independent oracle: the autograd Jacobian of the same decoder, float64 SVD and column norms
    d = z[0].numel()
    jac = torch.stack([torch.autograd.functional.jacobian(lambda x: _plain(vae)(x[None])[0], zi).reshape(-1, d)
                       for zi in z]).double()
    torch.testing.assert_close(fast.log_volume.double(), torch.linalg.svdvals(jac)[:, :8].log().sum(1),
                               rtol=1e-4, atol=1e-4)
    influence = 0.5 * torch.log((jac ** 2).sum(1) + 1e-12)
    torch.testing.assert_close(fast.influence.double().reshape(len(z), d), influence, rtol=1e-4, atol=1e-4)


def test_a_plain_callable_warns_once_per_call_naming_vae_decoder(vae, z):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        # chunk_size 1 and the matrix-free path: many blocks of samples and products, one warning
        geometry.decoder_geometry(_plain(vae), z, k=4, influence="hutchinson", probes=2,
                                  log_volume_method="matrix_free", iters=1, chunk_size=1)
    hints = _hint_warnings(record)
    assert len(hints) == 1
    message = str(hints[0].message)
    assert "geometry.vae_decoder(vae)" in message and "LoadedModel.decoder_fn()" in message
    assert "torch.func" in message and "engine='torch.func'" in message
    assert hints[0].filename == __file__  # it points at the caller's line, not inside the library
    # the other public entry points that take products on "auto" say the same
    for call in (lambda: geometry.jacobian(_plain(vae), z[:1]),
                 lambda: geometry.dim_influence(_plain(vae), z[:1], method="hutchinson", probes=2),
                 lambda: geometry.log_volume(_plain(vae), z[:1], k=2, method="matrix_free", iters=1),
                 lambda: geometry.plan_geometry(_plain(vae), z[:1], k=2)):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            call()
        assert len(_hint_warnings(record)) == 1 and _hint_warnings(record)[0].filename == __file__


def test_the_default_filter_shows_it_once_per_calling_line(vae, z):
    with warnings.catch_warnings(record=True) as record:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for _ in range(3):
            geometry.dim_influence(_plain(vae), z[:1], method="hutchinson", probes=2)
    assert len(_hint_warnings(record)) == 1


def test_an_explicit_torch_func_engine_does_not_warn(vae, z):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        g = geometry.decoder_geometry(_plain(vae), z[:1], k=4, engine="torch.func")
        gp = geometry.plan_geometry(_plain(vae), z[:1], k=4, engine="torch.func")
        geometry.jacobian(_plain(vae), z[:1], engine="torch.func")
    assert g.engine == "torch.func" and gp.engine == "torch.func"
    assert not _hint_warnings(record)


_ADAPTER = textwrap.dedent('''
    import torch
    from ldminv_core.models.custom_adapter import ModelAdapter

    def build_adapter(model_path, *, device, dtype):
        torch.manual_seed(0)
        enc = torch.nn.Conv2d(1, 2, 4, stride=4).to(device, dtype)
        dec = torch.nn.ConvTranspose2d(2, 1, 4, stride=4).to(device, dtype)
        net = torch.nn.Conv2d(2, 2, 3, padding=1).to(device, dtype)
        return ModelAdapter(encode=enc, decode=dec, model_output=lambda z, t, cond: net(z), image_shape=(1, 16, 16),
                            latent_shape=(2, 4, 4), alphas_cumprod=torch.linspace(0.99, 0.01, 100))
''')


def test_a_custom_adapter_through_the_cli_shows_no_plain_callable_warning(tmp_path, capsys):
    import json

    from ldminv_core.__main__ import main

    adapter = tmp_path / "toy_adapter.py"
    adapter.write_text(_ADAPTER)
    members, heldout, out = tmp_path / "members", tmp_path / "heldout", tmp_path / "run"
    write_image_folder(members, 3, formats=("png",), seed=1)
    write_image_folder(heldout, 3, formats=("png",), seed=2)
    args = ["analyze", "--model-adapter", str(adapter), "--model", str(tmp_path), "--members", str(members),
            "--heldout", str(heldout), "--out", str(out), "--attacks", "sima", "--timesteps", "7,60",
            "--topk", "4", "--device", "cpu", "--seed", "3"]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(args) == 0
    capsys.readouterr()
    assert not _hint_warnings(record)
    run = json.loads((out / "run.json").read_text())
    assert run["family"] == "custom" and run["geometry"]["plan"]["engine"] == "torch.func"
