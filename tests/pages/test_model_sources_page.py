"""The Model & data page's other model sources (issue 24): a custom PyTorch model through its
adapter file (the stand-in ``ldm_light`` repository of ``tests/core/models/test_custom_adapter.py``
driving the shipped ``examples/ldm_light_adapter.py``) and a single-file checkpoint with its config
folder (the tiny SD 1.x pipeline in the original layout of ``tests/support/original_layout.py``).
Each is summarised before anything runs (the core's ``summarize_adapter`` / ``summarize_model``),
analyses end to end through the page's own job, and the Masks & ROC page's AUROCs equal sklearn on
the run's files. A bad adapter file is refused with the loader's message naming the function,
nothing can start, and the user's inputs are kept.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ldminv_core.errors import ModelLoadError
from ldminv_core.masks import masked_statistic, percentile_drop_mask
from ldminv_core.models.custom_adapter import load_custom_model
from ldminv_core.models.families import family_by_name
from ldminv_core.models.family_summary import summarize_adapter, summarize_model
from tests.core.models.test_custom_adapter import _TOY, EXAMPLE, write_ldm_light
from tests.core.models.test_single_file import _add_model_index
from tests.pages.test_model_families_page import (_metric, _model_page, _no_exception, _shown_summary,
                                                  _wait_and_open, home)  # noqa: F401 - home is a fixture
from tests.support.original_layout import write_original_sd1_checkpoint
from tests.tiny_models import build_tiny_conditional, write_image_folder

# Each end-to-end test loads a tiny model and computes a whole (small) analysis through the page's job.
pytestmark = pytest.mark.slow

N = 4  # images per folder


@pytest.fixture
def ldm_light(tmp_path, monkeypatch):
    """(stand-in repository, checkpoint folder as main.py's --out_dir), LDM_LIGHT_REPO set."""
    repo, out = write_ldm_light(tmp_path)
    monkeypatch.setenv("LDM_LIGHT_REPO", str(repo))
    monkeypatch.delenv("LDM_LIGHT_MODULE", raising=False)
    monkeypatch.delenv("LDM_LIGHT_ARGS", raising=False)
    return repo, out


def _images(root: Path, **kw) -> tuple[Path, Path]:
    write_image_folder(root / "members", N, seed=1, prefix="m", formats=("png",), **kw)
    write_image_folder(root / "heldout", N, seed=2, prefix="h", formats=("png",), **kw)
    return root / "members", root / "heldout"


def _start(at, members: Path, heldout: Path, name: str) -> None:
    at.text_input(key="new_members_path").input(str(members))
    at.text_input(key="new_heldout_path").input(str(heldout))
    at.text_input(key="new_run_name").input(name)
    at.button(key="new_start").click().run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]


def _check_masks_roc(at, out: Path, *, n: int = N) -> None:
    """The Masks & ROC page's AUROCs equal sklearn on the run's own files."""
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    terms = np.load(out / "residuals" / "sima.npy")
    influence = np.load(out / "influence.npy")
    settings = json.loads((out / "run.json").read_text())
    labels = np.repeat([1, 0], n)
    t = settings["attacks"]["sima"]["timesteps"].index(at.select_slider(key="sidebar_t").value)
    assert _metric(at, "AUROC (baseline)") == pytest.approx(
        roc_auc_score(labels, -terms.astype(np.float64).sum(axis=(2, 3, 4))[:, t]), abs=1e-12)
    masked = masked_statistic(terms, percentile_drop_mask(influence, at.slider(key="drop_percent").value))[:, t]
    assert _metric(at, "AUROC (masked)") == pytest.approx(roc_auc_score(labels, -masked), abs=1e-12)


