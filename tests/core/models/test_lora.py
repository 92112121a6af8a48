"""Tests of ldminv_core.models.lora_files / lora_plan / lora_apply: LoRA adapters loaded into the UNet / text encoder of a model.

Oracle: the LoRA update merged by hand from the saved state dict,
``W + scale * (alpha / r) * B @ A`` for every adapted Linear / Conv weight, loaded into a fresh
copy of the base modules; outputs and attack terms must agree to ATOL. The adapters are made
here with PEFT (``init_lora_weights=False``, so they are not a no-op) on the tiny models of
tests/tiny_models.py and saved with ``save_lora_weights``, as diffusers' training scripts do.
"""
from __future__ import annotations

import copy
import hashlib
import math
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers import CLIPTextModel

from ldminv_core.attacks import attack_terms
from ldminv_core.errors import LdminvError, ModelLoadError
from ldminv_core.models.loading import load_model
from ldminv_core.models.lora_apply import apply_lora
from ldminv_core.models.lora_files import LORA_WEIGHT_NAME, LoraAdapter, check_lora, parse_lora_args
from ldminv_core.models.noise_prediction import NoisePredictor

ATOL = 1e-5
TIMESTEPS = [0, 10]
CAPTIONS = ["the red cat", "a dog", None]
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "proj_in"]
TE_TARGETS = ["q_proj", "v_proj", "fc1"]


# ----------------------------------------------------------------------------- helpers


def _lora_state(base: torch.nn.Module, targets: list[str], *, r: int, alpha: float, seed: int):
    """(PEFT state dict, LoraConfig) of a random, non-zero LoRA on a copy of ``base``."""
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    module = inject_adapter_in_model(config, copy.deepcopy(base), adapter_name="default")
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(module).items()}, config


def _save(folder: Path, *, unet=None, te=None, metadata: bool = True, weight_name: str | None = None) -> Path:
    """Save (state dict, config) pairs with save_lora_weights; returns the folder."""
    kw = {}
    if unet is not None:
        kw["unet_lora_layers"] = unet[0]
        if metadata:
            kw["unet_lora_adapter_metadata"] = unet[1].to_dict()
    if te is not None:
        kw["text_encoder_lora_layers"] = te[0]
        if metadata:
            kw["text_encoder_lora_adapter_metadata"] = te[1].to_dict()
    StableDiffusionLoraLoaderMixin.save_lora_weights(folder, weight_name=weight_name, **kw)
    return folder


def _merge(module: torch.nn.Module, adapters: list[tuple[dict, float, float]]) -> torch.nn.Module:
    """A copy of ``module`` with W + scale * (alpha / r) * B @ A added for every (state dict,
    alpha / r, scale) adapter, computed here from the factors."""
    out = copy.deepcopy(module)
    state = out.state_dict()
    n_merged = 0
    for sd, ratio, scale in adapters:
        for key, a in sd.items():
            if not key.endswith(".lora_A.weight"):
                continue
            name = key[: -len(".lora_A.weight")]
            b = sd[f"{name}.lora_B.weight"]
            w = state[f"{name}.weight"]
            delta = (b.flatten(1).double() @ a.flatten(1).double()).reshape(w.shape)
            state[f"{name}.weight"] = (w.double() + scale * ratio * delta).to(w.dtype)
            n_merged += 1
    assert n_merged > 0
    out.load_state_dict(state)
    return out.eval().requires_grad_(False)


def _terms(model, z):
    return attack_terms("sima", model.predictor, z, timesteps=TIMESTEPS, captions=CAPTIONS if model.is_conditional else None)


def _manual_terms(m, unet, text_encoder, z):
    predictor = NoisePredictor.from_components(
        unet, m.scheduler, text_encoder=text_encoder, tokenizer=m.tokenizer
    )
    return attack_terms("sima", predictor, z, timesteps=TIMESTEPS, captions=CAPTIONS if m.is_conditional else None)


def _eps(unet, z, t, cond=None):
    """The UNet's noise prediction at timestep t; a one-row ``cond`` is used for every latent."""
    if cond is not None and cond.shape[0] == 1:
        cond = cond.expand(z.shape[0], *cond.shape[1:])
    with torch.no_grad():
        ts = torch.full((z.shape[0],), t)
        return (unet(z, ts, encoder_hidden_states=cond) if cond is not None else unet(z, ts)).sample


