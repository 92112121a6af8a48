"""Tests of ldminv_core.loading: model folders, hub ids, image folders and captions.

Oracles: direct diffusers / transformers calls on the same saved folders, and PIL for the
documented image conversion (resize keeping the aspect ratio, centre crop, [-1, 1]).
"""
from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel
from PIL import Image
from transformers import AutoTokenizer, CLIPTextModel

import tiny_models
from ldminv_core import loading
from ldminv_core.errors import DataLoadError, ModelLoadError
from ldminv_core.loading import load_image_folder, load_model


# ----------------------------------------------------------------------------- models


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
        monkeypatch.setattr(loading, "_HUB_HOST", ("127.0.0.1", 9))
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model("ldminv-tests/no-such-model")
    assert time.perf_counter() - start < 5
    assert "'ldminv-tests/no-such-model'" in str(err.value)
    assert "local" in str(err.value)


# ----------------------------------------------------------------------------- images


def _expected_pixels(path, mode: str, size: int) -> np.ndarray:
    """Independent oracle of the documented conversion: mode, aspect-keeping resize of the
    shorter side to ``size`` (Lanczos), centre crop, then [0, 255] -> [-1, 1]."""
    img = Image.open(path)
    img.load()
    img = img.convert(mode)
    w, h = img.size
    if (w, h) != (size, size):
        if w / h > 1:
            nw, nh = w * size // h, size
        else:
            nw, nh = size, h * size // w
        img = img.resize((nw, nh), resample=Image.Resampling.LANCZOS)
        left, top = nw // 2 - size // 2, nh // 2 - size // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32) / 255.0 * 2 - 1
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_reads_sorted_converted_images(tmp_path, channels):
    paths = tiny_models.write_image_folder(tmp_path, 7, seed=5)
    (tmp_path / "notes.txt").write_text("hello")
    rows = [{"file_name": p.name, "text": f"caption {i}"} for i, p in enumerate(paths) if i != 2]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = load_image_folder(tmp_path, channels=channels, resolution=16)
    assert [p.name for p in s.paths] == sorted(p.name for p in paths)
    assert s.images.shape == (7, channels, 16, 16) and s.images.dtype == torch.float32
    assert s.images.min() >= -1 and s.images.max() <= 1
    mode = "L" if channels == 1 else "RGB"
    for i, p in enumerate(s.paths):
        np.testing.assert_allclose(s.images[i].numpy(), _expected_pixels(p, mode, 16), atol=1e-6)
    assert s.captions == [None if i == 2 else f"caption {i}" for i in range(7)]
    assert s.report.read == 7
    assert s.report.skipped == [("notes.txt", "not an image: .txt")]
    expected_converted = sum(1 for p in paths if Image.open(p).mode != mode or Image.open(p).size != (16, 16))
    assert s.report.converted == expected_converted


def test_image_folder_csv_captions_and_limit(tmp_path):
    paths = tiny_models.write_image_folder(tmp_path, 5, seed=6)
    lines = ["file_name,text"] + [f'{p.name},"text, number {i}"' for i, p in enumerate(paths)]
    (tmp_path / "metadata.csv").write_text("\n".join(lines) + "\n")
    s = load_image_folder(tmp_path, channels=1, resolution=8, limit=3)
    assert len(s) == 3 and s.images.shape == (3, 1, 8, 8)
    assert [p.name for p in s.paths] == [p.name for p in paths[:3]]
    assert s.captions == [f"text, number {i}" for i in range(3)]
    assert s.report.skipped == []


def test_corrupt_images_are_skipped_with_a_reason(tmp_path):
    tiny_models.write_image_folder(tmp_path, 3, seed=7)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = tmp_path / "img_000.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    s = load_image_folder(tmp_path, channels=3, resolution=16)
    assert s.report.read == 3
    skipped = dict(s.report.skipped)
    assert set(skipped) == {"broken.png", "truncated.png"}
    assert all(reason.startswith("unreadable image") for reason in skipped.values())


def test_folder_errors(tmp_path):
    with pytest.raises(DataLoadError, match="does not exist"):
        load_image_folder(tmp_path / "missing", channels=1, resolution=16)
    f = tmp_path / "file.png"
    f.write_bytes(b"")
    with pytest.raises(DataLoadError, match="is not a folder"):
        load_image_folder(f, channels=1, resolution=16)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataLoadError, match=r"empty.* is empty"):
        load_image_folder(empty, channels=1, resolution=16)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"not a png")
    (bad / "b.jpg").write_bytes(b"\xff\xd8\xff broken")
    (bad / "c.txt").write_text("text")
    with pytest.raises(DataLoadError) as err:
        load_image_folder(bad, channels=1, resolution=16)
    msg = str(err.value)
    assert str(bad) in msg and "no usable image" in msg
    assert "a.png: unreadable image" in msg and "c.txt: not an image: .txt" in msg


def test_malformed_metadata_is_named(tmp_path):
    tiny_models.write_image_folder(tmp_path, 2, seed=8)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "img_000.png", "text": "ok"}\n{oops\n')
    with pytest.raises(DataLoadError, match=r"metadata.jsonl, line 2"):
        load_image_folder(tmp_path, channels=1, resolution=16)
