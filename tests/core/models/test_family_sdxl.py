"""The SDXL family and the family registry: a tiny random SDXL pipeline (two CLIP text encoders,
a ``text_time`` UNet) saved by ``StableDiffusionXLPipeline.save_pretrained``, loaded by
``load_model``; its SimA / PIA / Loss terms against the pipeline's own ``encode_prompt``,
``_get_add_time_ids`` and UNet call; ``detect_family`` on SD1, SDXL and unknown folders."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ldminv_core.attacks import attack_terms
from ldminv_core.attacks.common import sample_noise
from ldminv_core.attacks.residual import LOSS_STREAM
from ldminv_core.errors import ModelLoadError
from ldminv_core.models.families import detect_family
from ldminv_core.models.loading import load_model
from ldminv_core.models.sdxl import SDXLNoisePredictor, pack_pooled, unpack_pooled
from tests.tiny_families import SDXL_POOLED_DIM, SDXL_TEXT_DIM_1, SDXL_TEXT_DIM_2, SDXL_TIME_DIM, build_tiny_sdxl
from tests.tiny_models import TINY_MAX_TOKENS, build_tiny_conditional, build_tiny_unconditional

TEXT_DIM_1, TEXT_DIM_2, POOLED_DIM, TIME_DIM = SDXL_TEXT_DIM_1, SDXL_TEXT_DIM_2, SDXL_POOLED_DIM, SDXL_TIME_DIM
CAPTIONS = ["the cat", None, "a red dog and the tree"]
TIMESTEPS = [10, 250]


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl") / "model"
    pipe = build_tiny_sdxl(folder)
    return folder, pipe


def _direct_eps(pipe, z: torch.Tensor, t: int, captions: list[str | None]) -> torch.Tensor:
    """eps through the diffusers pipeline's own conditioning (guidance off) and UNet call."""
    texts = ["" if c is None else c for c in captions]
    embeds, _, pooled, _ = pipe.encode_prompt(texts, device=torch.device("cpu"), num_images_per_prompt=1,
                                              do_classifier_free_guidance=False)
    size = (16, 16)  # the analysed resolution: latent 4 x vae scale factor 4
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=embeds.dtype,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    time_ids = time_ids.repeat(z.shape[0], 1)
    ts = torch.full((z.shape[0],), t, dtype=torch.long)
    with torch.no_grad():
        return pipe.unet(z, ts, encoder_hidden_states=embeds,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample


def test_loads_as_sdxl(sdxl):
    folder, _ = sdxl
    model = load_model(folder)
    assert model.family.name == "sdxl"
    assert isinstance(model.predictor, SDXLNoisePredictor)
    assert model.is_conditional and model.latent_shape == (4, 4, 4) and model.resolution == 16
    assert type(model.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert model.predictor.n_tokens == TINY_MAX_TOKENS and model.predictor.pooled_dim == POOLED_DIM


@pytest.mark.parametrize("p", [4.0, 1.0])
def test_terms_equal_the_pipeline(sdxl, p):
    """SimA / PIA / Loss terms at two timesteps = |.|^p of the pipeline's own eps (p = 1 keeps the
    comparison at the scale of eps itself: a random tiny UNet's |eps|^4 is ~1e-4)."""
    folder, pipe = sdxl
    model = load_model(folder)
    torch.manual_seed(5)
    z0 = torch.randn(3, 4, 4, 4)
    a = torch.as_tensor(pipe.scheduler.alphas_cumprod, dtype=torch.float64)
    e0 = _direct_eps(pipe, z0, 0, CAPTIONS)
    noise = sample_noise(0, np.arange(3), LOSS_STREAM, (len(TIMESTEPS), 4, 4, 4))
    expected = {"sima": [], "pia": [], "loss": []}
    for k, t in enumerate(TIMESTEPS):
        sa, s1a = float(a[t].sqrt()), float((1 - a[t]).sqrt())
        expected["sima"].append(_direct_eps(pipe, z0, t, CAPTIONS).abs() ** p)
        expected["pia"].append((e0 - _direct_eps(pipe, sa * z0 + s1a * e0, t, CAPTIONS)).abs() ** p)
        e = noise[:, k]
        expected["loss"].append((e - _direct_eps(pipe, sa * z0 + s1a * e, t, CAPTIONS)).abs() ** p)
    for name, terms in expected.items():
        got = attack_terms(name, model.predictor, z0, timesteps=TIMESTEPS, captions=CAPTIONS, batch_size=2, p=p)
        want = torch.stack(terms, dim=1)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
        assert want.abs().max() > 1e-5  # not vacuous


def test_empty_prompt_and_predictor_call(sdxl):
    folder, pipe = sdxl
    pred = load_model(folder).predictor
    z = torch.randn(2, 4, 4, 4)
    eps = pred(z, 100)
    torch.testing.assert_close(eps, _direct_eps(pipe, z, 100, [None, None]), atol=1e-6, rtol=1e-5)
    captioned = pred(z, 100, pred.encode_prompts(["the red cat", "a dog"]))
    assert (captioned - eps).abs().max() > 1e-4  # the text and the pooled embedding reach the UNet


def test_unpacked_cond_is_refused(sdxl):
    from ldminv_core.errors import ShapeError

    pred = load_model(sdxl[0]).predictor
    hidden = torch.zeros(1, TINY_MAX_TOKENS, TEXT_DIM_1 + TEXT_DIM_2)  # hidden states without the pooled rows
    with pytest.raises(ShapeError, match="packed by encode_prompts"):
        pred(torch.zeros(1, 4, 4, 4), 10, hidden)


def test_pack_roundtrip():
    hidden, pooled = torch.randn(2, 5, 3), torch.randn(2, 7)
    packed = pack_pooled(hidden, pooled)
    assert packed.shape == (2, 5 + 3, 3)
    h, p = unpack_pooled(packed.expand(2, -1, -1), 5, 7)
    assert torch.equal(h, hidden) and torch.equal(p, pooled)


def test_detect_family(sdxl, tmp_path):
    folder, _ = sdxl
    assert detect_family(folder).name == "sdxl"
    assert detect_family(str(folder)).name == "sdxl"
    sd1 = build_tiny_conditional(tmp_path / "sd1")
    assert detect_family(sd1).name == "sd"
    assert detect_family(build_tiny_unconditional(tmp_path / "unc")).name == "unconditional"
    model = load_model(sd1)
    assert model.family.name == "sd" and model.text_encoder_2 is None


def test_unknown_family_names_the_pipeline_class(tmp_path):
    folder = tmp_path / "odd"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "MyMadeUpPipeline",
                                                          "transformer": ["mylib", "MadeUpTransformer"]}))
    (folder / "transformer" / "config.json").write_text(json.dumps({"_class_name": "MadeUpTransformer"}))
    with pytest.raises(ModelLoadError, match="MyMadeUpPipeline") as info:
        detect_family(folder)
    assert "MadeUpTransformer" in str(info.value)


