"""Tests of ldminv_core.attacks against direct, unbatched diffusers calls.

Every reference below loops sample by sample and timestep by timestep, calls the diffusers
UNet itself (``unet(x[None], torch.tensor([t]), ...).sample``) and reads the scheduler's
``alphas_cumprod``; the tiny models are built from configs, nothing is downloaded.
"""
from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ldminv_core.attacks import (
    ATTACKS,
    DEFAULT_P,
    MASKABLE_ATTACKS,
    PFAMI_STRENGTHS,
    PFAMI_TIMESTEPS,
    NoisePredictor,
    attack_terms,
    parse_timesteps,
    pfami_neighbour,
    pfami_scores,
)
from ldminv_core.errors import (
    EmptyInputError,
    LdminvError,
    NonFiniteError,
    ShapeError,
    UnknownNameError,
)

N, C, H, W = 3, 4, 8, 8
TIMESTEPS = [0, 20, 40]
CAPTIONS = ["a cat", None, "dogs sat"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=H, in_channels=C, out_channels=C, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def _tiny_cond_unet() -> UNet2DConditionModel:
    torch.manual_seed(1)
    return UNet2DConditionModel(
        sample_size=H, in_channels=C, out_channels=C, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, cross_attention_dim=32, attention_head_dim=2,
    ).eval()


def _tiny_text(tmp_dir) -> tuple[CLIPTokenizer, CLIPTextModel]:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for ch in "abcdefghijklmnopqrstuvwxyz":
            vocab[ch + suffix] = len(vocab)
    vocab["at</w>"] = len(vocab)
    vocab["cat</w>"] = len(vocab)
    (tmp_dir / "vocab.json").write_text(json.dumps(vocab))
    (tmp_dir / "merges.txt").write_text("#version: 0.2\na t</w>\nc at</w>\n")
    tokenizer = CLIPTokenizer(
        vocab=str(tmp_dir / "vocab.json"), merges=str(tmp_dir / "merges.txt"), model_max_length=12
    )
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=1000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=37, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
            pad_token_id=1,
        )
    ).eval()
    return tokenizer, text_encoder


@pytest.fixture(scope="module")
def text_parts(tmp_path_factory):
    return _tiny_text(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def uncond():
    unet, scheduler = _tiny_unet(), DDPMScheduler(num_train_timesteps=1000)
    pred = NoisePredictor.from_components(unet, scheduler)
    return SimpleNamespace(pred=pred, unet=unet, scheduler=scheduler, tokenizer=None, text_encoder=None,
                           captions=None)


@pytest.fixture(scope="module")
def cond(text_parts):
    tokenizer, text_encoder = text_parts
    unet, scheduler = _tiny_cond_unet(), DDPMScheduler(num_train_timesteps=1000)
    pred = NoisePredictor.from_components(unet, scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
    return SimpleNamespace(pred=pred, unet=unet, scheduler=scheduler, tokenizer=tokenizer,
                           text_encoder=text_encoder, captions=CAPTIONS)


@pytest.fixture(scope="module", params=["uncond", "cond"])
def model(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def z0():
    return torch.randn((N, C, H, W), generator=torch.Generator().manual_seed(3))


# ----------------------------------------------------------------------------- references


def ref_hidden(m, caption):
    """(L, D) CLIP hidden states of one caption, straight from tokenizer + text encoder."""
    if m.tokenizer is None:
        return None
    ids = m.tokenizer(
        [caption or ""], padding="max_length", max_length=m.tokenizer.model_max_length,
        truncation=True, return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        return m.text_encoder(ids)[0][0]


def ref_eps(m, x, t, hidden):
    """Direct diffusers call on one latent x (C, h, w)."""
    with torch.no_grad():
        if hidden is None:
            return m.unet(x[None], torch.tensor([t])).sample[0]
        return m.unet(x[None], torch.tensor([t]), encoder_hidden_states=hidden[None]).sample[0]


def alpha(m, t):
    return float(m.scheduler.alphas_cumprod.double()[t])


def caption_of(m, n):
    return None if m.captions is None else m.captions[n]


def ref_noise(seed, sample_id, stream, shape):
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, sample_id, stream]).generate_state(1)[0]))
    return torch.randn(shape, generator=g)


