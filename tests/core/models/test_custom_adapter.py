"""Tests of custom PyTorch models through an adapter file (ldminv_core.models.custom_adapter).

A stand-in for the paper's ``ldm_light`` repository (written here: a module ``ldm_light/main.py``
with tiny ``VAE``, ``UNetCompVis`` and ``DiffusionSchedule`` classes of the same constructor
signatures, methods and shapes as the paper's) and its ``vae_last.pt`` / ``unet_last.pt`` state
dicts drive the shipped ``examples/ldm_light_adapter.py``: ``analyze --model-adapter`` end to end
through the CLI (every attack, the geometry), run.json's family / adapter hash / geometry engine,
and the SimA / PIA / Loss terms, latents and geometry against a direct computation from the
stand-in modules (METHOD.md sections 1 and 5). Refusals: a pickled full model, wrong shapes and
dtypes (the function named), a missing build function (the file named), a changed adapter on
resume. Rectified-flow, class-conditional and text-conditioned adapters against hand computations.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ldminv_core.attacks import attack_terms
from ldminv_core.attacks.common import sample_noise
from ldminv_core.attacks.residual import LOSS_STREAM
from ldminv_core.errors import LdminvError, RunError
from ldminv_core.models.custom_adapter import AdapterError, load_custom_model, load_state_dict
from tests.tiny_models import write_image_folder

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "ldm_light_adapter.py"
TIMESTEPS = [7, 60]

# The stand-in repository module: our own tiny classes with the paper's names and signatures
# (VAE.encode -> (mu, logvar), VAE.decode, UNetCompVis(x, t) -> eps, DiffusionSchedule.alpha_bars).
STAND_IN = textwrap.dedent('''
    import math
    import torch
    import torch.nn as nn


    def _norm(ch):
        return nn.GroupNorm(math.gcd(ch, 4), ch)


    class VAE(nn.Module):
        def __init__(self, in_ch=3, latent_ch=4, base=128, drop=0.1):
            super().__init__()
            self.down = nn.Sequential(
                nn.Conv2d(in_ch, base, 3, padding=1), _norm(base), nn.SiLU(), nn.Dropout(drop),
                nn.Conv2d(base, base, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(base, 2 * base, 4, stride=2, padding=1), _norm(2 * base), nn.SiLU())
            self.to_mu = nn.Conv2d(2 * base, latent_ch, 1)
            self.to_logvar = nn.Conv2d(2 * base, latent_ch, 1)
            self.up = nn.Sequential(
                nn.Conv2d(latent_ch, 2 * base, 1), nn.SiLU(), nn.Dropout(drop),
                nn.ConvTranspose2d(2 * base, base, 4, stride=2, padding=1), _norm(base), nn.SiLU(),
                nn.ConvTranspose2d(base, base, 4, stride=2, padding=1), nn.SiLU(),
                nn.Conv2d(base, in_ch, 3, padding=1))

        def encode(self, x):
            h = self.down(x)
            return self.to_mu(h), self.to_logvar(h)

        def decode(self, z):
            return self.up(z)


    class UNetCompVis(nn.Module):
        def __init__(self, in_ch=4, model_ch=128, out_ch=4, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                     dropout=0.1, conv_resample=True):
            super().__init__()
            self.model_ch = model_ch
            self.time = nn.Sequential(nn.Linear(model_ch, 2 * model_ch), nn.SiLU(), nn.Linear(2 * model_ch, model_ch))
            self.inp = nn.Conv2d(in_ch, model_ch, 3, padding=1)
            convs, ch = [], model_ch
            for mult in channel_mult:
                for _ in range(num_res_blocks):
                    convs.append(nn.Conv2d(ch, model_ch * mult, 3, padding=1))
                    ch = model_ch * mult
            self.convs = nn.ModuleList(convs)
            self.proj = nn.ModuleList(nn.Linear(model_ch, c.out_channels) for c in convs)
            self.drop = nn.Dropout(dropout)
            self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))

        def forward(self, x, t):
            half = self.model_ch // 2
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=x.device).float() / half)
            ang = t.float()[:, None] * freqs[None]
            emb = self.time(torch.cat([ang.cos(), ang.sin()], 1).to(x.dtype))
            h = self.inp(x)
            for conv, proj in zip(self.convs, self.proj):
                h = nn.functional.silu(conv(self.drop(h)) + proj(emb)[:, :, None, None])
            return self.out(h)


    class DiffusionSchedule:
        def __init__(self, T=1000, beta_start=1e-4, beta_end=2e-2, device="cpu"):
            self.T = T
            self.alpha_bars = torch.cumprod(1.0 - torch.linspace(beta_start, beta_end, T, device=device), 0)
''')

ARGS = {"in_channels": 3, "img_size": 16, "latent_channels": 2, "ae_base": 8, "dropout": 0.1,
        "unet_model_ch": 8, "unet_channel_mult": [1, 2], "unet_num_res_blocks": 1, "no_conv_resample": False,
        "T": 1000, "beta_start": 1e-4, "beta_end": 2e-2, "dataset": "cifar10"}


def _stand_in_module(repo: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("ldm_light_stand_in", repo / "ldm_light" / "main.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # so that torch.save can pickle a whole module (the refused case)
    spec.loader.exec_module(module)
    return module


def _modules(repo: Path):
    m = _stand_in_module(repo)
    vae = m.VAE(in_ch=3, latent_ch=2, base=8, drop=0.1)
    unet = m.UNetCompVis(in_ch=2, model_ch=8, out_ch=2, channel_mult=(1, 2), num_res_blocks=1, dropout=0.1)
    return vae, unet


def write_ldm_light(root: Path) -> tuple[Path, Path]:
    """A stand-in checkout of the paper's repository (``VAE2Diffusion/ldm_light/main.py``) and a
    checkpoint folder laid out as main.py's --out_dir (seeded random weights) under ``root``;
    returns (repository root, checkpoint folder). Shared by the page tests and bench_families."""
    repo = root / "VAE2Diffusion"
    (repo / "ldm_light").mkdir(parents=True)
    (repo / "ldm_light" / "main.py").write_text(STAND_IN)
    out = root / "out_dir"
    (out / "vae").mkdir(parents=True)
    (out / "ldm_vae").mkdir()
    torch.manual_seed(3)
    vae, unet = _modules(repo)
    torch.save(vae.state_dict(), out / "vae" / "vae_last.pt")
    torch.save(unet.state_dict(), out / "ldm_vae" / "unet_last.pt")
    (out / "args.json").write_text(json.dumps(ARGS))
    return repo, out


@pytest.fixture(scope="module")
def ldm_light(tmp_path_factory):
    """(repository root, checkpoint folder laid out as main.py's --out_dir)."""
    return write_ldm_light(tmp_path_factory.mktemp("ldm_light"))


@pytest.fixture()
def repo_env(ldm_light, monkeypatch):
    monkeypatch.setenv("LDM_LIGHT_REPO", str(ldm_light[0]))
    monkeypatch.delenv("LDM_LIGHT_MODULE", raising=False)
    monkeypatch.delenv("LDM_LIGHT_ARGS", raising=False)
    return ldm_light


def _loaded_modules(repo: Path, out: Path):
    """The stand-in modules with the saved weights, in eval mode: the oracle's own copy."""
    vae, unet = _modules(repo)
    vae.load_state_dict(torch.load(out / "vae" / "vae_last.pt", weights_only=True))
    unet.load_state_dict(torch.load(out / "ldm_vae" / "unet_last.pt", weights_only=True))
    return vae.eval(), unet.eval()


def _direct_terms(name, unet, z0, ids, seed, p):
    """METHOD.md section 1 terms from the stand-in UNet and the linear-beta schedule by hand."""
    abar = torch.cumprod(1.0 - torch.linspace(1e-4, 2e-2, 1000), 0).to(torch.float64)
    sa, s1a = abar.sqrt().tolist(), (1 - abar).sqrt().tolist()

    def eps(z, t):
        with torch.no_grad():
            return unet(z, torch.full((z.shape[0],), t, dtype=torch.long))

    noise = sample_noise(seed, ids, LOSS_STREAM, (len(TIMESTEPS), *z0.shape[1:])) if name == "loss" else None
    e0 = eps(z0, 0)
    terms = []
    for k, t in enumerate(TIMESTEPS):
        if name == "sima":
            terms.append(eps(z0, t).abs() ** p)
        else:
            e = e0 if name == "pia" else noise[:, k]
            terms.append((e - eps(z0 * sa[t] + e * s1a[t], t)).abs() ** p)
    return torch.stack(terms, dim=1)


# ---------------------------------------------------------------------------- end to end

def test_cli_analyze_with_the_ldm_light_example_end_to_end(repo_env, tmp_path, capsys):
    import pandas as pd

    from ldminv_core.__main__ import main

    repo, ckpt = repo_env
    members = tmp_path / "members"
    heldout = tmp_path / "heldout"
    write_image_folder(members, 3, formats=("png",), seed=1)
    write_image_folder(heldout, 3, formats=("png",), seed=2)
    out = tmp_path / "run"
    args = ["analyze", "--model-adapter", str(EXAMPLE), "--model", str(ckpt), "--members", str(members),
            "--heldout", str(heldout), "--out", str(out), "--attacks", "sima,pia,loss,secmi,pfami",
            "--timesteps", ",".join(map(str, TIMESTEPS)), "--topk", "6", "--device", "cpu", "--seed", "3"]
    assert main(args) == 0
    assert "cost estimate" in capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["family"] == "custom" and run["model_class"] == "UNetCompVis"
    sha = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert run["adapter"]["sha256"] == sha and run["adapter"]["path"] == str(EXAMPLE)
    assert run["config"]["model_adapter_sha256"] == sha and run["config"]["model"] == str(ckpt)
    assert run["geometry"]["plan"]["engine"] == "torch.func"
    assert run["latent_shape"] == [2, 4, 4] and run["image_shape"] == [3, 16, 16]
    vae, unet = _loaded_modules(repo, ckpt)
    # the latents are the stand-in VAE's encoder means of the loaded images (scaling 1)
    from ldminv_core.data.image_folders import load_image_folder

    images = torch.cat([load_image_folder(f, channels=3, resolution=16).images for f in (members, heldout)])
    z = torch.from_numpy(np.load(out / "latents.npy"))
    with torch.no_grad():
        torch.testing.assert_close(z, vae.encode(images)[0], rtol=1e-5, atol=1e-6)
    for name in ("sima", "pia", "loss"):  # default p = 4, seed 3, sample ids 0..5
        got = torch.from_numpy(np.load(out / "residuals" / f"{name}.npy").astype(np.float32))
        torch.testing.assert_close(got, _direct_terms(name, unet, z, np.arange(6), 3, 4), rtol=1e-5, atol=1e-5)
    for name in ("secmi", "pfami"):
        stored = np.load(out / ("residuals" if name == "secmi" else "scores") / f"{name}.npy")
        assert np.isfinite(stored).all() and stored.std() > 0
    # the geometry: the autograd Jacobian of the stand-in decoder
    jac = torch.stack([torch.autograd.functional.jacobian(lambda x: vae.decode(x[None])[0], zi).reshape(768, 32)
                       for zi in z]).double()
    influence = 0.5 * torch.log((jac ** 2).sum(1) + 1e-12)
    torch.testing.assert_close(torch.from_numpy(np.load(out / "influence.npy")).double().reshape(6, 32), influence,
                               rtol=1e-4, atol=1e-4)
    lv = torch.linalg.svdvals(jac)[:, :6].log().sum(1)
    samples = pd.read_parquet(out / "samples.parquet")
    np.testing.assert_allclose(samples["log_volume"].to_numpy(), lv.numpy(), rtol=1e-4, atol=1e-4)
    capsys.readouterr()
    assert main(["report", str(out), "--json", "--attack", "sima"]) == 0
    assert json.loads(capsys.readouterr().out)


def test_a_changed_adapter_file_is_not_resumed(repo_env, tmp_path):
    from ldminv_core.pipeline.batches import AnalysisCancelled
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.run import run_analysis

    _, ckpt = repo_env
    adapter = tmp_path / "adapter.py"
    shutil.copy(EXAMPLE, adapter)
    members = tmp_path / "m"
    heldout = tmp_path / "h"
    write_image_folder(members, 2, formats=("png",), seed=1)
    write_image_folder(heldout, 2, formats=("png",), seed=2)
    cfg = AnalyzeConfig(model=str(ckpt), model_adapter=str(adapter), members=str(members), heldout=str(heldout),
                        out=str(tmp_path / "run"), attacks="sima", timesteps="7", batch_size=2, device="cpu")
    # the checks before anything runs and the cost estimate (which loads the model itself) take the adapter
    from ldminv_core.pipeline.cost import estimate_cost
    from ldminv_core.pipeline.plan import check_config

    assert check_config(cfg) is False
    estimate = estimate_cost(cfg)
    assert estimate.latent_shape == (2, 4, 4) and estimate.disk_bytes > 0 and estimate.total_seconds > 0
    with pytest.raises(AnalysisCancelled):
        run_analysis(cfg, should_stop=lambda: True)
    adapter.write_text(adapter.read_text() + "\n# edited\n")
    with pytest.raises(RunError, match="model_adapter_sha256"):
        run_analysis(cfg)
    # LoRA adapters belong to diffusers pipelines; --model-adapter without --model reaches the adapter as None
    with pytest.raises(LdminvError, match="inside its build_adapter"):
        run_analysis(AnalyzeConfig(**{**cfg.__dict__, "lora": [str(adapter)], "out": str(tmp_path / "r2")}))
    with pytest.raises(AdapterError, match="--model is required"):
        run_analysis(AnalyzeConfig(**{**cfg.__dict__, "model": None, "out": str(tmp_path / "r3")}))


# ---------------------------------------------------------------------------- refusals

def test_a_pickled_full_model_is_refused_naming_the_file(repo_env, tmp_path):
    repo, ckpt = repo_env
    folder = tmp_path / "pickled"
    shutil.copytree(ckpt, folder)
    vae, _ = _modules(repo)
    torch.save(vae, folder / "vae" / "vae_last.pt")  # the whole module, pickled
    path = folder / "vae" / "vae_last.pt"
    with pytest.raises(AdapterError, match="pickled full model") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)
    with pytest.raises(AdapterError) as info:
        load_custom_model(EXAMPLE, model_path=folder)
    assert str(path) in str(info.value) and "build_adapter" in str(info.value)
    # a checkpoint with other entries than tensors: refused naming the entry, or read under key=
    torch.save({"model": vae.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(AdapterError, match="entry 'model' is OrderedDict"):
        load_state_dict(tmp_path / "ckpt.pt")
    assert set(load_state_dict(tmp_path / "ckpt.pt", key="model")) == set(vae.state_dict())
    with pytest.raises(AdapterError, match="state dict file not found"):
        load_state_dict(tmp_path / "missing.pt")


_TOY = textwrap.dedent('''
    import torch
    from ldminv_core.models.custom_adapter import ModelAdapter

    def build_adapter(model_path, *, device, dtype):
        torch.manual_seed(0)
        enc = torch.nn.Conv2d(1, 2, 4, stride=4).to(device, dtype)
        dec = torch.nn.ConvTranspose2d(2, 1, 4, stride=4).to(device, dtype)
        net = torch.nn.Conv2d(2, 2, 3, padding=1).to(device, dtype)
        fields = dict(encode=enc, decode=dec, model_output=lambda z, t, cond: net(z), image_shape=(1, 16, 16),
                      latent_shape=(2, 4, 4), alphas_cumprod=torch.linspace(0.99, 0.01, 100))
        fields.update(OVERRIDE)
        return ModelAdapter(**fields)
''')


@pytest.mark.parametrize("override, pattern", [
    ("encode=lambda x: torch.zeros(x.shape[0], 2, 5, 5, dtype=dtype)",
     r"encode\(images \(2, 1, 16, 16\) float32\): expected a float32 tensor of shape \(2, 2, 4, 4\).*got a float32 "
     r"tensor of shape \(2, 2, 5, 5\)"),
    ("decode=lambda z: dec(z).double()",
     r"decode\(latents \(2, 2, 4, 4\) float32\): expected a float32 tensor of shape \(2, 1, 16, 16\).*got a "
     r"float64 tensor"),
    ("model_output=lambda z, t, cond: net(z)[:, :1]",
     r"model_output\(z_t \(2, 2, 4, 4\) float32, t \(2,\) int64, cond None\): expected a float32 tensor of shape "
     r"\(2, 2, 4, 4\) or \(2, 4, 4, 4\).*got a float32 tensor of shape \(2, 1, 4, 4\)"),
    ("model_output=lambda z, t, cond: net(z) * float('nan')", r"model_output\(.*NaN or infinite"),
    ("decode=lambda z: dec(z.detach())",
     r"decode under torch.func"),
    ("latent_shape=(2, 4)", r"latent_shape: expected three positive integers"),
    ("prediction_type='flow'", r"prediction_type: with alphas_cumprod expected one of"),
    ("flow_timesteps=1000", r"expected exactly one schedule"),
    ("image_shape=(1, 16, 8)", r"image_shape: expected square images"),
])
def test_wrong_shapes_dtypes_and_declarations_are_refused_naming_the_function(tmp_path, override, pattern):
    file = tmp_path / "bad_adapter.py"
    file.write_text(_TOY.replace("OVERRIDE", f"dict({override})"))
    with pytest.raises(AdapterError, match=pattern) as info:
        load_custom_model(file)
    assert str(file) in str(info.value)


def test_a_good_toy_adapter_loads_and_a_missing_function_names_the_file(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(_TOY.replace("OVERRIDE", "{}"))
    model = load_custom_model(good)
    assert model.family.name == "custom" and model.latent_shape == (2, 4, 4) and not model.is_conditional
    bad = tmp_path / "no_build.py"
    bad.write_text("def make_adapter(model_path, *, device, dtype):\n    return None\n")
    with pytest.raises(AdapterError, match=r"defines no function build_adapter\(.*make_adapter") as info:
        load_custom_model(bad)
    assert str(bad) in str(info.value)
    broken = tmp_path / "broken.py"
    broken.write_text("import not_a_module_anywhere\n")
    with pytest.raises(AdapterError, match=r"importing the adapter file raised ModuleNotFoundError") as info:
        load_custom_model(broken)
    assert str(broken) in str(info.value)
    (tmp_path / "good.txt").write_text(good.read_text())
    with pytest.raises(AdapterError, match=r"expected a Python file \(\.py\)"):
        load_custom_model(tmp_path / "good.txt")
    wrong = tmp_path / "returns_none.py"
    wrong.write_text("def build_adapter(model_path, *, device, dtype):\n    return 3\n")
    with pytest.raises(AdapterError, match=r"returned int; expected a ldminv_core.models.custom_adapter.ModelAdapter"):
        load_custom_model(wrong)


# ---------------------------------------------------------------------------- other schedules and conditioning

_FLOW_CLASS = textwrap.dedent('''
    import torch

    def build_adapter(model_path, *, device, dtype):
        torch.manual_seed(1)
        enc = torch.nn.Conv2d(1, 2, 4, stride=4)
        dec = torch.nn.ConvTranspose2d(2, 1, 4, stride=4)
        net = torch.nn.Conv2d(2, 2, 3, padding=1)
        emb = torch.nn.Embedding(4, 2)  # 3 classes + the null class 3
        def model_output(z, t, labels):
            return net(z) * (t.float() / 1000)[:, None, None, None] + emb(labels)[:, :, None, None]
        return dict(encode=enc, decode=dec, model_output=model_output, image_shape=(1, 16, 16), latent_shape=(2, 4, 4),
                    prediction_type="flow", flow_timesteps=1000, num_classes=3, null_class=3, scaling_factor=0.5,
                    shift_factor=0.1, denoiser=net)
''')


def test_a_rectified_flow_class_conditional_adapter_matches_a_hand_computation(tmp_path):
    file = tmp_path / "flow.py"
    file.write_text(_FLOW_CLASS)
    model = load_custom_model(file)
    pred = model.predictor
    assert pred.schedule.kind == "flow" and pred.conditions_on == "label" and pred.null_class == 3
    net = model.adapter.denoiser
    z0 = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    labels = [0, 2, None]
    got = attack_terms("sima", pred, z0, timesteps=TIMESTEPS, captions=labels, sample_ids=np.arange(3), p=2.0)
    y = torch.tensor([0, 2, 3])
    for k, t in enumerate(TIMESTEPS):
        sigma = t / 1000
        with torch.no_grad():
            o = model.adapter.model_output(z0, torch.full((3,), sigma * 1000, dtype=torch.float32), y)
        torch.testing.assert_close(got[:, k], (z0 + (1 - sigma) * o).abs() ** 2, rtol=1e-5, atol=1e-6)
    assert net.training is False
    # latents: (E(x).mean - shift) * scale; the decoder undoes it
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        mean = model.adapter.encode(x)
        torch.testing.assert_close(model.encode(x), (mean - 0.1) * 0.5)
        torch.testing.assert_close(model.decode(model.encode(x)), model.adapter.decode(mean), rtol=1e-5, atol=1e-6)


_TEXT_V = textwrap.dedent('''
    import torch

    def build_adapter(model_path, *, device, dtype):
        torch.manual_seed(2)
        enc = torch.nn.Conv2d(3, 2, 4, stride=4)
        dec = torch.nn.ConvTranspose2d(2, 3, 4, stride=4)
        net = torch.nn.Conv2d(2, 2, 3, padding=1)
        def encode_prompts(texts):
            return torch.tensor([[[float(len(s)), 1.0]] for s in texts])
        def model_output(z, t, cond):
            return net(z) + cond.mean(dim=(1, 2))[:, None, None, None]
        return dict(encode=enc, decode=dec, model_output=model_output, image_shape=(3, 16, 16), latent_shape=(2, 4, 4),
                    prediction_type="v_prediction", alphas_cumprod=torch.linspace(0.999, 0.01, 200),
                    encode_prompts=encode_prompts, posterior_std=lambda x: torch.ones(x.shape[0], 2, 4, 4) * 0.3)
''')


def test_a_text_conditioned_v_prediction_adapter_matches_a_hand_computation(tmp_path):
    from ldminv_core.models.latents import encode_latents, posterior_noise

    file = tmp_path / "text.py"
    file.write_text(_TEXT_V)
    model = load_custom_model(file)
    pred = model.predictor
    assert pred.is_conditional and pred.prediction_type == "v_prediction"
    z_t = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    t = 50
    abar = float(torch.linspace(0.999, 0.01, 200, dtype=torch.float32)[t])
    a, b = math.sqrt(abar), math.sqrt(1 - abar)
    cond = pred.encode_prompts(["a cat", None])
    with torch.no_grad():
        o = model.adapter.model_output(z_t, torch.full((2,), t), torch.tensor([[[5.0, 1.0]], [[0.0, 1.0]]]))
    torch.testing.assert_close(pred(z_t, t, cond), a * o + b * z_t, rtol=1e-5, atol=1e-6)
    # --latent sample draws from the adapter's posterior: mean + std * e (scaling 1)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    z = encode_latents(model, x, latent="sample", seed=5, sample_ids=[0, 1])
    with torch.no_grad():
        want = model.adapter.encode(x) + 0.3 * posterior_noise((2, 4, 4), seed=5, sample_ids=[0, 1])
    torch.testing.assert_close(z, want)
