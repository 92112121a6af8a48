"""The dashboard end to end on every model family (issue 24): the Model & data page names the
detected family, its conditioning, schedule and geometry engine as soon as a tiny SDXL, SD3, Flux,
DiT or class-conditional UNet folder is entered (the core's :func:`summarize_model`, read before
anything runs), starts the analysis through the page's own job, opens the finished run (run.json records
the family), and the Masks & ROC page shows ROC numbers equal to sklearn on the run's files. A
folder no family recognises is named with the family's message, nothing can be started on it, and
the page keeps the user's inputs and the active run.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from streamlit.testing.v1 import AppTest

from ldminv_core.errors import ModelLoadError
from ldminv_core.masks import masked_statistic, percentile_drop_mask
from ldminv_core.models.families import detect_family, family_by_name
from ldminv_core.models.family_summary import summarize_model
from ldminv_core.runs import run_status

from support.apptest import APP
from synthetic_runs import write_run
from tiny_models import build_tiny_conditional, write_image_folder

# Each test loads a tiny model and computes a whole (small) analysis through the page's job.
pytestmark = pytest.mark.slow

TIMEOUT = 120
N = 4  # images per folder


def _sdxl(root: Path) -> Path:
    from tests.tiny_families import build_tiny_sdxl

    build_tiny_sdxl(root / "model")
    return root / "model"


def _sd3(root: Path) -> Path:
    from tests.tiny_sd3 import build_tiny_sd3

    return build_tiny_sd3(root, with_t5=True)


def _flux(root: Path) -> Path:
    from tests.tiny_flux import build_tiny_flux

    return build_tiny_flux(root, guidance_embeds=True)


def _dit(root: Path) -> Path:
    from tests.tiny_families import build_tiny_dit

    return build_tiny_dit(root / "model")


def _class_unet(root: Path) -> Path:
    from tests.tiny_families import build_tiny_class_unet

    return build_tiny_class_unet(root / "model")


def _captioned(root: Path) -> tuple[Path, Path]:
    kw = dict(modes=("RGB",), captions=True, formats=("png",))
    write_image_folder(root / "members", N, seed=3, prefix="m", **kw)
    write_image_folder(root / "heldout", N, seed=4, prefix="h", **kw)
    return root / "members", root / "heldout"


def _labelled(classes: int):
    def build(root: Path) -> tuple[Path, Path]:
        from tests.tiny_families import write_labelled_folder

        return (write_labelled_folder(root / "members", N, [i % classes for i in range(N)], 1),
                write_labelled_folder(root / "heldout", N, [(i + 1) % classes for i in range(N)], 2))
    return build


# name -> (model builder, data builder, the denoiser-calls column of the cost table)
FAMILIES = {
    "sdxl": (_sdxl, _captioned, "UNet calls"),
    "sd3": (_sd3, _captioned, "transformer calls"),
    "flux": (_flux, _captioned, "transformer calls"),
    "dit": (_dit, _labelled(5), "transformer calls"),
    "class_unet": (_class_unet, _labelled(3), "UNet calls"),
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """LDMINV_HOME with a synthetic active run (so no demo is computed at start)."""
    rng = np.random.default_rng(0)
    labels = np.repeat([1, 0], 4)
    run = write_run(tmp_path / "runs" / "active", terms=rng.gamma(2.0, size=(8, 2, 2, 4, 4)).astype(np.float32),
                    influence=rng.normal(size=(8, 2, 4, 4)).astype(np.float32), log_volume=rng.normal(size=8),
                    labels=labels, timesteps=[0, 10])
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    return {"root": tmp_path, "active": str(Path(run.path).resolve())}


def _model_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/model_data.py").run()
    _no_exception(at)
    return at


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _metric(at: AppTest, label: str) -> float:
    found = [m for m in at.metric if m.label == label]
    assert len(found) == 1, [m.label for m in at.metric]
    return float(found[0].value)


def _enter_model(at: AppTest, model: Path | str) -> None:
    at.radio(key="new_model_kind").set_value("Local folder").run()
    at.text_input(key="new_model_path").input(str(model)).run()
    _no_exception(at)


def _shown_summary(at: AppTest) -> dict[str, str]:
    tables = [t.value for t in at.table if t.value.index.name == "Model"]
    assert len(tables) == 1, [t.value for t in at.table]
    return dict(zip(tables[0].index, tables[0].iloc[:, 0]))


def _wait_and_open(at: AppTest, out: Path) -> None:
    """Wait for the page's job to finish, then rerun until the page has opened its run."""
    deadline = time.monotonic() + 90
    while run_status(out) != "complete" and time.monotonic() < deadline:
        time.sleep(0.3)
    assert run_status(out) == "complete", run_status(out)
    for _ in range(20):
        at.run()
        _no_exception(at)
        if at.session_state["active_run"] == str(out.resolve()) and at.session_state["analysis_job"] is None:
            return
        time.sleep(0.3)
    raise AssertionError(f"the finished run was not opened: active {at.session_state['active_run']}")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_is_shown_then_analysed_through_the_page(name, home, tmp_path):
    build_model, build_data, calls_column = FAMILIES[name]
    model = build_model(tmp_path / "model")
    members, heldout = build_data(tmp_path / "data")
    at = _model_page()
    _enter_model(at, model)
    # before anything runs: the core's summary of the folder, the family's own words
    family = family_by_name(name)
    shown = _shown_summary(at)
    assert shown == {what.capitalize(): value for what, value in summarize_model(model).rows()}
    assert shown["Family"] == f"{family.label} [{name}]" and shown["Conditioning"] == family.conditioning
    assert shown["Geometry engine"].startswith("layerwise")  # a standard AutoencoderKL decoder
    assert ("rectified flow" in shown["Schedule"]) == (name in ("sd3", "flux"))
    assert not at.error
    # the analysis through the page's job (the defaults: SimA + PIA at every 30th timestep)
    at.text_input(key="new_members_path").input(str(members))
    at.text_input(key="new_heldout_path").input(str(heldout))
    at.text_input(key="new_run_name").input(f"run-{name}")
    at.button(key="new_start").click().run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    cost = next(d.value for d in at.dataframe if "est. time" in d.value.columns).set_index("stage")
    assert cost.loc["sima", calls_column] == f"{2 * N * 10:,}"  # every image at 10 timesteps
    out = Path(home["root"]) / "runs" / f"run-{name}"
    _wait_and_open(at, out)
    assert json.loads((out / "run.json").read_text())["family"] == name
    # the Masks & ROC page: the AUROCs of the run's own terms (sklearn)
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    terms = np.load(out / "residuals" / "sima.npy")
    influence = np.load(out / "influence.npy")
    settings = json.loads((out / "run.json").read_text())
    labels = np.repeat([1, 0], N)
    t = settings["attacks"]["sima"]["timesteps"].index(at.select_slider(key="sidebar_t").value)
    assert _metric(at, "AUROC (baseline)") == pytest.approx(
        roc_auc_score(labels, -terms.astype(np.float64).sum(axis=(2, 3, 4))[:, t]), abs=1e-12)
    drop = at.slider(key="drop_percent").value
    masked = masked_statistic(terms, percentile_drop_mask(influence, drop))[:, t]
    assert _metric(at, "AUROC (masked)") == pytest.approx(roc_auc_score(labels, -masked), abs=1e-12)


