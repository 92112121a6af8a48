"""Tiny random Flux components for the test suite, built from configs (nothing downloads).

:func:`tiny_flux_components` returns the modules of a ``FluxPipeline``: a 16-channel AutoencoderKL
with Flux's ``shift_factor`` / ``scaling_factor`` (16x16 RGB -> (16, 4, 4)), a
``FluxTransformer2DModel`` taking 2x2 packed patches (in_channels 64 = 16 x 4, one double and one
single block, rotary axes summing to the head width) with or without a guidance embedding, a
``CLIPTextModel`` (pooled output), a ``T5EncoderModel`` (a character-level CLIP tokenizer standing in
for T5's), and a ``FlowMatchEulerDiscreteScheduler`` with Flux's dynamic shifting (the attacks ignore
the shift). :func:`build_tiny_flux` saves them as a pipeline folder with ``model_index.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tests.tiny_models import TINY_MAX_TOKENS, TINY_RESOLUTION, write_tiny_tokenizer

FLUX_LATENT_SHAPE = (16, 4, 4)
FLUX_SHIFT_FACTOR = 0.1159
FLUX_SCALING_FACTOR = 0.3611
FLUX_JOINT_DIM = 24
FLUX_CLIP_DIM = 16


def tiny_flux_vae(*, seed: int = 0):
    """16-channel AutoencoderKL with Flux's shift_factor / scaling_factor, no quant convs."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16), layers_per_block=1, latent_channels=16, norm_num_groups=4,
        sample_size=TINY_RESOLUTION, scaling_factor=FLUX_SCALING_FACTOR, shift_factor=FLUX_SHIFT_FACTOR,
        use_quant_conv=False, use_post_quant_conv=False,
    ).eval()


def tiny_flux_transformer(*, guidance_embeds: bool, seed: int = 1):
    """FluxTransformer2DModel on packed (16, 4, 4) latents: in_channels 64, 2 heads of 8."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4 * FLUX_LATENT_SHAPE[0], num_layers=1, num_single_layers=1,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=FLUX_JOINT_DIM,
        pooled_projection_dim=FLUX_CLIP_DIM, guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4),
    ).eval()


def tiny_clip(vocab_size: int, *, seed: int):
    """CLIPTextModel with FLUX_CLIP_DIM hidden units, one layer, TINY_MAX_TOKENS positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=FLUX_CLIP_DIM, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=TINY_MAX_TOKENS, projection_dim=FLUX_CLIP_DIM,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )
    return CLIPTextModel(config).eval()


def tiny_t5(vocab_size: int, *, seed: int):
    """T5EncoderModel of width FLUX_JOINT_DIM, one layer."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=FLUX_JOINT_DIM, d_kv=8, d_ff=32, num_layers=1,
                      num_heads=2, relative_attention_num_buckets=8, pad_token_id=1, eos_token_id=1)
    return T5EncoderModel(config).eval()


def tiny_flux_scheduler():
    """FlowMatchEulerDiscreteScheduler configured as FLUX.1-dev's (dynamic shifting)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096,
    )


def tiny_flux_components(folder: Path, *, guidance_embeds: bool = True, seed: int = 0) -> dict[str, Any]:
    """The components of a tiny Flux pipeline (keys as ``FluxPipeline`` names them); tokenizer
    files are written under ``folder``."""
    from transformers import CLIPTokenizer

    tok_dir = write_tiny_tokenizer(Path(folder) / "_tok")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    vocab = len(tokenizer)
    return {
        "vae": tiny_flux_vae(seed=seed),
        "transformer": tiny_flux_transformer(guidance_embeds=guidance_embeds, seed=seed + 1),
        "scheduler": tiny_flux_scheduler(),
        "text_encoder": tiny_clip(vocab, seed=seed + 2),
        "tokenizer": tokenizer,
        "text_encoder_2": tiny_t5(vocab, seed=seed + 3),
        "tokenizer_2": CLIPTokenizer.from_pretrained(str(tok_dir)),
    }


def tiny_flux_pipeline(folder: Path, *, guidance_embeds: bool = True, seed: int = 0):
    """A ``FluxPipeline`` of the tiny components (float32, CPU)."""
    from diffusers import FluxPipeline

    return FluxPipeline(**tiny_flux_components(folder, guidance_embeds=guidance_embeds, seed=seed))


def build_tiny_flux(folder: Path, *, guidance_embeds: bool = True, seed: int = 0) -> Path:
    """Save a tiny Flux pipeline folder (safetensors, model_index.json) into ``folder``; returns
    the pipeline folder."""
    folder = Path(folder)
    pipe = tiny_flux_pipeline(folder / "_parts", guidance_embeds=guidance_embeds, seed=seed)
    pipe.save_pretrained(folder / "model", safe_serialization=True)
    return folder / "model"
