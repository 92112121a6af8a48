"""Tiny random Stable Diffusion 3 components for the test suite, built from configs (nothing
downloads).

:func:`tiny_sd3_components` returns the modules of a ``StableDiffusion3Pipeline``: a 16-channel
AutoencoderKL with ``shift_factor`` (16x16 RGB -> (16, 4, 4)), an ``SD3Transformer2DModel``
(patch 2), two ``CLIPTextModelWithProjection`` of different widths (CLIP-L / CLIP-G stand-ins),
optionally a ``T5EncoderModel`` (with a character-level CLIP tokenizer standing in for T5's), and a
``FlowMatchEulerDiscreteScheduler`` with shift 3 (the attacks ignore the shift).
:func:`build_tiny_sd3` saves them as a pipeline folder with ``model_index.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.tiny_models import TINY_MAX_TOKENS, TINY_RESOLUTION, write_tiny_tokenizer

SD3_LATENT_SHAPE = (16, 4, 4)
SD3_SHIFT_FACTOR = 0.0609
SD3_SCALING_FACTOR = 1.5305
SD3_JOINT_DIM = 48
SD3_CLIP_DIMS = (16, 24)
SD3_PROJECTION = 8


def tiny_sd3_vae(*, seed: int = 0):
    """16-channel AutoencoderKL with SD3's shift_factor / scaling_factor."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16), layers_per_block=1, latent_channels=16, norm_num_groups=4,
        sample_size=TINY_RESOLUTION, scaling_factor=SD3_SCALING_FACTOR, shift_factor=SD3_SHIFT_FACTOR,
        use_quant_conv=False, use_post_quant_conv=False,
    ).eval()


def tiny_sd3_transformer(*, seed: int = 1):
    """SD3Transformer2DModel on (16, 4, 4) latents, patch 2, joint width SD3_JOINT_DIM."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=SD3_LATENT_SHAPE[1], patch_size=2, in_channels=16, out_channels=16, num_layers=2,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=SD3_JOINT_DIM,
        caption_projection_dim=16, pooled_projection_dim=2 * SD3_PROJECTION, pos_embed_max_size=8,
    ).eval()


def tiny_clip_with_projection(vocab_size: int, hidden: int, *, seed: int):
    """CLIPTextModelWithProjection with ``hidden`` units, 2 layers, TINY_MAX_TOKENS positions."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TINY_MAX_TOKENS, projection_dim=SD3_PROJECTION,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config).eval()


def tiny_t5(vocab_size: int, *, seed: int = 6):
    """T5EncoderModel of width SD3_JOINT_DIM, one layer."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=SD3_JOINT_DIM, d_kv=8, d_ff=32, num_layers=1,
                      num_heads=2, relative_attention_num_buckets=8, pad_token_id=1, eos_token_id=1)
    return T5EncoderModel(config).eval()


def tiny_sd3_components(folder: Path, *, with_t5: bool = True, seed: int = 0) -> dict[str, Any]:
    """The components of a tiny SD3 pipeline (keys as ``StableDiffusion3Pipeline`` names them);
    tokenizer files are written under ``folder``."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import CLIPTokenizer

    tok_dir = write_tiny_tokenizer(Path(folder) / "_tok")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    vocab = len(tokenizer)
    parts: dict[str, Any] = {
        "vae": tiny_sd3_vae(seed=seed),
        "transformer": tiny_sd3_transformer(seed=seed + 1),
        "scheduler": FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        "text_encoder": tiny_clip_with_projection(vocab, SD3_CLIP_DIMS[0], seed=seed + 2),
        "tokenizer": tokenizer,
        "text_encoder_2": tiny_clip_with_projection(vocab, SD3_CLIP_DIMS[1], seed=seed + 3),
        "tokenizer_2": CLIPTokenizer.from_pretrained(str(tok_dir)),
        "text_encoder_3": None,
        "tokenizer_3": None,
    }
    if with_t5:
        parts["text_encoder_3"] = tiny_t5(vocab, seed=seed + 4)
        parts["tokenizer_3"] = CLIPTokenizer.from_pretrained(str(tok_dir))
    return parts


def tiny_sd3_pipeline(folder: Path, *, with_t5: bool = True, seed: int = 0):
    """A ``StableDiffusion3Pipeline`` of the tiny components (float32, CPU)."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(**tiny_sd3_components(folder, with_t5=with_t5, seed=seed))


def build_tiny_sd3(folder: Path, *, with_t5: bool = True, seed: int = 0) -> Path:
    """Save a tiny SD3 pipeline folder (safetensors, model_index.json) into ``folder``."""
    folder = Path(folder)
    pipe = tiny_sd3_pipeline(folder / "_parts", with_t5=with_t5, seed=seed)
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return folder / "model"