def _latents(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bases(tiny_uncond_model, tiny_cond_model):
    """Base modules read straight from the tiny pipeline folders."""
    return {
        "uncond": UNet2DModel.from_pretrained(tiny_uncond_model, subfolder="unet").eval(),
        "cond": UNet2DConditionModel.from_pretrained(tiny_cond_model, subfolder="unet").eval(),
        "te": CLIPTextModel.from_pretrained(tiny_cond_model, subfolder="text_encoder").eval(),
    }


@pytest.fixture(scope="module")
def loras(bases, tmp_path_factory):
    """LoRA folders: {"cond", "cond2", "uncond", "te", "cond_te", "no_meta"} -> (folder, [(sd, alpha/r)])."""
    root = tmp_path_factory.mktemp("loras")
    cond = _lora_state(bases["cond"], UNET_TARGETS, r=2, alpha=4, seed=10)
    cond2 = _lora_state(bases["cond"], ["to_q", "to_v", "conv2", "ff.net.2"], r=3, alpha=1.5, seed=11)
    uncond = _lora_state(bases["uncond"], ["to_q", "to_k", "conv1", "conv2"], r=2, alpha=1, seed=12)
    te = _lora_state(bases["te"], TE_TARGETS, r=2, alpha=3, seed=13)
    return {
        "cond": (_save(root / "cond", unet=cond), [(cond[0], 4 / 2)]),
        "cond2": (_save(root / "cond2", unet=cond2), [(cond2[0], 1.5 / 3)]),
        "uncond": (_save(root / "uncond", unet=uncond), [(uncond[0], 1 / 2)]),
        "te": (_save(root / "te", te=te), [(te[0], 3 / 2)]),
        "cond_te": (_save(root / "cond_te", unet=cond, te=te), [(cond[0], 2.0), (te[0], 1.5)]),
        # without adapter metadata diffusers takes alpha = r (its convention for bare PEFT files)
        "no_meta": (_save(root / "no_meta", unet=cond, metadata=False), [(cond[0], 1.0)]),
    }


# ----------------------------------------------------------------------------- equality with a hand merge


@pytest.mark.parametrize("kind", ["cond", "uncond"])
@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.slow
def test_lora_changes_terms_and_equals_hand_merge(kind, scale, bases, loras, tiny_cond_model, tiny_uncond_model):
    folder, [(sd, ratio)] = loras[kind]
    source = tiny_cond_model if kind == "cond" else tiny_uncond_model
    z = _latents()
    base = load_model(source)
    m = load_model(source, lora=[LoraAdapter(str(folder), scale=scale)])
    assert type(m.unet) is type(base.unet)
    assert not any(isinstance(x, BaseTunerLayer) for x in m.unet.modules())  # fused and unloaded
    assert not m.unet.training and not any(p.requires_grad for p in m.unet.parameters())
    assert all(p.dtype == torch.float32 for p in m.unet.parameters())

    terms, base_terms = _terms(m, z), _terms(base, z)
    assert terms.shape == base_terms.shape == (3, 2, 4, 4, 4)
    assert (terms - base_terms).abs().max() > 1e-3  # the adapter is not a no-op

    manual = _merge(bases[kind], [(sd, ratio, scale)])
    cond = m.predictor.encode_prompts(["the red cat"] * 3) if m.is_conditional else None
    torch.testing.assert_close(_eps(m.unet, z, 10, cond), _eps(manual, z, 10, cond), atol=ATOL, rtol=0)
    manual_te = copy.deepcopy(bases["te"]) if m.is_conditional else None
    torch.testing.assert_close(terms, _manual_terms(m, manual, manual_te, z), atol=ATOL, rtol=1e-5)

    (rec,) = m.lora
    file = folder / LORA_WEIGHT_NAME
    assert rec["path"] == str(folder.resolve()) and rec["file"] == str(file.resolve())
    assert rec["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
    assert rec["scale"] == scale and rec["targets"] == ["unet"] and rec["fused"] is True
    assert rec["n_tensors"] == len(safetensors.torch.load_file(file)) == len(sd)
    assert rec["adapter_name"].startswith("ldminv_lora_")


def test_two_adapters_stack_like_the_sum_of_their_updates(bases, loras, tiny_cond_model):
    (f1, [(sd1, r1)]), (f2, [(sd2, r2)]) = loras["cond"], loras["cond2"]
    m = load_model(tiny_cond_model)
    records = apply_lora(m, [LoraAdapter(f1, scale=0.5), LoraAdapter(f2, scale=-1.25)])
    assert [r["scale"] for r in records] == [0.5, -1.25]
    assert len({r["adapter_name"] for r in records}) == 2 and m.lora == tuple(records)
    manual = _merge(bases["cond"], [(sd1, r1, 0.5), (sd2, r2, -1.25)])
    z = _latents(1)
    torch.testing.assert_close(_terms(m, z), _manual_terms(m, manual, bases["te"], z), atol=ATOL, rtol=1e-5)
    # a later call stacks on the fused weights, with fresh adapter names
    (rec,) = apply_lora(m, [LoraAdapter(f1, scale=0.5)])
    assert rec["adapter_name"] not in {r["adapter_name"] for r in records} and len(m.lora) == 3
    manual = _merge(bases["cond"], [(sd1, r1, 1.0), (sd2, r2, -1.25)])
    torch.testing.assert_close(_eps(m.unet, z, 10, m.predictor.encode_prompts([""])),
                               _eps(manual, z, 10, m.predictor.encode_prompts([""])), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["cond", "uncond"])
def test_unfused_adapters_give_the_fused_outputs(kind, loras, tiny_cond_model, tiny_uncond_model):
    source = tiny_cond_model if kind == "cond" else tiny_uncond_model
    adapters = [LoraAdapter(loras[kind][0], scale=0.7)] + ([LoraAdapter(loras["cond2"][0], 0.3)] if kind == "cond" else [])
    fused = load_model(source, lora=adapters)
    unfused = load_model(source)
    records = apply_lora(unfused, adapters, fuse=False)
    assert all(r["fused"] is False for r in records)
    assert any(isinstance(x, BaseTunerLayer) for x in unfused.unet.modules())
    assert not any(p.requires_grad for p in unfused.unet.parameters()) and not unfused.unet.training
    z = _latents(2)
    torch.testing.assert_close(_terms(unfused, z), _terms(fused, z), atol=ATOL, rtol=1e-5)
    with pytest.raises(ModelLoadError, match="already hold"):
        apply_lora(unfused, adapters[:1])


def test_text_encoder_lora_equals_hand_merge(bases, loras, tiny_cond_model):
    folder, [(usd, ur), (tsd, tr)] = loras["cond_te"]
    z = _latents(3)
    m = load_model(tiny_cond_model)
    m.predictor(z, 10)  # caches the empty-prompt embedding of the base text encoder
    (rec,) = apply_lora(m, [LoraAdapter(folder, scale=0.5)])
    assert rec["targets"] == ["unet", "text_encoder"]
    assert not any(isinstance(x, BaseTunerLayer) for x in m.text_encoder.modules())
    assert not any(p.requires_grad for p in m.text_encoder.parameters())
    unet = _merge(bases["cond"], [(usd, ur, 0.5)])
    te = _merge(bases["te"], [(tsd, tr, 0.5)])
    ref = NoisePredictor.from_components(unet, m.scheduler, text_encoder=te, tokenizer=m.tokenizer)
    torch.testing.assert_close(m.predictor(z, 10), ref(z, 10), atol=ATOL, rtol=0)  # empty prompt, new encoder
    torch.testing.assert_close(m.predictor.encode_prompts(["the cat"]), ref.encode_prompts(["the cat"]),
                               atol=ATOL, rtol=0)
    torch.testing.assert_close(_terms(m, z), _manual_terms(m, unet, te, z), atol=ATOL, rtol=1e-5)

    # a text-encoder-only LoRA changes only the text encoder
    m2 = load_model(tiny_cond_model, lora=[LoraAdapter(loras["te"][0])])
    assert m2.lora[0]["targets"] == ["text_encoder"]
    for k, v in m2.unet.state_dict().items():  # the UNet is untouched
        assert torch.equal(v, bases["cond"].state_dict()[k]), k
    assert (_terms(m2, z) - _terms(load_model(tiny_cond_model), z)).abs().max() > 1e-4  # captions matter
    te2 = _merge(bases["te"], [(tsd, tr, 1.0)])
    torch.testing.assert_close(_terms(m2, z), _manual_terms(m2, bases["cond"], te2, z), atol=ATOL, rtol=1e-5)


@pytest.mark.slow
def test_file_path_bare_keys_no_metadata_and_float64(bases, loras, tiny_cond_model, tmp_path):
    # a direct .safetensors path with another name
    sd, config = _lora_state(bases["cond"], ["to_k", "conv1"], r=1, alpha=2, seed=20)
    _save(tmp_path / "named", unet=(sd, config), weight_name="my_style.safetensors")
    file = tmp_path / "named" / "my_style.safetensors"
    z = _latents(4)
    m = load_model(tiny_cond_model, lora=[LoraAdapter(file, 2.0)])
    assert m.lora[0]["file"] == str(file.resolve())
    cond = m.predictor.encode_prompts([""])
    torch.testing.assert_close(_eps(m.unet, z, 5, cond), _eps(_merge(bases["cond"], [(sd, 2.0, 2.0)]), z, 5, cond),
                               atol=ATOL, rtol=0)
    # the folder also works when its single .safetensors file has another name
    assert check_lora([LoraAdapter(tmp_path / "named")]) == [file.resolve()]

    # bare keys, as UNet2DConditionModel.save_lora_adapter writes them (with metadata)
    unet = copy.deepcopy(bases["cond"])
    unet.add_adapter(config)
    unet.load_state_dict({**unet.state_dict(), **{k.replace(".weight", ".default.weight"): v for k, v in sd.items()}})
    unet.save_lora_adapter(tmp_path / "bare")
    assert not any(k.startswith("unet.") for k in safetensors.torch.load_file(tmp_path / "bare" / LORA_WEIGHT_NAME))
    m_bare = load_model(tiny_cond_model, lora=[LoraAdapter(tmp_path / "bare", 2.0)])
    torch.testing.assert_close(_eps(m_bare.unet, z, 5, cond), _eps(m.unet, z, 5, cond), atol=ATOL, rtol=0)

    # no adapter metadata: alpha = r, diffusers' convention
    folder, [(sd_nm, ratio)] = loras["no_meta"]
    assert ratio == 1.0
    m_nm = load_model(tiny_cond_model, lora=[LoraAdapter(folder)])
    torch.testing.assert_close(_eps(m_nm.unet, z, 5, cond), _eps(_merge(bases["cond"], [(sd_nm, 1.0, 1.0)]), z, 5, cond),
                               atol=ATOL, rtol=0)

    # the model's dtype is kept
    m64 = load_model(tiny_cond_model, dtype=torch.float64, lora=[LoraAdapter(loras["cond_te"][0])])
    assert all(p.dtype == torch.float64 for p in m64.unet.parameters())
    assert all(p.dtype == torch.float64 for p in m64.text_encoder.parameters())


def _renamed(sd: dict, prefix: str, down: str, up: str, sep: str, alpha: float | None) -> dict:
    """The PEFT state dict ``sd`` under other naming conventions: ``{prefix}{module}{down|up}``
    with the module path's dots replaced by ``sep``, plus ``.alpha`` tensors when given."""
    out = {}
    for key, v in sd.items():
        name, _, which = key.rpartition(".lora_")
        stem = prefix + name.replace(".", sep)
        out[stem + (down if which.startswith("A") else up)] = v.contiguous()
        if alpha is not None:
            out[stem + ".alpha"] = torch.tensor(alpha)
    return out


def test_older_diffusers_and_kohya_files_equal_hand_merge(bases, loras, tiny_cond_model, tiny_uncond_model, tmp_path):
    (_, [(sd, _)]), z = loras["cond"], _latents(5)
    cond = load_model(tiny_cond_model).predictor.encode_prompts(["a dog"])
    # older diffusers names (unet.<module>.lora.down / lora.up), no alphas: alpha = r
    safetensors.torch.save_file(_renamed(sd, "unet.", ".lora.down.weight", ".lora.up.weight", ".", None),
                                tmp_path / "old.safetensors")
    m = load_model(tiny_cond_model, lora=[LoraAdapter(tmp_path / "old.safetensors", 0.5)])
    torch.testing.assert_close(_eps(m.unet, z, 10, cond), _eps(_merge(bases["cond"], [(sd, 1.0, 0.5)]), z, 10, cond),
                               atol=ATOL, rtol=0)
    # Kohya names (lora_unet_<module_with_underscores>.lora_down / lora_up + .alpha): alpha / r = 1 / 2
    kohya = _renamed(sd, "lora_unet_", ".lora_down.weight", ".lora_up.weight", "_", 1.0)
    safetensors.torch.save_file(kohya, tmp_path / "kohya.safetensors")
    m = load_model(tiny_cond_model, lora=[LoraAdapter(tmp_path / "kohya.safetensors", 2.0)])
    assert m.lora[0]["n_tensors"] == len(kohya) == 3 * len(sd) // 2
    torch.testing.assert_close(_eps(m.unet, z, 10, cond), _eps(_merge(bases["cond"], [(sd, 0.5, 2.0)]), z, 10, cond),
                               atol=ATOL, rtol=0)
    # a PEFT file without adapter metadata for the unconditional UNet (PEFT injection): alpha = r
    usd, config = _lora_state(bases["uncond"], ["to_v", "conv2", "time_emb_proj"], r=3, alpha=6, seed=21)
    _save(tmp_path / "uncond", unet=(usd, config), metadata=False)
    mu = load_model(tiny_uncond_model, lora=[LoraAdapter(tmp_path / "uncond", -0.5)])
    torch.testing.assert_close(_eps(mu.unet, z, 10), _eps(_merge(bases["uncond"], [(usd, 1.0, -0.5)]), z, 10),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", ["cond_te", "uncond"])
def test_scale_zero_equals_the_base_model(kind, loras, tiny_cond_model, tiny_uncond_model):
    source = tiny_cond_model if kind == "cond_te" else tiny_uncond_model
    base, m = load_model(source), load_model(source, lora=[LoraAdapter(loras[kind][0], scale=0.0)])
    assert m.lora[0]["scale"] == 0.0
    for part in ("unet", "text_encoder"):
        if getattr(base, part) is None:
            continue
        ref = getattr(base, part).state_dict()
        assert list(getattr(m, part).state_dict()) == list(ref)  # no PEFT parameters left behind
        for k, v in getattr(m, part).state_dict().items():
            assert torch.equal(v, ref[k]), (part, k)
    z = _latents(6)
    torch.testing.assert_close(_terms(m, z), _terms(base, z), atol=0, rtol=0)


def test_parse_lora_args(tmp_path):
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b")
    assert parse_lora_args([], []) == []
    assert parse_lora_args([a, b], []) == [LoraAdapter(a, 1.0), LoraAdapter(b, 1.0)]
    assert parse_lora_args([a, b], [0.5]) == [LoraAdapter(a, 0.5), LoraAdapter(b, 0.5)]
    assert parse_lora_args((a, b), (0.5, -2)) == [LoraAdapter(a, 0.5), LoraAdapter(b, -2.0)]
    assert parse_lora_args([a], [3]) == [LoraAdapter(a, 3.0)]
    with pytest.raises(LdminvError, match=r"--lora-scale: expected no value, one value .* \(3\), got 2"):
        parse_lora_args([a, b, a], [0.5, 1.0])
    with pytest.raises(LdminvError, match=r"--lora-scale: given \(1 value\(s\)\) without any --lora"):
        parse_lora_args([], [0.5])
    with pytest.raises(ModelLoadError, match=r"lora scale of .*b: expected a finite number, got nan"):
        parse_lora_args([a, b], [1.0, float("nan")])
    with pytest.raises(ModelLoadError, match=r"lora path: expected"):
        parse_lora_args([""], [])


# ----------------------------------------------------------------------------- bad inputs


def _snapshot(m) -> dict:
    return {k: v.clone() for k, v in m.unet.state_dict().items()}


def test_bad_paths_and_files_name_the_file(tiny_uncond_model, tmp_path):
    m = load_model(tiny_uncond_model)
    before = _snapshot(m)
    missing = tmp_path / "nope"
    with pytest.raises(ModelLoadError, match=r"lora\[0\] .*nope: does not exist"):
        apply_lora(m, [LoraAdapter(missing)])
    with pytest.raises(ModelLoadError, match="nope: does not exist"):
        load_model(tiny_uncond_model, lora=[LoraAdapter(missing)])  # refused before loading weights
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=rf"{tmp_path / 'empty'}: the folder holds no LoRA weight file .*{LORA_WEIGHT_NAME}"):
        apply_lora(m, [LoraAdapter(tmp_path / "empty")])
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_lora_weights.bin").write_bytes(b"\x80\x04 not really a pickle")
    with pytest.raises(ModelLoadError, match=r"pickled.*pytorch_lora_weights\.bin.*safetensors"):
        apply_lora(m, [LoraAdapter(tmp_path / "pickled")])
    with pytest.raises(ModelLoadError, match=r"pytorch_lora_weights\.bin: a pickled \.bin file"):
        apply_lora(m, [LoraAdapter(tmp_path / "pickled" / "pytorch_lora_weights.bin")])
    (tmp_path / "w.txt").write_text("hello")
    with pytest.raises(ModelLoadError, match=r"w\.txt: expected a \.safetensors file, got a \.txt file"):
        apply_lora(m, [LoraAdapter(tmp_path / "w.txt")])
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match=r"bad\.safetensors: not a safetensors file"):
        apply_lora(m, [LoraAdapter(tmp_path / "bad.safetensors")])
    safetensors.torch.save_file({"unet.conv_in.weight": torch.zeros(2, 2)}, tmp_path / "full.safetensors")
    with pytest.raises(ModelLoadError, match=r"full\.safetensors: 1 tensor\(s\) are not LoRA factors"):
        apply_lora(m, [LoraAdapter(tmp_path / "full.safetensors")])
    for k, v in _snapshot(m).items():
        assert torch.equal(v, before[k]), k
    assert m.lora == ()


def test_lora_for_another_model_is_refused_and_leaves_the_model_unchanged(loras, tiny_uncond_model, tiny_cond_model, tmp_path):
    m = load_model(tiny_uncond_model)
    before = _snapshot(m)
    cond_file = loras["cond"][0] / LORA_WEIGHT_NAME
    with pytest.raises(ModelLoadError, match=rf"{cond_file}: .* do not exist in this model's unet \(UNet2DModel\).*another model"):
        apply_lora(m, [LoraAdapter(loras["cond"][0])])
    with pytest.raises(ModelLoadError, match=r"text-encoder tensor\(s\) but the model \(UNet2DModel\) has no text encoder"):
        apply_lora(m, [LoraAdapter(loras["te"][0])])
    # right names, wrong shapes (the second adapter is bad: the first is not applied either)
    tensors = safetensors.torch.load_file(loras["uncond"][0] / LORA_WEIGHT_NAME)
    key = next(k for k in tensors if k.endswith("to_q.lora_A.weight"))
    tensors[key] = torch.randn(tensors[key].shape[0], tensors[key].shape[1] + 1)
    safetensors.torch.save_file(tensors, tmp_path / "shape.safetensors")
    with pytest.raises(ModelLoadError, match=r"shape\.safetensors: unet module '.*to_q' \(Linear, weight .*does not fit"):
        apply_lora(m, [LoraAdapter(loras["uncond"][0]), LoraAdapter(tmp_path / "shape.safetensors")])
    for k, v in _snapshot(m).items():
        assert torch.equal(v, before[k]), k
    assert not any(isinstance(x, BaseTunerLayer) for x in m.unet.modules()) and m.lora == ()
    # an SDXL-like second text encoder
    safetensors.torch.save_file(
        {"text_encoder_2.x.lora_A.weight": torch.zeros(1, 2), "text_encoder_2.x.lora_B.weight": torch.zeros(2, 1)},
        tmp_path / "sdxl.safetensors",
    )
    mc = load_model(tiny_cond_model)
    with pytest.raises(ModelLoadError, match=r"sdxl\.safetensors: the file holds 2 text_encoder_2 tensor\(s\) but the model "
                       r"\(UNet2DConditionModel\) has no text_encoder_2"):
        apply_lora(mc, [LoraAdapter(tmp_path / "sdxl.safetensors")])


def test_class_unet_takes_a_lora_and_dit_is_refused_saying_why(tmp_path):
    """The class-conditional UNet2DModel family loads through PEFT injection like the unconditional
    one (equal to a hand merge, class embedding adapted too); DiT has no diffusers LoRA loader and
    is refused at load time, saying why."""
    from tests.tiny_families import build_tiny_class_unet, build_tiny_dit

    folder = build_tiny_class_unet(tmp_path / "class_unet")
    base = UNet2DModel.from_pretrained(folder, subfolder="unet").eval()
    sd, config = _lora_state(base, ["to_q", "conv1", "class_embedding"], r=2, alpha=2, seed=30)
    _save(tmp_path / "class_lora", unet=(sd, config))
    m = load_model(folder, lora=[LoraAdapter(tmp_path / "class_lora", 0.5)])
    assert m.family.name == "class_unet" and m.lora[0]["targets"] == ["unet"]
    want = _merge(base, [(sd, 1.0, 0.5)]).state_dict()  # Linear / Conv layers
    a, b = sd["class_embedding.lora_embedding_A"], sd["class_embedding.lora_embedding_B"]
    want["class_embedding.weight"] = want["class_embedding.weight"] + 0.5 * (b @ a).T  # (classes, dim)
    for k, v in m.unet.state_dict().items():
        torch.testing.assert_close(v, want[k], atol=1e-6, rtol=0, msg=k)
    assert any(not torch.equal(v, base.state_dict()[k]) for k, v in m.unet.state_dict().items())

    dit = build_tiny_dit(tmp_path / "dit")
    with pytest.raises(ModelLoadError, match=r"dit family, which takes no LoRA: diffusers has no LoRA loader for DiT: "
                       r"DiTPipeline has no LoRA loader mixin"):
        load_model(dit, lora=[LoraAdapter(tmp_path / "class_lora")])
    assert load_model(dit, lora=[]).lora == ()


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -math.inf, "0.5", None, True])
def test_scale_must_be_a_finite_number(scale, tmp_path):
    with pytest.raises(ModelLoadError, match=r"lora scale of .*x\.safetensors: expected a finite number"):
        LoraAdapter(str(tmp_path / "x.safetensors"), scale=scale)


def test_bad_arguments_and_missing_peft(loras, tiny_uncond_model, monkeypatch):
    m = load_model(tiny_uncond_model)
    with pytest.raises(ModelLoadError, match=r"lora path: expected a \.safetensors file .*got 3 \(int\)"):
        LoraAdapter(3)
    with pytest.raises(ModelLoadError, match=r"lora: expected a sequence of LoraAdapter"):
        apply_lora(m, None)
    with pytest.raises(ModelLoadError, match=r"lora\[1\]: expected a LoraAdapter\(path, scale\) or a path, got 3"):
        apply_lora(m, [LoraAdapter(loras["uncond"][0]), 3])
    with pytest.raises(ModelLoadError, match="fuse: expected True or False"):
        apply_lora(m, [LoraAdapter(loras["uncond"][0])], fuse="yes")
    assert apply_lora(m, []) == []
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ModelLoadError, match=r"need the peft package.*pip install peft=="):
        apply_lora(m, [LoraAdapter(loras["uncond"][0])])
    assert issubclass(ModelLoadError, LdminvError) and issubclass(ModelLoadError, ValueError)


# ----------------------------------------------------------------------------- analyze --lora


def _analyze(model_dir, dirs, out, *extra) -> int:
    from ldminv_core.__main__ import main

    return main(["analyze", "--model", str(model_dir), "--members", str(dirs[0]), "--heldout", str(dirs[1]),
                 "--out", str(out), "--timesteps", "0,10", "--limit", "2", "--influence", "exact", "--threads", "1",
                 *map(str, extra)])


