"""A model's TorchScript export (:mod:`ldminv_core.models.traced`) against the diffusers model it stands for.

- the traced UNet's eps_hat and the traced encoder's latents equal the diffusers model's (the
  oracle: ``load_model`` + ``NoisePredictor``) at several timesteps and batch sizes;
- a run analysed with the export has the same SimA terms as one analysed with the diffusers model,
  and run.json records the export ("model_export") and the traced class;
- an export is refused when a model file changed, was added or removed, when its own files were
  altered, for another format, off the CPU, and for a text-conditioned model; the export has no decoder;
- the demo's shipped export (``assets/demo/traced``) was made from the demo model's current files
  and its outputs equal the diffusers model's on the demo's own images.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from ldminv_core import demo
from ldminv_core.models.loading import load_model
from ldminv_core.models.traced import EXPORT_ATOL, TracedExportError, export_traced, load_traced
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.runs import Run


@pytest.fixture(scope="module")
def exported(tiny_uncond_model, tmp_path_factory):
    """(model folder copy, its export folder): a copy, so tests may alter the model's files."""
    base = tmp_path_factory.mktemp("traced")
    model = base / "model"
    shutil.copytree(tiny_uncond_model, model)
    export_traced(model, base / "export", trace_batch=4, check_batch_sizes=(1, 3, 4))
    return model, base / "export"


def _copy(exported, tmp_path):
    model, export = exported
    shutil.copytree(model, tmp_path / "model")
    shutil.copytree(export, tmp_path / "export")
    return tmp_path / "model", tmp_path / "export"


@pytest.mark.parametrize("batch", [1, 3, 9])
def test_traced_eps_and_latents_equal_the_diffusers_models(exported, batch):
    model_dir, export_dir = exported
    ref, traced = load_model(model_dir), load_traced(model_dir, export_dir)
    gen = torch.Generator().manual_seed(batch)
    images = torch.rand(batch, *ref.image_shape, generator=gen) * 2 - 1
    torch.testing.assert_close(traced.encode(images), ref.encode(images), rtol=0, atol=EXPORT_ATOL)
    z = torch.randn(batch, *ref.latent_shape, generator=gen)
    n = ref.predictor.num_train_timesteps
    for t in (0, 7, n // 2, n - 1):
        torch.testing.assert_close(traced.predictor(z, t), ref.predictor(z, t), rtol=0, atol=EXPORT_ATOL)
    assert traced.predictor.num_train_timesteps == n
    torch.testing.assert_close(traced.predictor.alphas_cumprod, ref.predictor.alphas_cumprod, rtol=0, atol=0)
    assert (traced.latent_shape, traced.image_shape, traced.scaling_factor) == (ref.latent_shape, ref.image_shape,
                                                                                ref.scaling_factor)
    assert traced.family.name == ref.family.name and not traced.is_conditional


def test_a_run_with_the_export_has_the_diffusers_runs_terms_and_records_the_export(exported, tiny_image_dirs,
                                                                                   tmp_path):
    model_dir, export_dir = exported

    def config(out):
        return AnalyzeConfig(model=str(model_dir), members=str(tiny_image_dirs[0]), heldout=str(tiny_image_dirs[1]),
                             out=str(tmp_path / out), attacks="sima,pia", timesteps="0:40:20", batch_size=4,
                             device="cpu", residual_dtype="float32", blind_stage=False)

    # the geometry needs the decoder: the export refuses it, the diffusers model resumes the run
    with pytest.raises(TracedExportError, match="no decoder"):
        run_analysis(config("traced"), model=load_traced(model_dir, export_dir))
    partial = Run.open(tmp_path / "traced", partial=True)
    assert {"encode", "sima", "pia"} <= set(partial.stages_done)
    traced = Run.open(run_analysis(config("traced")))
    ref = Run.open(run_analysis(config("ref")))
    for attack in ("sima", "pia"):
        np.testing.assert_allclose(np.asarray(traced.terms(attack)), np.asarray(ref.terms(attack)), rtol=1e-5,
                                   atol=1e-6)
    np.testing.assert_allclose(np.asarray(traced.latents), np.asarray(ref.latents), rtol=0, atol=EXPORT_ATOL)
    record = json.loads((tmp_path / "traced" / "run.json").read_text())
    assert record["model_class"] == "UNet2DModel" == json.loads((tmp_path / "ref" / "run.json").read_text())["model_class"]
    assert record["model_export"]["format"] == "ldminv-torchscript-1"
    assert "model_export" not in json.loads((tmp_path / "ref" / "run.json").read_text())


def test_a_changed_added_or_removed_model_file_refuses_the_export(exported, tmp_path):
    model, export = _copy(exported, tmp_path)
    load_traced(model, export)  # unchanged: accepted
    cfg = model / "scheduler" / "scheduler_config.json"
    cfg.write_text(cfg.read_text().replace("{", '{"beta_end": 0.03, ', 1))
    with pytest.raises(TracedExportError, match=r"scheduler_config\.json changed"):
        load_traced(model, export)
    shutil.copy(exported[0] / "scheduler" / "scheduler_config.json", cfg)
    (model / "unet" / "extra.json").write_text("{}")
    with pytest.raises(TracedExportError, match=r"extra\.json was not in the model"):
        load_traced(model, export)
    (model / "unet" / "extra.json").unlink()
    (model / "vae" / "config.json").unlink()
    with pytest.raises(TracedExportError, match=r"vae/config\.json is missing"):
        load_traced(model, export)


def test_an_altered_export_another_format_and_another_device_are_refused(exported, tmp_path):
    model, export = _copy(exported, tmp_path)
    with open(export / "unet.pt", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(TracedExportError, match=r"unet\.pt: missing or not the file the export wrote"):
        load_traced(model, export)
    shutil.copy(exported[1] / "unet.pt", export / "unet.pt")
    manifest = json.loads((export / "manifest.json").read_text())
    (export / "manifest.json").write_text(json.dumps({**manifest, "format": "other"}))
    with pytest.raises(TracedExportError, match="expected format 'ldminv-torchscript-1', got 'other'"):
        load_traced(model, export)
    with pytest.raises(TracedExportError, match="manifest"):
        load_traced(model, tmp_path / "nowhere")
    with pytest.raises(TracedExportError, match="runs on the CPU"):
        load_traced(model, exported[1], device="meta")


def test_the_export_has_no_decoder_and_text_models_are_not_exported(exported, tiny_cond_model, tmp_path):
    traced = load_traced(*exported)
    with pytest.raises(TracedExportError, match="no decoder"):
        traced.decoder_fn()
    with pytest.raises(TracedExportError, match="unconditional UNet2DModel"):
        export_traced(tiny_cond_model, tmp_path / "cond")
    assert not (tmp_path / "cond").exists()


def test_the_demos_shipped_export_belongs_to_the_demo_model_and_equals_it_on_demo_images():
    from ldminv_core.data.image_folders import load_image_folder

    traced = load_traced(demo.DEMO_MODEL_DIR, demo.DEMO_TRACED_DIR)  # every model file unchanged since the export
    ref = load_model(demo.DEMO_MODEL_DIR)
    images = load_image_folder(demo.DEMO_MEMBERS_DIR, channels=ref.image_channels, resolution=ref.resolution,
                               limit=16).images
    z_ref, z = ref.encode(images), traced.encode(images)
    torch.testing.assert_close(z, z_ref, rtol=0, atol=EXPORT_ATOL)
    for t in (0, 100, 200):
        torch.testing.assert_close(traced.predictor(z_ref, t), ref.predictor(z_ref, t), rtol=0, atol=EXPORT_ATOL)
