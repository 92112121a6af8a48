"""A LoRA that memorises the members of a tiny text-conditioned latent diffusion model.

:func:`build_lora_memorised` writes the tiny Stable Diffusion 1.x layout of
``tests.tiny_models.build_tiny_conditional`` (left untrained), two folders of 16x16 RGB images
with one distinct caption each (``tests.support.memorised``'s folders and captions), then trains
a PEFT LoRA on every linear and convolution layer of the UNet (base weights frozen)
on the members' latents and own captions with the epsilon objective at low timesteps only
(``t`` in ``[1, t_max]``), where predicting the noise amounts to knowing the clean latent, i.e.
memorising the member. Seeded, on the CPU. The adapter is saved with diffusers'
``save_lora_weights`` (``pytorch_lora_weights.safetensors``), the file ``analyze --lora`` reads.

``LoraMemorised.member_loss`` / ``heldout_loss`` are the mean epsilon losses of each split under
its own captions with the adapter at scale 1 (same seeded noise and timesteps in ``[1, t_max]``);
``member_loss_base`` is the members' loss without it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tests.support.memorised import _captions, _inputs, _write_folder
from tests.tiny_models import build_tiny_conditional

__all__ = ["LoraMemorised", "build_lora_memorised"]

# every Linear / Conv2d of the tiny UNet (a LoRA on attention and ResNet convolutions alone barely
# memorises: the caption reaches only the first block's cross-attention)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj", "net.2", "proj_in", "proj_out", "conv1", "conv2",
           "conv_shortcut", "time_emb_proj", "conv", "conv_in", "conv_out", "linear_1", "linear_2"]


@dataclass(frozen=True)
class LoraMemorised:
    """The base model folder, the image folders, the LoRA file and the epsilon losses (low t)."""

    model: Path
    members: Path
    heldout: Path
    lora: Path
    member_loss: float
    heldout_loss: float
    member_loss_base: float
    steps: int


def _low_t_loss(unet, alphas: torch.Tensor, z0: torch.Tensor, cond: torch.Tensor, *, t_max: int, seed: int,
                draws: int = 8) -> float:
    """Mean epsilon MSE over ``draws`` seeded (t in [1, t_max], noise) draws per latent."""
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            t = torch.randint(1, t_max + 1, (z0.shape[0],), generator=g)
            e = torch.randn(z0.shape, generator=g)
            a = alphas[t].view(-1, 1, 1, 1)
            total += float(F.mse_loss(unet(a.sqrt() * z0 + (1 - a).sqrt() * e, t, encoder_hidden_states=cond).sample, e))
    return total / draws


def build_lora_memorised(root: Path, *, n_members: int = 12, n_heldout: int = 12, rank: int = 8,
                         steps: int = 400, lr: float = 1e-2, t_max: int = 30, reps: int = 1,
                         seed: int = 0) -> LoraMemorised:
    """Write the base model, the image folders and the trained LoRA under ``root``.

    Args:
        root: an empty or new folder; gets ``model/``, ``members/``, ``heldout/``, ``lora/``.
        n_members, n_heldout: images per folder. rank: the LoRA's rank (alpha = rank).
        steps: Adam steps on all members at once, ``reps`` fresh (t, noise) draws per member and
            step, t uniform in [1, t_max]. lr: Adam's learning rate. seed: every draw.

    Returns:
        :class:`LoraMemorised`.
    """
    from diffusers.loaders import StableDiffusionLoraLoaderMixin
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    from ldminv_core.models.loading import load_model

    root = Path(root)
    rng = np.random.default_rng(seed)
    build_tiny_conditional(root / "model", seed=seed)
    caps = _captions(n_members + n_heldout, rng)
    _write_folder(root / "members", caps[:n_members], rng, "m")
    _write_folder(root / "heldout", caps[n_members:], rng, "h")
    model = load_model(root / "model", device="cpu")
    (zm, cm), (zh, ch) = _inputs(model, root / "members"), _inputs(model, root / "heldout")
    zm, cm, zh, ch = zm.float(), cm.float(), zh.float(), ch.float()
    alphas = model.scheduler.alphas_cumprod.float()
    base = copy.deepcopy(model.unet).float().eval()
    before = _low_t_loss(base, alphas, zm, cm, t_max=t_max, seed=seed + 1)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=True, target_modules=TARGETS)
    unet = inject_adapter_in_model(config, copy.deepcopy(model.unet).float(), adapter_name="default")
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
    opt = torch.optim.Adam([p for p in unet.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed + 2)
    z_rep, c_rep = zm.repeat(reps, 1, 1, 1), cm.repeat(reps, 1, 1)
    unet.train()
    for _ in range(int(steps)):
        t = torch.randint(1, t_max + 1, (z_rep.shape[0],), generator=g)
        e = torch.randn(z_rep.shape, generator=g)
        a = alphas[t].view(-1, 1, 1, 1)
        loss = F.mse_loss(unet(a.sqrt() * z_rep + (1 - a).sqrt() * e, t, encoder_hidden_states=c_rep).sample, e)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    unet.eval()
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(unet).items()}
    StableDiffusionLoraLoaderMixin.save_lora_weights(root / "lora", unet_lora_layers=state,
                                                     unet_lora_adapter_metadata=config.to_dict())
    return LoraMemorised(model=root / "model", members=root / "members", heldout=root / "heldout",
                         lora=root / "lora",
                         member_loss=_low_t_loss(unet, alphas, zm, cm, t_max=t_max, seed=seed + 1),
                         heldout_loss=_low_t_loss(unet, alphas, zh, ch, t_max=t_max, seed=seed + 1),
                         member_loss_base=before, steps=int(steps))
