"""Stable Diffusion 3 and rectified flow (METHOD.md section 5): the flow forward process and eps_hat
against a hand computation, SecMI's Euler inversion on an exact velocity field, and the SimA / PIA /
Loss terms of a tiny random SD3 model against a direct computation through
``StableDiffusion3Pipeline.encode_prompt`` and the transformer call (with and without T5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ldminv_core.attacks import attack_terms
from ldminv_core.attacks.common import sample_noise
from ldminv_core.attacks.residual import LOSS_STREAM
from ldminv_core.errors import LdminvError, UnknownNameError
from ldminv_core.models.noise_prediction import NoisePrediction
from ldminv_core.models.schedules import FlowMatchSchedule
from ldminv_core.models.sd3 import SD3NoisePredictor
from tests.tiny_sd3 import SD3_LATENT_SHAPE, tiny_sd3_pipeline

T = 1000
CPU = torch.device("cpu")
TEXT_KEYS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")


# ---------------------------------------------------------------------------- the flow schedule

def test_flow_forward_process_and_eps_hat_by_hand():
    sched = FlowMatchSchedule(T)
    assert sched.kind == "flow" and sched.num_train_timesteps == T
    gen = torch.Generator().manual_seed(0)
    z0, e, o = (torch.randn(2, 3, 4, 4, generator=gen) for _ in range(3))
    for t in (0, 10, 290, 999):
        sigma = t / 1000.0
        assert sched.a[t] == 1.0 - sigma and sched.b[t] == sigma
        z_t = z0 * sched.a[t] + e * sched.b[t]
        torch.testing.assert_close(z_t, (1 - sigma) * z0 + sigma * e)
        torch.testing.assert_close(sched.eps_from_output(o, z_t, t, "flow"), z_t + (1 - sigma) * o)
        # the exact velocity e - z0 gives back the noise that made z_t
        torch.testing.assert_close(sched.eps_from_output(e - z0, z_t, t, "flow"), e, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sched.eps_from_output(o, z0, 0, "flow"), z0 + o)
    with pytest.raises(UnknownNameError, match="velocity"):
        sched.eps_from_output(o, z0, 0, "epsilon")


@pytest.mark.parametrize("t", [0, 10, 290, 997])
def test_flow_model_timestep_is_the_pipelines(t):
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe_sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T)  # shift 1: unshifted sigma
    pipe_sched.set_timesteps(sigmas=[t / T], device=CPU)
    ts = FlowMatchSchedule(T).model_timesteps(t, 3, CPU)
    assert ts.dtype == torch.float32 and ts.shape == (3,)
    assert torch.equal(ts, pipe_sched.timesteps[0].expand(3))


def test_flow_step_is_euler_on_the_velocity():
    sched = FlowMatchSchedule(T)
    gen = torch.Generator().manual_seed(1)
    x, o = torch.randn(2, 3, 4, 4, generator=gen), torch.randn(2, 3, 4, 4, generator=gen)
    for s, u in ((0, 10), (120, 130), (130, 120), (500, 0)):
        eps = sched.eps_from_output(o, x, s, "flow")
        torch.testing.assert_close(sched.step(x, eps, s, u), x + (u - s) / T * o, rtol=1e-5, atol=1e-5)


class _LinearField(NoisePrediction):
    """A flow model predicting the exact velocity of the field that carries every x at noise level
    sigma straight to the fixed noise e at sigma = 1: v(x, sigma) = (e - x) / (1 - sigma). On the
    line z_t = (1 - sigma) z0 + sigma e it is the constant e - z0."""

    is_conditional = False

    def __init__(self, e: torch.Tensor) -> None:
        self.device, self.dtype, self.prediction_type = CPU, torch.float32, "flow"
        self._init_flow_schedule(T)
        self.e = e

    @property
    def in_channels(self) -> int:
        return int(self.e.shape[1])

    def encode_prompts(self, captions):
        return None

    def _forward(self, x, t, cond):
        return (self.e - x) / (1.0 - t / T)


def test_secmi_euler_inversion_returns_z0_on_an_exact_linear_field():
    gen = torch.Generator().manual_seed(2)
    z0, e = torch.randn(3, 4, 2, 2, generator=gen), torch.randn(3, 4, 2, 2, generator=gen)
    pred = _LinearField(e)
    grid = [0, 10, 20, 40, 80, 160, 320]
    x = z0
    for s, u in zip(grid, grid[1:]):  # inversion: lands on the straight line at every sigma
        x = pred._step(x, pred._eps(x, s, None), s, u)
        torch.testing.assert_close(x, (1 - u / T) * z0 + u / T * e, rtol=1e-5, atol=1e-5)
    for s, u in zip(grid[::-1], grid[-2::-1]):  # and back down to z0
        x = pred._step(x, pred._eps(x, s, None), s, u)
    torch.testing.assert_close(x, z0, rtol=1e-5, atol=1e-5)
    terms = attack_terms("secmi", pred, z0, timesteps=[0, 10, 20, 30])
    assert terms.shape == (3, 4, 4, 2, 2)
    assert float(terms.abs().max()) < 1e-10


def test_flow_attacks_use_the_flow_forward_process():
    gen = torch.Generator().manual_seed(3)
    z0, e = torch.randn(2, 4, 2, 2, generator=gen), torch.randn(2, 4, 2, 2, generator=gen)
    pred = _LinearField(e)
    # PIA: e0 = eps_hat(z0, 0) = z0 + (e - z0) = e, z_t on the line, eps_hat(z_t, t) = e again
    pia = attack_terms("pia", pred, z0, timesteps=[0, 100, 500], p=2)
    assert float(pia.abs().max()) < 1e-9
    sima = attack_terms("sima", pred, z0, timesteps=[0, 500], p=2)
    expected = torch.stack([(z0 + (e - z0) / (1 - t / T) * (1 - t / T)) ** 2 for t in (0, 500)], dim=1)
    torch.testing.assert_close(sima, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- SD3 against its pipeline

@pytest.fixture(scope="module", params=[True, False], ids=["t5", "no_t5"])
def sd3(request, tmp_path_factory):
    pipe = tiny_sd3_pipeline(tmp_path_factory.mktemp("sd3"), with_t5=request.param)
    text = {k: getattr(pipe, k) for k in TEXT_KEYS}
    pred = SD3NoisePredictor.from_components(pipe.transformer, pipe.scheduler, text=text, device=CPU)
    return pipe, pred


@torch.no_grad()
def _direct_eps(pipe, z_t: torch.Tensor, t: int, prompt_embeds, pooled) -> torch.Tensor:
    """eps_hat through the pipeline's own pieces: the timestep from FlowMatchEulerDiscreteScheduler
    at the unshifted sigma t / T, the transformer call, eps = z_t + (1 - sigma) v."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sigma = t / T
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=T)
    sched.set_timesteps(sigmas=[sigma], device=CPU)
    timestep = sched.timesteps[0].expand(z_t.shape[0])
    v = pipe.transformer(hidden_states=z_t, timestep=timestep, encoder_hidden_states=prompt_embeds,
                         pooled_projections=pooled, return_dict=False)[0]
    return z_t + (1 - sigma) * v


