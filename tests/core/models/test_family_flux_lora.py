"""LoRA on the Flux family through ldminv's loader (``load_model(..., lora=...)``, which maps the keys
with ``FluxLoraLoaderMixin.lora_state_dict`` and loads with ``transformer.load_lora_adapter``): an
adapter made with PEFT (``LoraConfig`` + ``transformer.add_adapter``, random non-zero B) and saved by
``FluxPipeline.save_lora_weights`` at scale 0 gives the base eps_hat bit for bit, at scale 1 the
eps_hat of diffusers' own ``load_lora_weights`` + ``fuse_lora`` on a fresh pipeline (with and
without a CLIP text-encoder part); a Kohya-format file (BFL block names, fused qkv, ``.alpha``) is
mapped by diffusers' converter and equals a hand merge; SD 1.x and SDXL adapters are refused naming
their layers."""
from __future__ import annotations

import pytest
import safetensors.torch
import torch

from ldminv_core.errors import ModelLoadError
from ldminv_core.models.loading import load_model
from ldminv_core.models.lora_files import LoraAdapter
from tests.core.models.test_family_flux import _direct_eps, _encode
from tests.core.models.test_family_sd3_lora import peft_adapter
from tests.tiny_flux import FLUX_LATENT_SHAPE, build_tiny_flux
from tests.tiny_models import tiny_cond_unet

peft = pytest.importorskip("peft")

CAPTIONS = ["a red cat", None, "the dog"]
TIMESTEPS = (10, 600)
TRANSFORMER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "to_add_out", "ff.net.2",
                       "ff_context.net.0.proj", "proj_mlp", "norm1.linear", "x_embedder"]


def _eps(model, z: torch.Tensor, t: int) -> torch.Tensor:
    return model.predictor(z, t, model.predictor.encode_prompts(CAPTIONS))


@pytest.fixture(scope="module")
def flux_lora(tmp_path_factory):
    """The tiny dev-style Flux folder, a transformer adapter and a transformer + CLIP adapter."""
    from diffusers import FluxPipeline

    root = tmp_path_factory.mktemp("flux_lora")
    folder = build_tiny_flux(root, guidance_embeds=True)
    pipe = FluxPipeline.from_pretrained(folder, use_safetensors=True)
    layers, config = peft_adapter(pipe.transformer, TRANSFORMER_TARGETS, seed=7)
    FluxPipeline.save_lora_weights(root / "lora", transformer_lora_layers=layers,
                                   transformer_lora_adapter_metadata=config)
    small, small_config = peft_adapter(pipe.transformer, ["to_k", "proj_out"], seed=8)
    te, te_config = peft_adapter(pipe.text_encoder, ["q_proj", "fc1"], seed=9)
    FluxPipeline.save_lora_weights(root / "lora_te", transformer_lora_layers=small,
                                   transformer_lora_adapter_metadata=small_config, text_encoder_lora_layers=te,
                                   text_encoder_lora_adapter_metadata=te_config)
    return folder, root


def _reference(folder, lora_dir, z: torch.Tensor) -> list[torch.Tensor]:
    """eps_hat of a fresh FluxPipeline after its own load_lora_weights + fuse_lora."""
    from diffusers import FluxPipeline

    ref = FluxPipeline.from_pretrained(folder, use_safetensors=True)
    ref.load_lora_weights(lora_dir)
    ref.fuse_lora(lora_scale=1.0)
    encoded = _encode(ref, CAPTIONS)
    return [_direct_eps(ref, z, t, encoded) for t in TIMESTEPS]


def test_scale_zero_is_the_base_and_scale_one_is_diffusers_fuse(flux_lora):
    folder, root = flux_lora
    z = torch.randn(3, *FLUX_LATENT_SHAPE, generator=torch.Generator().manual_seed(0))
    base = [_eps(load_model(folder), z, t) for t in TIMESTEPS]
    zero = load_model(folder, lora=[LoraAdapter(str(root / "lora"), scale=0.0)])
    for t, want in zip(TIMESTEPS, base):
        assert torch.equal(_eps(zero, z, t), want)
    model = load_model(folder, lora=[LoraAdapter(str(root / "lora"), scale=1.0)])
    assert model.lora[0]["targets"] == ["transformer"]
    got = [_eps(model, z, t) for t in TIMESTEPS]
    assert max((g - b).abs().max() for g, b in zip(got, base)) > 1e-3  # the adapter changes eps_hat
    for g, want in zip(got, _reference(folder, root / "lora", z)):
        torch.testing.assert_close(g, want, atol=1e-5, rtol=1e-5)


