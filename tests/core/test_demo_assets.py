"""Checks of the bundled demo (assets/demo, written by scripts/train_demo.py).

The demo model must load with plain diffusers calls, fit the 1 x 32 x 32 -> 4 x 8 x 8
layout the dashboard expects, ship pixel-disjoint member / held-out image folders, stay
small, and genuinely leak membership: SimA is recomputed here from the shipped files with
direct diffusers calls and scored with sklearn.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel
from PIL import Image
from sklearn.metrics import roc_auc_score

from ldminv_core.errors import DataLoadError, ShapeError

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
DEMO = ASSETS / "demo"
MODEL = DEMO / "model"
MAX_ASSETS_BYTES = 25 * 10**6


@pytest.fixture(scope="module")
def script():
    """scripts/train_demo.py imported as a module (its helpers are tested directly)."""
    if "train_demo" not in sys.modules:
        spec = importlib.util.spec_from_file_location("train_demo", REPO / "scripts" / "train_demo.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["train_demo"] = module  # dataclasses look their module up while being created
        spec.loader.exec_module(module)
    return sys.modules["train_demo"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: these small models run fastest that way on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((DEMO / "training.json").read_text())


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(MODEL / "vae").eval()


@pytest.fixture(scope="module")
def unet() -> UNet2DModel:
    return UNet2DModel.from_pretrained(MODEL / "unet").eval()


def _png_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png"))


def _read_folder(folder: Path) -> np.ndarray:
    """uint8 (N, 32, 32) in sorted file-name order; asserts mode L and 32x32."""
    arrays = []
    for name in _png_names(folder):
        with Image.open(folder / name) as img:
            assert img.mode == "L", f"{folder / name}: mode {img.mode}"
            assert img.size == (32, 32), f"{folder / name}: size {img.size}"
            arrays.append(np.asarray(img, dtype=np.uint8))
    return np.stack(arrays)


@pytest.fixture(scope="module")
def members() -> np.ndarray:
    return _read_folder(DEMO / "members")


@pytest.fixture(scope="module")
def heldout() -> np.ndarray:
    return _read_folder(DEMO / "heldout")


def _latents(vae: AutoencoderKL, images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)[:, None]
    with torch.no_grad():
        return vae.encode(x).latent_dist.mean * vae.config.scaling_factor


def _sima_scores(unet: UNet2DModel, z: torch.Tensor, t: int) -> np.ndarray:
    """SimA scores -(sum_i |eps_hat(z0, t)_i|^4): one direct UNet2DModel call on all latents."""
    with torch.no_grad():
        eps = unet(z, torch.full((z.shape[0],), t, dtype=torch.long)).sample
    return -eps.double().abs().pow(4).flatten(1).sum(1).numpy()


def test_model_folder_loads_with_diffusers(vae, unet, record):
    scheduler = DDPMScheduler.from_pretrained(MODEL / "scheduler")
    index = json.loads((MODEL / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", vae.config._class_name]
    assert index["unet"] == ["diffusers", unet.config._class_name]
    assert index["scheduler"] == ["diffusers", scheduler.config._class_name]
    assert (MODEL / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert (MODEL / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    assert scheduler.config.num_train_timesteps == 1000
    assert scheduler.config.prediction_type == "epsilon"
    assert scheduler.config.beta_schedule == "linear"
    assert scheduler.alphas_cumprod.shape == (1000,)
    assert vae.config.mid_block_add_attention is True
    assert vae.config.scaling_factor == pytest.approx(record["vae"]["scaling_factor"], rel=1e-6)
    assert vae.config.scaling_factor != 1.0


def test_latent_layout_matches_unet(vae, unet):
    assert vae.config.in_channels == 1 and vae.config.out_channels == 1
    z = _latents(vae, np.zeros((2, 32, 32), dtype=np.uint8))
    assert z.shape == (2, 4, 8, 8)
    assert unet.config.in_channels == vae.config.latent_channels == z.shape[1]
    assert unet.config.out_channels == vae.config.latent_channels
    assert unet.config.sample_size == z.shape[-1]
    with torch.no_grad():
        eps = unet(z, torch.tensor([0, 500])).sample
        x = vae.decode(z / vae.config.scaling_factor).sample
    assert eps.shape == z.shape
    assert x.shape == (2, 1, 32, 32)
    assert any("Attn" in b for b in unet.config.down_block_types)


def test_image_folders_disjoint_and_captioned(members, heldout, record):
    assert members.shape[0] >= 1000 and heldout.shape[0] >= 1000
    hashes = {}
    for split, images in (("members", members), ("heldout", heldout)):
        digests = {hashlib.sha256(img.tobytes()).hexdigest() for img in images}
        assert len(digests) == images.shape[0], f"{split}: duplicate images within the split"
        hashes[split] = digests
        # the shipped PNGs are exactly the arrays the model was trained / evaluated on
        assert hashlib.sha256(images.tobytes()).hexdigest() == record["data"][f"{split}_sha256"]
        names = _png_names(DEMO / split)
        rows = [json.loads(line) for line in (DEMO / split / "metadata.jsonl").read_text().splitlines()]
        assert [r["file_name"] for r in rows] == names
        assert all(r["text"].startswith("a photo of ") for r in rows)
        assert len({len(n) for n in names}) == 1, f"{split}: file names not zero-padded to one width"
    assert not hashes["members"] & hashes["heldout"]
    # Fashion-MNIST padding: a 2-px black border on every image
    for images in (members, heldout):
        assert not images[:, :2].any() and not images[:, -2:].any()
        assert not images[:, :, :2].any() and not images[:, :, -2:].any()


def test_assets_under_size_limit():
    total = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    assert 0 < total < MAX_ASSETS_BYTES, f"assets/ holds {total} bytes"


@pytest.fixture(scope="module")
def sima_at_best_t(vae, unet, members, heldout, record) -> tuple[np.ndarray, np.ndarray]:
    """(scores, labels) for all members then all held-out images at the recorded best t."""
    z = _latents(vae, np.concatenate([members, heldout]))
    labels = np.r_[np.ones(len(members)), np.zeros(len(heldout))]
    return _sima_scores(unet, z, record["results"]["sima"]["best_t"]), labels


@pytest.mark.slow
def test_sima_subset_leaks_membership(sima_at_best_t, members):
    scores, labels = sima_at_best_t
    n = len(members)
    subset = np.r_[0:200, n : n + 200]  # the first 200 members and the first 200 held-out images
    assert labels[subset].sum() == 200
    assert roc_auc_score(labels[subset], scores[subset]) >= 0.7


def test_recorded_sima_reproduces(sima_at_best_t, record):
    """The AUROC in training.json, recomputed from the shipped PNGs and weights."""
    sima = record["results"]["sima"]
    per_t = sima["per_t"]
    assert sima["best_t"] == per_t["t"][int(np.argmax(per_t["auroc"]))]
    scores, labels = sima_at_best_t
    auc = roc_auc_score(labels, scores)
    assert auc == pytest.approx(sima["auroc"], abs=2e-3)
    assert auc >= 0.75


def test_read_idx_round_trip_and_errors(script, tmp_path):
    data = np.random.default_rng(0).integers(0, 256, size=(3, 5, 4), dtype=np.uint8)
    header = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in data.shape)
    good = tmp_path / "images-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(header + data.tobytes()))
    np.testing.assert_array_equal(script.read_idx(good), data)

    short = tmp_path / "short-idx3-ubyte.gz"
    short.write_bytes(gzip.compress(header + data.tobytes()[:-1]))
    with pytest.raises(DataLoadError, match="short-idx3-ubyte.gz"):
        script.read_idx(short)
    with pytest.raises(DataLoadError, match="apt-get install dataset-fashion-mnist"):
        script.read_idx(tmp_path / "missing.gz")
    plain = tmp_path / "plain-idx3-ubyte.gz"
    plain.write_bytes(header + data.tobytes())  # not gzip-compressed
    with pytest.raises(DataLoadError, match="plain-idx3-ubyte.gz.*gzip"):
        script.read_idx(plain)
    wrong = tmp_path / "float-idx3-ubyte.gz"
    wrong.write_bytes(gzip.compress(bytes([0, 0, 0x0D, 3]) + header[4:] + data.tobytes()))
    with pytest.raises(DataLoadError, match="IDX header"):
        script.read_idx(wrong)


def test_pad_and_split_helpers(script):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8)
    images[7] = images[3]  # a pixel-identical twin: both must be left out
    padded = script.pad_to_32(images)
    np.testing.assert_array_equal(padded[:, 2:30, 2:30], images)
    x = script.to_model_range(padded)
    assert x.shape == (50, 1, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0], torch.from_numpy(padded).double().div(127.5).sub(1.0).float())
    with pytest.raises(ShapeError, match="images"):
        script.pad_to_32(padded)

    splits = script.make_splits(images, n_members=10, n_heldout=10, n_vae=20, seed=0)
    every = np.concatenate([splits.members, splits.heldout, splits.vae])
    assert len(set(every.tolist())) == 40
    assert 3 not in every and 7 not in every
    again = script.make_splits(images, n_members=10, n_heldout=10, n_vae=20, seed=0)
    np.testing.assert_array_equal(again.members, splits.members)
    with pytest.raises(ValueError, match="n_members"):
        script.make_splits(images, n_members=30, n_heldout=30, n_vae=0, seed=0)


# ----------------------------------------------------------------------------- precomputed geometry


@pytest.mark.slow
def test_precomputed_demo_geometry_matches_this_machine():
    """The shipped geometry (scripts/make_demo_geometry.py) applies to the demo as analyzed here,
    and three of its samples recomputed with an autograd Jacobian agree with it."""
    from ldminv_core import demo
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.geometry_paths import _geometry_methods
    from ldminv_core.pipeline.inputs import _load_images, _samples_table
    from ldminv_core.pipeline.plan import _plan
    from ldminv_core.models.loading import load_model
    from ldminv_core.geometry.precomputed import load_precomputed, vae_digest

    bundle = load_precomputed(DEMO / "precomputed")
    cfg = AnalyzeConfig(model=str(demo.DEMO_MODEL_DIR), members=str(demo.DEMO_MEMBERS_DIR),
                        heldout=str(demo.DEMO_HELDOUT_DIR), out="unused", device="cpu", **demo.DEMO_ANALYZE_DEFAULTS)
    plan = _plan(cfg)
    model = load_model(plan.model, device=torch.device("cpu"))
    members, heldout = _load_images(plan, model)
    samples = _samples_table(members, heldout)
    with torch.no_grad():
        latents = model.encode(torch.cat([members.images, heldout.images])).numpy()
    infl, lv = _geometry_methods(plan, model)
    settings = {"topk": plan.topk, "influence": infl, "probes": plan.probes, "log_volume_method": lv, "seed": plan.seed}
    ok, why = bundle.check(samples=samples, latents=latents, settings=settings, vae_sha256=vae_digest(MODEL))
    assert ok, why

    decode = model.decoder_fn()
    for i in (0, 299, 599):
        z = torch.from_numpy(latents[i]).double()
        with torch.no_grad():
            for p in model.vae.parameters():
                p.data = p.data.double()
        jac = torch.autograd.functional.jacobian(lambda x: decode(x[None])[0], z).reshape(-1, z.numel())
        g_diag = (jac * jac).sum(0)
        np.testing.assert_allclose(bundle.influence[i].ravel(), 0.5 * torch.log(g_diag + 1e-12).numpy(),
                                   rtol=1e-4, atol=1e-4)
        sv = torch.linalg.svdvals(jac)[: plan.topk]
        assert abs(bundle.log_volume[i] - float(torch.log(sv).sum())) <= 1e-4 * max(1.0, abs(bundle.log_volume[i]))
