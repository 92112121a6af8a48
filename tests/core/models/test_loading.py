"""Tests of ldminv_core.models.loading and ldminv_core.models.sources: model folders and hub ids.

Oracles: direct diffusers / transformers calls on the same saved folders.
"""
from __future__ import annotations

import shutil
import time

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel
from transformers import AutoTokenizer, CLIPTextModel

import tiny_models
from ldminv_core.models import sources
from ldminv_core.errors import ModelLoadError
from ldminv_core.models.loading import load_model


# ----------------------------------------------------------------------------- models


@pytest.mark.slow
def test_load_unconditional_matches_direct_diffusers_calls(tiny_uncond_model):
    m = load_model(tiny_uncond_model)
    assert m.latent_shape == tiny_models.TINY_LATENT_SHAPE
    assert m.resolution == tiny_models.TINY_RESOLUTION
    assert m.image_channels == 1 and not m.is_conditional
    assert m.scaling_factor == tiny_models.TINY_SCALING_FACTOR
    assert m.source == str(tiny_uncond_model.resolve())
    assert isinstance(m.unet, UNet2DModel)
    for module in (m.vae, m.unet):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert m.scheduler.alphas_cumprod.shape == (1000,)

    vae = AutoencoderKL.from_pretrained(tiny_uncond_model, subfolder="vae").eval()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        z_ref = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
        img_ref = vae.decode(z_ref / vae.config.scaling_factor).sample
    z = m.encode(x)
    assert z.shape == (3, 4, 4, 4)
    torch.testing.assert_close(z, z_ref)
    torch.testing.assert_close(m.decode(z), img_ref)
    with torch.no_grad():
        torch.testing.assert_close(m.decoder_fn()(z), img_ref)

    unet = UNet2DModel.from_pretrained(tiny_uncond_model, subfolder="unet").eval()
    with torch.no_grad():
        eps_ref = unet(z, torch.full((3,), 10)).sample
    torch.testing.assert_close(m.predictor(z, 10), eps_ref)


def test_load_conditional_uses_text_encoder(tiny_cond_model):
    m = load_model(tiny_cond_model)
    assert m.is_conditional and isinstance(m.unet, UNet2DConditionModel)
    assert isinstance(m.text_encoder, CLIPTextModel)
    assert m.image_channels == 3 and m.latent_shape == (4, 4, 4)
    assert not any(p.requires_grad for p in m.text_encoder.parameters())

    tok = AutoTokenizer.from_pretrained(tiny_cond_model, subfolder="tokenizer")
    te = CLIPTextModel.from_pretrained(tiny_cond_model, subfolder="text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(tiny_cond_model, subfolder="unet").eval()
    z = torch.randn(2, 4, 4, 4)
    ids = tok(["the red cat", "a dog"], padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = te(ids)[0]
        eps_ref = unet(z, torch.full((2,), 20), encoder_hidden_states=hidden).sample
    cond = m.predictor.encode_prompts(["the red cat", "a dog"])
    torch.testing.assert_close(m.predictor(z, 20, cond), eps_ref)


def test_missing_path_and_file_instead_of_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nope")
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(f)


def test_folder_that_is_not_a_diffusers_model(tmp_path, tiny_uncond_model):
    with pytest.raises(ModelLoadError, match=r"vae/ is missing"):
        load_model(tmp_path)
    copy = tmp_path / "m"
    shutil.copytree(tiny_uncond_model, copy)
    shutil.rmtree(copy / "unet")
    with pytest.raises(ModelLoadError, match=r"sub-folder unet/ is missing"):
        load_model(copy)
    shutil.copytree(tiny_uncond_model / "unet", copy / "unet")
    (copy / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"scheduler/scheduler_config.json is missing"):
        load_model(copy)


def test_unet_channels_must_match_vae_latent_channels(tmp_path):
    folder = tiny_models.build_tiny_unconditional(tmp_path / "bad", unet_in_channels=3)
    with pytest.raises(ModelLoadError, match=r"in_channels = 3 .*latent_channels = 4"):
        load_model(folder)


def test_conditional_unet_without_tokenizer(tmp_path, tiny_cond_model):
    copy = tmp_path / "c"
    shutil.copytree(tiny_cond_model, copy)
    shutil.rmtree(copy / "tokenizer")
    with pytest.raises(ModelLoadError, match=r"tokenizer/"):
        load_model(copy)


@pytest.mark.parametrize("how", ["offline-env", "unreachable-host"])
def test_uncached_hub_id_fails_fast_when_offline(tmp_path, monkeypatch, how):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    if how == "offline-env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        # a closed local port: the reachability probe must report offline at once
        monkeypatch.setattr(sources, "_HUB_HOST", ("127.0.0.1", 9))
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model("ldminv-tests/no-such-model")
    assert time.perf_counter() - start < 5
    assert "'ldminv-tests/no-such-model'" in str(err.value)
    assert "local" in str(err.value)