def test_text_encoder_adapter_equals_diffusers_fuse(flux_lora):
    folder, root = flux_lora
    z = torch.randn(3, *FLUX_LATENT_SHAPE, generator=torch.Generator().manual_seed(1))
    base = load_model(folder)
    model = load_model(folder, lora=[LoraAdapter(str(root / "lora_te"))])
    assert model.lora[0]["targets"] == ["transformer", "text_encoder"]
    cond = model.predictor.encode_prompts(CAPTIONS)
    assert (cond - base.predictor.encode_prompts(CAPTIONS)).abs().max() > 1e-3  # CLIP's pooled output changed
    for t, want in zip(TIMESTEPS, _reference(folder, root / "lora_te", z)):
        torch.testing.assert_close(model.predictor(z, t, cond), want, atol=1e-5, rtol=1e-5)


def test_kohya_file_is_mapped_by_diffusers_and_equals_a_hand_merge(flux_lora, tmp_path):
    """sd-scripts names: double_blocks_0_img_attn_proj -> transformer_blocks.0.attn.to_out.0;
    double_blocks_0_txt_attn_qkv -> add_q_proj / add_k_proj / add_v_proj (rows of up split in
    three); the update is scale * (alpha / r) * up @ down."""
    folder, _ = flux_lora
    gen = torch.Generator().manual_seed(3)
    down_p, up_p = torch.randn(2, 16, generator=gen), torch.randn(16, 2, generator=gen)
    down_q, up_q = torch.randn(2, 16, generator=gen), torch.randn(48, 2, generator=gen)
    proj, qkv = "lora_unet_double_blocks_0_img_attn_proj", "lora_unet_double_blocks_0_txt_attn_qkv"
    safetensors.torch.save_file({
        f"{proj}.lora_down.weight": down_p, f"{proj}.lora_up.weight": up_p, f"{proj}.alpha": torch.tensor(1.0),
        f"{qkv}.lora_down.weight": down_q, f"{qkv}.lora_up.weight": up_q, f"{qkv}.alpha": torch.tensor(4.0),
    }, tmp_path / "kohya.safetensors")
    scale = 0.5
    model = load_model(folder, lora=[LoraAdapter(str(tmp_path / "kohya.safetensors"), scale=scale)])
    want = {k: v.double() for k, v in load_model(folder).unet.state_dict().items()}
    block = "transformer_blocks.0.attn"
    want[f"{block}.to_out.0.weight"] += scale * (1.0 / 2) * up_p.double() @ down_p.double()
    for i, name in enumerate(("add_q_proj", "add_k_proj", "add_v_proj")):
        want[f"{block}.{name}.weight"] += scale * (4.0 / 2) * up_q[16 * i: 16 * (i + 1)].double() @ down_q.double()
    got = model.unet.state_dict()
    assert set(got) == set(want)
    for k, v in got.items():
        torch.testing.assert_close(v.double(), want[k], atol=1e-6, rtol=0, msg=k)


