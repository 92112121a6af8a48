"""Flux (issue 24): a tiny random FLUX.1-shaped pipeline (dev-style with a guidance embedding and
schnell-style without) is detected as the flux family, packs its latents as ``FluxPipeline`` does,
and its eps_hat and SimA / PIA / Loss terms equal a direct computation through ``FluxPipeline``'s own
pieces (``encode_prompt``, ``_prepare_latent_image_ids``, ``_pack_latents``, the transformer call with
``timestep / 1000`` and the default embedded guidance, ``_unpack_latents``, METHOD.md section 5's
flow conversion); the 16-channel VAE's decoder Jacobian (with shift_factor) equals autograd with both
geometry engines; ``analyze`` runs end to end through the CLI."""
from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
import torch

from ldminv_core.attacks import attack_terms
from ldminv_core.attacks.common import sample_noise
from ldminv_core.attacks.residual import LOSS_STREAM
from ldminv_core.errors import LdminvError, ModelLoadError, ShapeError
from ldminv_core.models.flux import FluxNoisePredictor, latent_image_ids, pack_latents, unpack_latents
from tests.tiny_flux import (FLUX_LATENT_SHAPE, FLUX_SCALING_FACTOR, FLUX_SHIFT_FACTOR, build_tiny_flux,
                             tiny_flux_pipeline)

T = 1000
CPU = torch.device("cpu")
TEXT_KEYS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
CAPTIONS = ["a red cat", None, "the dog"]


def _pipeline_guidance_default() -> float:
    """``FluxPipeline.__call__``'s default guidance_scale, read from its signature."""
    from diffusers import FluxPipeline

    return float(inspect.signature(FluxPipeline.__call__).parameters["guidance_scale"].default)


# ---------------------------------------------------------------------------- packing