@torch.no_grad()
def _encode(pipe, captions):
    prompts = ["" if c is None else c for c in captions]
    embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None, device=CPU,
                                              do_classifier_free_guidance=False)
    return embeds, pooled


def test_sd3_conditioning_is_the_pipelines(sd3):
    pipe, pred = sd3
    captions = ["a red cat", None, "the dog"]
    embeds, pooled = _encode(pipe, captions)
    assert embeds.shape[1] == pred.n_tokens
    cond = pred.encode_prompts(captions)
    assert torch.equal(cond[:, : pred.n_tokens], embeds)
    assert torch.equal(cond[:, pred.n_tokens:].reshape(3, -1)[:, : pred.pooled_dim], pooled)
    if pipe.text_encoder_3 is None:  # zeros where T5's tokens would be, as the pipeline uses
        assert not cond[:, pred.clip_tokens: pred.n_tokens].any()


def test_sd3_terms_equal_a_direct_pipeline_computation(sd3):
    pipe, pred = sd3
    gen = torch.Generator().manual_seed(4)
    z0 = torch.randn(3, *SD3_LATENT_SHAPE, generator=gen)
    captions = ["a red cat", None, "the dog"]
    timesteps = [10, 250]
    embeds, pooled = _encode(pipe, captions)
    ids = np.arange(3)
    sima = attack_terms("sima", pred, z0, timesteps=timesteps, captions=captions, batch_size=2)
    pia = attack_terms("pia", pred, z0, timesteps=timesteps, captions=captions, batch_size=2)
    loss = attack_terms("loss", pred, z0, timesteps=timesteps, captions=captions, sample_ids=ids, seed=7)
    noise = sample_noise(7, ids, LOSS_STREAM, (len(timesteps), *SD3_LATENT_SHAPE))
    e0 = _direct_eps(pipe, z0, 0, embeds, pooled)
    for k, t in enumerate(timesteps):
        sigma = t / T
        want_sima = _direct_eps(pipe, z0, t, embeds, pooled).abs() ** 4
        z_pia = (1 - sigma) * z0 + sigma * e0
        want_pia = (e0 - _direct_eps(pipe, z_pia, t, embeds, pooled)).abs() ** 4
        e = noise[:, k]
        z_loss = (1 - sigma) * z0 + sigma * e
        want_loss = (e - _direct_eps(pipe, z_loss, t, embeds, pooled)).abs() ** 4
        for got, want in ((sima, want_sima), (pia, want_pia), (loss, want_loss)):
            torch.testing.assert_close(got[:, k], want, rtol=1e-5, atol=1e-5)


