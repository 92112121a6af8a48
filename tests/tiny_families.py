"""Tiny random pipeline folders of the SDXL and class-conditional families, built from configs
(nothing downloads), shared by the family tests, the cost tests and the dashboard tests.

- :func:`build_tiny_sdxl`: a ``StableDiffusionXLPipeline`` (two CLIP text encoders, a
  ``text_time`` UNet) saved by ``save_pretrained``; 16x16 RGB -> (4, 4, 4) latents.
- :func:`tiny_class_unet` / :func:`build_tiny_class_unet`: a ``UNet2DModel`` with 3 class
  embeddings (no null class) over a grayscale VAE.
- :func:`tiny_dit` / :func:`build_tiny_dit`: a ``DiTTransformer2DModel`` (5 classes, null class
  5) in ``transformer/`` with a ``DiTPipeline`` model_index.json.
- :func:`write_labelled_folder`: PNG images with a ``label`` column in metadata.jsonl.

SD 1.x / 2.x and unconditional folders are in ``tests/tiny_models.py``, SD3 in ``tests/tiny_sd3.py``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from tests.tiny_models import TINY_MAX_TOKENS, tiny_scheduler, tiny_vae, write_image_folder, write_tiny_tokenizer

SDXL_TEXT_DIM_1, SDXL_TEXT_DIM_2, SDXL_POOLED_DIM, SDXL_TIME_DIM = 16, 24, 8, 4
CLASS_UNET_CLASSES = 3
DIT_CLASSES = 5


# ---------------------------------------------------------------------------- SDXL

def sdxl_clip_config(vocab_size: int, hidden: int, projection: int):
    """A two-layer CLIPTextConfig of width ``hidden`` and projection ``projection``."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=TINY_MAX_TOKENS, projection_dim=projection,
                          bos_token_id=0, eos_token_id=1, pad_token_id=1)


def tiny_sdxl_unet(seed: int):
    """UNet2DConditionModel with SDXL's ``text_time`` additional embedding, on (4, 4, 4) latents."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, cross_attention_dim=SDXL_TEXT_DIM_1 + SDXL_TEXT_DIM_2, attention_head_dim=4,
        addition_embed_type="text_time", addition_time_embed_dim=SDXL_TIME_DIM,
        projection_class_embeddings_input_dim=6 * SDXL_TIME_DIM + SDXL_POOLED_DIM, transformer_layers_per_block=1,
    ).eval()


def build_tiny_sdxl(folder: Path, *, seed: int = 0):
    """Save a tiny random StableDiffusionXLPipeline into ``folder``; returns the pipeline."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    tok_dir = write_tiny_tokenizer(folder / "_tok")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    tokenizer_2 = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(seed + 3)
    text_encoder = CLIPTextModel(sdxl_clip_config(len(tokenizer), SDXL_TEXT_DIM_1, SDXL_TEXT_DIM_1)).eval()
    torch.manual_seed(seed + 4)
    text_encoder_2 = CLIPTextModelWithProjection(
        sdxl_clip_config(len(tokenizer), SDXL_TEXT_DIM_2, SDXL_POOLED_DIM)).eval()
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(image_channels=3, seed=seed), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=tiny_sdxl_unet(seed + 2), scheduler=tiny_scheduler(),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


# ---------------------------------------------------------------------------- class-conditional

def tiny_class_unet(*, embed_type: str | None = None):
    """UNet2DModel on (4, 4, 4) latents with CLASS_UNET_CLASSES class embeddings (or the
    ``class_embed_type`` given: "timestep", "identity")."""
    from diffusers import UNet2DModel

    torch.manual_seed(11)
    return UNet2DModel(
        sample_size=4, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, attention_head_dim=4,
        num_class_embeds=None if embed_type else CLASS_UNET_CLASSES, class_embed_type=embed_type,
    ).eval()


def tiny_dit(*, legacy: bool = False):
    """A tiny DiT: DiTTransformer2DModel, or the Transformer2DModel class older DiT checkpoints name
    (DIT_CLASSES classes, learned sigma: 8 output channels)."""
    from diffusers import DiTTransformer2DModel, Transformer2DModel

    torch.manual_seed(12)
    kw = dict(num_attention_heads=2, attention_head_dim=4, in_channels=4, out_channels=8, num_layers=1,
              sample_size=4, patch_size=2, num_embeds_ada_norm=DIT_CLASSES)
    if legacy:
        model = Transformer2DModel(norm_type="ada_norm_zero", **kw).eval()
    else:
        model = DiTTransformer2DModel(**kw).eval()
    with torch.no_grad():  # ada_norm_zero starts at zero: perturb so every input matters
        for prm in model.parameters():
            prm.add_(0.05 * torch.randn_like(prm))
    return model


def build_tiny_class_unet(folder: Path) -> Path:
    """A class-conditional UNet2DModel folder (vae/ 1x16x16 -> 4x4x4, unet/, scheduler/); returns it."""
    folder = Path(folder)
    tiny_vae(image_channels=1, seed=0).save_pretrained(folder / "vae")
    tiny_class_unet().save_pretrained(folder / "unet")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    return folder


def build_tiny_dit(folder: Path) -> Path:
    """A DiT folder (vae/ 1x16x16 -> 4x4x4, transformer/, scheduler/, model_index.json); returns it."""
    folder = Path(folder)
    tiny_vae(image_channels=1, seed=0).save_pretrained(folder / "vae")
    tiny_dit().save_pretrained(folder / "transformer")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    return folder


def write_labelled_folder(folder: Path, n: int, labels: Sequence[int | None] | None, seed: int) -> Path:
    """``n`` PNG images in ``folder`` with their class labels in metadata.jsonl (no metadata when
    ``labels`` is None); returns the folder."""
    folder = Path(folder)
    paths = write_image_folder(folder, n, formats=("png",), seed=seed)
    if labels is not None:
        rows = [{"file_name": p.name, "label": y} for p, y in zip(paths, labels)]
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder
