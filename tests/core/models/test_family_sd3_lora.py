"""LoRA on the SD3 family through ldminv's loader (``load_model(..., lora=...)``, which maps the keys
with ``SD3LoraLoaderMixin.lora_state_dict`` and loads with ``transformer.load_lora_adapter``): an
adapter made with PEFT (``LoraConfig`` + ``transformer.add_adapter``, random non-zero B) and saved by
``StableDiffusion3Pipeline.save_lora_weights`` at scale 0 gives the base eps_hat bit for bit, at
scale 1 the eps_hat of diffusers' own ``load_lora_weights`` + ``fuse_lora`` on a fresh pipeline;
adapters on both CLIP text encoders likewise; an SD 1.x adapter is refused naming its layers and
leaves the model as it was."""
from __future__ import annotations

import copy
import hashlib

import pytest
import torch

from ldminv_core.errors import ModelLoadError
from ldminv_core.models.loading import load_model
from ldminv_core.models.lora_files import LORA_WEIGHT_NAME, LoraAdapter
from tests.core.models.test_family_sd3 import _direct_eps, _encode
from tests.tiny_models import tiny_cond_unet
from tests.tiny_sd3 import SD3_LATENT_SHAPE, build_tiny_sd3

peft = pytest.importorskip("peft")

CAPTIONS = ["a red cat", None, "the dog"]
TIMESTEPS = (10, 600)
TRANSFORMER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "to_add_out", "ff.net.2", "proj_out"]


def peft_adapter(module: torch.nn.Module, targets: list[str], *, seed: int) -> tuple[dict, dict]:
    """(PEFT state dict, LoraConfig as a dict) of a LoRA added to a copy of ``module`` (diffusers'
    ``add_adapter`` on a denoiser; ``peft.inject_adapter_in_model`` on a transformers text encoder,
    whose own add_adapter wants a newer peft), its B factors set to random non-zero values (PEFT
    initialises them to zero)."""
    from diffusers.loaders import PeftAdapterMixin
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    config = LoraConfig(r=2, lora_alpha=4, target_modules=targets)
    copied = copy.deepcopy(module)
    if isinstance(copied, PeftAdapterMixin):
        copied.add_adapter(config)
    else:
        copied = inject_adapter_in_model(config, copied, adapter_name="default")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in copied.named_parameters():
            if "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(copied).items()}
    assert any("lora_B" in k and v.abs().min() > 0 for k, v in state.items())
    return state, config.to_dict()


def sd3_pipeline(folder):
    """The tiny SD3 pipeline folder (saved without T5) as a StableDiffusion3Pipeline."""
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(folder, use_safetensors=True, text_encoder_3=None,
                                                    tokenizer_3=None)


def eps_hat(model, z: torch.Tensor, t: int) -> torch.Tensor:
    """ldminv's eps_hat of the loaded model for CAPTIONS."""
    return model.predictor(z, t, model.predictor.encode_prompts(CAPTIONS))


@pytest.fixture(scope="module")
def sd3_lora(tmp_path_factory):
    from diffusers import StableDiffusion3Pipeline

    root = tmp_path_factory.mktemp("sd3_lora")
    folder = build_tiny_sd3(root, with_t5=False)
    pipe = sd3_pipeline(folder)
    layers, config = peft_adapter(pipe.transformer, TRANSFORMER_TARGETS, seed=7)
    StableDiffusion3Pipeline.save_lora_weights(root / "lora", transformer_lora_layers=layers,
                                               transformer_lora_adapter_metadata=config)
    return folder, root / "lora"


def _reference(folder, lora_dir, z: torch.Tensor) -> list[torch.Tensor]:
    """eps_hat of a fresh StableDiffusion3Pipeline after its own load_lora_weights + fuse_lora."""
    ref = sd3_pipeline(folder)
    ref.load_lora_weights(lora_dir)
    ref.fuse_lora(lora_scale=1.0)
    embeds, pooled = _encode(ref, CAPTIONS)
    return [_direct_eps(ref, z, t, embeds, pooled) for t in TIMESTEPS]


