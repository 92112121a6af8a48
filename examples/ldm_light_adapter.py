"""ldminv model adapter for the paper's ``ldm_light`` latent diffusion models (MNIST / CIFAR-10 / CelebA).

The paper's small LDMs are not diffusers pipelines: its repository (VAE2Diffusion, folder
``ldm_light``) defines its own ``VAE`` and ``UNetCompVis`` classes in ``ldm_light/main.py`` and
saves their state dicts as ``vae_last.pt`` and ``unet_last.pt``. This adapter builds those classes
from YOUR OWN checkout of that repository (nothing of it is copied here; its module is imported
from the path you give), loads the two checkpoints with
``ldminv_core.models.custom_adapter.load_state_dict`` (``torch.load(weights_only=True)``: tensors
only, no pickled code runs), and hands ldminv:

- ``encode``: the VAE encoder's mean ``mu`` of ``VAE.encode(x) -> (mu, logvar)`` (images in
  [-1, 1], as main.py normalises them); the diffusion model was trained on ``mu`` itself, so
  ``scaling_factor`` is 1 and ``shift_factor`` 0;
- ``decode``: ``VAE.decode(z)``; ``posterior_std``: ``exp(logvar / 2)`` (for ``--latent sample``);
- ``model_output``: ``UNetCompVis(z_t, t)``, an epsilon prediction at integer timesteps;
- the schedule: ``alphas_cumprod`` = the ``alpha_bars`` of the repository's own
  ``DiffusionSchedule(T, beta_start, beta_end)`` (linear betas, T = 1000 by default).

The constructor arguments come from the ``args.json`` that ``main.py`` writes into its
``--out_dir`` (``in_channels``, ``img_size``, ``latent_channels``, ``ae_base``, ``dropout``,
``unet_model_ch``, ``unet_channel_mult``, ``unet_num_res_blocks``, ``no_conv_resample``, ``T``,
``beta_start``, ``beta_end``); a key it lacks takes main.py's command-line default.

How to run it::

    git clone https://github.com/mx-ethan-rao/VAE2Diffusion /path/to/VAE2Diffusion   # your checkout
    export LDM_LIGHT_REPO=/path/to/VAE2Diffusion
    python -m ldminv_core analyze \\
        --model-adapter examples/ldm_light_adapter.py \\
        --model /path/to/out_dir \\
        --members /path/to/member_images --heldout /path/to/heldout_images \\
        --out runs/cifar10-ldm-light --attacks sima,pia,loss,secmi,pfami --timesteps 0:300:10

``--model`` is main.py's ``--out_dir``: ``args.json``, ``vae/vae_last.pt`` and
``ldm_vae/unet_last.pt`` (a folder holding ``vae_last.pt`` and ``unet_last.pt`` side by side
works too). The image folders hold the images as files (e.g. the CIFAR-10 members and held-out
images of the paper's split, saved as PNG); ldminv resizes them to ``img_size`` and reads MNIST's
grayscale images as RGB when ``in_channels`` is 3, as main.py's transforms do.

Environment variables:

- ``LDM_LIGHT_REPO`` (required): the root of your checkout (or its ``ldm_light`` folder).
- ``LDM_LIGHT_MODULE`` (optional): the Python file defining ``VAE``, ``UNetCompVis`` and
  ``DiffusionSchedule``; default ``<LDM_LIGHT_REPO>/ldm_light/main.py``. Importing it needs the
  packages that file imports (torchvision, torchmetrics, pandas).
- ``LDM_LIGHT_ARGS`` (optional): a JSON file of main.py's arguments; default
  ``<--model>/args.json`` when it exists.

Not covered: the VQ-VAE variant (``vqvae_last.pt``), whose latents are quantised.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import torch

from ldminv_core.models.custom_adapter import ModelAdapter, load_state_dict

#: main.py's command-line defaults, used for any key its args.json lacks.
MAIN_DEFAULTS = {
    "in_channels": 3, "img_size": 32, "latent_channels": 4, "ae_base": 128, "dropout": 0.1,
    "unet_model_ch": 128, "unet_channel_mult": [1, 2, 2, 2], "unet_num_res_blocks": 2,
    "no_conv_resample": False, "T": 1000, "beta_start": 1e-4, "beta_end": 2e-2,
}


def _repository_module() -> ModuleType:
    """The user's ldm_light module (VAE, UNetCompVis, DiffusionSchedule), imported by path."""
    repo = os.environ.get("LDM_LIGHT_REPO")
    if not repo:
        raise RuntimeError("LDM_LIGHT_REPO is not set: export LDM_LIGHT_REPO=/path/to/your/VAE2Diffusion checkout")
    root = Path(repo).expanduser().resolve()
    default = root / "ldm_light" / "main.py" if (root / "ldm_light").is_dir() else root / "main.py"
    file = Path(os.environ.get("LDM_LIGHT_MODULE") or default).expanduser().resolve()
    if not file.is_file():
        raise RuntimeError(f"{file} not found: expected ldm_light/main.py of your checkout (LDM_LIGHT_REPO={root}); "
                           "set LDM_LIGHT_MODULE to the file that defines VAE and UNetCompVis")
    if str(file.parent) not in sys.path:
        sys.path.insert(0, str(file.parent))  # its own sibling imports, if any
    spec = importlib.util.spec_from_file_location("ldm_light_user_main", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    missing = [n for n in ("VAE", "UNetCompVis", "DiffusionSchedule") if not hasattr(module, n)]
    if missing:
        raise RuntimeError(f"{file} defines no {', '.join(missing)}; expected the paper's ldm_light/main.py")
    return module


def _arguments(folder: Path | None) -> dict:
    """main.py's arguments: LDM_LIGHT_ARGS or <folder>/args.json over main.py's defaults."""
    given = os.environ.get("LDM_LIGHT_ARGS")
    file = Path(given).expanduser() if given else (folder / "args.json" if folder is not None else None)
    args = dict(MAIN_DEFAULTS)
    if file is not None and file.is_file():
        args.update(json.loads(file.read_text(encoding="utf-8")))
    elif given:
        raise RuntimeError(f"LDM_LIGHT_ARGS={given}: not a file")
    return args


def _checkpoint(folder: Path, sub: str, name: str) -> Path:
    for candidate in (folder / sub / name, folder / name):
        if candidate.is_file():
            return candidate
    raise RuntimeError(f"{name} not found: looked for {folder / sub / name} and {folder / name}")


def build_adapter(model_path: str | None, *, device: torch.device, dtype: torch.dtype) -> ModelAdapter:
    """The ldm_light VAE + UNetCompVis of the checkpoints in ``model_path`` (main.py's --out_dir)."""
    if model_path is None:
        raise RuntimeError("--model is required: main.py's --out_dir with vae/vae_last.pt and ldm_vae/unet_last.pt")
    folder = Path(model_path)
    repo = _repository_module()
    a = _arguments(folder)
    latent_ch = int(a["latent_channels"])
    vae = repo.VAE(in_ch=int(a["in_channels"]), latent_ch=latent_ch, base=int(a["ae_base"]), drop=float(a["dropout"]))
    unet = repo.UNetCompVis(
        in_ch=latent_ch, model_ch=int(a["unet_model_ch"]), out_ch=latent_ch,
        channel_mult=tuple(int(m) for m in a["unet_channel_mult"]), num_res_blocks=int(a["unet_num_res_blocks"]),
        dropout=float(a["dropout"]), conv_resample=not bool(a["no_conv_resample"]),
    )
    vae.load_state_dict(load_state_dict(_checkpoint(folder, "vae", "vae_last.pt")))
    unet.load_state_dict(load_state_dict(_checkpoint(folder, "ldm_vae", "unet_last.pt")))
    vae.to(device=device, dtype=dtype).eval()
    unet.to(device=device, dtype=dtype).eval()
    schedule = repo.DiffusionSchedule(T=int(a["T"]), beta_start=float(a["beta_start"]), beta_end=float(a["beta_end"]),
                                      device="cpu")
    side = int(a["img_size"])
    image_shape = (int(a["in_channels"]), side, side)
    with torch.no_grad():  # the latent shape, as the VAE makes it (main.py's VAE downsamples by 4)
        latent_shape = tuple(vae.encode(torch.zeros((1, *image_shape), device=device, dtype=dtype))[0].shape[1:])
    return ModelAdapter(
        encode=lambda x: vae.encode(x)[0],
        decode=vae.decode,
        model_output=lambda z_t, t, cond: unet(z_t, t),
        image_shape=image_shape,
        latent_shape=latent_shape,
        prediction_type="epsilon",
        alphas_cumprod=schedule.alpha_bars,
        posterior_std=lambda x: torch.exp(0.5 * vae.encode(x)[1]),
        vae=vae,
        denoiser=unet,
    )