def ref_sima(m, z0, ts, p):
    out = torch.zeros((len(z0), len(ts), C, H, W))
    for n in range(len(z0)):
        hid = ref_hidden(m, caption_of(m, n))
        for k, t in enumerate(ts):
            out[n, k] = ref_eps(m, z0[n], t, hid).abs() ** p
    return out


def ref_pia(m, z0, ts, p):
    out = torch.zeros((len(z0), len(ts), C, H, W))
    for n in range(len(z0)):
        hid = ref_hidden(m, caption_of(m, n))
        e0 = ref_eps(m, z0[n], 0, hid)
        for k, t in enumerate(ts):
            a = alpha(m, t)
            zt = math.sqrt(a) * z0[n] + math.sqrt(1 - a) * e0
            out[n, k] = (e0 - ref_eps(m, zt, t, hid)).abs() ** p
    return out


def ref_loss(m, z0, ts, p, seed, ids):
    out = torch.zeros((len(z0), len(ts), C, H, W))
    for n in range(len(z0)):
        hid = ref_hidden(m, caption_of(m, n))
        noise = ref_noise(seed, ids[n], 1, (len(ts), C, H, W))
        for k, t in enumerate(ts):
            a = alpha(m, t)
            zt = math.sqrt(a) * z0[n] + math.sqrt(1 - a) * noise[k]
            out[n, k] = (noise[k] - ref_eps(m, zt, t, hid)).abs() ** p
    return out


def ref_ddim(m, x, s, u, hid):
    eps = ref_eps(m, x, s, hid)
    a_s, a_u = alpha(m, s), alpha(m, u)
    x0 = (x - math.sqrt(1 - a_s) * eps) / math.sqrt(a_s)
    return math.sqrt(a_u) * x0 + math.sqrt(1 - a_u) * eps


def ref_secmi(m, z0, ts):
    step = ts[-1] - ts[-2] if len(ts) > 1 else max(ts[0], 1)
    grid = list(ts) + [ts[-1] + step]
    out = torch.zeros((len(z0), len(ts), C, H, W))
    for n in range(len(z0)):
        hid = ref_hidden(m, caption_of(m, n))
        inv = [z0[n] if grid[0] == 0 else ref_ddim(m, z0[n], 0, grid[0], hid)]
        for j in range(len(ts)):
            inv.append(ref_ddim(m, inv[j], grid[j], grid[j + 1], hid))
        for j in range(len(ts)):
            den = ref_ddim(m, inv[j + 1], grid[j + 1], grid[j], hid)
            out[n, j] = (den - inv[j]) ** 2
    return out


def ref_crop_resize(x, s):
    h, w = x.shape[-2:]
    ch, cw = max(1, round(s * h)), max(1, round(s * w))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[:, top:top + ch, left:left + cw]
    return F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0]


def ref_pfami(m, z0, ts, strengths, seed):
    scores = []
    for n in range(len(z0)):
        hid = ref_hidden(m, caption_of(m, n))
        noise = ref_noise(seed, n, 2, (len(ts), C, H, W))

        def loss(x):
            vals = []
            for k, t in enumerate(ts):
                a = alpha(m, t)
                xt = math.sqrt(a) * x + math.sqrt(1 - a) * noise[k]
                vals.append(((noise[k] - ref_eps(m, xt, t, hid)) ** 2).mean().item())
            return float(np.mean(vals))

        base = loss(z0[n])
        scores.append(np.mean([loss(ref_crop_resize(z0[n], s)) - base for s in strengths]))
    return torch.tensor(scores, dtype=torch.float32)


def _close(actual, expected, *, rtol=1e-4, atol=1e-5):
    assert actual.dtype == torch.float32 and actual.device.type == "cpu"
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected.float(), rtol=rtol, atol=atol)


