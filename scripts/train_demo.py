"""Train the bundled demo latent diffusion model and write ``assets/demo/``.

The demo is a small, fully reproducible latent diffusion model on Fashion-MNIST that
leaks membership the way real LDMs do, so the dashboard has something to audit out of
the box:

1. Fashion-MNIST is read from the Debian package ``dataset-fashion-mnist``
   (``/usr/share/datasets/fashion-mnist``); images are padded 28x28 -> 32x32 and
   scaled to [-1, 1].
2. Seeded, pixel-disjoint splits: 1000 *members* (the diffusion model's whole training
   set), 1000 *held-out* images it never sees, and a separate VAE training set.
   Members and held-out images are written as 32x32 PNGs with ``metadata.jsonl``
   captions (Hugging Face ``imagefolder`` layout).
3. A small ``AutoencoderKL`` (1 x 32 x 32 -> 4 x 8 x 8) is trained on the VAE set only,
   playing the part of a pretrained autoencoder; its ``scaling_factor`` is 1 / std of
   the encoder means on that set, as in Stable Diffusion.
4. A ``UNet2DModel`` noise predictor is trained with ``DDPMScheduler`` on the scaled
   latents of the members until it memorizes them; the SimA membership attack is
   evaluated on members vs held-out during training.
5. Everything is saved as a diffusers pipeline folder (``model/vae``, ``model/unet``,
   ``model/scheduler``, ``model/model_index.json``) with the training record in
   ``TRAINING.md`` and ``training.json``.

Run from the repository root::

    python scripts/train_demo.py

All randomness comes from ``--seed`` (``torch.manual_seed`` for weight initialisation,
explicit ``torch.Generator`` / ``numpy.random.Generator`` objects for data order, noise
and splits), so a rerun with the same arguments, package versions and thread count
reproduces the assets.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score, roc_curve
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel  # noqa: E402

from ldminv_core.errors import DataLoadError, ShapeError, UnknownNameError  # noqa: E402

DEFAULT_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_OUT_DIR = REPO_ROOT / "assets" / "demo"
SCRIPT_PATH = "scripts/train_demo.py"

#: Fashion-MNIST label -> caption written to ``metadata.jsonl``.
CAPTIONS = (
    "a photo of a t-shirt",
    "a photo of trousers",
    "a photo of a pullover",
    "a photo of a dress",
    "a photo of a coat",
    "a photo of a sandal",
    "a photo of a shirt",
    "a photo of a sneaker",
    "a photo of a bag",
    "a photo of an ankle boot",
)

#: SimA timesteps (METHOD.md: 0, 10, ..., 290).
SIMA_TIMESTEPS = tuple(range(0, 300, 10))
#: Coarser grid for the evaluations logged during training (the final one uses SIMA_TIMESTEPS).
EVAL_TIMESTEPS = (0, 20, 50, 100, 150, 200, 250)
SIMA_P = 4


# --------------------------------------------------------------------------- data


def read_idx(path: Path) -> np.ndarray:
    """Read a gzip-compressed IDX file (the MNIST format) into a uint8 array.

    Returns shape (N,) for label files and (N, rows, cols) for image files.
    """
    path = Path(path)
    if not path.is_file():
        raise DataLoadError(
            f"Fashion-MNIST file {path}: expected a gzip IDX file, found nothing there; "
            "install the Debian package with `apt-get install dataset-fashion-mnist` "
            "or pass --data-dir"
        )
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataLoadError(
            f"Fashion-MNIST file {path}: expected a gzip IDX file, got unreadable data ({exc})"
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataLoadError(
            f"Fashion-MNIST file {path}: expected an IDX header 00 00 08 <ndim> (unsigned bytes), "
            f"got {raw[:4].hex(' ') if raw else 'an empty file'}"
        )
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise DataLoadError(
            f"Fashion-MNIST file {path}: header declares shape {dims} ({expected} bytes of data), "
            f"but the file holds {len(raw) - offset} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def load_fashion_mnist(data_dir: Path, *, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load one Fashion-MNIST split ("train" or "t10k").

    Returns ``(images uint8 (N, 28, 28), labels uint8 (N,))``.
    """
    if split not in ("train", "t10k"):
        raise UnknownNameError(f"split: expected 'train' or 't10k', got {split!r}")
    data_dir = Path(data_dir)
    images = read_idx(data_dir / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(data_dir / f"{split}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ShapeError(
            f"Fashion-MNIST {split} in {data_dir}: expected images (N, 28, 28) and labels (N,), "
            f"got images {images.shape} and labels {labels.shape}"
        )
    return images, labels


def pad_to_32(images: np.ndarray) -> np.ndarray:
    """Pad uint8 images (N, 28, 28) with 2 px of black on every side -> (N, 32, 32)."""
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ShapeError(f"images: expected shape (N, 28, 28), got {images.shape}")
    return np.pad(images, ((0, 0), (2, 2), (2, 2)), mode="constant", constant_values=0)


def to_model_range(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W) -> float32 tensor (N, 1, H, W) in [-1, 1]."""
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)[:, None]


def unique_content_indices(images: np.ndarray) -> np.ndarray:
    """Indices of the images whose pixel content occurs exactly once in ``images`` (N, H, W).

    Images with a pixel-identical twin are left out altogether, so that no two splits
    built from the result can share an image.
    """
    flat = images.reshape(images.shape[0], -1)
    _, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    return np.flatnonzero(counts[inverse.reshape(-1)] == 1)


@dataclass(frozen=True)
class Splits:
    """Indices into Fashion-MNIST train for the three disjoint splits."""

    members: np.ndarray
    heldout: np.ndarray
    vae: np.ndarray


def make_splits(images: np.ndarray, *, n_members: int, n_heldout: int, n_vae: int, seed: int) -> Splits:
    """Draw pixel-disjoint member / held-out / VAE index sets from ``images`` (N, H, W).

    Each split is sorted by source index, so the data order is deterministic.
    """
    candidates = unique_content_indices(images)
    need = n_members + n_heldout + n_vae
    if need > candidates.size:
        raise ValueError(
            f"n_members + n_heldout + n_vae: expected at most {candidates.size} "
            f"(distinct Fashion-MNIST train images), got {need}"
        )
    rng = np.random.default_rng(seed)
    picked = rng.permutation(candidates)[:need]
    return Splits(
        members=np.sort(picked[:n_members]),
        heldout=np.sort(picked[n_members : n_members + n_heldout]),
        vae=np.sort(picked[n_members + n_heldout :]),
    )


def write_image_folder(folder: Path, images: np.ndarray, labels: np.ndarray, *, prefix: str) -> None:
    """Write uint8 images (N, H, W) as mode-L PNGs plus ``metadata.jsonl`` captions.

    Files are named ``{prefix}_0000.png`` ... in the given order; an existing folder is
    replaced.
    """
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    width = max(4, len(str(len(images) - 1)))
    rows = []
    for i, (img, label) in enumerate(zip(images, labels)):
        name = f"{prefix}_{i:0{width}d}.png"
        Image.fromarray(np.ascontiguousarray(img)).save(folder / name, optimize=True)
        rows.append(json.dumps({"file_name": name, "text": CAPTIONS[int(label)]}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class VaeConfig:
    """AutoencoderKL architecture: 1 x 32 x 32 images -> 4 x 8 x 8 latents."""

    block_out_channels: tuple[int, ...] = (4, 8, 16)
    layers_per_block: int = 1
    norm_num_groups: int = 4
    latent_channels: int = 4


@dataclass(frozen=True)
class UnetConfig:
    """UNet2DModel architecture on 4 x 8 x 8 latents (attention at 4x4, 2x2 and the mid block)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    norm_num_groups: int = 8
    attention_head_dim: int = 8


def build_vae(cfg: VaeConfig, *, scaling_factor: float = 1.0) -> AutoencoderKL:
    """A fresh AutoencoderKL for 1-channel 32x32 images (two downsamplings -> 8x8 latents)."""
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=32,
        scaling_factor=scaling_factor,
        mid_block_add_attention=True,
    )