def test_scale_zero_is_the_base_and_scale_one_is_diffusers_fuse(sd3_lora):
    folder, lora_dir = sd3_lora
    z = torch.randn(3, *SD3_LATENT_SHAPE, generator=torch.Generator().manual_seed(0))
    base_model = load_model(folder)
    base = [eps_hat(base_model, z, t) for t in TIMESTEPS]
    zero = load_model(folder, lora=[LoraAdapter(str(lora_dir), scale=0.0)])
    for t, want in zip(TIMESTEPS, base):
        assert torch.equal(eps_hat(zero, z, t), want)
    model = load_model(folder, lora=[LoraAdapter(str(lora_dir), scale=1.0)])
    (record,) = model.lora
    assert record["targets"] == ["transformer"] and record["scale"] == 1.0 and record["fused"] is True
    assert record["sha256"] == hashlib.sha256((lora_dir / LORA_WEIGHT_NAME).read_bytes()).hexdigest()
    got = [eps_hat(model, z, t) for t in TIMESTEPS]
    assert max((g - b).abs().max() for g, b in zip(got, base)) > 1e-3  # the adapter changes eps_hat
    for g, want in zip(got, _reference(folder, lora_dir, z)):
        torch.testing.assert_close(g, want, atol=1e-5, rtol=1e-5)


def test_text_encoder_adapters_equal_diffusers_fuse(sd3_lora, tmp_path):
    """Adapters on the transformer and both CLIP encoders (SD3LoraLoaderMixin's components)."""
    from diffusers import StableDiffusion3Pipeline

    folder, _ = sd3_lora
    pipe = sd3_pipeline(folder)
    tr, c0 = peft_adapter(pipe.transformer, ["to_q", "to_v"], seed=8)
    te1, c1 = peft_adapter(pipe.text_encoder, ["q_proj", "v_proj"], seed=9)
    te2, c2 = peft_adapter(pipe.text_encoder_2, ["k_proj", "fc1"], seed=10)
    StableDiffusion3Pipeline.save_lora_weights(
        tmp_path, transformer_lora_layers=tr, transformer_lora_adapter_metadata=c0,
        text_encoder_lora_layers=te1, text_encoder_lora_adapter_metadata=c1,
        text_encoder_2_lora_layers=te2, text_encoder_2_lora_adapter_metadata=c2)
    z = torch.randn(3, *SD3_LATENT_SHAPE, generator=torch.Generator().manual_seed(1))
    base = load_model(folder)
    model = load_model(folder, lora=[LoraAdapter(str(tmp_path))])
    assert model.lora[0]["targets"] == ["transformer", "text_encoder", "text_encoder_2"]
    cond = model.predictor.encode_prompts(CAPTIONS)
    assert (cond - base.predictor.encode_prompts(CAPTIONS)).abs().max() > 1e-3  # the encoders changed
    for t, want in zip(TIMESTEPS, _reference(folder, tmp_path, z)):
        torch.testing.assert_close(model.predictor(z, t, cond), want, atol=1e-5, rtol=1e-5)


def test_sd1_adapter_on_sd3_is_refused_naming_the_layers(sd3_lora, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    folder, _ = sd3_lora
    layers, config = peft_adapter(tiny_cond_unet(), ["to_q", "to_k", "conv1"], seed=11)
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=layers, unet_lora_adapter_metadata=config)
    model = load_model(folder)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    from ldminv_core.models.lora_apply import apply_lora

    with pytest.raises(ModelLoadError) as info:
        apply_lora(model, [LoraAdapter(str(tmp_path))])
    message = str(info.value)
    assert "unet tensor(s) but the model (SD3Transformer2DModel) has no unet" in message, message
    assert "SD3LoraLoaderMixin" in message and "'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k'" in message
    assert model.lora == () and not any(isinstance(m, BaseTunerLayer) for m in model.unet.modules())
    for k, v in model.unet.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ModelLoadError, match="has no unet"):
        load_model(folder, lora=[LoraAdapter(str(tmp_path))])
