"""LoRA on the SDXL family through ldminv's loader (``load_model(..., lora=...)``): a UNet
adapter saved by ``StableDiffusionXLPipeline.save_lora_weights`` at scale 0 gives the base terms
bit for bit, at scale 1 the terms of diffusers' own ``load_lora_weights`` + ``fuse_lora``; adapters
on both text encoders likewise; an SD 1.x adapter is refused naming the layers it lacks."""
from __future__ import annotations

import copy

import pytest
import torch

from ldminv_core.attacks import attack_terms
from ldminv_core.errors import ModelLoadError
from ldminv_core.models.loading import load_model
from ldminv_core.models.lora_files import LoraAdapter
from tests.core.models.test_family_sdxl import CAPTIONS, TIMESTEPS, _direct_eps, build_tiny_sdxl
from tests.tiny_models import tiny_cond_unet

peft = pytest.importorskip("peft")


def _lora_layers(base: torch.nn.Module, targets: list[str], *, seed: int):
    """(PEFT state dict, LoraConfig) of a random non-zero LoRA on a copy of ``base``."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    torch.manual_seed(seed)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=False)
    module = inject_adapter_in_model(config, copy.deepcopy(base), adapter_name="default")
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(module).items()}, config


@pytest.fixture(scope="module")
def sdxl_lora(tmp_path_factory):
    from diffusers import StableDiffusionXLPipeline

    root = tmp_path_factory.mktemp("sdxl_lora")
    pipe = build_tiny_sdxl(root / "model")
    layers, config = _lora_layers(pipe.unet, ["to_q", "to_k", "to_v", "to_out.0", "conv1"], seed=7)
    StableDiffusionXLPipeline.save_lora_weights(root / "unet_lora", unet_lora_layers=layers,
                                                unet_lora_adapter_metadata=config.to_dict())
    return root, pipe


def _terms(model, z0):
    return attack_terms("sima", model.predictor, z0, timesteps=TIMESTEPS, captions=CAPTIONS, p=1.0)


def test_scale_zero_is_the_base_and_scale_one_is_diffusers_fuse(sdxl_lora):
    from diffusers import StableDiffusionXLPipeline

    root, _ = sdxl_lora
    torch.manual_seed(0)
    z0 = torch.randn(3, 4, 4, 4)
    base = _terms(load_model(root / "model"), z0)
    zero = _terms(load_model(root / "model", lora=[LoraAdapter(str(root / "unet_lora"), scale=0.0)]), z0)
    assert torch.equal(base, zero)
    model = load_model(root / "model", lora=[LoraAdapter(str(root / "unet_lora"), scale=1.0)])
    assert model.lora[0]["targets"] == ["unet"]
    got = _terms(model, z0)
    assert (got - base).abs().max() > 1e-4  # the adapter changes the terms
    pipe = StableDiffusionXLPipeline.from_pretrained(root / "model", use_safetensors=True)
    pipe.load_lora_weights(root / "unet_lora")
    pipe.fuse_lora(lora_scale=1.0)
    want = torch.stack([_direct_eps(pipe, z0, t, CAPTIONS).abs() for t in TIMESTEPS], dim=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_sd1_adapter_on_sdxl_is_refused(sdxl_lora, tmp_path):
    from diffusers import StableDiffusionPipeline

    root, _ = sdxl_lora
    layers, config = _lora_layers(tiny_cond_unet(), ["to_q", "to_k", "conv1"], seed=8)
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=layers,
                                              unet_lora_adapter_metadata=config.to_dict())
    with pytest.raises(ModelLoadError) as info:
        load_model(root / "model", lora=[LoraAdapter(str(tmp_path))])
    assert "do not exist in this model's unet" in str(info.value), str(info.value)


def test_text_encoder_adapters_equal_diffusers_fuse(sdxl_lora, tmp_path):
    """An adapter on both text encoders (SDXL's text_encoder and text_encoder_2) = diffusers'
    load_lora_weights + fuse_lora; scale 0 = the base."""
    from diffusers import StableDiffusionXLPipeline

    root, pipe = sdxl_lora
    te1, c1 = _lora_layers(pipe.text_encoder, ["q_proj", "v_proj"], seed=9)
    te2, c2 = _lora_layers(pipe.text_encoder_2, ["q_proj", "v_proj", "fc1"], seed=10)
    StableDiffusionXLPipeline.save_lora_weights(
        tmp_path, text_encoder_lora_layers=te1, text_encoder_lora_adapter_metadata=c1.to_dict(),
        text_encoder_2_lora_layers=te2, text_encoder_2_lora_adapter_metadata=c2.to_dict())
    torch.manual_seed(1)
    z0 = torch.randn(3, 4, 4, 4)
    base = _terms(load_model(root / "model"), z0)
    assert torch.equal(base, _terms(load_model(root / "model", lora=[LoraAdapter(str(tmp_path), scale=0.0)]), z0))
    model = load_model(root / "model", lora=[LoraAdapter(str(tmp_path), scale=1.0)])
    assert model.lora[0]["targets"] == ["text_encoder", "text_encoder_2"]
    got = _terms(model, z0)
    assert (got - base).abs().max() > 1e-5
    ref = StableDiffusionXLPipeline.from_pretrained(root / "model", use_safetensors=True)
    ref.load_lora_weights(tmp_path)
    ref.fuse_lora(lora_scale=1.0)
    want = torch.stack([_direct_eps(ref, z0, t, CAPTIONS).abs() for t in TIMESTEPS], dim=1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
