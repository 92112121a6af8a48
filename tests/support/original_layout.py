"""Writing a tiny Stable Diffusion 1.x pipeline as a single-file checkpoint in the original
(CompVis / Stability) key layout, for the single-file tests.

:func:`original_sd1_state_dict` renames the diffusers state dicts of a UNet2DConditionModel,
an AutoencoderKL and a CLIPTextModel to the keys of an original ``v1-5-pruned-emaonly``-style
file: ``model.diffusion_model.*`` (``input_blocks`` / ``middle_block`` / ``output_blocks``),
``first_stage_model.*`` (``encoder.down.{i}.block.{j}``, ``mid.attn_1`` with 1x1-convolution
attention weights) and ``cond_stage_model.transformer.text_model.*``. It is written for the
block layouts of ``tests.tiny_models`` (every down block but the last downsamples, every up
block but the last upsamples) and checks that every key is renamed exactly once; the tests
check it against diffusers' ``from_single_file``, which must recover every tensor exactly.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

__all__ = ["original_sd1_state_dict", "write_original_sd1_checkpoint"]

_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_TOP = (("conv_in", "input_blocks.0.0"), ("time_embedding.linear_1", "time_embed.0"),
             ("time_embedding.linear_2", "time_embed.2"), ("conv_norm_out", "out.0"), ("conv_out", "out.2"))
_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _swap(rest: str, pairs) -> str:
    """``rest`` with its leading diffusers name replaced by the original one (first match)."""
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def _unet_key(key: str, layers: int, up_attention: set[int]) -> str:
    """The original key of one diffusers UNet2DConditionModel key (``layers`` = layers_per_block)."""
    renamed = _swap(key, _UNET_TOP)
    if renamed != key:
        return renamed
    mid = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
    if mid:
        kind, j, rest = mid.group(1), int(mid.group(2)), mid.group(3)
        return f"middle_block.{2 * j}.{_swap(rest, _RESNET)}" if kind == "resnets" else f"middle_block.1.{rest}"
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.*)", key)
    if m is None:
        raise KeyError(f"no original name for UNet key {key}")
    side, b, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
    rest = _swap(rest, _RESNET) if kind == "resnets" else rest
    if side == "down":  # input_blocks.0 is conv_in; then each block's layers, then its downsampler
        first = 1 + b * (layers + 1)
        if kind == "downsamplers":
            return f"input_blocks.{first + layers}.0.op.{rest.removeprefix('conv.')}"
        return f"input_blocks.{first + j}.{0 if kind == 'resnets' else 1}.{rest}"
    first = b * (layers + 1)  # each up block has layers + 1 layers; its upsampler follows the last
    if kind == "upsamplers":
        return f"output_blocks.{first + layers}.{2 if b in up_attention else 1}.{rest}"
    return f"output_blocks.{first + j}.{0 if kind == 'resnets' else 1}.{rest}"


def _vae_key(key: str, value: torch.Tensor, n_up: int) -> tuple[str, torch.Tensor]:
    """The original key (and value: attention projections as 1x1 convolutions) of one AutoencoderKL key."""
    if not key.startswith(("encoder.", "decoder.")):
        return key, value  # quant_conv, post_quant_conv
    part, rest = key.split(".", 1)
    rest = _swap(rest, (("conv_norm_out", "norm_out"),))
    mid = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", rest)
    if mid and mid.group(1) == "resnets":
        return f"{part}.mid.block_{int(mid.group(2)) + 1}.{mid.group(3).replace('conv_shortcut', 'nin_shortcut')}", value
    if mid:
        value = value[:, :, None, None] if value.ndim == 2 else value
        return f"{part}.mid.attn_1.{_swap(mid.group(3), _VAE_ATTN)}", value
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", rest)
    if m is None:
        return f"{part}.{rest}", value  # conv_in, norm_out, conv_out
    side, i, kind, j, tail = m.group(1), int(m.group(2)), m.group(3), m.group(4), m.group(5)
    level = i if side == "down" else n_up - 1 - i  # the decoder's up levels count from the bottom
    if kind == "resnets":
        return f"{part}.{side}.{level}.block.{j}.{tail.replace('conv_shortcut', 'nin_shortcut')}", value
    return f"{part}.{side}.{level}.{'downsample' if side == 'down' else 'upsample'}.{tail}", value


def original_sd1_state_dict(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """The three modules' tensors under the original SD 1.x single-file keys (copies)."""
    out: dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor) -> None:
        if key in out:
            raise KeyError(f"two tensors renamed to {key}")
        out[key] = value.detach().clone().contiguous()

    unet_sd = unet.state_dict()
    up_attention = {int(k.split(".")[1]) for k in unet_sd if re.match(r"up_blocks\.\d+\.attentions\.", k)}
    for key, value in unet_sd.items():
        put("model.diffusion_model." + _unet_key(key, unet.config.layers_per_block, up_attention), value)
    n_up = len(vae.config.up_block_types)
    for key, value in vae.state_dict().items():
        new_key, new_value = _vae_key(key, value, n_up)
        put("first_stage_model." + new_key, new_value)
    for key, value in text_encoder.state_dict().items():  # transformers 5: no text_model. wrapper
        put("cond_stage_model.transformer.text_model." + key.removeprefix("text_model."), value)
    return out


def write_original_sd1_checkpoint(folder: Path, path: Path) -> dict[str, torch.Tensor]:
    """Write the tiny SD 1.x pipeline in ``folder`` (vae/, unet/, text_encoder/) to ``path`` as one
    original-layout safetensors file; returns the tensors written."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    folder = Path(folder)
    tensors = original_sd1_state_dict(UNet2DConditionModel.from_pretrained(folder / "unet"),
                                      AutoencoderKL.from_pretrained(folder / "vae"),
                                      CLIPTextModel.from_pretrained(folder / "text_encoder"))
    save_file(tensors, str(path))
    return tensors