def test_sd3_secmi_and_pfami_run(sd3):
    from ldminv_core.attacks import pfami_scores

    _, pred = sd3
    z0 = torch.randn(2, *SD3_LATENT_SHAPE, generator=torch.Generator().manual_seed(5))
    terms = attack_terms("secmi", pred, z0, timesteps=[0, 10])
    assert terms.shape == (2, 2, *SD3_LATENT_SHAPE) and torch.isfinite(terms).all()
    scores = pfami_scores(pred, z0, timesteps=[0, 50], strengths=[0.9])
    assert scores.shape == (2,) and np.isfinite(np.asarray(scores)).all()


def test_sd3_refuses_a_ddpm_scheduler(sd3):
    from diffusers import DDPMScheduler

    pipe, _ = sd3
    text = {k: getattr(pipe, k) for k in TEXT_KEYS}
    with pytest.raises(LdminvError, match="FlowMatchEulerDiscreteScheduler"):
        SD3NoisePredictor.from_components(pipe.transformer, DDPMScheduler(), text=text)


# ---------------------------------------------------------------------------- loading a pipeline folder

@pytest.fixture(scope="module", params=[True, False], ids=["t5", "no_t5"])
def sd3_folder(request, tmp_path_factory):
    from tests.tiny_sd3 import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("sd3_folder"), with_t5=request.param), request.param


def test_sd3_folder_loads_as_the_sd3_family(sd3_folder):
    from ldminv_core.models.families import detect_family
    from ldminv_core.models.loading import load_model

    folder, with_t5 = sd3_folder
    assert detect_family(folder).name == "sd3"
    model = load_model(folder)
    assert model.family.name == "sd3" and model.is_conditional
    assert isinstance(model.predictor, SD3NoisePredictor)
    assert (model.predictor.text_encoder_3 is not None) == with_t5
    assert model.latent_shape == SD3_LATENT_SHAPE
    assert model.predictor.num_train_timesteps == T and model.predictor.schedule.kind == "flow"


