"""CLiD (attack "clid") against a direct recomputation with diffusers, and through the pipeline.

The oracle follows the reference code (``zhaisf/CLiD``, ``mia_CLiD_clip.py``) on the tiny
text-conditioned model of tests/tiny_models.py: prompts encoded by ``StableDiffusionPipeline.
encode_prompt`` with guidance off, the three window timesteps noised in one batch by the
scheduler's ``add_noise`` and denoised by one UNet call per caption, ``F.mse_loss`` for the
reference's per-caption losses. Then: batch size and resume invariance, the UNet call count,
refusals (unconditional model, missing captions: before any UNet call / before the run folder
exists), and ``analyze --attacks clid`` + ``report`` through the command line under the three
protocols, masked and unmasked.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from sklearn.metrics import roc_auc_score

from ldminv_core.__main__ import main
from ldminv_core.attacks import (
    CLID_DEGRADATIONS,
    CLID_UNET_CALLS,
    CLID_WINDOW,
    attack_terms,
    degraded_captions,
)
from ldminv_core.errors import DataLoadError, LdminvError, ModelKindError
from ldminv_core.models.loading import load_model
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.cost import estimate_cost
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.runs import Run

CAPTIONS = ["the cat and", "red dog", "a small tree and the blue"]
SEED, STREAM = 7, 3
IDS = [4, 0, 9]


@pytest.fixture(scope="module")
def cond(tiny_cond_model):
    model = load_model(tiny_cond_model, device="cpu")
    scheduler = DDPMScheduler.from_pretrained(tiny_cond_model / "scheduler")
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    return model, pipe


@pytest.fixture(scope="module")
def uncond(tiny_uncond_model):
    return load_model(tiny_uncond_model, device="cpu")


@pytest.fixture(scope="module")
def z0(cond):
    model, _ = cond
    return torch.randn((len(CAPTIONS), *model.latent_shape), generator=torch.Generator().manual_seed(11))


# ----------------------------------------------------------------------------- the oracle


def ref_degraded(caption: str) -> list[str]:
    """The reference's degradations (tokenize_captions_multi of mia_CLiD_clip.py)."""
    n = len(caption)
    return [caption[:int(n / 3)], caption[int(n / 3):int(2 * n / 3)], caption[int(2 * n / 3):], ""]


def ref_noise(sample_id: int, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([SEED, sample_id, STREAM]).generate_state(1)[0]))
    return torch.randn(shape, generator=g)


@torch.no_grad()
def ref_clid(pipe, z0, captions, ids):
    """Per sample: the terms (C, h, w) and the reference's gap mean_k (L_k - L_own)."""
    ts = torch.tensor(CLID_WINDOW, dtype=torch.long)
    terms, gaps = [], []
    for n, caption in enumerate(captions):
        noise = ref_noise(ids[n], (len(ts), *z0.shape[1:]))
        x_t = pipe.scheduler.add_noise(z0[n][None].expand(len(ts), -1, -1, -1), noise, ts)

        def eps(prompt):
            embeds, negative = pipe.encode_prompt(prompt, "cpu", 1, False)
            assert negative is None
            return pipe.unet(x_t, ts, encoder_hidden_states=embeds.expand(len(ts), -1, -1)).sample

        own = eps(caption)
        loss_own = F.mse_loss(own, noise, reduction="mean")
        others = [eps(c) for c in ref_degraded(caption)]
        gaps.append(float(np.mean([float(F.mse_loss(o, noise, reduction="mean")) - float(loss_own) for o in others])))
        sq_own = (own - noise) ** 2
        sq_deg = torch.stack([(o - noise) ** 2 for o in others]).mean(dim=0)
        terms.append((sq_own - sq_deg).mean(dim=0))
    return torch.stack(terms)[:, None], torch.tensor(gaps, dtype=torch.float64)


def test_degradations_follow_the_reference():
    assert degraded_captions("abcdefgh") == ("ab", "cde", "fgh", "")
    assert len(CLID_DEGRADATIONS) == 4 and CLID_WINDOW == (485, 495, 505) and CLID_UNET_CALLS == 15
    for caption in ["", "a", "ab", "the cat and", "x" * 77, "a small tree and the blue"]:
        parts = degraded_captions(caption)
        assert list(parts) == ref_degraded(caption)
        assert "".join(parts) == caption


def test_terms_and_score_equal_the_direct_diffusers_computation(cond, z0):
    model, pipe = cond
    got = attack_terms("clid", model.predictor, z0, captions=CAPTIONS, sample_ids=IDS, seed=SEED, batch_size=2)
    want_terms, gaps = ref_clid(pipe, z0, CAPTIONS, IDS)
    assert got.shape == (len(CAPTIONS), 1, *model.latent_shape) and got.dtype == torch.float32
    torch.testing.assert_close(got, want_terms, rtol=1e-5, atol=1e-5)
    # the per-sample score -sum(terms) is d times the reference's gap mean_k (L_k - L_own)
    d = math.prod(model.latent_shape)
    score = -got.double().sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(score, d * gaps, rtol=1e-5, atol=1e-5)
    assert (gaps.abs() > 1e-4).all()  # the degradations change the prediction: not a trivial zero