def build_unet(cfg: UnetConfig, *, latent_channels: int, latent_size: int) -> UNet2DModel:
    """A fresh unconditional UNet2DModel noise predictor for (latent_channels, size, size) latents."""
    return UNet2DModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=cfg.down_block_types,
        up_block_types=cfg.up_block_types,
        norm_num_groups=cfg.norm_num_groups,
        attention_head_dim=cfg.attention_head_dim,
    )


def n_params(module: torch.nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- VAE


def train_vae(
    vae: AutoencoderKL,
    x: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    kl_weight: float,
    seed: int,
) -> list[dict]:
    """Train ``vae`` in place on images x (N, 1, 32, 32) in [-1, 1].

    Loss per batch = mean |x - x_hat| + mean (x - x_hat)^2 + kl_weight * mean_n KL_n, where
    x_hat decodes a posterior sample and KL_n is the per-sample KL to N(0, I) summed over
    latent coordinates. AdamW with a cosine learning-rate schedule. Returns one log
    entry per epoch.
    """
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=total, pct_start=0.05, anneal_strategy="cos"
    )
    vae.train()
    log = []
    bar = tqdm(total=total, desc="VAE", unit="step", dynamic_ncols=True, mininterval=2.0)
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        sums = {"l1": 0.0, "mse": 0.0, "kl": 0.0}
        for s in range(steps_per_epoch):
            xb = x[order[s * batch_size : (s + 1) * batch_size]]
            post = vae.encode(xb).latent_dist
            z = post.sample(generator=gen)
            xh = vae.decode(z).sample
            l1 = (xh - xb).abs().mean()
            mse = (xh - xb).pow(2).mean()
            kl = post.kl().mean()
            loss = l1 + mse + kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums["l1"] += l1.item()
            sums["mse"] += mse.item()
            sums["kl"] += kl.item()
            bar.update(1)
            bar.set_postfix(l1=f"{l1.item():.4f}", kl=f"{kl.item():.1f}")
        entry = {"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}}
        log.append(entry)
        losses = ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if k != "epoch")
        tqdm.write(f"VAE epoch {epoch + 1}/{epochs}: {losses}")
    bar.close()
    vae.eval()
    return log


