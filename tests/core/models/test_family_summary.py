"""Tests of ldminv_core.models.family_summary: what the dashboard and the preflight say about a model
folder before anything runs.

For every family (SD 1.x, SDXL, SD3 with and without T5, Flux with and without the guidance
embedding, DiT, class-conditional UNet, unconditional) the summary read from JSON equals what the loader builds from the weights (family,
latent and image shapes, schedule kind and prediction type of the predictor, denoiser class) and
its geometry engine is the one the decoder geometry then really uses on the loaded decoder; a
decoder outside the layer-by-layer engine is summarised as torch.func, again as the geometry runs
it. A folder that no family recognises is refused by the summary and by ``check_config`` with the
family's own message (``detect_family``), and a folder the loader refuses is refused with the
loader's message.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ldminv_core import geometry
from ldminv_core.errors import ModelLoadError
from ldminv_core.models.families import detect_family, family_by_name
from ldminv_core.models.family_summary import check_model_family, summarize_model
from ldminv_core.models.loading import load_model
from ldminv_core.models.sources import check_model
from tests.tiny_families import build_tiny_class_unet, build_tiny_dit, build_tiny_sdxl
from tests.tiny_flux import build_tiny_flux
from tests.tiny_models import build_tiny_conditional, build_tiny_unconditional, tiny_scheduler, tiny_unet, tiny_vae
from tests.tiny_sd3 import build_tiny_sd3

# folder name -> (the family it is, its builder)
FAMILY_FOLDERS = {
    "sd": ("sd", lambda root: build_tiny_conditional(root)),
    "sdxl": ("sdxl", lambda root: (build_tiny_sdxl(root), root)[1]),
    "sd3": ("sd3", lambda root: build_tiny_sd3(root, with_t5=True)),
    "sd3_no_t5": ("sd3", lambda root: build_tiny_sd3(root, with_t5=False)),
    "flux_dev": ("flux", lambda root: build_tiny_flux(root, guidance_embeds=True)),
    "flux_schnell": ("flux", lambda root: build_tiny_flux(root, guidance_embeds=False)),
    "dit": ("dit", lambda root: build_tiny_dit(root)),
    "class_unet": ("class_unet", lambda root: build_tiny_class_unet(root)),
    "unconditional": ("unconditional", lambda root: build_tiny_unconditional(root)),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: Path(build(root / name)) for name, (_, build) in FAMILY_FOLDERS.items()}


def _engine_the_geometry_uses(model) -> str:
    """Run the "auto" decoder geometry on one real latent of the loaded model: its engine."""
    x = torch.rand(1, *model.image_shape) * 2 - 1
    z = model.encode(x).float()
    return geometry.decoder_geometry(model.decoder_fn(), z, k=2, influence="hutchinson", probes=2).engine


@pytest.mark.parametrize("name", list(FAMILY_FOLDERS))
def test_summary_equals_the_loaded_model(folders, name):
    folder = folders[name]
    summary = summarize_model(folder)
    model = load_model(folder)
    family = model.family
    assert summary.family == family.name == FAMILY_FOLDERS[name][0]
    assert (summary.label, summary.conditioning) == (family.label, family.conditioning)
    assert summary.source == str(folder.resolve())
    assert summary.latent_shape == model.latent_shape
    assert summary.image_shape == model.image_shape
    assert summary.denoiser_class == type(model.unet).__name__
    assert summary.denoiser_folder == family.denoiser
    assert summary.schedule == model.predictor.schedule.kind
    assert summary.prediction_type == model.predictor.prediction_type
    assert summary.scheduler_class == type(model.scheduler).__name__
    assert summary.geometry_engine == _engine_the_geometry_uses(model)
    rows = dict(summary.rows())
    assert rows["family"].startswith(family.label) and rows["conditioning"] == family.conditioning
    assert rows["geometry engine"].startswith(summary.geometry_engine)


def test_text_encoders_and_schedules_in_words(folders):
    sd3 = summarize_model(folders["sd3"])
    no_t5 = summarize_model(folders["sd3_no_t5"])
    assert sd3.text_encoders == ("text_encoder", "text_encoder_2", "text_encoder_3")
    assert no_t5.text_encoders == ("text_encoder", "text_encoder_2")  # T5 absent: zeros, as the pipeline
    assert sd3.schedule == "flow" and "rectified flow" in sd3.schedule_text and "Euler" in sd3.schedule_text
    sdxl = summarize_model(folders["sdxl"])
    assert sdxl.text_encoders == ("text_encoder", "text_encoder_2")
    assert sdxl.schedule == "ddpm" and "DDIM" in sdxl.schedule_text and "epsilon" in sdxl.schedule_text
    assert summarize_model(folders["dit"]).text_encoders == ()
    flux = summarize_model(folders["flux_dev"])
    assert flux.text_encoders == ("text_encoder", "text_encoder_2") and flux.schedule == "flow"
    assert flux.latent_shape == (16, 4, 4)  # unpacked: the geometry's latent space (METHOD §5)


def test_a_single_file_checkpoint_names_the_convert_command(tmp_path):
    from safetensors.torch import save_file

    file = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(file))
    with pytest.raises(ModelLoadError) as single:
        from ldminv_core.models.single_file import check_single_file

        check_single_file(file, model_config=None)
    with pytest.raises(ModelLoadError) as err:
        summarize_model(file)
    assert str(err.value) == str(single.value) and "python -m ldminv_core convert" in str(err.value)


def test_v_prediction_is_read_from_the_scheduler(folders, tmp_path):
    folder = shutil.copytree(folders["sd"], tmp_path / "v")
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "prediction_type": "v_prediction"}))
    summary = summarize_model(folder)
    assert summary.prediction_type == load_model(folder).predictor.prediction_type == "v_prediction"
    assert "v-prediction" in summary.schedule_text


def test_a_decoder_outside_the_layerwise_engine_is_summarised_as_torch_func(tmp_path):
    from diffusers import AutoencoderKL

    folder = tmp_path / "gelu"
    cfg = {k: v for k, v in tiny_vae(image_channels=1).config.items() if not k.startswith("_")}
    AutoencoderKL.from_config({**cfg, "act_fn": "gelu"}).eval().save_pretrained(folder / "vae")
    tiny_unet().save_pretrained(folder / "unet")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    summary = summarize_model(folder)
    assert summary.geometry_engine == "torch.func" == _engine_the_geometry_uses(load_model(folder))
    assert "GELU" in summary.geometry_note  # the geometry's own reason: the activation is not SiLU


def _unrecognised(folders, tmp_path) -> Path:
    """An SD folder whose UNet config asks for image embeddings (Kandinsky-style): no family."""
    folder = shutil.copytree(folders["sd"], tmp_path / "unknown")
    cfg_path = folder / "unet" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "addition_embed_type": "image"}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    return folder


def test_an_unrecognised_folder_is_refused_with_the_family_message(folders, tmp_path):
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.plan import check_config
    from tests.tiny_models import write_image_folder

    folder = _unrecognised(folders, tmp_path)
    with pytest.raises(ModelLoadError) as family_error:
        detect_family(folder)
    expected = str(family_error.value)
    assert "KandinskyV22Pipeline" in expected and "no ldminv model family" in expected
    assert check_model(folder) == str(folder.resolve())  # layout and config types alone pass
    for check in (summarize_model, check_model_family):
        with pytest.raises(ModelLoadError) as err:
            check(folder)
        assert str(err.value) == expected
    members = write_image_folder(tmp_path / "m", 2, formats=("png",), seed=1)[0].parent
    heldout = write_image_folder(tmp_path / "h", 2, formats=("png",), seed=2)[0].parent
    out = tmp_path / "run"
    with pytest.raises(ModelLoadError) as err:
        check_config(AnalyzeConfig(model=str(folder), members=str(members), heldout=str(heldout), out=str(out)))
    assert str(err.value) == expected
    assert not out.exists()  # refused before anything was written


def test_a_folder_the_loader_refuses_is_refused_with_its_message(tmp_path):
    folder = tmp_path / "mismatch"
    tiny_vae(image_channels=1, latent_channels=4).save_pretrained(folder / "vae")
    tiny_unet(in_channels=3).save_pretrained(folder / "unet")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    with pytest.raises(ModelLoadError) as loader:
        load_model(folder)
    with pytest.raises(ModelLoadError) as summary:
        summarize_model(folder)
    assert str(summary.value) == str(loader.value) and "in_channels = 3" in str(loader.value)


def test_check_model_family_returns_the_family(folders):
    ref, family = check_model_family(folders["sd3"])
    assert ref == str(folders["sd3"].resolve()) and family is family_by_name("sd3")
