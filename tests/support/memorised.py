"""A tiny text-conditioned latent diffusion model trained until it memorises its members.

:func:`build_memorised` writes the tiny Stable Diffusion 1.x layout of
``tests.tiny_models.build_tiny_conditional``, two folders of 16x16 RGB images with one caption
each (``metadata.jsonl``; six distinct letters per caption, so the tiny character tokenizer's
8 positions hold all of it), then trains the UNet alone (VAE and text encoder frozen) on the
members' latents and captions with the usual epsilon objective, seeded, on the CPU, and saves it
back. After training the members' denoising loss under their own captions is far below the
held-out images' (``MemorisedModel.member_loss`` / ``heldout_loss``), which is what every attack
of ldminv reads.

The latents are the ones ``analyze`` uses: the images read by ``load_image_folder`` and encoded
by ``LoadedModel.encode`` (scaled encoder means), the captions encoded by the model's
``encode_prompts``.
"""
from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tests.tiny_models import build_tiny_conditional

__all__ = ["MemorisedModel", "build_memorised"]


@dataclass(frozen=True)
class MemorisedModel:
    """The model folder, the member and held-out folders, and the mean epsilon loss of each split
    under its own captions (same seeded noise and timesteps) before and after training."""

    model: Path
    members: Path
    heldout: Path
    member_loss: float
    heldout_loss: float
    member_loss_before: float
    steps: int


def _write_folder(folder: Path, captions: list[str], rng: np.random.Generator, prefix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, caption in enumerate(captions):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        name = f"{prefix}_{i:03d}.png"
        Image.fromarray(coarse, mode="RGB").resize((16, 16), resample=Image.Resampling.BILINEAR).save(folder / name)
        lines.append(json.dumps({"file_name": name, "text": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def _captions(n: int, rng: np.random.Generator) -> list[str]:
    letters = np.array(list(string.ascii_lowercase))
    out: list[str] = []
    while len(out) < n:
        c = "".join(rng.choice(letters, size=6, replace=False))
        if c not in out:
            out.append(c)
    return out


def _inputs(model, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from ldminv_core.data.image_folders import load_image_folder

    images = load_image_folder(folder, channels=model.image_shape[0], resolution=model.image_shape[1])
    with torch.no_grad():
        return model.encode(images.images), model.predictor.encode_prompts(list(images.captions))


def _loss(unet, scheduler, z0: torch.Tensor, cond: torch.Tensor, *, seed: int, draws: int = 16) -> float:
    """Mean epsilon MSE over ``draws`` seeded (t, noise) draws per latent."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            t = torch.randint(0, scheduler.config.num_train_timesteps, (z0.shape[0],), generator=g)
            e = torch.randn(z0.shape, generator=g)
            pred = unet(scheduler.add_noise(z0, e, t), t, encoder_hidden_states=cond).sample
            total += float(F.mse_loss(pred, e))
    return total / draws


def build_memorised(root: Path, *, n_members: int = 8, n_heldout: int = 8, steps: int = 600, lr: float = 3e-3,
                    seed: int = 0) -> MemorisedModel:
    """Write the model and image folders under ``root`` and train the UNet on the members.

    Args:
        root: an empty or new folder; gets ``model/``, ``members/``, ``heldout/``.
        n_members, n_heldout: images per folder. steps: Adam steps on all members at once
            (fresh timesteps and noise each step). lr: Adam's learning rate. seed: every draw.

    Returns:
        :class:`MemorisedModel`.
    """
    from diffusers import DDPMScheduler

    from ldminv_core.models.loading import load_model

    root = Path(root)
    rng = np.random.default_rng(seed)
    build_tiny_conditional(root / "model", seed=seed)
    caps = _captions(n_members + n_heldout, rng)
    _write_folder(root / "members", caps[:n_members], rng, "m")
    _write_folder(root / "heldout", caps[n_members:], rng, "h")
    model = load_model(root / "model", device="cpu")
    scheduler = DDPMScheduler.from_pretrained(root / "model" / "scheduler")
    (zm, cm), (zh, ch) = _inputs(model, root / "members"), _inputs(model, root / "heldout")
    unet = model.unet
    before = _loss(unet, scheduler, zm, cm, seed=seed + 1)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 2)
    unet.requires_grad_(True).train()
    opt = torch.optim.Adam(unet.parameters(), lr=lr)
    reps = 4  # (t, noise) draws per member and step
    z_rep, c_rep = zm.repeat(reps, 1, 1, 1), cm.repeat(reps, 1, 1)
    for _ in range(int(steps)):
        t = torch.randint(0, scheduler.config.num_train_timesteps, (z_rep.shape[0],), generator=g)
        e = torch.randn(z_rep.shape, generator=g)
        loss = F.mse_loss(unet(scheduler.add_noise(z_rep, e, t), t, encoder_hidden_states=c_rep).sample, e)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    unet.eval()
    unet.save_pretrained(root / "model" / "unet")
    return MemorisedModel(model=root / "model", members=root / "members", heldout=root / "heldout",
                          member_loss=_loss(unet, scheduler, zm, cm, seed=seed + 1),
                          heldout_loss=_loss(unet, scheduler, zh, ch, seed=seed + 1),
                          member_loss_before=before, steps=int(steps))