@torch.no_grad()
def encode_means(vae: AutoencoderKL, x: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """Unscaled encoder means of images x (N, 1, 32, 32) -> (N, C, 8, 8) float32."""
    out = [vae.encode(x[i : i + batch_size]).latent_dist.mean for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


@torch.no_grad()
def reconstruction_psnr(vae: AutoencoderKL, x: torch.Tensor, *, batch_size: int = 500) -> float:
    """Mean PSNR (dB, data range 2) of decode(encoder mean) against x (N, 1, 32, 32)."""
    psnrs = []
    for i in range(0, x.shape[0], batch_size):
        xb = x[i : i + batch_size]
        xh = vae.decode(vae.encode(xb).latent_dist.mean).sample.clamp(-1, 1)
        mse = (xh - xb).pow(2).flatten(1).mean(1)
        psnrs.append(10 * torch.log10(4.0 / mse))
    return float(torch.cat(psnrs).mean())


def rebuild_with_scaling(vae: AutoencoderKL, cfg: VaeConfig, *, scaling_factor: float) -> AutoencoderKL:
    """A copy of ``vae`` whose config carries ``scaling_factor`` (set through the constructor)."""
    out = build_vae(cfg, scaling_factor=scaling_factor)
    out.load_state_dict(vae.state_dict())
    return out.eval()


def measure_jvp_seconds(vae: AutoencoderKL, z: torch.Tensor, *, repeats: int = 8) -> dict[str, float]:
    """Wall time (s) of the full decoder Jacobian of one latent via vmap over jvp.

    z: (n, C, h, w) unscaled latents; round r times the d JVPs (d = C*h*w) of sample
    ``z[r % n]``, after one warm-up round. Returns {"min", "median"} over ``repeats`` rounds;
    on a shared CPU the minimum is the number that reflects the model's cost.
    """
    from torch.func import jvp, vmap
    from torch.nn.attention import SDPBackend, sdpa_kernel

    d = int(np.prod(z.shape[1:]))
    basis = torch.eye(d, dtype=z.dtype).reshape(d, *z.shape[1:])

    def f1(z1: torch.Tensor) -> torch.Tensor:
        return vae.decode(z1[None]).sample[0]

    times = []
    for r in range(repeats + 1):
        z0 = z[r % z.shape[0]]
        t0 = time.perf_counter()
        with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
            vmap(lambda v: jvp(f1, (z0,), (v,))[1])(basis)
        if r > 0:
            times.append(time.perf_counter() - t0)
    return {"min": float(np.min(times)), "median": float(np.median(times))}


# --------------------------------------------------------------------------- SimA


@torch.no_grad()
def sima_statistics(
    unet: UNet2DModel,
    z0: torch.Tensor,
    *,
    timesteps: tuple[int, ...] = SIMA_TIMESTEPS,
    p: int = SIMA_P,
    batch_size: int = 500,
) -> np.ndarray:
    """SimA statistic sum_i |eps_hat(z0, t)_i|^p for scaled clean latents z0 (N, C, h, w).

    Returns float64 (T, N), one row per timestep. No noise is added (METHOD.md).
    """
    was_training = unet.training
    unet.eval()
    out = np.empty((len(timesteps), z0.shape[0]), dtype=np.float64)
    for ti, t in enumerate(timesteps):
        for i in range(0, z0.shape[0], batch_size):
            zb = z0[i : i + batch_size]
            eps = unet(zb, torch.full((zb.shape[0],), t, dtype=torch.long)).sample
            out[ti, i : i + zb.shape[0]] = eps.abs().pow(p).flatten(1).sum(1).double().numpy()
    unet.train(was_training)
    return out


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, *, max_fpr: float = 0.01) -> float:
    """Largest TPR among ROC points with FPR <= max_fpr (members = label 1, higher = member)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= max_fpr].max())


def evaluate_sima(statistics: np.ndarray, labels: np.ndarray, *, timesteps: tuple[int, ...]) -> dict:
    """AUROC and TPR@1%FPR per timestep for SimA statistics (T, N); score = -statistic.

    Returns {"per_t": {"t", "auroc", "tpr_at_1fpr"}, "best_t", "auroc", "tpr_at_1fpr"}, the
    last three at the timestep of the best AUROC.
    """
    aurocs = [float(roc_auc_score(labels, -s)) for s in statistics]
    tprs = [tpr_at_fpr(labels, -s) for s in statistics]
    best = int(np.argmax(aurocs))
    return {
        "per_t": {"t": list(timesteps), "auroc": aurocs, "tpr_at_1fpr": tprs},
        "best_t": int(timesteps[best]),
        "auroc": aurocs[best],
        "tpr_at_1fpr": tprs[best],
    }


# --------------------------------------------------------------------------- UNet


def train_unet(
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    z_members: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    eval_every: int,
    eval_fn: Callable[[int], dict],
) -> list[dict]:
    """Train ``unet`` in place with the DDPM epsilon objective on scaled latents (N, C, h, w).

    Data order: one seeded permutation per epoch; timesteps uniform on [0, T); AdamW with
    linear warm-up then cosine decay to 10% of ``lr``. ``eval_fn(step)`` is called every
    ``eval_every`` steps and at the end; its dicts are returned as the evaluation log.
    """
    gen = torch.Generator().manual_seed(seed)
    n = z_members.shape[0]
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    num_t = scheduler.config.num_train_timesteps
    unet.train()
    log = []
    order = torch.randperm(n, generator=gen)
    pos = 0
    ema_loss = None
    bar = tqdm(total=steps, desc="UNet", unit="step", dynamic_ncols=True, mininterval=2.0)
    for step in range(1, steps + 1):
        if pos + batch_size > n:
            order = torch.randperm(n, generator=gen)
            pos = 0
        zb = z_members[order[pos : pos + batch_size]]
        pos += batch_size
        noise = torch.randn(zb.shape, generator=gen)
        t = torch.randint(0, num_t, (zb.shape[0],), generator=gen)
        zt = scheduler.add_noise(zb, noise, t)
        loss = torch.nn.functional.mse_loss(unet(zt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema_loss = loss.item() if ema_loss is None else 0.98 * ema_loss + 0.02 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        if step % eval_every == 0 or step == steps:
            entry = {"step": step, "train_loss_ema": ema_loss, **eval_fn(step)}
            log.append(entry)
            tqdm.write(
                f"UNet step {step}: loss(ema)={ema_loss:.4f}  SimA AUROC={entry['auroc']:.4f} "
                f"at t={entry['best_t']}  TPR@1%FPR={entry['tpr_at_1fpr']:.4f}"
            )
    bar.close()
    unet.eval()
    return log


# --------------------------------------------------------------------------- outputs


def save_model_folder(folder: Path, vae: AutoencoderKL, unet: UNet2DModel, scheduler: DDPMScheduler) -> None:
    """Write the diffusers pipeline layout: vae/, unet/, scheduler/ and model_index.json."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "DiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", type(scheduler).__name__],
        "unet": ["diffusers", type(unet).__name__],
        "vae": ["diffusers", type(vae).__name__],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def folder_bytes(folder: Path) -> int:
    """Total size in bytes of the files under ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def write_training_md(path: Path, record: dict) -> None:
    """Human-readable summary of ``training.json``."""
    r = record
    fin = r["results"]["sima"]
    lines = [
        "# Demo model: training record",
        "",
        "Written by `scripts/train_demo.py`; the full record (configuration, splits, logs) is in",
        "`training.json`.",
        "",
        "## Reproduce",
        "",
        "```",
        r["command"],
        "```",
        "",
        f"- seed: {r['seed']}",
        f"- torch {r['versions']['torch']}, diffusers {r['versions']['diffusers']}, "
        f"numpy {r['versions']['numpy']}, Python {r['versions']['python']}",
        f"- torch threads: {r['torch_threads']} (training); CPU only",
        f"- wall time: {r['wall_time_s']:.0f} s ({r['wall_time_s'] / 60:.1f} min); "
        + ", ".join(f"{k} {v:.0f} s" for k, v in r["stage_seconds"].items()),
        "",
        "## Data",
        "",
        f"Fashion-MNIST from `{r['data']['dir']}` (train split), padded 28x28 -> 32x32, "
        "scaled to [-1, 1]. Images with a pixel-identical twin in the train split are excluded, "
        "so the splits below share no image.",
        "",
        f"- members: {r['data']['n_members']} images (`members/`), the UNet's whole training set",
        f"- held-out: {r['data']['n_heldout']} images (`heldout/`), never seen by the UNet or the VAE",
        f"- VAE training set: {r['data']['n_vae']} further train images",
        "",
        "## Models",
        "",
        f"- VAE: AutoencoderKL, block_out_channels {tuple(r['vae']['config']['block_out_channels'])}, "
        f"layers_per_block {r['vae']['config']['layers_per_block']}, norm_num_groups "
        f"{r['vae']['config']['norm_num_groups']}, attention mid-block, latent 4x8x8; "
        f"{r['vae']['n_params']:,} parameters (decoder {r['vae']['n_params_decoder']:,}); "
        f"scaling_factor {r['vae']['scaling_factor']:.6f}; held-out reconstruction PSNR "
        f"{r['vae']['psnr_heldout_db']:.2f} dB",
        "- decoder Jacobian (256 JVPs, vmap over jvp), wall time per sample (min / median of 8): "
        + ", ".join(
            f"{v['min']:.3f} / {v['median']:.3f} s with {k} thread(s)"
            for k, v in r["vae"]["jvp_seconds_per_sample_by_threads"].items()
        )
        + f" (1-min load average {r['vae']['jvp_load_average_1min']:.1f} on {r['vae']['jvp_cpu_count']} CPUs; "
        "multi-threaded timings inflate sharply when other processes compete for the cores)",
        f"- UNet: UNet2DModel, block_out_channels {tuple(r['unet']['config']['block_out_channels'])}, "
        f"down {tuple(r['unet']['config']['down_block_types'])}, layers_per_block "
        f"{r['unet']['config']['layers_per_block']}; {r['unet']['n_params']:,} parameters; "
        f"{r['unet']['steps']} steps, batch {r['unet']['batch_size']}, AdamW lr {r['unet']['lr']}",
        "- scheduler: DDPMScheduler, 1000 steps, linear betas, epsilon prediction",
        "",
        "## Membership leakage (SimA, p = 4, members vs held-out, all 1000 + 1000)",
        "",
        "Statistic sum_i |eps_hat(z0, t)_i|^4 on the clean scaled latent, score = -statistic, "
        "timesteps 0, 10, ..., 290; t is chosen on these same images (optimistic, as in the paper).",
        "",
        f"- best t = {fin['best_t']}: AUROC {fin['auroc']:.4f}, TPR@1%FPR {fin['tpr_at_1fpr']:.4f}",
        "- AUROC per t: " + ", ".join(
            f"{t}: {a:.3f}" for t, a in zip(fin["per_t"]["t"], fin["per_t"]["auroc"])
        ),
        "",
        "During training (timesteps " + ", ".join(str(t) for t in r["unet"]["eval_timesteps"]) + "):",
        "",
        "| step | train loss (EMA) | best t | AUROC | TPR@1%FPR |",
        "|---:|---:|---:|---:|---:|",
    ]
    for e in r["unet"]["eval_log"]:
        lines.append(
            f"| {e['step']} | {e['train_loss_ema']:.4f} | {e['best_t']} | {e['auroc']:.4f} | {e['tpr_at_1fpr']:.4f} |"
        )
    lines.append("")
    path.write_text("\n".join(lines))


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="Fashion-MNIST idx .gz folder")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch intra-op threads for training (1 is fastest on a shared CPU; results are "
        "reproducible for a fixed thread count)",
    )
    p.add_argument("--jvp-threads", type=int, default=2, help="torch threads for the decoder-Jacobian timing")
    p.add_argument("--n-members", type=int, default=1000)
    p.add_argument("--n-heldout", type=int, default=1000)
    p.add_argument("--n-vae", type=int, default=15000)
    p.add_argument("--vae-epochs", type=int, default=8)
    p.add_argument("--vae-batch", type=int, default=64)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--unet-steps", type=int, default=2500)
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-lr", type=float, default=1e-3)
    p.add_argument("--unet-warmup", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=250, help="SimA evaluation interval (UNet steps)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the whole pipeline; returns the training record also written to training.json."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    stage_seconds: dict[str, float] = {}

    # 1-2. data and splits
    t0 = time.perf_counter()
    images, labels = load_fashion_mnist(args.data_dir, split="train")
    images = pad_to_32(images)
    splits = make_splits(
        images, n_members=args.n_members, n_heldout=args.n_heldout, n_vae=args.n_vae, seed=args.seed
    )
    write_image_folder(out / "members", images[splits.members], labels[splits.members], prefix="member")
    write_image_folder(out / "heldout", images[splits.heldout], labels[splits.heldout], prefix="heldout")
    x_members = to_model_range(images[splits.members])
    x_heldout = to_model_range(images[splits.heldout])
    x_vae = to_model_range(images[splits.vae])
    stage_seconds["data"] = time.perf_counter() - t0
    tqdm.write(f"splits: {len(splits.members)} members, {len(splits.heldout)} held-out, {len(splits.vae)} VAE")

    # 3. VAE
    t0 = time.perf_counter()
    vae_cfg = VaeConfig()
    torch.manual_seed(args.seed)
    vae = build_vae(vae_cfg)
    vae_log = train_vae(
        vae, x_vae, epochs=args.vae_epochs, batch_size=args.vae_batch, lr=args.vae_lr,
        kl_weight=args.kl_weight, seed=args.seed + 1,
    )
    scaling_factor = float(1.0 / encode_means(vae, x_vae).std())
    vae = rebuild_with_scaling(vae, vae_cfg, scaling_factor=scaling_factor)
    psnr = reconstruction_psnr(vae, x_heldout)
    stage_seconds["vae"] = time.perf_counter() - t0
    tqdm.write(f"VAE: scaling_factor={scaling_factor:.6f}, held-out PSNR={psnr:.2f} dB")

    # 4. latents and UNet
    z_members = encode_means(vae, x_members) * scaling_factor
    z_heldout = encode_means(vae, x_heldout) * scaling_factor
    z_eval = torch.cat([z_members, z_heldout])
    eval_labels = np.r_[np.ones(len(z_members), dtype=np.int64), np.zeros(len(z_heldout), dtype=np.int64)]

    t0 = time.perf_counter()
    unet_cfg = UnetConfig()
    torch.manual_seed(args.seed + 2)
    unet = build_unet(unet_cfg, latent_channels=z_members.shape[1], latent_size=z_members.shape[-1])
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")

    def eval_fn(step: int) -> dict:
        res = evaluate_sima(
            sima_statistics(unet, z_eval, timesteps=EVAL_TIMESTEPS), eval_labels, timesteps=EVAL_TIMESTEPS
        )
        return {**{k: res[k] for k in ("best_t", "auroc", "tpr_at_1fpr")}, "auroc_per_t": res["per_t"]["auroc"]}

    eval_log = train_unet(
        unet, scheduler, z_members, steps=args.unet_steps, batch_size=args.unet_batch, lr=args.unet_lr,
        warmup=args.unet_warmup, seed=args.seed + 3, eval_every=args.eval_every, eval_fn=eval_fn,
    )
    stage_seconds["unet"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    final = evaluate_sima(sima_statistics(unet, z_eval), eval_labels, timesteps=SIMA_TIMESTEPS)
    stage_seconds["final_eval"] = time.perf_counter() - t0

    # 5. save and measure
    t0 = time.perf_counter()
    save_model_folder(out / "model", vae, unet, scheduler)
    jvp_s = {}
    for threads in sorted({args.jvp_threads, args.threads}):
        torch.set_num_threads(threads)
        jvp_s[str(threads)] = measure_jvp_seconds(vae, z_members[:4] / scaling_factor)
    load_average = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    stage_seconds["save_and_jvp_timing"] = time.perf_counter() - t0
    wall = time.perf_counter() - t_start
    record = {
        "command": shlex.join(["python", SCRIPT_PATH, *(sys.argv[1:] if argv is None else argv)]),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "seed": args.seed,
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "numpy": np.__version__,
        },
        "platform": platform.platform(),
        "wall_time_s": wall,
        "stage_seconds": stage_seconds,
        "data": {
            "dir": str(args.data_dir),
            "source_split": "train",
            "n_members": len(splits.members),
            "n_heldout": len(splits.heldout),
            "n_vae": len(splits.vae),
            "members_source_index": splits.members.tolist(),
            "heldout_source_index": splits.heldout.tolist(),
            "members_sha256": hashlib.sha256(images[splits.members].tobytes()).hexdigest(),
            "heldout_sha256": hashlib.sha256(images[splits.heldout].tobytes()).hexdigest(),
        },
        "vae": {
            "config": asdict(vae_cfg),
            "n_params": n_params(vae),
            "n_params_decoder": n_params(vae.decoder) + n_params(vae.post_quant_conv),
            "epochs": args.vae_epochs,
            "batch_size": args.vae_batch,
            "lr": args.vae_lr,
            "kl_weight": args.kl_weight,
            "train_log": vae_log,
            "scaling_factor": scaling_factor,
            "psnr_heldout_db": psnr,
            "jvp_seconds_per_sample": jvp_s[str(args.jvp_threads)]["min"],
            "jvp_seconds_per_sample_by_threads": jvp_s,
            "jvp_load_average_1min": load_average,
            "jvp_cpu_count": os.cpu_count(),
        },
        "unet": {
            "config": asdict(unet_cfg),
            "n_params": n_params(unet),
            "steps": args.unet_steps,
            "batch_size": args.unet_batch,
            "lr": args.unet_lr,
            "warmup": args.unet_warmup,
            "eval_timesteps": list(EVAL_TIMESTEPS),
            "eval_log": eval_log,
        },
        "scheduler": dict(scheduler.config),
        "results": {"sima": {"p": SIMA_P, **final}},
    }
    record["bytes"] = {name: folder_bytes(out / name) for name in ("model", "members", "heldout")}
    (out / "training.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    write_training_md(out / "TRAINING.md", record)
    tqdm.write(
        f"done in {wall / 60:.1f} min: SimA best t={final['best_t']} AUROC={final['auroc']:.4f} "
        f"TPR@1%FPR={final['tpr_at_1fpr']:.4f}; JVP {jvp_s[str(args.jvp_threads)]['min']:.3f} s/sample "
        f"({args.jvp_threads} threads); "
        f"model + images {sum(record['bytes'].values()) / 2**20:.1f} MiB"
    )
    return record


if __name__ == "__main__":
    main()
