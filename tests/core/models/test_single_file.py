"""Single-file checkpoints (``ldminv_core.models.single_file``): a tiny SD 1.x pipeline written as one
original-layout ``.safetensors`` file (``tests.support.original_layout``, checked against diffusers'
``from_single_file``) loads and analyzes bit for bit as its diffusers folder; run.json records the file
and its SHA-256; the conversion is cached; a pickle, a missing or a mismatched config folder is refused
with the command that converts."""
from __future__ import annotations

import hashlib
import json
import pickle
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from ldminv_core.cli.main import main
from ldminv_core.errors import ModelLoadError, RunError
from ldminv_core.models import single_file
from ldminv_core.models.loading import load_model
from tests.support.original_layout import write_original_sd1_checkpoint
from tests.tiny_models import build_tiny_conditional, write_image_folder

CAPTIONS = ["a red cat", None, "the dog"]


def _add_model_index(folder: Path) -> Path:
    """model_index.json as StableDiffusionPipeline.save_pretrained writes it (from_single_file reads it)."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae"), unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
        scheduler=DDPMScheduler.from_pretrained(folder / "scheduler"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_config(folder)
    return folder


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    """(pipeline folder, its original-layout single file, the tensors written)."""
    root = tmp_path_factory.mktemp("single_file")
    folder = _add_model_index(build_tiny_conditional(root / "sd1"))
    path = root / "tiny-v1-pruned.safetensors"
    tensors = write_original_sd1_checkpoint(folder, path)
    return folder, path, tensors


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# ---------------------------------------------------------------------------- the test's own renaming

def test_original_layout_is_what_diffusers_from_single_file_reads(sd1):
    from diffusers import StableDiffusionPipeline

    folder, path, tensors = sd1
    base = load_model(folder)
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in tensors)
    assert any(k.startswith("first_stage_model.encoder.down.0.block.0.") for k in tensors)
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), local_files_only=True)
    n = 0
    for name in ("unet", "vae", "text_encoder"):
        want, got = getattr(base, name).state_dict(), getattr(pipe, name).state_dict()
        assert set(got) == set(want), name
        for key in want:
            assert torch.equal(got[key], want[key]), f"{name}.{key}"
        n += len(want)
    assert n == len(tensors)  # every tensor of the file was renamed once and recovered


# ---------------------------------------------------------------------------- load_model and analyze

@torch.no_grad()
def test_load_model_on_the_single_file_equals_the_folder_bit_for_bit(sd1, home):
    folder, path, _ = sd1
    base = load_model(folder)
    model = load_model(path, model_config=folder)
    record = model.single_file
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["file"] == str(path.resolve()) and record["model_config"] == str(folder.resolve())
    assert record["family"] == "sd" and record["pipeline_class"] == "StableDiffusionPipeline"
    assert sorted(record["from_file"]) == ["text_encoder", "unet", "vae"] and record["from_config"] == []
    assert Path(model.source).parent == home / "single-file"
    assert model.family.name == "sd" and base.single_file is None
    for part in ("scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/tokenizer_config.json"):
        # the config folder's own files (StableDiffusionPipeline() rewrites steps_offset / clip_sample)
        assert (Path(model.source) / part).read_bytes() == (folder / part).read_bytes(), part
    assert model.scheduler.config.steps_offset == base.scheduler.config.steps_offset
    x = torch.rand(3, *base.image_shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    z = base.encode(x)
    assert torch.equal(model.encode(x), z)
    assert torch.equal(model.decode(z), base.decode(z))
    cond, cond_base = model.predictor.encode_prompts(CAPTIONS), base.predictor.encode_prompts(CAPTIONS)
    assert torch.equal(cond, cond_base)
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    for t in (0, 10, 500):
        z_t = base.predictor.schedule.a[t] * z + base.predictor.schedule.b[t] * noise
        assert torch.equal(model.predictor(z_t, t, cond), base.predictor(z_t, t, cond_base))


def test_analyze_on_the_single_file_equals_the_folder_run(sd1, home, tmp_path, capsys):
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.run import run_analysis

    folder, path, _ = sd1
    write_image_folder(tmp_path / "members", 3, seed=1, captions=True, prefix="m")
    write_image_folder(tmp_path / "heldout", 3, seed=2, captions=True, prefix="h")
    common = dict(members=str(tmp_path / "members"), heldout=str(tmp_path / "heldout"), attacks="sima,pia,loss",
                  timesteps="0,10", batch_size=4, device="cpu", topk=4, seed=3)
    base = run_analysis(AnalyzeConfig(model=str(folder), out=str(tmp_path / "run_folder"), **common))
    argv = ["analyze", "--model", str(path), "--model-config", str(folder), "--out", str(tmp_path / "run_file"),
            "--members", common["members"], "--heldout", common["heldout"], "--attacks", "sima,pia,loss",
            "--timesteps", "0,10", "--batch-size", "4", "--device", "cpu", "--topk", "4", "--seed", "3"]
    assert main(argv) == 0, capsys.readouterr().err
    run = tmp_path / "run_file"
    record = json.loads((run / "run.json").read_text())
    assert record["model"] == str(path.resolve()) and record["family"] == "sd"
    assert record["single_file"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["single_file"]["model_config"] == str(folder.resolve())
    assert np.array_equal(np.load(run / "latents.npy"), np.load(base / "latents.npy"))
    for name in ("sima", "pia", "loss"):
        assert np.array_equal(np.load(run / "residuals" / f"{name}.npy"), np.load(base / "residuals" / f"{name}.npy"))


@torch.no_grad()
def test_components_the_file_lacks_come_from_the_config_folder(sd1, home, tmp_path):
    """As flux1-dev.safetensors holds only the transformer: a UNet-only file takes the VAE and the
    text encoder from the config folder's safetensors, and a config folder without them is refused."""
    import shutil

    from safetensors.torch import save_file

    folder, path, tensors = sd1
    unet_only = tmp_path / "unet-only.safetensors"
    save_file({k: v for k, v in tensors.items() if k.startswith("model.diffusion_model.")}, str(unet_only))
    model, base = load_model(unet_only, model_config=folder), load_model(folder)
    assert model.single_file["from_file"] == ["unet"] and model.single_file["from_config"] == ["text_encoder", "vae"]
    x = torch.rand(2, *base.image_shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    z = base.encode(x)
    assert torch.equal(model.encode(x), z)
    cond = base.predictor.encode_prompts(CAPTIONS[:2])
    assert torch.equal(model.predictor.encode_prompts(CAPTIONS[:2]), cond)
    assert torch.equal(model.predictor(z, 10, cond), base.predictor(z, 10, cond))
    bare = tmp_path / "configs-only"
    shutil.copytree(folder, bare, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelLoadError, match=r"holds no text_encoder .*configs-only/text_encoder/ has no .safetensors"):
        load_model(unet_only, model_config=bare)
    whole = load_model(path, model_config=bare)  # the whole file needs configs only
    assert sorted(whole.single_file["from_file"]) == ["text_encoder", "unet", "vae"]
    assert torch.equal(whole.encode(x), z) and torch.equal(whole.predictor(z, 10, cond), base.predictor(z, 10, cond))


def test_the_conversion_is_cached(sd1, home, monkeypatch):
    folder, path, _ = sd1
    calls = []
    convert = single_file._convert
    monkeypatch.setattr(single_file, "_convert", lambda *a, **k: (calls.append(a), convert(*a, **k)))
    first, record = single_file.resolve_single_file(path, model_config=folder)
    marker = Path(first) / single_file.RECORD_FILE
    stamp = marker.stat().st_mtime_ns, (Path(first) / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    second, again = single_file.resolve_single_file(path, model_config=folder)
    assert len(calls) == 1 and second == first and again == record
    assert (marker.stat().st_mtime_ns, (Path(first) / "unet" / "diffusion_pytorch_model.safetensors").stat()
            .st_mtime_ns) == stamp
    assert [p.name for p in (home / "single-file").iterdir() if p.is_dir()] == [Path(first).name]  # no leftovers
    assert Path(first).name.startswith(record["sha256"][:16])


def test_the_convert_command_writes_the_folder_the_errors_name(sd1, tmp_path, capsys):
    folder, path, _ = sd1
    out = tmp_path / "converted"
    command = single_file.convert_command(path, model_config=folder, out=out)
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "ldminv_core", "convert"]
    assert main(argv[3:]) == 0, capsys.readouterr().err
    assert str(out) in capsys.readouterr().out
    written = json.loads((out / single_file.RECORD_FILE).read_text())
    assert written["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert torch.equal(load_model(out).encode(x), load_model(folder).encode(x))
    assert main(argv[3:]) == 2 and "not an empty folder" in capsys.readouterr().err  # never overwritten


# ---------------------------------------------------------------------------- refusals

class _Trap:
    """Unpickling this creates the file ``path``: a pickle that runs code when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin", ".safetensors"])
def test_a_pickle_is_refused_and_never_unpickled(sd1, home, tmp_path, capsys, suffix):
    folder, _, _ = sd1
    sentinel = tmp_path / "unpickled"
    bad = tmp_path / f"model{suffix}"
    bad.write_bytes(pickle.dumps({"state_dict": _Trap(sentinel)}))
    want = "never unpickles" if suffix != ".safetensors" else "not a readable safetensors file"
    with pytest.raises(ModelLoadError, match=want):
        load_model(bad, model_config=folder)
    write_image_folder(tmp_path / "members", 1, seed=1)
    write_image_folder(tmp_path / "heldout", 1, seed=2)
    assert main(["analyze", "--model", str(bad), "--model-config", str(folder), "--members", str(tmp_path / "members"),
                 "--heldout", str(tmp_path / "heldout"), "--out", str(tmp_path / "run")]) == 2
    assert want in capsys.readouterr().err
    assert not sentinel.exists()
    if suffix != ".safetensors":
        with pytest.raises(ModelLoadError, match="python -m ldminv_core convert"):
            single_file.check_single_file(bad, model_config=folder)


def test_without_model_config_the_error_names_the_option_and_the_command(sd1, home, tmp_path, capsys):
    folder, path, _ = sd1
    with pytest.raises(ModelLoadError) as info:
        load_model(path)
    text = str(info.value)
    assert "--model-config" in text and f"python -m ldminv_core convert {path.resolve()} --model-config" in text
    assert "stable-diffusion-v1-5" in text  # the family's config folder, from the file's keys
    write_image_folder(tmp_path / "members", 1, seed=1)
    write_image_folder(tmp_path / "heldout", 1, seed=2)
    assert main(["analyze", "--model", str(path), "--members", str(tmp_path / "members"),
                 "--heldout", str(tmp_path / "heldout"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--model-config" in err and "python -m ldminv_core convert" in err
    assert not (home / "single-file").exists() and not (tmp_path / "run" / "run.json").exists()


def test_a_mismatched_config_folder_is_refused(sd1, home, tmp_path):
    from tests.tiny_sd3 import build_tiny_sd3

    folder, path, _ = sd1
    sd3 = build_tiny_sd3(tmp_path / "sd3", with_t5=False)
    with pytest.raises(ModelLoadError, match=r"family 'sd3'.*family 'sd'.*python -m ldminv_core convert"):
        load_model(path, model_config=sd3)
    wider = tmp_path / "wider"  # the same family, other sizes: the UNet's text width differs
    import shutil

    shutil.copytree(folder, wider)
    cfg = json.loads((wider / "unet" / "config.json").read_text())
    (wider / "unet" / "config.json").write_text(json.dumps({**cfg, "cross_attention_dim": 32}))
    with pytest.raises(ModelLoadError, match=r"is not the config of .*cross_attention_dim 32"):
        load_model(path, model_config=wider)
    (wider / "unet" / "config.json").write_text(json.dumps({**cfg, "layers_per_block": 2}))  # passes the header
    with pytest.raises(ModelLoadError, match=r"from_single_file could not convert|does not fit|lacks"):
        load_model(path, model_config=wider)
    (wider / "model_index.json").unlink()
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        load_model(path, model_config=wider)
    with pytest.raises(ModelLoadError, match="applies to a single-file checkpoint"):
        load_model(folder, model_config=folder)
    assert not any(p.name.startswith(".converting") for p in (home / "single-file").iterdir())


def test_a_file_without_a_known_denoiser_is_refused_naming_what_it_looks_like(sd1, tmp_path):
    from safetensors.torch import save_file

    folder, _, _ = sd1
    lora = tmp_path / "adapter.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, str(lora))
    with pytest.raises(ModelLoadError, match=r"no denoiser in an original layout.*LoRA adapter.*--lora"):
        load_model(lora, model_config=folder)
    with pytest.raises(ModelLoadError, match=r"no denoiser in an original layout.*LoRA adapter"):
        load_model(lora)  # said before asking for --model-config


def test_a_resumed_run_refuses_a_changed_checkpoint():
    now = {"file": "/m/x.safetensors", "sha256": "b" * 64}
    single_file.check_single_file_unchanged(now, {"sha256": "b" * 64})
    single_file.check_single_file_unchanged(now, None)
    with pytest.raises(RunError, match=r"x.safetensors changed since this run started .*--force"):
        single_file.check_single_file_unchanged(now, {"sha256": "a" * 64})