def test_sdxl_without_text_encoder_2_is_refused(sdxl, tmp_path):
    import shutil

    folder, _ = sdxl
    copy = tmp_path / "broken"
    shutil.copytree(folder, copy)
    shutil.rmtree(copy / "text_encoder_2")
    with pytest.raises(ModelLoadError, match="text_encoder_2/config.json"):
        load_model(copy)


def test_analyze_end_to_end(sdxl, tmp_path, tiny_caption_dirs):
    """`analyze` through the CLI on the tiny SDXL folder: every attack, the geometry, run.json's
    family, and sample 3's SimA terms equal the pipeline's eps with its own caption."""
    from ldminv_core.__main__ import main
    from ldminv_core.report import build_report
    from ldminv_core.runs import Run

    folder, pipe = sdxl
    members, heldout = tiny_caption_dirs
    out = tmp_path / "run"
    code = main(["analyze", "--model", str(folder), "--members", str(members), "--heldout", str(heldout),
                 "--out", str(out), "--attacks", "sima,pia,loss,secmi,pfami", "--timesteps", "0:30:10",
                 "--limit", "4", "--batch-size", "3", "--device", "cpu", "--topk", "8"])
    assert code in (0, None)
    run = Run.open(out)
    assert run.settings["family"] == "sdxl" and run.settings["is_conditional"] is True
    assert run.terms("sima").shape == (8, 3, 4, 4, 4)
    assert np.isfinite(np.asarray(run.log_volume)).all()
    caption = run.samples["caption"][3]
    z = torch.from_numpy(np.array(run.latents[3:4]))
    eps = _direct_eps(pipe, z, 20, [caption])
    np.testing.assert_allclose(run.terms("sima")[3, 2], eps[0].abs().pow(4).numpy(), rtol=1e-4, atol=1e-7)
    report = build_report(out)
    assert set(report["attacks"]) == {"sima", "pia", "loss", "secmi", "pfami"}