@torch.no_grad()
def test_sd3_latents_use_the_vae_shift_factor(sd3_folder):
    from ldminv_core.models.loading import load_model
    from tests.tiny_sd3 import SD3_SCALING_FACTOR, SD3_SHIFT_FACTOR

    model = load_model(sd3_folder[0])
    assert (model.shift_factor, model.scaling_factor) == (SD3_SHIFT_FACTOR, SD3_SCALING_FACTOR)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(6)) * 2 - 1
    z = model.encode(x)
    mean = model.vae.encode(x).latent_dist.mean
    torch.testing.assert_close(z, (mean - SD3_SHIFT_FACTOR) * SD3_SCALING_FACTOR)
    # the pipeline's decode: latents / scaling_factor + shift_factor
    torch.testing.assert_close(model.decode(z), model.vae.decode(z / SD3_SCALING_FACTOR + SD3_SHIFT_FACTOR).sample,
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.decoder_fn()(z), model.decode(z), rtol=1e-5, atol=1e-5)



def test_geometry_on_the_16_channel_vae_matches_autograd(sd3_folder):
    from ldminv_core.geometry import decoder_geometry, jacobian
    from ldminv_core.models.loading import load_model
    from tests.tiny_sd3 import SD3_SCALING_FACTOR, SD3_SHIFT_FACTOR

    model = load_model(sd3_folder[0])
    z = torch.randn(2, *SD3_LATENT_SHAPE, generator=torch.Generator().manual_seed(7))

    def direct(zi):  # the pipeline's decode of one latent
        return model.vae.decode(zi[None] / SD3_SCALING_FACTOR + SD3_SHIFT_FACTOR).sample[0]

    want = torch.stack([torch.autograd.functional.jacobian(direct, zi).reshape(3 * 16 * 16, -1) for zi in z])
    for engine in ("layerwise", "torch.func"):
        got = jacobian(model.decoder_fn(), z, engine=engine)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    geo = decoder_geometry(model.decoder_fn(), z, k=8, influence="exact", log_volume_method="exact")
    assert geo.engine == "layerwise"
    torch.testing.assert_close(geo.influence.reshape(2, -1), 0.5 * torch.log((want ** 2).sum(1) + 1e-12),
                               rtol=1e-4, atol=1e-4)

def test_sd3_analyzes_end_to_end(tmp_path):
    import json

    import pandas as pd

    from ldminv_core.models.loading import load_model
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.run import run_analysis
    from tests.tiny_models import write_image_folder
    from tests.tiny_sd3 import build_tiny_sd3

    model_dir = build_tiny_sd3(tmp_path / "sd3", with_t5=False)
    write_image_folder(tmp_path / "members", 2, seed=1, captions=True, prefix="m")
    write_image_folder(tmp_path / "heldout", 2, seed=2, captions=True, prefix="h")
    run = run_analysis(AnalyzeConfig(model=str(model_dir), members=str(tmp_path / "members"),
                                     heldout=str(tmp_path / "heldout"), out=str(tmp_path / "run"),
                                     attacks="sima,pia,loss,secmi", timesteps="0,10", batch_size=4,
                                     device="cpu", topk=8, seed=3))
    record = json.loads((run / "run.json").read_text())
    assert record["family"] == "sd3" and record["model_class"] == "SD3Transformer2DModel"
    assert record["geometry"]["plan"]["engine"] == "layerwise"  # the 16-channel VAE, with shift_factor
    samples = pd.read_parquet(run / "samples.parquet")
    assert np.isfinite(samples["log_volume"]).all()
    model = load_model(model_dir)
    z = torch.from_numpy(np.load(run / "latents.npy"))
    captions = samples["caption"].tolist()
    for name in ("sima", "pia", "loss", "secmi"):
        got = torch.from_numpy(np.load(run / "residuals" / f"{name}.npy").astype(np.float32))
        want = attack_terms(name, model.predictor, z, timesteps=[0, 10], captions=captions,
                            sample_ids=samples["sample_id"].to_numpy(), seed=3)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