def test_batch_size_and_sample_ids(cond, z0):
    pred = cond[0].predictor
    kw = dict(captions=CAPTIONS, sample_ids=IDS, seed=SEED)
    one = attack_terms("clid", pred, z0, batch_size=1, **kw)
    torch.testing.assert_close(attack_terms("clid", pred, z0, batch_size=3, **kw), one, rtol=1e-5, atol=1e-5)
    tail = attack_terms("clid", pred, z0[1:], captions=CAPTIONS[1:], sample_ids=IDS[1:], seed=SEED, batch_size=2)
    torch.testing.assert_close(tail, one[1:], rtol=1e-5, atol=1e-5)  # a resumed run's later batches
    other_seed = attack_terms("clid", pred, z0, captions=CAPTIONS, sample_ids=IDS, seed=SEED + 1)
    assert not torch.allclose(other_seed, one)


class _CountCalls:
    def __init__(self, unet):
        self.calls: list[int] = []
        self.handle = unet.register_forward_pre_hook(lambda m, args: self.calls.append(args[0].shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_unet_calls_per_image(cond, z0):
    model = cond[0]
    with _CountCalls(model.unet) as counter:
        attack_terms("clid", model.predictor, z0, captions=CAPTIONS, batch_size=len(CAPTIONS))
    assert counter.calls == [len(CAPTIONS)] * CLID_UNET_CALLS


def test_refused_on_an_unconditional_model_before_any_call(uncond):
    z = torch.zeros((2, *uncond.latent_shape))
    with _CountCalls(uncond.unet) as counter, pytest.raises(ModelKindError) as err:
        attack_terms("clid", uncond.predictor, z, captions=["a cat", "a dog"])
    assert counter.calls == []
    assert isinstance(err.value, ValueError)
    msg = str(err.value)
    assert "'clid'" in msg and "text-conditioned" in msg and "unconditional model (UNet2DModel)" in msg


@pytest.mark.parametrize("captions, named", [(None, "None for all 3"), (["a", None, "b"], "captions[1] = None"),
                                             (["a", "b", "  "], "captions[2] = '  '")])
def test_refused_without_a_caption_per_sample(cond, z0, captions, named):
    with pytest.raises(LdminvError, match="'clid'") as err:
        attack_terms("clid", cond[0].predictor, z0, captions=captions)
    assert named in str(err.value)


# ----------------------------------------------------------------------------- pipeline and CLI


def _cli_args(model: Path, dirs, out: Path, attacks: str) -> list[str]:
    return ["analyze", "--model", str(model), "--members", str(dirs[0]), "--heldout", str(dirs[1]),
            "--out", str(out), "--attacks", attacks, "--timesteps", "0:30:10", "--batch-size", "8",
            "--device", "cpu", "--threads", "1"]


def test_cli_refuses_before_anything_runs(tiny_uncond_model, tiny_cond_model, tiny_image_dirs, tiny_caption_dirs,
                                          tmp_path, capsys):
    out = tmp_path / "never"
    assert main(_cli_args(tiny_uncond_model, tiny_caption_dirs, out, "sima,clid")) == 2
    err = capsys.readouterr().err
    assert "'clid'" in err and "unconditional model (Unconditional latent diffusion" in err
    assert str(tiny_uncond_model) in err
    assert not out.exists()
    assert main(_cli_args(tiny_cond_model, tiny_image_dirs, out, "clid")) == 2  # folders without captions
    err = capsys.readouterr().err
    assert "clid" in err and "8 of 8 images" in err and "metadata.jsonl" in err and "text" in err
    assert not (out / "run.json").exists()
    given = AnalyzeConfig(model=str(tiny_uncond_model), members=str(tiny_caption_dirs[0]),
                          heldout=str(tiny_caption_dirs[1]), out=str(out), attacks="clid", device="cpu")
    with pytest.raises(ModelKindError, match="unconditional model \\(UNet2DModel\\)"):
        run_analysis(given, model=load_model(tiny_uncond_model, device="cpu"))  # a model passed in
    assert not out.exists()
    with pytest.raises(DataLoadError, match="own caption"):
        estimate_cost(AnalyzeConfig(model=str(tiny_cond_model), members=str(tiny_image_dirs[0]),
                                    heldout=str(tiny_image_dirs[1]), out=str(out), attacks="clid", device="cpu"))


@pytest.fixture(scope="module")
def clid_run(tmp_path_factory, tiny_cond_model, tiny_caption_dirs) -> Path:
    out = tmp_path_factory.mktemp("clid") / "run"
    assert main(_cli_args(tiny_cond_model, tiny_caption_dirs, out, "sima,clid")) == 0
    return out


def test_analyze_stores_the_attack_terms(clid_run, cond):
    run = Run.open(clid_run)
    spec = run.settings["attacks"]["clid"]
    assert spec["timesteps"] == [495] and spec["window"] == list(CLID_WINDOW) and spec["p"] == 2
    assert spec["degradations"] == list(CLID_DEGRADATIONS)
    assert run.timesteps("clid") == [495] and run.timesteps("sima") == [0, 10, 20]
    terms = np.asarray(run.terms("clid"))
    assert terms.shape == (16, 1, 4, 4, 4)
    captions = run.samples["caption"].tolist()
    direct = attack_terms("clid", cond[0].predictor, torch.from_numpy(np.array(run.latents)), captions=captions,
                          sample_ids=np.arange(16), seed=0, batch_size=5)
    np.testing.assert_allclose(terms, direct.numpy(), rtol=1e-5, atol=1e-5)


def test_cost_estimate_counts_fifteen_calls_per_image(tiny_cond_model, tiny_caption_dirs, tmp_path):
    est = estimate_cost(AnalyzeConfig(model=str(tiny_cond_model), members=str(tiny_caption_dirs[0]),
                                      heldout=str(tiny_caption_dirs[1]), out=str(tmp_path / "never"),
                                      attacks="sima,clid", timesteps="0:30:10", device="cpu"))
    stages = {s.stage: s for s in est.stages}
    assert stages["clid"].unet_calls == 16 * CLID_UNET_CALLS and stages["sima"].unet_calls == 16 * 3
    assert "clid" in str(est)


def _report(clid_run, capsys, *extra: str) -> dict:
    assert main(["report", str(clid_run), "--json", "--attack", "clid", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_gives_clid_auroc_under_every_protocol_masked_and_unmasked(clid_run, capsys):
    run = Run.open(clid_run)
    labels = (run.samples["split"] == "member").to_numpy().astype(int)
    flat = np.asarray(run.terms("clid"), dtype=np.float64)[:, 0].reshape(16, -1)
    infl = np.asarray(run.influence).reshape(16, -1)
    for protocol, extra in (("standard", []), ("paper", []), ("honest", ["--folds", "2"])):
        rep = _report(clid_run, capsys, "--protocol", protocol, *extra)
        assert rep["protocol"]["name"] == protocol
        clid = rep["attacks"]["clid"]
        for arm in ("baseline", "masked"):
            assert 0.0 <= clid[arm]["auroc"] <= 1.0, (protocol, arm)
        if protocol != "honest":  # one stored step: the t choice is trivial, scores are -sum(terms)
            assert clid["best_t"] == 495
            assert clid["baseline"]["auroc"] == pytest.approx(roc_auc_score(labels, -flat.sum(axis=1)), abs=1e-12)
    # the standard protocol's masked arm (drop 30 %) recomputed: drop each sample's lowest-influence coordinates
    rep = _report(clid_run, capsys, "--drop", "30")
    keep = np.ones_like(flat, dtype=bool)
    for i in range(16):
        keep[i, np.argsort(infl[i], kind="stable")[:round(64 * 0.30)]] = False
    masked = rep["attacks"]["clid"]["masked"]
    assert masked["drop_percent"] == 30
    assert masked["auroc"] == pytest.approx(roc_auc_score(labels, -(flat * keep).sum(axis=1)), abs=1e-12)
    assert main(["report", str(clid_run)]) == 0
    assert "CLiD" in capsys.readouterr().out


def test_class_conditional_and_transformer_families_are_judged_by_what_they_read(tmp_path, tiny_caption_dirs):
    """CLiD reads the family, not the UNet class: a DiT (labels) is refused as class-conditional
    before anything runs and when passed in; an SD3 transformer (captions) passes the check."""
    from ldminv_core.attacks import check_clid_model
    from ldminv_core.models.loading import load_model as _load
    from tests.tiny_families import build_tiny_dit
    from tests.tiny_sd3 import build_tiny_sd3

    dit = build_tiny_dit(tmp_path / "dit")
    out = tmp_path / "never"
    cfg = AnalyzeConfig(model=str(dit), members=str(tiny_caption_dirs[0]), heldout=str(tiny_caption_dirs[1]),
                        out=str(out), attacks="clid", device="cpu")
    with pytest.raises(ModelKindError, match="class-conditional model \\(DiT"):
        run_analysis(cfg)
    assert not out.exists()
    with pytest.raises(ModelKindError, match="class-conditional model \\(DiTTransformer2DModel\\)"):
        check_clid_model(_load(dit, device="cpu").predictor)
    sd3 = build_tiny_sd3(tmp_path / "sd3", with_t5=False)
    check_clid_model(_load(sd3, device="cpu").predictor)  # text-conditioned: no error
