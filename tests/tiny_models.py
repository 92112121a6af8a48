"""Tiny random diffusers models and image folders for the test suite.

Plain functions (no pytest here) that build real on-disk artefacts in a given folder:

- :func:`build_tiny_unconditional` writes a pipeline folder with ``vae/`` (AutoencoderKL with
  an attention mid-block), ``unet/`` (UNet2DModel) and ``scheduler/`` (DDPMScheduler);
- :func:`build_tiny_conditional` adds ``text_encoder/`` (CLIPTextModel) and ``tokenizer/``
  (CLIPTokenizer from a small vocab.json/merges.txt) around a UNet2DConditionModel, the layout
  ``StableDiffusionPipeline.save_pretrained`` writes;
- :func:`write_image_folder` writes small random PNG/JPEG images, optionally with captions in
  ``metadata.jsonl``.

Every model is tiny: 16x16 images, 4x4x4 latents (d = 64), a few thousand weights, so a
forward pass costs well under a millisecond-scale budget on a CPU.
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TINY_RESOLUTION = 16
TINY_LATENT_SHAPE = (4, 4, 4)
TINY_SCALING_FACTOR = 0.5
TINY_TEXT_DIM = 16
TINY_MAX_TOKENS = 8


def tiny_vae(*, image_channels: int = 1, latent_channels: int = 4, seed: int = 0):
    """AutoencoderKL 16x16 -> (latent_channels, 4, 4) with an attention mid-block."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=image_channels,
        out_channels=image_channels,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=TINY_RESOLUTION,
        scaling_factor=TINY_SCALING_FACTOR,
        mid_block_add_attention=True,
    ).eval()


def tiny_unet(*, in_channels: int = 4, seed: int = 1):
    """UNet2DModel on 4x4 latents."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=TINY_LATENT_SHAPE[1],
        in_channels=in_channels,
        out_channels=in_channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=4,
    ).eval()


def tiny_cond_unet(*, seed: int = 2):
    """UNet2DConditionModel on 4x4 latents, cross-attending to TINY_TEXT_DIM features."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=TINY_LATENT_SHAPE[1],
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        norm_num_groups=4,
        cross_attention_dim=TINY_TEXT_DIM,
        attention_head_dim=4,
    ).eval()


def tiny_scheduler():
    """DDPMScheduler with the Stable Diffusion beta schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )


def write_tiny_tokenizer(folder: Path) -> Path:
    """Write a character-level CLIP BPE tokenizer into ``folder`` as the files of a Stable
    Diffusion ``tokenizer/`` folder (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json); returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(string.ascii_lowercase) + list(string.digits) + list(".,!?'-")
    tokens = ["<|startoftext|>", "<|endoftext|>"]
    tokens += symbols + [s + "</w>" for s in symbols]
    merges = ["#version: 0.2", "t h", "th e</w>", "a n", "an d</w>"]
    tokens += ["th", "the</w>", "an", "and</w>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("\n".join(merges) + "\n")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": TINY_MAX_TOKENS, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def tiny_text_encoder(vocab_size: int, *, seed: int = 3):
    """CLIPTextModel with TINY_TEXT_DIM hidden units and TINY_MAX_TOKENS positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TINY_TEXT_DIM,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=TINY_MAX_TOKENS,
        projection_dim=TINY_TEXT_DIM,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config).eval()


def build_tiny_unconditional(
    folder: Path, *, image_channels: int = 1, unet_in_channels: int = 4, seed: int = 0
) -> Path:
    """Save vae/, unet/, scheduler/ of a tiny unconditional LDM into ``folder``."""
    folder = Path(folder)
    tiny_vae(image_channels=image_channels, seed=seed).save_pretrained(folder / "vae")
    tiny_unet(in_channels=unet_in_channels, seed=seed + 1).save_pretrained(folder / "unet")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    return folder


def build_tiny_conditional(folder: Path, *, image_channels: int = 3, seed: int = 0) -> Path:
    """Save vae/, unet/ (UNet2DConditionModel), scheduler/, text_encoder/, tokenizer/ into
    ``folder``, as ``StableDiffusionPipeline.save_pretrained`` lays them out."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    tiny_vae(image_channels=image_channels, seed=seed).save_pretrained(folder / "vae")
    tiny_cond_unet(seed=seed + 2).save_pretrained(folder / "unet")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    write_tiny_tokenizer(folder / "tokenizer")
    vocab_size = len(AutoTokenizer.from_pretrained(folder / "tokenizer"))
    tiny_text_encoder(vocab_size, seed=seed + 3).save_pretrained(folder / "text_encoder")
    return folder


CAPTION_WORDS = ("the", "cat", "and", "dog", "red", "blue", "small", "tree")


def write_image_folder(
    folder: Path,
    n: int,
    *,
    seed: int = 0,
    prefix: str = "img",
    formats: tuple[str, ...] = ("png", "jpg"),
    modes: tuple[str, ...] = ("L", "RGB", "RGBA"),
    sizes: tuple[tuple[int, int], ...] = ((16, 16), (20, 24), (33, 17)),
    captions: bool = False,
) -> list[Path]:
    """Write ``n`` random images (cycling through ``formats``, ``modes`` and ``sizes``, given
    as (width, height)) named ``{prefix}_{i:03d}.{ext}``; with ``captions`` also a
    ``metadata.jsonl`` with one ``{"file_name", "text"}`` line per image. Returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, lines = [], []
    for i in range(n):
        fmt = formats[i % len(formats)]
        mode = modes[i % len(modes)]
        if fmt == "jpg" and mode == "RGBA":
            mode = "RGB"
        w, h = sizes[i % len(sizes)]
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        # smooth random images: a coarse random grid, upsampled
        coarse = rng.integers(0, 256, size=(4, 4, channels), dtype=np.uint8)
        img = Image.fromarray(coarse.squeeze(-1) if channels == 1 else coarse, mode=mode)
        img = img.resize((w, h), resample=Image.Resampling.BILINEAR)
        path = folder / f"{prefix}_{i:03d}.{fmt}"
        img.save(path)
        paths.append(path)
        if captions:
            words = rng.choice(CAPTION_WORDS, size=3)
            lines.append(json.dumps({"file_name": path.name, "text": " ".join(words)}))
    if captions:
        (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return paths