def test_pack_unpack_and_ids_equal_the_pipelines_static_methods():
    from diffusers import FluxPipeline

    z = torch.randn(2, 16, 4, 6, generator=torch.Generator().manual_seed(0))  # h != w catches a swap
    packed = pack_latents(z)
    assert torch.equal(packed, FluxPipeline._pack_latents(z, 2, 16, 4, 6))
    vae_scale = 8
    assert torch.equal(unpack_latents(packed, 4, 6), FluxPipeline._unpack_latents(packed, 4 * vae_scale,
                                                                                   6 * vae_scale, vae_scale))
    assert torch.equal(unpack_latents(packed, 4, 6), z)
    tokens = torch.randn(3, 6, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(pack_latents(unpack_latents(tokens, 4, 6)), tokens)
    ids = latent_image_ids(4, 6, device=CPU, dtype=torch.float32)
    assert torch.equal(ids, FluxPipeline._prepare_latent_image_ids(2, 2, 3, CPU, torch.float32))
    with pytest.raises(ShapeError, match="even"):
        pack_latents(torch.zeros(1, 16, 3, 4))
    with pytest.raises(ShapeError, match="tokens"):
        unpack_latents(tokens, 4, 4)


# ---------------------------------------------------------------------------- against the pipeline

@pytest.fixture(scope="module", params=[True, False], ids=["dev", "schnell"])
def flux(request, tmp_path_factory):
    pipe = tiny_flux_pipeline(tmp_path_factory.mktemp("flux"), guidance_embeds=request.param)
    text = {k: getattr(pipe, k) for k in TEXT_KEYS}
    pred = FluxNoisePredictor.from_components(pipe.transformer, pipe.scheduler, text=text, device=CPU)
    return pipe, pred


@torch.no_grad()
def _encode(pipe, captions):
    prompts = ["" if c is None else c for c in captions]
    return pipe.encode_prompt(prompt=prompts, prompt_2=None, device=CPU)  # embeds, pooled, text_ids


@torch.no_grad()
def _direct_eps(pipe, z_t: torch.Tensor, t: int, encoded) -> torch.Tensor:
    """eps_hat through FluxPipeline's pieces: the timestep of an unshifted FlowMatchEulerDiscreteScheduler
    at sigma = t / T, expanded, in the latents' dtype, / 1000; packed latents and their ids; the
    default embedded guidance when the transformer has one; unpacked velocity; z_t + (1 - sigma) v."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    embeds, pooled, text_ids = encoded
    b, c, h, w = z_t.shape
    sigma = t / T
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T)
    sched.set_timesteps(sigmas=[sigma], device=CPU)
    latents = pipe._pack_latents(z_t, b, c, h, w)
    img_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, CPU, embeds.dtype)
    timestep = sched.timesteps[0].expand(b).to(latents.dtype)
    guidance = None
    if pipe.transformer.config.guidance_embeds:
        guidance = torch.full([1], _pipeline_guidance_default(), dtype=torch.float32).expand(b)
    v = pipe.transformer(hidden_states=latents, timestep=timestep / 1000, guidance=guidance,
                         pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                         img_ids=img_ids, return_dict=False)[0]
    v = pipe._unpack_latents(v, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor, pipe.vae_scale_factor)
    return z_t + (1 - sigma) * v


def test_flux_conditioning_and_guidance_are_the_pipelines(flux):
    pipe, pred = flux
    embeds, pooled, _ = _encode(pipe, CAPTIONS)
    cond = pred.encode_prompts(CAPTIONS)
    assert embeds.shape[1] == pred.n_tokens == 512
    assert torch.equal(cond[:, : pred.n_tokens], embeds)
    assert torch.equal(cond[:, pred.n_tokens:].reshape(3, -1)[:, : pred.pooled_dim], pooled)
    if pipe.transformer.config.guidance_embeds:
        assert pred.guidance_scale == _pipeline_guidance_default()
    else:
        assert pred.guidance_scale is None
    assert pred.in_channels == FLUX_LATENT_SHAPE[0]


def test_flux_eps_equals_a_direct_pipeline_computation(flux):
    pipe, pred = flux
    encoded = _encode(pipe, CAPTIONS)
    z = torch.randn(3, *FLUX_LATENT_SHAPE, generator=torch.Generator().manual_seed(2))
    cond = pred.encode_prompts(CAPTIONS)
    for t in (10, 600):
        torch.testing.assert_close(pred(z, t, cond), _direct_eps(pipe, z, t, encoded), rtol=1e-5, atol=1e-5)


def test_dev_style_guidance_reaches_the_transformer(flux):
    pipe, pred = flux
    inputs = pred.model_inputs(torch.zeros(2, *FLUX_LATENT_SHAPE), 10, pred.encode_prompts(["x", "y"]))
    if not pipe.transformer.config.guidance_embeds:  # schnell-style: no guidance embedding, None given
        assert inputs["guidance"] is None
        return
    assert inputs["guidance"].dtype == torch.float32 and inputs["guidance"].tolist() == [_pipeline_guidance_default()] * 2
    text = {k: getattr(pipe, k) for k in TEXT_KEYS}
    other = FluxNoisePredictor.from_components(pipe.transformer, pipe.scheduler, text=text, guidance_scale=1.0)
    z = torch.randn(2, *FLUX_LATENT_SHAPE, generator=torch.Generator().manual_seed(3))
    cond = pred.encode_prompts(["a cat", "a dog"])
    assert not torch.allclose(pred(z, 100, cond), other(z, 100, cond))


def test_flux_terms_equal_a_direct_pipeline_computation(flux):
    pipe, pred = flux
    z0 = torch.randn(3, *FLUX_LATENT_SHAPE, generator=torch.Generator().manual_seed(4))
    timesteps = [10, 250]
    encoded = _encode(pipe, CAPTIONS)
    ids = np.arange(3)
    sima = attack_terms("sima", pred, z0, timesteps=timesteps, captions=CAPTIONS, batch_size=2)
    pia = attack_terms("pia", pred, z0, timesteps=timesteps, captions=CAPTIONS, batch_size=2)
    loss = attack_terms("loss", pred, z0, timesteps=timesteps, captions=CAPTIONS, sample_ids=ids, seed=7)
    noise = sample_noise(7, ids, LOSS_STREAM, (len(timesteps), *FLUX_LATENT_SHAPE))
    e0 = _direct_eps(pipe, z0, 0, encoded)
    for k, t in enumerate(timesteps):
        sigma = t / T
        want_sima = _direct_eps(pipe, z0, t, encoded).abs() ** 4
        z_pia = (1 - sigma) * z0 + sigma * e0
        want_pia = (e0 - _direct_eps(pipe, z_pia, t, encoded)).abs() ** 4
        e = noise[:, k]
        want_loss = (e - _direct_eps(pipe, (1 - sigma) * z0 + sigma * e, t, encoded)).abs() ** 4
        for got, want in ((sima, want_sima), (pia, want_pia), (loss, want_loss)):
            torch.testing.assert_close(got[:, k], want, rtol=1e-5, atol=1e-5)


def test_flux_refuses_a_ddpm_scheduler_and_mismatched_encoders(flux):
    from diffusers import DDPMScheduler

    pipe, _ = flux
    text = {k: getattr(pipe, k) for k in TEXT_KEYS}
    with pytest.raises(LdminvError, match="FlowMatchEulerDiscreteScheduler"):
        FluxNoisePredictor.from_components(pipe.transformer, DDPMScheduler(), text=text)
    swapped = {**text, "text_encoder": pipe.text_encoder_2}  # T5's width where CLIP's pooled size belongs
    with pytest.raises(LdminvError, match="pooled_projection_dim"):
        FluxNoisePredictor.from_components(pipe.transformer, pipe.scheduler, text=swapped)


# ---------------------------------------------------------------------------- loading a pipeline folder

@pytest.fixture(scope="module")
def flux_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("flux_folder")
    return {g: build_tiny_flux(root / ("dev" if g else "schnell"), guidance_embeds=g) for g in (True, False)}


@pytest.mark.parametrize("guidance_embeds", [True, False], ids=["dev", "schnell"])
def test_flux_folder_loads_as_the_flux_family(flux_folders, guidance_embeds):
    from ldminv_core.models.families import detect_family
    from ldminv_core.models.loading import load_model

    folder = flux_folders[guidance_embeds]
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "FluxPipeline"
    family = detect_family(folder)
    assert family.name == "flux" and str(_pipeline_guidance_default()) in family.conditioning
    model = load_model(folder)
    assert model.family.name == "flux" and model.is_conditional
    assert isinstance(model.predictor, FluxNoisePredictor)
    assert model.predictor.guidance_scale == (_pipeline_guidance_default() if guidance_embeds else None)
    assert model.latent_shape == FLUX_LATENT_SHAPE
    assert (model.shift_factor, model.scaling_factor) == (FLUX_SHIFT_FACTOR, FLUX_SCALING_FACTOR)
    assert model.predictor.schedule.kind == "flow" and model.predictor.num_train_timesteps == T


def test_flux_folder_with_odd_latents_or_unpacked_channels_is_refused(flux_folders, tmp_path):
    from ldminv_core.models.loading import load_model

    copy = tmp_path / "odd"
    shutil.copytree(flux_folders[False], copy)
    vae_cfg = json.loads((copy / "vae" / "config.json").read_text())
    (copy / "vae" / "config.json").write_text(json.dumps({**vae_cfg, "sample_size": 20}))  # latents 5x5
    with pytest.raises(ModelLoadError, match="multiples of 2.*5x5"):
        load_model(copy)
    (copy / "vae" / "config.json").write_text(json.dumps(vae_cfg))
    tr_cfg = json.loads((copy / "transformer" / "config.json").read_text())
    (copy / "transformer" / "config.json").write_text(json.dumps({**tr_cfg, "in_channels": 16}))
    with pytest.raises(ModelLoadError, match="in_channels = 16.*expects 64"):
        load_model(copy)


def test_geometry_on_the_flux_vae_matches_autograd(flux_folders):
    from ldminv_core.geometry import decoder_geometry, jacobian
    from ldminv_core.models.loading import load_model

    model = load_model(flux_folders[True])
    z = torch.randn(2, *FLUX_LATENT_SHAPE, generator=torch.Generator().manual_seed(7))

    def direct(zi):  # FluxPipeline's decode of one (unpacked) latent
        return model.vae.decode(zi[None] / FLUX_SCALING_FACTOR + FLUX_SHIFT_FACTOR).sample[0]

    want = torch.stack([torch.autograd.functional.jacobian(direct, zi).reshape(3 * 16 * 16, -1) for zi in z])
    for engine in ("layerwise", "torch.func"):
        torch.testing.assert_close(jacobian(model.decoder_fn(), z, engine=engine), want, rtol=1e-4, atol=1e-5)
    geo = decoder_geometry(model.decoder_fn(), z, k=8, influence="exact", log_volume_method="exact")
    assert geo.engine == "layerwise"
    torch.testing.assert_close(geo.influence.reshape(2, -1), 0.5 * torch.log((want ** 2).sum(1) + 1e-12),
                               rtol=1e-4, atol=1e-4)


def test_flux_analyzes_end_to_end_through_the_cli(flux_folders, tmp_path):
    from ldminv_core.__main__ import main
    from ldminv_core.models.loading import load_model
    from ldminv_core.runs import Run
    from tests.tiny_models import write_image_folder

    folder = flux_folders[True]
    write_image_folder(tmp_path / "members", 2, seed=1, captions=True, prefix="m", modes=("RGB",))
    write_image_folder(tmp_path / "heldout", 2, seed=2, captions=True, prefix="h", modes=("RGB",))
    out = tmp_path / "run"
    code = main(["analyze", "--model", str(folder), "--members", str(tmp_path / "members"),
                 "--heldout", str(tmp_path / "heldout"), "--out", str(out),
                 "--attacks", "sima,pia,loss,secmi,pfami", "--timesteps", "0,10", "--batch-size", "4",
                 "--device", "cpu", "--topk", "8", "--seed", "3"])
    assert code in (0, None)
    record = json.loads((out / "run.json").read_text())
    assert record["family"] == "flux" and record["model_class"] == "FluxTransformer2DModel"
    run = Run.open(out)
    assert np.isfinite(np.asarray(run.log_volume)).all()
    assert np.isfinite(np.asarray(run.pfami_scores())).all()
    model = load_model(folder)
    z = torch.from_numpy(np.array(run.latents))
    captions = list(run.samples["caption"])
    for name in ("sima", "pia", "loss", "secmi"):
        got = torch.from_numpy(np.array(run.terms(name)).astype(np.float32))
        want = attack_terms(name, model.predictor, z, timesteps=[0, 10], captions=captions,
                            sample_ids=np.asarray(run.samples["sample_id"]), seed=3)
        assert got.shape == (4, 2, *FLUX_LATENT_SHAPE)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