@pytest.mark.slow
def test_analyze_lora_records_adapters_and_changes_the_terms(loras, tiny_uncond_model, tiny_image_dirs, tmp_path,
                                                             capsys):
    """--lora / --lora-scale end to end: run.json records the adapter's file, hash and scale; a
    scale-0 adapter reproduces the base run bit for bit, a real one changes the attack terms; a
    changed adapter file refuses to resume; a given model without the adapters is refused."""
    import json

    import numpy as np

    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.inputs import load_config_model
    from ldminv_core.pipeline.run import run_analysis
    from ldminv_core.errors import RunError

    folder = loras["uncond"][0]
    assert _analyze(tiny_uncond_model, tiny_image_dirs, tmp_path / "base") == 0
    assert _analyze(tiny_uncond_model, tiny_image_dirs, tmp_path / "zero", "--lora", folder, "--lora-scale", 0) == 0
    assert _analyze(tiny_uncond_model, tiny_image_dirs, tmp_path / "lora", "--lora", folder, "--lora-scale", 0.5) == 0
    capsys.readouterr()
    data = json.loads((tmp_path / "lora" / "run.json").read_text())
    (record,) = data["lora"]
    weights = folder / LORA_WEIGHT_NAME
    assert record["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["scale"] == 0.5 and Path(record["file"]) == weights.resolve() and record["targets"] == ["unet"]
    assert data["config"]["lora"] == [{"path": str(folder.resolve()), "scale": 0.5}]
    assert json.loads((tmp_path / "base" / "run.json").read_text())["lora"] == []
    # the app resumes a run from its stored settings, adapters included
    from ldminv_app.jobs import resume_config
    from ldminv_core.pipeline.plan import config_settings

    resumed = resume_config(tmp_path / "lora")
    assert config_settings(resumed) == data["config"] and resumed.lora == (str(folder.resolve()),)
    terms = {k: np.load(tmp_path / k / "residuals" / "sima.npy") for k in ("base", "zero", "lora")}
    np.testing.assert_array_equal(terms["zero"], terms["base"])
    assert np.abs(terms["lora"] - terms["base"]).max() > 1e-4

    # a model loaded without the configuration's adapters is refused before anything is written
    cfg = AnalyzeConfig(model=str(tiny_uncond_model), members=str(tiny_image_dirs[0]),
                        heldout=str(tiny_image_dirs[1]), out=str(tmp_path / "given"), timesteps="0,10", limit=2,
                        lora=[str(folder)], lora_scale=0.5)
    with pytest.raises(RunError, match="LoRA adapters none"):
        run_analysis(cfg, model=load_model(tiny_uncond_model))
    assert not (tmp_path / "given" / "run.json").exists()
    assert load_config_model(cfg).lora[0]["sha256"] == record["sha256"]

    # resuming an unfinished run whose adapter file changed since it started is refused
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / LORA_WEIGHT_NAME).write_bytes(weights.read_bytes())
    run_json = tmp_path / "lora2" / "run.json"
    assert _analyze(tiny_uncond_model, tiny_image_dirs, tmp_path / "lora2", "--lora", changed) == 0
    state = json.loads(run_json.read_text())
    state["status"] = "running"
    state["stages"] = {k: v for k, v in state["stages"].items() if k == "encode"}
    run_json.write_text(json.dumps(state))
    sd = safetensors.torch.load_file(changed / LORA_WEIGHT_NAME)
    key = next(iter(sd))
    sd[key] = sd[key] * 2
    safetensors.torch.save_file(sd, changed / LORA_WEIGHT_NAME, metadata=safetensors.safe_open(
        str(weights), "pt").metadata())
    assert _analyze(tiny_uncond_model, tiny_image_dirs, tmp_path / "lora2", "--lora", changed) != 0
    assert "changed since this run started" in capsys.readouterr().err

    # the counts of --lora and --lora-scale must agree
    assert _analyze(tiny_uncond_model, tiny_image_dirs, tmp_path / "bad", "--lora", folder,
                    "--lora-scale", 1, "--lora-scale", 2) != 0
    assert "lora" in capsys.readouterr().err.lower()
