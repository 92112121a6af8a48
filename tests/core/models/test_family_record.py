"""What run.json and the family summary say about a Flux model (issue 24 loose ends): run.json
records, next to "family", the family's conditioning in words (``Family.conditioning``) and the
embedded guidance the predictor gives the transformer (``FluxPipeline.__call__``'s default
``guidance_scale`` for a dev-style transformer, None for a schnell-style one and for every other
family); the family summary refuses a Flux folder whose latents have an odd height or width with
the loader's own message."""
from __future__ import annotations

import inspect
import json
import shutil

import pytest

from ldminv_core.errors import ModelLoadError
from ldminv_core.models.families import family_by_name
from ldminv_core.models.family_summary import summarize_model
from tests.tiny_flux import build_tiny_flux
from tests.tiny_models import build_tiny_conditional, write_image_folder


def _pipeline_guidance_default() -> float:
    """``FluxPipeline.__call__``'s default guidance_scale, read from its signature."""
    from diffusers import FluxPipeline

    return float(inspect.signature(FluxPipeline.__call__).parameters["guidance_scale"].default)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("family_record")
    return {"dev": build_tiny_flux(root / "dev", guidance_embeds=True),
            "schnell": build_tiny_flux(root / "schnell", guidance_embeds=False),
            "sd": build_tiny_conditional(root / "sd")}


def _analyze(folder, tmp_path) -> dict:
    from ldminv_core.__main__ import main

    write_image_folder(tmp_path / "members", 2, seed=1, captions=True, prefix="m", modes=("RGB",))
    write_image_folder(tmp_path / "heldout", 2, seed=2, captions=True, prefix="h", modes=("RGB",))
    out = tmp_path / "run"
    code = main(["analyze", "--model", str(folder), "--members", str(tmp_path / "members"),
                 "--heldout", str(tmp_path / "heldout"), "--out", str(out), "--attacks", "sima",
                 "--timesteps", "0,10", "--batch-size", "4", "--device", "cpu", "--topk", "4", "--seed", "3"])
    assert code in (0, None)
    return json.loads((out / "run.json").read_text())


@pytest.mark.parametrize("name", ["dev", "schnell", "sd"])
def test_run_json_records_the_conditioning_and_the_flux_guidance(folders, name, tmp_path):
    from ldminv_core.models.loading import load_model

    record = _analyze(folders[name], tmp_path)
    family = "sd" if name == "sd" else "flux"
    assert record["family"] == family
    assert record["conditioning"] == family_by_name(family).conditioning
    want = _pipeline_guidance_default() if name == "dev" else None
    assert record["guidance"] == want
    # the same number the predictor gives its transformer
    predictor = load_model(folders[name]).predictor
    assert getattr(predictor, "guidance_scale", None) == want


def test_the_summary_refuses_odd_flux_latents_as_the_loader_does(folders, tmp_path):
    from ldminv_core.models.loading import load_model

    copy = shutil.copytree(folders["schnell"], tmp_path / "odd")
    vae_cfg = json.loads((copy / "vae" / "config.json").read_text())
    (copy / "vae" / "config.json").write_text(json.dumps({**vae_cfg, "sample_size": 20}))  # latents 5x5
    with pytest.raises(ModelLoadError, match="multiples of 2.*5x5") as loader:
        load_model(copy)
    with pytest.raises(ModelLoadError) as summary:
        summarize_model(copy)
    assert str(summary.value) == str(loader.value)
    # the even folder it came from is summarised
    assert summarize_model(folders["schnell"]).latent_shape[1] % 2 == 0