def test_an_unrecognised_folder_is_named_and_nothing_starts(home, tmp_path, tiny_caption_dirs):
    model = build_tiny_conditional(tmp_path / "unknown")
    cfg_path = model / "unet" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), "addition_embed_type": "image"}))
    (model / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(ModelLoadError) as family_error:
        detect_family(model)
    at = _model_page()
    at.text_input(key="new_members_path").input(str(tiny_caption_dirs[0]))
    _enter_model(at, model)
    errors = [e.value for e in at.error]
    assert errors == [f"This model cannot be analysed: {family_error.value}"]
    assert not [t for t in at.table if t.value.index.name == "Model"]
    assert not at.get("expander") or all("Details" not in e.label for e in at.expander)  # no traceback
    assert at.button(key="new_start").disabled and at.button(key="new_estimate").disabled  # nothing can start
    assert at.session_state["analysis_job"] is None
    # the user's state is kept: the inputs, the active run
    assert at.text_input(key="new_members_path").value == str(tiny_caption_dirs[0])
    assert at.text_input(key="new_model_path").value == str(model)
    assert at.session_state["active_run"] == home["active"]
    # the folder fixed (a plain SD UNet again): the family shows and the buttons come back
    fixed = shutil.copytree(model, tmp_path / "fixed")
    (fixed / "model_index.json").unlink()
    cfg = json.loads((fixed / "unet" / "config.json").read_text())
    (fixed / "unet" / "config.json").write_text(json.dumps({**cfg, "addition_embed_type": None}))
    at.text_input(key="new_model_path").input(str(fixed)).run()
    _no_exception(at)
    assert not at.error and _shown_summary(at)["Family"] == f"{family_by_name('sd').label} [sd]"
    assert not at.button(key="new_start").disabled
