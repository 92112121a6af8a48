"""The first start's runs (:mod:`ldminv_core.first_start`) and the ``blind_stage`` option they use.

- a run analysed with ``blind_stage=False`` has no "blind" stage, is complete without it, and its
  blind features (computed from the files on first use) equal those of the "blind" stage of a run
  over the same images;
- SimA on a coarse grid (the preview's) gives exactly the terms of the fine grid at those timesteps;
- the preview's settings are the demo's with one attack, every tenth timestep and no blind stage;
- ``python -m ldminv_core.first_start`` refuses a wrong command line with status 2 and a usage line;
- the preview's process loads the demo's TorchScript export, never imports diffusers, and its SimA
  terms equal the diffusers model's.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from ldminv_core import demo, first_start
from ldminv_core.attacks.timesteps import parse_timesteps
from ldminv_core.data.blind_features import run_blind_features
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.runs import Run, planned_stages


def _config(model, dirs, out, **kw) -> AnalyzeConfig:
    base = dict(attacks="sima", timesteps="0:40:10", batch_size=4, device="cpu", residual_dtype="float32")
    base.update(kw)
    return AnalyzeConfig(model=str(model), members=str(dirs[0]), heldout=str(dirs[1]), out=str(out), **base)


def test_a_run_without_the_blind_stage_is_complete_and_its_features_equal_the_stages(
        tiny_uncond_model, tiny_image_dirs, tmp_path):
    with_stage = Run.open(run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "a")))
    without = Run.open(run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "b", blind_stage=False)))
    assert "blind" in with_stage.stages_done
    assert "blind" not in without.settings and "blind" not in planned_stages(without.settings)
    assert not without.partial and without.settings["config"]["blind_stage"] is False
    a, b = run_blind_features(with_stage), run_blind_features(without)
    assert sorted(a.groups) == sorted(b.groups) and a.names == b.names
    for g in a.groups:
        np.testing.assert_array_equal(a.groups[g], b.groups[g])
    assert (without.path / ".ldminv-cache").is_dir()  # computed once, kept beside the run


def test_sima_on_a_coarse_grid_equals_the_fine_grid_at_those_timesteps(tiny_uncond_model, tiny_image_dirs, tmp_path):
    fine = Run.open(run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "fine", timesteps="0:40:10")))
    coarse = Run.open(run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "coarse",
                                           timesteps="0:40:20", blind_stage=False)))
    assert coarse.timesteps("sima") == [0, 20]
    idx = [fine.timesteps("sima").index(t) for t in coarse.timesteps("sima")]
    np.testing.assert_array_equal(np.asarray(coarse.terms("sima")), np.asarray(fine.terms("sima"))[:, idx])


def test_the_preview_is_the_demo_with_one_attack_every_tenth_timestep_and_no_blind_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    cfg, full = first_start.preview_config(), first_start.demo_config()
    assert cfg.attacks == ("sima",) and cfg.blind_stage is False and full.blind_stage is True
    assert parse_timesteps(cfg.timesteps) == parse_timesteps(full.timesteps)[::10] == [0, 100, 200]
    assert first_start.preview_timesteps() == [0, 100, 200]
    for name in ("model", "members", "heldout", "limit", "seed", "batch_size", "residual_dtype", "topk"):
        assert getattr(cfg, name) == getattr(full, name), name
    assert full.out == str(demo.demo_run_dir()) and cfg.out == str(tmp_path / "runs" / "demo-preview")
    assert "t = 0, 100, 200" in first_start.preview_description()
    assert "3 of the 30 timesteps" in first_start.preview_description()


@pytest.mark.parametrize("argv", [[], ["everything"], ["preview", "a", "b"]])
def test_a_wrong_command_line_is_refused_with_a_usage_line(argv):
    proc = subprocess.run([sys.executable, "-m", "ldminv_core.first_start", *argv], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "usage: python -m ldminv_core.first_start {preview,demo} [OUT]" in proc.stderr


def test_the_previews_process_never_imports_diffusers_and_its_terms_equal_the_diffusers_models(tmp_path):
    """The preview loads the demo's TorchScript export (run.json "model_export"); its SimA terms at
    t = 0, 100, 200 equal those the diffusers model gives with the same settings."""
    from ldminv_core.models.loading import load_model

    code = ("import sys; from ldminv_core.first_start import run_demo_preview; run_demo_preview(sys.argv[1]); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'diffusers', 'transformers', 'peft'}))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "preview")], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "LDMINV_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    preview = Run.open(tmp_path / "preview")
    assert preview.settings["model_export"]["format"] == "ldminv-torchscript-1"
    assert preview.settings["geometry"]["precomputed"]["used"] is True
    ref_config = first_start.preview_config(tmp_path / "ref", device="cpu")
    ref = Run.open(run_analysis(ref_config, model=load_model(demo.DEMO_MODEL_DIR), precomputed=demo.demo_precomputed()))
    assert "model_export" not in ref.settings
    np.testing.assert_allclose(np.asarray(preview.terms("sima")), np.asarray(ref.terms("sima")), rtol=1e-5, atol=1e-6)