def test_a_custom_adapter_is_summarised_then_analysed_through_the_page(home, ldm_light, tmp_path):
    repo, ckpt = ldm_light
    members, heldout = _images(tmp_path / "data")
    at = _model_page()
    at.radio(key="new_model_kind").set_value("Custom adapter").run()
    assert any("runs the Python code in that file" in c.value for c in at.caption)  # said before it runs
    assert at.button(key="new_start").disabled  # no adapter file yet
    at.text_input(key="new_model_adapter").input(str(EXAMPLE))
    at.text_input(key="new_model_adapter_path").input(str(ckpt)).run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    shown = _shown_summary(at)
    want = summarize_adapter(EXAMPLE, model_path=ckpt)
    assert shown == {what.capitalize(): value for what, value in want.rows()}
    assert shown["Family"] == "Custom PyTorch model (adapter file) [custom]"
    assert shown["Conditioning"] == "none (unconditional)" and shown["Denoiser"] == "UNetCompVis"
    assert "epsilon" in shown["Schedule"] and shown["Latents"] == "2×4×4 from 3×16×16 images"
    assert shown["Geometry engine"].startswith("torch.func")
    sha = hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert shown["Adapter"].startswith(f"{EXAMPLE.name} (SHA-256 {sha[:12]}")
    # the model the page summarised is the one the adapter builds
    model = load_custom_model(EXAMPLE, model_path=ckpt)
    assert (model.latent_shape, model.image_shape) == (want.latent_shape, want.image_shape)
    _start(at, members, heldout, "run-adapter")
    out = Path(home["root"]) / "runs" / "run-adapter"
    _wait_and_open(at, out)
    record = json.loads((out / "run.json").read_text())
    assert record["family"] == "custom" and record["adapter"]["sha256"] == sha
    assert record["conditioning"] == shown["Conditioning"] and record["guidance"] is None
    assert record["config"]["model"] == str(ckpt) and record["geometry"]["plan"]["engine"] == "torch.func"
    _check_masks_roc(at, out)


def test_a_bad_adapter_file_is_named_with_its_function_and_nothing_starts(home, tmp_path):
    bad = tmp_path / "bad_adapter.py"
    bad.write_text(_TOY.replace("OVERRIDE", "dict(model_output=lambda z, t, cond: net(z)[:, :1])"))
    with pytest.raises(ModelLoadError) as loader:
        load_custom_model(bad)
    at = _model_page()
    at.radio(key="new_model_kind").set_value("Custom adapter").run()
    at.text_input(key="new_model_adapter").input(str(bad)).run()
    _no_exception(at)
    errors = [e.value for e in at.error]
    assert errors == [f"This model cannot be analysed: {loader.value}"]
    assert "model_output(z_t (2, 2, 4, 4) float32" in errors[0] and str(bad) in errors[0]
    assert not [t for t in at.table if t.value.index.name == "Model"]
    assert not at.get("expander") or all("Details" not in e.label for e in at.expander)  # no traceback
    assert at.button(key="new_start").disabled and at.button(key="new_estimate").disabled
    assert at.text_input(key="new_model_adapter").value == str(bad)  # the input kept
    assert at.session_state["active_run"] == home["active"]
    # fixed: the summary shows and the buttons come back
    bad.write_text(_TOY.replace("OVERRIDE", "dict()"))
    at.run()
    _no_exception(at)
    assert not at.error and _shown_summary(at)["Family"].endswith("[custom]")
    assert not at.button(key="new_start").disabled


def test_a_single_file_checkpoint_is_summarised_then_analysed_through_the_page(home, tmp_path, tiny_caption_dirs):
    folder = _add_model_index(build_tiny_conditional(tmp_path / "sd1"))
    file = tmp_path / "tiny-v1-pruned.safetensors"
    write_original_sd1_checkpoint(folder, file)
    at = _model_page()
    at.radio(key="new_model_kind").set_value("Single-file checkpoint").run()
    at.text_input(key="new_model_file").input(str(file)).run()
    _no_exception(at)
    # without its config folder: the single-file module's message (the option and the convert command)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "--model-config" in errors[0] and "python -m ldminv_core convert" in errors[0]
    assert at.button(key="new_start").disabled
    at.text_input(key="new_model_config").input(str(folder)).run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    shown = _shown_summary(at)
    assert shown == {what.capitalize(): value for what, value in summarize_model(file, model_config=folder).rows()}
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    assert shown["Family"] == f"{family_by_name('sd').label} [sd]"
    assert shown["Checkpoint"].startswith(f"{file.name} (SHA-256 {sha[:12]}")
    # the folder's own rows are the config folder's
    folder_rows = dict(summarize_model(folder).rows())
    assert all(shown[w.capitalize()] == folder_rows[w] for w in ("family", "conditioning", "schedule", "latents"))
    _start(at, *tiny_caption_dirs, "run-single-file")
    out = Path(home["root"]) / "runs" / "run-single-file"
    _wait_and_open(at, out)
    record = json.loads((out / "run.json").read_text())
    assert record["family"] == "sd" and record["single_file"]["sha256"] == sha
    assert record["conditioning"] == family_by_name("sd").conditioning
    assert record["n_members"] == record["n_heldout"] == 8  # the fixture's folders
    _check_masks_roc(at, out, n=8)