class CallCounter:
    """Forward pre-hook recording (batch size, timestep) of every UNet call."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        ts = args[1] if len(args) > 1 else kwargs["timestep"]
        self.calls.append((sample.shape[0], int(torch.as_tensor(ts).flatten()[0])))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ----------------------------------------------------------------------------- attacks vs references


def test_sima_matches_reference(model, z0):
    got = attack_terms("sima", model.pred, z0, timesteps=TIMESTEPS, captions=model.captions, batch_size=2)
    _close(got, ref_sima(model, z0, TIMESTEPS, DEFAULT_P["sima"]))


def test_pia_matches_reference(model, z0):
    got = attack_terms("pia", model.pred, z0, timesteps=TIMESTEPS, captions=model.captions, batch_size=2)
    _close(got, ref_pia(model, z0, TIMESTEPS, DEFAULT_P["pia"]))


def test_loss_matches_reference_with_seeded_noise(model, z0):
    ids = [5, 0, 9]
    got = attack_terms("loss", model.pred, z0, timesteps=TIMESTEPS, captions=model.captions,
                       sample_ids=ids, seed=11, batch_size=2)
    _close(got, ref_loss(model, z0, TIMESTEPS, DEFAULT_P["loss"], 11, ids))
    other_seed = attack_terms("loss", model.pred, z0, timesteps=TIMESTEPS, captions=model.captions,
                              sample_ids=ids, seed=12, batch_size=2)
    assert not torch.allclose(got, other_seed)


@pytest.mark.parametrize("ts", [[5, 15, 25], [0, 10, 20], [7]])
def test_secmi_matches_hand_written_ddim(model, z0, ts):
    got = attack_terms("secmi", model.pred, z0, timesteps=ts, captions=model.captions, batch_size=2)
    _close(got, ref_secmi(model, z0, ts), rtol=1e-3, atol=1e-7)
    assert got.sum() > 0


def test_pfami_matches_definition(model, z0):
    ts, strengths = (0, 40, 80), (0.9, 0.75, 0.5)
    got = pfami_scores(model.pred, z0, captions=model.captions, timesteps=ts, strengths=strengths,
                       seed=4, batch_size=2)
    assert got.shape == (N,)
    _close(got, ref_pfami(model, z0, ts, strengths, 4), rtol=1e-3, atol=1e-6)


def test_pfami_defaults_call_pattern(uncond, z0):
    assert list(PFAMI_TIMESTEPS) == list(range(0, 500, 50))
    np.testing.assert_allclose(PFAMI_STRENGTHS, np.linspace(0.95, 0.70, 10))
    with CallCounter(uncond.unet) as counter:
        scores = pfami_scores(uncond.pred, z0[:2], batch_size=2)
    assert torch.isfinite(scores).all()
    assert len(counter.calls) == 11 * 10
    assert {b for b, _ in counter.calls} == {2}
    assert sorted({t for _, t in counter.calls}) == list(range(0, 500, 50))


def test_pfami_neighbour_crops_centre(z0):
    torch.testing.assert_close(pfami_neighbour(z0, 1.0), z0)
    # 0.5 of 8 keeps rows/cols 2..5; bilinear x2 upsampling of a constant block stays constant.
    z = torch.zeros(1, 1, 8, 8)
    z[..., 2:6, 2:6] = 1.0
    torch.testing.assert_close(pfami_neighbour(z, 0.5), torch.ones(1, 1, 8, 8))


# ----------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("name", [n for n in MASKABLE_ATTACKS if n != "clid"])  # clid: test_clid.py (captions)
def test_batch_size_independence(cond, z0, name):
    ts = [3, 30]
    one = attack_terms(name, cond.pred, z0, timesteps=ts, captions=CAPTIONS, batch_size=1)
    three = attack_terms(name, cond.pred, z0, timesteps=ts, captions=CAPTIONS, batch_size=3)
    torch.testing.assert_close(one, three, rtol=1e-5, atol=1e-6)


def test_pfami_batch_size_independence(cond, z0):
    kw = dict(captions=CAPTIONS, timesteps=(0, 100), strengths=(0.8,))
    torch.testing.assert_close(pfami_scores(cond.pred, z0, batch_size=1, **kw),
                               pfami_scores(cond.pred, z0, batch_size=3, **kw), rtol=1e-4, atol=1e-6)


def test_sample_ids_make_resume_identical(uncond, z0):
    full = attack_terms("loss", uncond.pred, z0, timesteps=[10, 50], seed=3)
    tail = attack_terms("loss", uncond.pred, z0[1:], timesteps=[10, 50], seed=3, sample_ids=[1, 2])
    torch.testing.assert_close(tail, full[1:], rtol=1e-5, atol=1e-6)
    renamed = attack_terms("loss", uncond.pred, z0[1:], timesteps=[10, 50], seed=3)
    assert not torch.allclose(renamed, full[1:])


def test_captions_change_conditional_results_and_none_is_empty_prompt(cond, z0):
    run = lambda caps: attack_terms("sima", cond.pred, z0, timesteps=[10], captions=caps)
    empty = run([""] * N)
    torch.testing.assert_close(run([None] * N), empty)
    torch.testing.assert_close(run(None), empty)
    with_text = run(["a cat", "a cat", "a cat"])
    assert not torch.allclose(with_text, empty)
    assert not torch.allclose(with_text, run(["dogs sat"] * N))
    hidden = cond.pred.encode_prompts(["a cat", None])
    torch.testing.assert_close(hidden[0], ref_hidden(cond, "a cat"))
    torch.testing.assert_close(hidden[1], ref_hidden(cond, ""))


def test_numpy_memmap_latents_match_tensor(uncond, z0, tmp_path):
    arr = np.lib.format.open_memmap(tmp_path / "z.npy", mode="w+", dtype=np.float32, shape=tuple(z0.shape))
    arr[:] = z0.numpy()
    arr.flush()
    read_only = np.load(tmp_path / "z.npy", mmap_mode="r")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = attack_terms("sima", uncond.pred, read_only, timesteps=[10], batch_size=2)
    torch.testing.assert_close(got, attack_terms("sima", uncond.pred, z0, timesteps=[10], batch_size=2))


def test_unconditional_ignores_captions(uncond, z0):
    assert uncond.pred.encode_prompts(["a cat"]) is None
    assert not uncond.pred.is_conditional
    torch.testing.assert_close(
        attack_terms("sima", uncond.pred, z0, timesteps=[10], captions=["x", "y", "z"]),
        attack_terms("sima", uncond.pred, z0, timesteps=[10]),
    )


def test_unet_call_counts(model, z0):
    ts = [5, 15, 25]
    expected = {"sima": 3, "pia": 4, "loss": 3, "secmi": 5}  # secmi: 0 -> 5, then T + 1 calls
    for name, calls in expected.items():
        with CallCounter(model.unet) as counter:
            attack_terms(name, model.pred, z0, timesteps=ts, captions=model.captions, batch_size=N)
        assert len(counter.calls) == calls, name
        assert {b for b, _ in counter.calls} == {N}


def test_progress_reports_samples_done(uncond, z0):
    seen = []
    attack_terms("sima", uncond.pred, z0, timesteps=[1], batch_size=2, progress=seen.append)
    assert seen == [2, 3]


@pytest.mark.parametrize("kind", ["v_prediction", "sample"])
def test_prediction_type_conversion(kind, z0):
    unet = _tiny_unet()
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=kind)
    pred = NoisePredictor.from_components(unet, scheduler)
    assert pred.prediction_type == kind
    t = 123
    a = float(scheduler.alphas_cumprod.double()[t])
    with torch.no_grad():
        raw = unet(z0, torch.full((N,), t)).sample
    if kind == "v_prediction":
        expected = math.sqrt(a) * raw + math.sqrt(1 - a) * z0
    else:
        expected = (z0 - math.sqrt(a) * raw) / math.sqrt(1 - a)
    torch.testing.assert_close(pred(z0, t), expected, rtol=1e-5, atol=1e-5)


def test_predictor_properties(uncond, cond):
    assert uncond.pred.num_train_timesteps == 1000
    assert uncond.pred.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(uncond.pred.alphas_cumprod, uncond.scheduler.alphas_cumprod.double())
    assert cond.pred.is_conditional
    assert ATTACKS == ("sima", "pia", "loss", "secmi", "pfami", "clid")


# ----------------------------------------------------------------------------- errors


def test_conditional_unet_needs_text_encoder():
    with pytest.raises(LdminvError, match="text_encoder"):
        NoisePredictor.from_components(_tiny_cond_unet(), DDPMScheduler())


def test_scheduler_without_alphas_cumprod(uncond):
    with pytest.raises(LdminvError, match="alphas_cumprod"):
        NoisePredictor.from_components(uncond.unet, SimpleNamespace(config={}))


def test_unknown_prediction_type(uncond):
    sched = SimpleNamespace(alphas_cumprod=uncond.scheduler.alphas_cumprod, config={"prediction_type": "x0"})
    with pytest.raises(UnknownNameError, match="prediction_type"):
        NoisePredictor.from_components(uncond.unet, sched)


def test_channel_mismatch_names_both(uncond):
    with pytest.raises(ShapeError, match=r"3 latent channels.*in_channels = 4"):
        attack_terms("sima", uncond.pred, torch.zeros(2, 3, H, W), timesteps=[0])
    with pytest.raises(ShapeError, match="in_channels"):
        uncond.pred(torch.zeros(2, 3, H, W), 0)


@pytest.mark.parametrize(
    "ts, err",
    [([1000], LdminvError), ([-1], LdminvError), ([1.5], LdminvError), ([10, 10], LdminvError),
     ([20, 10], LdminvError), ([], EmptyInputError)],
)
def test_bad_timesteps(uncond, z0, ts, err):
    with pytest.raises(err, match="timestep"):
        attack_terms("sima", uncond.pred, z0, timesteps=ts)


def test_secmi_grid_must_fit_schedule(uncond, z0):
    with pytest.raises(LdminvError, match="1000"):
        attack_terms("secmi", uncond.pred, z0, timesteps=[990, 995])


def test_non_finite_and_empty_latents(uncond, z0):
    bad = z0.clone()
    bad[1, 2, 3, 4] = float("nan")
    with pytest.raises(NonFiniteError, match="z0"):
        attack_terms("pia", uncond.pred, bad, timesteps=[0])
    with pytest.raises(NonFiniteError):
        uncond.pred(torch.full((1, C, H, W), float("inf")), 0)
    with pytest.raises(LdminvError, match="t: expected a timestep"):
        uncond.pred(z0, 1000)
    with pytest.raises(EmptyInputError, match="z0"):
        attack_terms("sima", uncond.pred, torch.zeros(0, C, H, W), timesteps=[0])
    with pytest.raises(EmptyInputError, match="z0"):
        pfami_scores(uncond.pred, torch.zeros(0, C, H, W))


def test_unknown_attack_lists_choices(uncond, z0):
    with pytest.raises(UnknownNameError, match="sima.*pia.*loss.*secmi"):
        attack_terms("simba", uncond.pred, z0, timesteps=[0])
    with pytest.raises(UnknownNameError, match="pfami_scores"):
        attack_terms("pfami", uncond.pred, z0, timesteps=[0])


def test_bad_captions_and_ids(cond, z0):
    with pytest.raises(ShapeError, match="captions"):
        attack_terms("sima", cond.pred, z0, timesteps=[0], captions=["a"])
    with pytest.raises(ShapeError, match="sample_ids"):
        attack_terms("loss", cond.pred, z0, timesteps=[0], sample_ids=[0, 1])


def test_parse_timesteps():
    assert parse_timesteps("0:300:10") == list(range(0, 300, 10))
    assert parse_timesteps(" 0,10,50 ") == [0, 10, 50]
    assert parse_timesteps("5:8") == [5, 6, 7]
    for spec in ["a:b", "0:10:0", "", "10,5", "1:2:3:4", "5:5", "-10,0", "0;10"]:
        with pytest.raises(LdminvError, match=repr(spec).replace("(", r"\(")):
            parse_timesteps(spec)
