"""Posterior-sample latents (``--latent sample``) and the ``sd-paper`` preset.

Oracles: the diffusers posterior itself (``vae.encode(x).latent_dist``: mean and std) with the
noise drawn independently here, and the mean path of the loader.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ldminv_core.__main__ import main
from ldminv_core.pipeline.config import AnalyzeConfig, preset_config
from ldminv_core.pipeline.plan import config_settings
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.choices import PRESETS
from ldminv_core.errors import UnknownNameError
from ldminv_core.models.latents import LATENT_STREAM, encode_latents, posterior_noise
from ldminv_core.data.image_folders import load_image_folder
from ldminv_core.models.loading import load_model


@pytest.fixture(scope="module")
def model_and_images(tiny_uncond_model, tiny_image_dirs):
    model = load_model(tiny_uncond_model, device="cpu")
    images = load_image_folder(tiny_image_dirs[0], channels=model.image_channels, resolution=model.resolution).images
    return model, images


def test_posterior_sample_matches_the_diffusers_posterior(model_and_images):
    model, images = model_and_images
    ids = list(range(10, 10 + len(images)))
    z = encode_latents(model, images, latent="sample", seed=3, sample_ids=ids)
    with torch.no_grad():
        dist = model.vae.encode(images).latent_dist
    noise = []
    for sid in ids:
        state = np.random.SeedSequence([3, sid, LATENT_STREAM]).generate_state(1)[0]
        noise.append(torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(int(state))))
    expected = (dist.mean + dist.std * torch.stack(noise)) * model.scaling_factor
    torch.testing.assert_close(z, expected, rtol=1e-5, atol=1e-6)
    # a real draw: differs from the mean by about the posterior's spread
    mean = encode_latents(model, images, latent="mean")
    torch.testing.assert_close(mean, model.encode(images))
    assert (z - mean).abs().max() > 1e-3


def test_posterior_sample_is_reproducible_per_id_and_independent_of_batch_split(model_and_images):
    model, images = model_and_images
    ids = list(range(len(images)))
    whole = encode_latents(model, images, latent="sample", seed=0, sample_ids=ids)
    parts = torch.cat([encode_latents(model, images[i:i + 3], latent="sample", seed=0, sample_ids=ids[i:i + 3])
                       for i in range(0, len(images), 3)])
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)
    again = encode_latents(model, images, latent="sample", seed=0, sample_ids=ids)
    assert torch.equal(again, whole)
    other_seed = encode_latents(model, images, latent="sample", seed=1, sample_ids=ids)
    assert not torch.allclose(other_seed, whole)
    # noise of one id does not depend on its neighbours
    assert torch.equal(posterior_noise((4, 4, 4), seed=0, sample_ids=[5])[0],
                       posterior_noise((4, 4, 4), seed=0, sample_ids=[2, 5, 9])[1])


def test_bad_latent_kind_is_named(model_and_images, tiny_uncond_model, tiny_image_dirs, tmp_path):
    model, images = model_and_images
    with pytest.raises(UnknownNameError, match="latent: expected one of"):
        encode_latents(model, images, latent="median")
    cfg = AnalyzeConfig(model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]),
                        heldout=str(tiny_image_dirs[1]), out=str(tmp_path / "r"), latent="posterior")
    with pytest.raises(UnknownNameError, match="latent"):
        config_settings(cfg)
    with pytest.raises(UnknownNameError, match="preset"):
        preset_config("sd-unknown", model="m")


@pytest.mark.slow
def test_analyze_with_posterior_samples_records_it(tiny_uncond_model, tiny_image_dirs, tmp_path):
    out = tmp_path / "run"
    cfg = AnalyzeConfig(model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]),
                        heldout=str(tiny_image_dirs[1]), out=str(out), timesteps="0:20:10",
                        batch_size=5, device="cpu", latent="sample", seed=2)
    run_analysis(cfg)
    data = json.loads((out / "run.json").read_text())
    assert data["latent"] == "sample" and data["config"]["latent"] == "sample"
    lat = np.load(out / "latents.npy")
    model = load_model(tiny_uncond_model, device="cpu")
    imgs = torch.cat([load_image_folder(d, channels=model.image_channels, resolution=model.resolution).images
                      for d in tiny_image_dirs])
    expected = encode_latents(model, imgs, latent="sample", seed=2, sample_ids=range(len(imgs))).numpy()
    np.testing.assert_allclose(lat, expected, rtol=1e-5, atol=1e-6)
    # the mean run of the same data is a different run (settings differ, so no silent reuse)
    assert "latent" not in config_settings(AnalyzeConfig(model="m", members="a", heldout="b", out="o"))


def test_sd_paper_preset_is_one_flag_away(tiny_uncond_model, tiny_image_dirs, tmp_path, capsys):
    assert PRESETS["sd-paper"]["latent"] == "sample"
    cfg = preset_config("sd-paper", model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]),
                        heldout=str(tiny_image_dirs[1]), out=str(tmp_path / "p"), topk=5)
    assert cfg.topk == 5 and cfg.latent == "sample" and cfg.timesteps == "0:200:10" and cfg.preset == "sd-paper"
    assert cfg.log_volume == "logdet"
    # the CLI: explicit options win over the preset; an unknown preset is a one-line usage error
    assert main(["analyze", "--preset", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_sd_paper_run_records_its_settings_and_the_logdet_log_volume(tiny_uncond_model, tiny_image_dirs, tmp_path,
                                                                    capsys):
    """The preset end to end: run.json says what produced the numbers, and the stored log-volume is
    0.5 * log det(J^T J) of the autograd Jacobian at the stored (posterior-sample) latents."""
    import pandas as pd

    out = tmp_path / "sd"
    rc = main(["analyze", "--model", str(tiny_uncond_model), "--members", str(tiny_image_dirs[0]),
               "--heldout", str(tiny_image_dirs[1]), "--out", str(out), "--preset", "sd-paper",
               "--timesteps", "0,10", "--limit", "2", "--threads", "1"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "run.json").read_text())
    assert data["preset"] == "sd-paper" and data["latent"] == "sample"
    assert data["geometry"]["log_volume"] == "logdet" and data["geometry"]["topk"] == 20
    assert data["config"]["log_volume"] == "logdet" and data["config"]["timesteps"] == [0, 10]
    geo = data["geometry"]
    assert geo["plan"]["log_volume_kind"] == "logdet" and geo["log_volume_method"] == geo["plan"]["log_volume_method"]
    assert geo["plan"]["predicted_seconds_per_sample"] > 0 and geo["measured_seconds_per_sample"] > 0
    model = load_model(tiny_uncond_model, device="cpu")
    decode = model.decoder_fn()
    z = torch.from_numpy(np.load(out / "latents.npy"))
    lv = pd.read_parquet(out / "samples.parquet")["log_volume"].to_numpy()
    for i in range(len(z)):
        jac = torch.autograd.functional.jacobian(lambda v: decode(v[None]).flatten(), z[i]).reshape(-1, z[i].numel())
        _, logabsdet = torch.linalg.slogdet(jac.double().T @ jac.double())
        assert lv[i] == pytest.approx(0.5 * float(logabsdet), rel=1e-3)