def test_sd1_and_sdxl_adapters_on_flux_are_refused_naming_the_layers(flux_lora, tmp_path):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    from ldminv_core.models.lora_apply import apply_lora
    from tests.core.models.test_family_sdxl import build_tiny_sdxl

    folder, _ = flux_lora
    layers, config = peft_adapter(tiny_cond_unet(), ["to_q", "to_k", "conv1"], seed=11)
    StableDiffusionPipeline.save_lora_weights(tmp_path / "sd1", unet_lora_layers=layers,
                                              unet_lora_adapter_metadata=config)
    sdxl = build_tiny_sdxl(tmp_path / "sdxl_model")
    unet_layers, unet_config = peft_adapter(sdxl.unet, ["to_q", "to_v"], seed=12)
    te2, te2_config = peft_adapter(sdxl.text_encoder_2, ["q_proj"], seed=13)
    StableDiffusionXLPipeline.save_lora_weights(
        tmp_path / "sdxl", unet_lora_layers=unet_layers, unet_lora_adapter_metadata=unet_config,
        text_encoder_2_lora_layers=te2, text_encoder_2_lora_adapter_metadata=te2_config)
    model = load_model(folder)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    for name, layer in (("sd1", "'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k'"),
                        ("sdxl", "'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q'")):
        with pytest.raises(ModelLoadError) as info:
            apply_lora(model, [LoraAdapter(str(tmp_path / name))])
        message = str(info.value)
        assert "unet tensor(s) but the model (FluxTransformer2DModel) has no unet" in message, message
        assert "FluxLoraLoaderMixin adapts in the flux family (it adapts transformer, text_encoder)" in message
        assert layer in message, message
    assert "text_encoder_2" in message  # the SDXL file's second encoder is named too
    assert model.lora == () and not any(isinstance(m, BaseTunerLayer) for m in model.unet.modules())
    for k, v in model.unet.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.slow
def test_analyze_with_a_flux_lora(flux_lora, tmp_path, capsys):
    """``analyze --lora`` on Flux: run.json records the adapter's SHA-256, scale and targets; scale 0
    stores the base run's terms bit for bit, scale 1 other terms; a changed adapter file refuses
    to resume the run."""
    import hashlib
    import json

    import numpy as np

    from ldminv_core.__main__ import main
    from ldminv_core.models.lora_files import LORA_WEIGHT_NAME
    from tests.tiny_models import write_image_folder

    folder, root = flux_lora
    write_image_folder(tmp_path / "members", 2, seed=1, captions=True, prefix="m", modes=("RGB",))
    write_image_folder(tmp_path / "heldout", 2, seed=2, captions=True, prefix="h", modes=("RGB",))

    def analyze(out: str, *extra) -> int:
        return main(["analyze", "--model", str(folder), "--members", str(tmp_path / "members"),
                     "--heldout", str(tmp_path / "heldout"), "--out", str(tmp_path / out), "--attacks", "sima",
                     "--timesteps", "0,10", "--influence", "exact", "--threads", "1", *map(str, extra)])

    lora = root / "lora"
    assert analyze("base") == 0 and analyze("zero", "--lora", lora, "--lora-scale", 0) == 0
    assert analyze("one", "--lora", lora) == 0
    (record,) = json.loads((tmp_path / "one" / "run.json").read_text())["lora"]
    assert record["sha256"] == hashlib.sha256((lora / LORA_WEIGHT_NAME).read_bytes()).hexdigest()
    assert record["scale"] == 1.0 and record["targets"] == ["transformer"]
    terms = {k: np.load(tmp_path / k / "residuals" / "sima.npy") for k in ("base", "zero", "one")}
    np.testing.assert_array_equal(terms["zero"], terms["base"])
    assert np.abs(terms["one"] - terms["base"]).max() > 1e-4

    # resuming an unfinished run whose adapter file changed since it started is refused
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / LORA_WEIGHT_NAME).write_bytes((lora / LORA_WEIGHT_NAME).read_bytes())
    assert analyze("again", "--lora", changed) == 0
    run_json = tmp_path / "again" / "run.json"
    state = json.loads(run_json.read_text())
    state["status"] = "running"
    state["stages"] = {k: v for k, v in state["stages"].items() if k == "encode"}
    run_json.write_text(json.dumps(state))
    tensors = safetensors.torch.load_file(changed / LORA_WEIGHT_NAME)
    key = next(k for k in tensors if "lora_B" in k)
    tensors[key] = tensors[key] * 2
    safetensors.torch.save_file(tensors, changed / LORA_WEIGHT_NAME)
    capsys.readouterr()
    assert analyze("again", "--lora", changed) != 0
    assert "changed since this run started" in capsys.readouterr().err
