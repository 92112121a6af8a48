"""Tests of the Streamlit dashboard with streamlit.testing.v1.AppTest.

One small run is computed per session with the real analysis pipeline (a tiny random
diffusers model, real PNG images, SimA + PFAMI at three timesteps); the app is pointed at it
with LDMINV_RUN. Expected numbers are recomputed here from the run's files with the core
(masks / metrics) and checked against sklearn.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, roc_curve
from streamlit.testing.v1 import AppTest

from ldminv_app import distortion_view, masks_view
from ldminv_app.cards import FINDING_LABELS
from ldminv_core import metrics
from ldminv_core.pipeline.batches import AnalysisCancelled
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.evaluation import DEFAULT_N_BOOT, finding_title
from ldminv_core.masks import DropSweep, manual_mask, masked_statistic, percentile_drop_mask
from ldminv_core.runs import Run, run_status

from support.apptest import APP, LATENT_CHANNELS, PAGES, open_tab, settle
from support.apptest import arr as _arr, build_model as _build_model, charts as _charts
from tiny_models import write_image_folder

# The pages run on a real analysis computed once per session and every page script runs: over ~10 s.
pytestmark = pytest.mark.slow

TIMEOUT = 90


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A model, two image folders and one finished run under <home>/runs/fixture."""
    base = tmp_path_factory.mktemp("app")
    model = _build_model(base / "model")
    members = base / "members"
    heldout = base / "heldout"
    write_image_folder(members, 8, seed=1, prefix="m", formats=("png",))
    write_image_folder(heldout, 8, seed=2, prefix="h", formats=("png",))
    home = base / "home"
    config = AnalyzeConfig(
        model=str(model),
        members=str(members),
        heldout=str(heldout),
        out=str(home / "runs" / "fixture"),
        attacks=("sima", "pfami"),
        timesteps="0,10,20",
        topk=4,
        device="cpu",
        batch_size=16,
    )
    run_dir = run_analysis(config)
    return {"base": base, "model": model, "members": members, "heldout": heldout, "home": home, "run": run_dir,
            "config": config}


@pytest.fixture
def env(world, monkeypatch):
    monkeypatch.setenv("LDMINV_HOME", str(world["home"]))
    monkeypatch.setenv("LDMINV_RUN", str(world["run"]))
    return world


@pytest.fixture(scope="session")
def arrays(world):
    """The run's arrays read straight from its files."""
    run_dir = Path(world["run"])
    samples = pd.read_parquet(run_dir / "samples.parquet")
    settings = json.loads((run_dir / "run.json").read_text())
    return {
        "labels": (samples["split"].to_numpy() == "member").astype(np.int8),
        "log_volume": samples["log_volume"].to_numpy(),
        "terms": np.load(run_dir / "residuals" / "sima.npy"),
        "influence": np.load(run_dir / "influence.npy"),
        "pfami": np.load(run_dir / "scores" / "pfami.npy").astype(np.float64),
        "timesteps": settings["attacks"]["sima"]["timesteps"],
    }


def _best_t_index(arrays) -> int:
    """Best baseline timestep of SimA, from sklearn."""
    stat = arrays["terms"].astype(np.float64).sum(axis=(2, 3, 4))
    aucs = [roc_auc_score(arrays["labels"], -stat[:, t]) for t in range(stat.shape[1])]
    return int(np.argmax(aucs))


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    settle(at)  # the Findings page's background sections
    assert not at.exception, [e.value for e in at.exception]


def _metric(at: AppTest, label: str) -> float:
    found = [m for m in at.metric if m.label == label]
    assert len(found) == 1, [m.label for m in at.metric]
    return float(found[0].value)


def _quartile_aurocs(scores: np.ndarray, labels: np.ndarray, log_volume: np.ndarray) -> list[float]:
    """sklearn AUROC within each log-volume quartile (stable sort, array_split); NaN if one class."""
    out = []
    for idx in np.array_split(np.argsort(log_volume, kind="stable"), 4):
        y = labels[idx]
        out.append(float(roc_auc_score(y, scores[idx])) if 0 < y.sum() < len(y) else float("nan"))
    return out


# --------------------------------------------------------------------------- tests


def test_every_page_renders_on_the_run(env, arrays):
    at = _app().run()
    _no_exception(at)
    run_path = str(Path(env["run"]).resolve())
    assert at.session_state["active_run"] == run_path
    sidebar = "\n".join(m.value for m in at.sidebar.markdown)
    assert "8 members / 8 held-out" in sidebar
    assert f"latent {LATENT_CHANNELS}×4×4" in sidebar
    assert at.selectbox(key="sidebar_attack").value == "sima"
    assert at.select_slider(key="sidebar_t").value == arrays["timesteps"][_best_t_index(arrays)]
    titles = {}
    for page in PAGES:
        at.switch_page(page).run()
        _no_exception(at)
        assert not at.error, [e.value for e in at.error]
        titles[page] = at.title[0].value
        assert at.session_state["active_run"] == run_path
    assert titles == {
        "pages/findings.py": "Findings",
        "pages/model_data.py": "Model & data",
        "pages/distortion.py": "Distortion",
        "pages/dimensions.py": "Dimensions",
        "pages/masks_roc.py": "Masks & ROC",
        "pages/latent_map.py": "Latent map",
        "pages/compare.py": "Compare",
    }


def test_drop_slider_sets_masked_auroc_exactly(env, arrays):
    at = _app().run()
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    terms, influence, labels = arrays["terms"], arrays["influence"], arrays["labels"]
    t = _best_t_index(arrays)
    sweep = DropSweep.by_influence(terms, influence)

    def expected(p: int) -> float:
        value = metrics.auroc(-sweep.statistic(p)[:, t], labels)
        oracle = roc_auc_score(labels, -masked_statistic(terms, percentile_drop_mask(influence, p))[:, t])
        assert value == pytest.approx(oracle, abs=1e-12)
        return value

    assert at.slider(key="drop_percent").value == 40
    assert _metric(at, "AUROC (masked)") == expected(40)
    # a percentage whose masked AUROC differs from the one at 40 %
    others = [p for p in range(5, 91, 5) if expected(p) != expected(40)]
    assert others, "every drop percentage gives the same AUROC on the fixture"
    p = others[-1]
    at.slider(key="drop_percent").set_value(p).run()
    _no_exception(at)
    assert _metric(at, "AUROC (masked)") == expected(p)
    assert _metric(at, "AUROC (baseline)") == pytest.approx(
        roc_auc_score(labels, -terms.astype(np.float64).sum(axis=(2, 3, 4))[:, t]), abs=1e-12
    )
    # the drop-percentage curve (its tab) holds the same numbers (DropSweep.statistics + evaluate_many)
    open_tab(at, masks_view.CHART_VIEW_KEY, "Against the drop %")
    _no_exception(at)
    curve = next(v for k, v in _charts(at).items() if k.startswith("AUROC vs drop"))
    masked_trace = next(tr for tr in curve["data"] if tr.get("name") == "masked")
    xs, ys = list(_arr(masked_trace["x"])), _arr(masked_trace["y"])
    for q in (0, 40, 90):
        assert ys[xs.index(q)] == pytest.approx(expected(q), abs=1e-12)


def test_timestep_and_attack_switch_update_figures(env, arrays):
    at = _app().run()
    at.switch_page("pages/distortion.py").run()
    _no_exception(at)
    labels, lv = arrays["labels"], arrays["log_volume"]
    stat = arrays["terms"].astype(np.float64).sum(axis=(2, 3, 4))
    timesteps = arrays["timesteps"]

    def bars(at):
        fig = next(v for k, v in _charts(at).items() if "by distortion quartile" in k)
        return fig["layout"]["title"]["text"], _arr(fig["data"][0]["y"]).astype(float)

    title0, y0 = bars(at)
    t0 = at.select_slider(key="sidebar_t").value
    np.testing.assert_allclose(y0, _quartile_aurocs(-stat[:, timesteps.index(t0)], labels, lv), atol=1e-12)

    new_t = next(t for t in timesteps if t != t0)
    at.select_slider(key="sidebar_t").set_value(new_t).run()
    _no_exception(at)
    title1, y1 = bars(at)
    assert title1 != title0 and f"t = {new_t}" in title1
    np.testing.assert_allclose(y1, _quartile_aurocs(-stat[:, timesteps.index(new_t)], labels, lv), atol=1e-12)
    assert at.session_state["timestep_by_attack"][f"{Path(env['run']).resolve()}|sima"] == new_t

    at.selectbox(key="sidebar_attack").select("pfami").run()
    _no_exception(at)
    assert at.session_state["attack"] == "pfami"
    title2, y2 = bars(at)
    assert "PFAMI" in title2
    np.testing.assert_allclose(y2, _quartile_aurocs(arrays["pfami"], labels, lv), atol=1e-12)
    # the other pages follow the shared attack
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    assert at.selectbox(key="masks_attack").value == "pfami"
    assert any("cannot be masked" in i.value for i in at.info)
    at.selectbox(key="masks_attack").select("sima").run()
    _no_exception(at)
    assert at.selectbox(key="sidebar_attack").value == "sima"
    # the sima timestep chosen before the switch is still in use
    assert at.select_slider(key="sidebar_t").value == new_t


def test_bad_inputs_on_model_page_show_errors_and_keep_the_run(env, tmp_path):
    at = _app().run()
    run_path = at.session_state["active_run"]
    at.switch_page("pages/model_data.py").run()
    _no_exception(at)
    at.radio(key="new_model_kind").set_value("Local folder").run()
    at.text_input(key="new_members_path").input(str(env["members"]))
    at.text_input(key="new_heldout_path").input(str(env["heldout"]))

    def one_error() -> str:
        _no_exception(at)
        assert at.session_state["active_run"] == run_path
        assert at.session_state["analysis_job"] is None
        errors = [e.value for e in at.error]
        assert len(errors) == 1, errors
        return errors[0]

    def start(model: str, heldout: str | None = None) -> str:
        at.text_input(key="new_model_path").input(model)
        if heldout is not None:
            at.text_input(key="new_heldout_path").input(heldout)
        at.run()  # the model is checked as it is entered: Start is enabled again for a good one
        assert not at.button(key="new_start").disabled
        at.button(key="new_start").click().run()
        return one_error()

    def refused(model: str) -> str:
        """A model the loader would refuse is named as soon as it is entered; nothing can start."""
        at.text_input(key="new_model_path").input(model).run()
        assert at.button(key="new_start").disabled and at.button(key="new_estimate").disabled
        msg = one_error()
        assert msg.startswith("This model cannot be analysed: ")
        return msg

    missing = tmp_path / "no_such_model"
    msg = refused(str(missing))
    assert str(missing) in msg and "does not exist" in msg

    msg = refused(str(env["members"]))  # a folder of images, not a model
    assert str(env["members"]) in msg and "vae/" in msg

    mismatched = _build_model(tmp_path / "mismatched", unet_channels=LATENT_CHANNELS + 1)
    msg = refused(str(mismatched))
    assert "channels" in msg.lower() and str(mismatched.name) in msg

    empty = tmp_path / "empty_heldout"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    msg = start(str(env["model"]), heldout=str(empty))
    assert str(empty) in msg and "no usable image" in msg

    # the rest of the state is kept: inputs, attack, sidebar
    assert at.text_input(key="new_heldout_path").value == str(empty)
    assert at.text_input(key="new_members_path").value == str(env["members"])
    assert at.selectbox(key="sidebar_attack").value == "sima"
    assert "8 members / 8 held-out" in "\n".join(m.value for m in at.sidebar.markdown)


def test_delete_asks_for_confirmation(env):
    victim = Path(env["home"]) / "runs" / "to_delete"
    shutil.copytree(env["run"], victim)
    at = _app().run()
    at.switch_page("pages/model_data.py").run()
    _no_exception(at)
    at.selectbox(key="runs_pick").select(str(victim.resolve())).run()
    at.button(key="runs_delete").click().run()
    _no_exception(at)
    assert any("Delete the run" in w.value and "to_delete" in w.value for w in at.warning)
    assert victim.is_dir()  # nothing deleted before the confirmation
    at.button(key="runs_delete_cancel").click().run()
    assert victim.is_dir() and not at.warning
    at.button(key="runs_delete").click().run()
    at.button(key="runs_delete_confirm").click().run()
    _no_exception(at)
    assert not victim.exists()
    assert Path(env["run"]).is_dir()
    assert at.session_state["active_run"] == str(Path(env["run"]).resolve())
    assert str(victim.resolve()) not in at.selectbox(key="runs_pick").options


def test_manual_mask_from_dimensions_page(env, arrays):
    at = _app().run()
    at.switch_page("pages/dimensions.py").run()
    _no_exception(at)
    t = _best_t_index(arrays)
    # the coordinate table: AUROC of each coordinate alone, against sklearn
    table = at.dataframe[0].value
    terms_t = arrays["terms"][:, t].reshape(len(arrays["labels"]), -1).astype(np.float64)
    for _, row in table.head(5).iterrows():
        expected = roc_auc_score(arrays["labels"], -terms_t[:, int(row["coord"])])
        assert row["auroc"] == pytest.approx(expected, abs=1e-12)
    picked = [int(c) for c in table["coord"].head(6)]
    at.multiselect(key="dim_picked").set_value(picked).run()
    _no_exception(at)
    assert sorted(at.session_state["manual_coords"][str(Path(env["run"]).resolve())]) == sorted(picked)

    at.switch_page("pages/masks_roc.py").run()
    at.toggle(key="use_manual").set_value(True).run()
    _no_exception(at)
    table = next(df.value for df in at.dataframe if "manual" in df.value.index)
    keep = manual_mask(arrays["influence"].shape[1:], coords=picked)
    scores = -masked_statistic(arrays["terms"], keep)[:, t]
    assert float(table.loc["manual", "AUROC"]) == pytest.approx(roc_auc_score(arrays["labels"], scores), abs=5e-5)


def test_latent_map_uses_the_cached_embedding(env):
    run = Run.open(env["run"])
    at = _app().run()
    at.switch_page("pages/latent_map.py").run()
    _no_exception(at)
    assert at.button(key="umap_compute").label == "Compute the UMAP"  # nothing cached yet
    # store an embedding as cached_umap_embedding does (spares this test the numba compile)
    xy = np.random.default_rng(0).normal(size=(len(run), 2)).astype(np.float32)
    np.save(Path(env["run"]) / "umap.npy", xy)
    (Path(env["run"]) / "umap.json").write_text(json.dumps({"seed": 0, "n_neighbors": 15, "n": len(run)}))
    at.run()
    _no_exception(at)
    fig = next(v for k, v in _charts(at).items() if k.startswith("UMAP"))
    np.testing.assert_allclose(_arr(fig["data"][0]["x"]), xy[:, 0], rtol=1e-6)
    np.testing.assert_allclose(_arr(fig["data"][0]["marker"]["color"]), run.log_volume, rtol=1e-6)
    at.selectbox(key="umap_color").select("split").run()
    _no_exception(at)
    fig = next(v for k, v in _charts(at).items() if k.startswith("UMAP"))
    colors = _arr(fig["data"][0]["marker"]["color"])
    assert len(set(colors[run.labels == 1])) == 1 and len(set(colors[run.labels == 0])) == 1
    assert set(colors[run.labels == 1]) != set(colors[run.labels == 0])


def test_startup_opens_the_cached_demo_run_and_reports_a_bad_env_run(world, monkeypatch, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(world["run"], home / "runs" / "demo")
    monkeypatch.setenv("LDMINV_HOME", str(home))
    monkeypatch.delenv("LDMINV_RUN", raising=False)
    at = _app().run()
    _no_exception(at)
    assert at.session_state["active_run"] == str((home / "runs" / "demo").resolve())
    assert at.title[0].value == "Findings"

    monkeypatch.setenv("LDMINV_RUN", str(tmp_path / "missing_run"))
    at = _app().run()
    _no_exception(at)
    assert at.session_state["active_run"] is None
    assert any("LDMINV_RUN" in e.value and "missing_run" in e.value for e in at.sidebar.error)
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    assert any("No run is open" in i.value for i in at.info)


def test_analysis_job_cancel_and_resume(world, tmp_path):
    from ldminv_app.jobs import AnalysisJob

    config = AnalyzeConfig(
        model=str(world["model"]), members=str(world["members"]), heldout=str(world["heldout"]),
        out=str(tmp_path / "job_run"), attacks=("sima",), timesteps="0", topk=2, device="cpu",
        batch_size=2, limit=2,
    )
    job = AnalysisJob(label="job", config=config, target=run_analysis, cancelled_exc=AnalysisCancelled)
    job.cancel()  # stop after the first batch of the first stage
    job.start()
    assert job.wait(timeout=120)
    state = job.state()
    assert state.status == "cancelled" and isinstance(state.error, AnalysisCancelled)
    assert run_status(tmp_path / "job_run") == "unfinished"
    assert state.stages_seen and state.stages_seen[0] == "encode"

    resumed = AnalysisJob(label="job", config=config, target=run_analysis, cancelled_exc=AnalysisCancelled).start()
    assert resumed.wait(timeout=120)
    done = resumed.state()
    assert done.status == "done", done.error_details
    assert done.result == (tmp_path / "job_run").resolve()
    assert done.stages_seen == ["encode", "blind", "sima", "geometry"]  # cheap stages first
    assert (done.done, done.total) == (4, 4)
    assert len(Run.open(done.result)) == 4


def test_first_start_computes_the_preview_then_the_demo_once_then_opens_it(world, monkeypatch, tmp_path):
    """The first start opens the preview (every tenth timestep of the demo's grid), labelled, then
    switches to the demo run by itself once the demo has an attack; a later start opens the cached
    demo run. The runs are computed in this process here (the stand-in demo is a monkeypatch, which
    a process of their own would not see; tests/app/test_subprocess_job.py and the first-start
    browser test cover the processes)."""
    from ldminv_core import demo, first_start

    from ldminv_app import startup

    # a small stand-in for the bundled demo: the fixture's model and images
    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", Path(world["model"]))
    monkeypatch.setattr(demo, "DEMO_MEMBERS_DIR", Path(world["members"]))
    monkeypatch.setattr(demo, "DEMO_HELDOUT_DIR", Path(world["heldout"]))
    monkeypatch.setattr(
        demo, "DEMO_ANALYZE_DEFAULTS",
        {"attacks": ("sima", "pia"), "timesteps": "0:110:10", "topk": 2, "batch_size": 8, "limit": 2},
    )
    monkeypatch.setattr(startup, "_run", lambda what, out, *, progress, should_stop: first_start.RUNS[what](
        out, progress=progress, should_stop=should_stop))
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LDMINV_RUN", raising=False)
    demo_dir = (tmp_path / "home" / "runs" / "demo").resolve()
    preview_dir = (tmp_path / "home" / "runs" / "demo-preview").resolve()
    assert run_status(demo_dir) is None

    at = _app().run(timeout=120)
    _no_exception(at)
    # the preview opens first, labelled, with its own numbers
    assert run_status(preview_dir) == "complete"
    assert Run.open(preview_dir).timesteps("sima") == [0, 100]
    assert at.session_state["active_run"] == str(preview_dir)
    assert at.title[0].value == "Findings"
    assert any("Quick preview of the demo" in i.value and "t = 0, 100" in i.value for i in at.info)
    assert any("AUROC" in m.label for m in at.metric)
    deadline = time.monotonic() + 120
    while run_status(demo_dir) != "complete" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run_status(demo_dir) == "complete"
    at.run()  # the preview's banner sees the demo's first attack and switches to it
    _no_exception(at)
    assert at.session_state["active_run"] == str(demo_dir)
    assert not any("Quick preview" in i.value for i in at.info)
    assert not any("Partial run" in i.value for i in at.info)
    stamp = (demo_dir / "run.json").stat().st_mtime_ns

    at = _app().run()  # a later start opens the cached run without recomputing it
    _no_exception(at)
    assert at.session_state["active_run"] == str(demo_dir)
    assert (demo_dir / "run.json").stat().st_mtime_ns == stamp


def test_missing_demo_assets_are_reported(monkeypatch, tmp_path):
    from ldminv_core import demo

    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", tmp_path / "no_model")
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LDMINV_RUN", raising=False)
    at = _app().run()
    _no_exception(at)
    assert at.session_state["active_run"] is None
    assert any("demo assets are missing" in e.value and "no_model" in e.value for e in at.error)
    at.switch_page("pages/model_data.py").run()  # the rest of the app still works
    _no_exception(at)
    assert at.title[0].value == "Model & data"


def test_uploaded_zip_becomes_an_image_folder(tmp_path):
    import io
    import zipfile

    from ldminv_app.uploads import save_uploads

    src = write_image_folder(tmp_path / "src", 3, seed=5, prefix="z", formats=("png",))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(src[0], "nested/dir/a.png")
        zf.write(src[1], "../escape.png")
        zf.writestr("notes.txt", "not an image")
        zf.writestr("__MACOSX/._a.png", "resource fork")
    out = save_uploads([("data.zip", buf.getvalue()), ("single.png", src[2].read_bytes())], tmp_path / "up" / "members")
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "escape.png", "single.png"]
    assert (out / "a.png").read_bytes() == src[0].read_bytes()
    assert not (tmp_path / "up" / "escape.png").exists()
    from ldminv_core.errors import DataLoadError

    with pytest.raises(DataLoadError, match="uploads"):
        save_uploads([("notes.txt", b"text")], tmp_path / "up2")


def test_a_broken_run_gives_messages_not_tracebacks(world, monkeypatch, tmp_path):
    broken = tmp_path / "runs" / "broken"
    shutil.copytree(world["run"], broken)
    terms = np.load(broken / "residuals" / "sima.npy")
    terms[0, 0, 0, 0, 0] = np.nan
    np.save(broken / "residuals" / "sima.npy", terms)
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    monkeypatch.setenv("LDMINV_RUN", str(broken))
    at = _app().run()
    for page in ("pages/masks_roc.py", "pages/dimensions.py", "pages/distortion.py"):
        at.switch_page(page).run()
        _no_exception(at)
        messages = [e.value for e in at.error]
        assert any("terms" in m and "finite" in m for m in messages), messages


# ----------------------------------------------------------------------------- findings and protocols


def _finding_lines(at: AppTest) -> dict[str, str]:
    """The markdown lines of the finding cards: "<label>: **<estimate>**, 95% CI [lo, hi]"."""
    return {m.value.split(":")[0]: m.value for m in at.markdown if "95% CI" in m.value and "**" in m.value}


def _select_protocol(at: AppTest, protocol: str, *, folds: int = 2) -> None:
    """Choose a protocol in the sidebar (and, for honest, the number of folds)."""
    if protocol != at.session_state["protocol"]:
        at.selectbox(key="sidebar_protocol").select(protocol).run()
        _no_exception(at)
    if protocol == "honest":
        at.number_input(key="sidebar_folds").set_value(folds).run()
        _no_exception(at)
    assert at.session_state["protocol"] == protocol


def _dataframe_with(at: AppTest, column: str) -> pd.DataFrame:
    settle(at)
    found = [df.value for df in at.dataframe if column in df.value.columns]
    assert len(found) == 1, [list(df.value.columns) for df in at.dataframe]
    return found[0]


def _sklearn_tpr_at_1fpr(y: np.ndarray, score: np.ndarray, *, strict: bool = False) -> float:
    """Largest TPR among ROC points with FPR <= 1% (``strict``: FPR < 1%), positives y == 1."""
    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    ok = fpr < 0.01 if strict else fpr <= 0.01
    return float(tpr[ok].max())


def _sklearn_baseline(arrays, attack: str, protocol: str) -> dict[str, float]:
    """Baseline AUROC and TPR@1%FPR of an attack from the run's files with sklearn: ``standard`` at
    the best-AUROC t (members positive); ``paper`` each metric at its own best t, TPR with held-out
    images positive, the statistic as score and FPR < 1% strictly."""
    y = arrays["labels"]
    if attack == "pfami":
        stat = -arrays["pfami"][:, None]
    else:
        stat = arrays["terms"].astype(np.float64).sum(axis=(2, 3, 4))
    aucs = np.array([roc_auc_score(y, -stat[:, t]) for t in range(stat.shape[1])])
    if protocol == "paper":
        tprs = [_sklearn_tpr_at_1fpr(1 - y, stat[:, t], strict=True) for t in range(stat.shape[1])]
        return {"auroc": float(aucs.max()), "tpr_at_1fpr": float(max(tprs))}
    t = int(np.argmax(aucs))
    return {"auroc": float(aucs[t]), "tpr_at_1fpr": _sklearn_tpr_at_1fpr(y, -stat[:, t])}


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
def test_findings_page_shows_the_evaluation_of_the_protocol(env, arrays, protocol):
    from ldminv_core.evaluation import Evaluation, make_protocol

    at = _app().run()
    _no_exception(at)
    assert at.title[0].value == "Findings"
    _select_protocol(at, protocol)
    folds = 2 if protocol == "honest" else 5
    proto = make_protocol(protocol, folds=folds)
    run = Run.open(env["run"])
    ev = Evaluation(run, "sima", proto, n_boot=DEFAULT_N_BOOT)
    res = ev.result()
    # the caption names the protocol with its description
    captions = "\n".join(c.value for c in at.caption)
    assert f"protocol **{protocol}**: {proto.description}" in captions
    # every finding's statement, estimate, interval and coloured verdict, as the core computes them
    text = "\n".join(m.value for m in at.markdown)
    lines = _finding_lines(at)
    assert len(lines) == len(res.findings) >= 3
    for f in res.findings:
        assert f.statement in text, f.id
        line = lines[FINDING_LABELS[f.id]]  # by the card's label: two findings may share an estimate
        assert f"**{f.estimate:+.4f}**" in line and f"[{f.ci[0]:+.4f}, {f.ci[1]:+.4f}]" in line
        assert f":{ {'supported': 'green', 'contradicted': 'red'}.get(f.verdict, 'gray')}-badge[{f.verdict}]" in text
    charts = _charts(settle(at))
    # the quartile chart: AUROC per quartile with its interval, from the core and sklearn (standard)
    bars = next(v for k, v in charts.items() if k.startswith("Baseline AUROC by distortion quartile"))
    ys = _arr(bars["data"][0]["y"]).astype(float)
    np.testing.assert_allclose(ys, [q.auroc for q in res.quartiles], atol=1e-12, equal_nan=True)
    err = bars["data"][0]["error_y"]
    np.testing.assert_allclose(ys + _arr(err["array"]).astype(float), [q.auroc_ci[1] for q in res.quartiles],
                               atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(ys - _arr(err["arrayminus"]).astype(float), [q.auroc_ci[0] for q in res.quartiles],
                               atol=1e-12, equal_nan=True)
    if protocol == "standard":
        stat = arrays["terms"].astype(np.float64).sum(axis=(2, 3, 4))
        t = _best_t_index(arrays)
        np.testing.assert_allclose(ys, _quartile_aurocs(-stat[:, t], arrays["labels"], arrays["log_volume"]),
                                   atol=1e-12, equal_nan=True)
    # the masking chart: masked line and band, random mean and seed band, baseline, at the headline t
    curves = ev.drop_curves(ev.headline_t_index())
    drop = next(v for k, v in charts.items() if k.startswith("AUROC vs drop %"))
    assert f"t = {curves.t}" in drop["layout"]["title"]["text"]
    # drawn once for the two masking cards; the second names the card that holds it
    titles = [json.loads(el.proto.spec)["layout"]["title"]["text"] for el in at.get("plotly_chart")]
    assert sum(t.startswith("AUROC vs drop %") for t in titles) == 1, titles
    assert any("The curve against the drop %" in c.value and finding_title("masking_vs_baseline") in c.value
               for c in at.caption)
    traces = {tr.get("name"): tr for tr in drop["data"]}
    np.testing.assert_allclose(_arr(traces["masked"]["y"]).astype(float), curves.masked["auroc"], atol=1e-12)
    np.testing.assert_allclose(_arr(traces["random (mean of 5 seeds)"]["y"]).astype(float),
                               curves.random_mean["auroc"], atol=1e-12)
    np.testing.assert_allclose(_arr(traces["baseline"]["y"]).astype(float), curves.baseline["auroc"], atol=1e-12)
    band = _arr(traces["random: range over 5 seeds"]["y"]).astype(float)
    k = len(curves.percents)
    np.testing.assert_allclose(band[:k], curves.random_hi["auroc"], atol=1e-12)
    np.testing.assert_allclose(band[k:], curves.random_lo["auroc"][::-1], atol=1e-12)
    # the attack overview: both attacks' baseline AUROC and TPR@1%FPR in one grouped bar chart and a table
    overview = next(v for k, v in charts.items() if k.startswith("Baseline AUROC and TPR@1%FPR of every attack"))
    assert protocol in overview["layout"]["title"]["text"]
    assert [tr["name"] for tr in overview["data"]] == ["AUROC", "TPR@1%FPR"]
    table = _dataframe_with(at, "TPR@1%FPR 95% CI").set_index("attack")
    for i, name in enumerate(("sima", "pfami")):
        arm = Evaluation(run, name, proto, n_boot=DEFAULT_N_BOOT).arms()["baseline"]
        assert _arr(overview["data"][0]["y"]).astype(float)[i] == pytest.approx(arm.auroc, abs=1e-12)
        assert _arr(overview["data"][1]["y"]).astype(float)[i] == pytest.approx(arm.tpr_at_1fpr, abs=1e-12)
        label = {"sima": "SimA", "pfami": "PFAMI"}[name]
        assert table.loc[label, "AUROC"] == pytest.approx(arm.auroc, abs=1e-12)
        assert table.loc[label, "TPR@1%FPR"] == pytest.approx(arm.tpr_at_1fpr, abs=1e-12)
        assert table.loc[label, "AUROC 95% CI"] == f"[{arm.ci['auroc'][0]:.4f}, {arm.ci['auroc'][1]:.4f}]"
        if protocol == "honest":
            assert table.loc[label, "realised FPR"] == pytest.approx(arm.realised_fpr_at_1fpr, abs=1e-12)
        else:
            assert "realised FPR" not in table.columns
            oracle = _sklearn_baseline(arrays, name, protocol)
            assert arm.auroc == pytest.approx(oracle["auroc"], abs=1e-12)
            assert arm.tpr_at_1fpr == pytest.approx(oracle["tpr_at_1fpr"], abs=1e-12)
    # the caption names the t of every attack
    overview_caption = next(c.value for c in at.caption if c.value.startswith(f"{protocol} protocol; TPR@1%FPR"))
    for name in ("sima", "pfami"):
        arm = Evaluation(run, name, proto, n_boot=DEFAULT_N_BOOT).arms()["baseline"]
        ts = [f.t for f in arm.folds]
        if protocol != "honest":
            t_words = arm.t_text
        elif name == "pfami":
            t_words = "no timestep"
        else:  # "t = 10 in every fold" or "t per fold: 10, 20"
            t_words = f"t = {ts[0]} in every fold" if len(set(ts)) == 1 else "t per fold: " + ", ".join(map(str, ts))
        assert f"{'SimA' if name == 'sima' else 'PFAMI'}: {t_words}" in overview_caption
    if protocol == "honest":
        # realised FPR beside TPR on the masking cards as well
        assert f"masked {res.masked.realised_fpr_at_1fpr:.4f}" in captions
    # the sidebar says which protocol chose the headline t
    sidebar = "\n".join(c.value for c in at.sidebar.caption)
    assert f"chosen by the {protocol} protocol" in sidebar
    b = res.baseline
    if protocol == "paper":
        assert (f"baseline AUROC t = {b.best_t['auroc']}, TPR@1%FPR t = {b.best_t['tpr_at_1fpr']}, "
                f"ASR t = {b.best_t['asr']}") in sidebar
    elif protocol == "honest":
        assert "t per fold " + ", ".join(str(f.t) for f in b.folds) in sidebar
    else:
        assert f"Headline t = {b.best_t['auroc']}, chosen by the standard protocol" in sidebar
    # links to the pages that explain the findings
    links = {link.proto.page for link in at.get("page_link")}
    assert {"distortion", "masks_roc"} <= links  # the url path names of pages/distortion.py, pages/masks_roc.py


def test_protocol_selector_changes_the_numbers_on_the_findings_page(env):
    from ldminv_core.evaluation import Evaluation, make_protocol

    run = Run.open(env["run"])
    at = _app().run()
    _no_exception(at)

    def shown() -> tuple[float, float]:
        table = _dataframe_with(at, "TPR@1%FPR 95% CI").set_index("attack")
        return float(table.loc["SimA", "TPR@1%FPR"]), float(table.loc["SimA", "AUROC"])

    values = {}
    for protocol in ("standard", "paper", "honest"):
        _select_protocol(at, protocol)
        arm = Evaluation(run, "sima", make_protocol(protocol, folds=2 if protocol == "honest" else 5),
                         n_boot=DEFAULT_N_BOOT).arms()["baseline"]
        values[protocol] = shown()
        assert values[protocol] == (pytest.approx(arm.tpr_at_1fpr, abs=1e-12), pytest.approx(arm.auroc, abs=1e-12))
    # paper's TPR is held-out TPR at member FPR < 1%; honest's AUROC is a mean over folds
    assert values["paper"][0] != values["standard"][0]
    assert values["honest"] != values["standard"]
    # more folds change the honest numbers again
    at.number_input(key="sidebar_folds").set_value(3).run()
    _no_exception(at)
    arm3 = Evaluation(run, "sima", make_protocol("honest", folds=3), n_boot=DEFAULT_N_BOOT).arms()["baseline"]
    assert shown() == (pytest.approx(arm3.tpr_at_1fpr, abs=1e-12), pytest.approx(arm3.auroc, abs=1e-12))


def test_protocol_selector_changes_the_numbers_and_honest_shows_realised_fpr(env):
    from ldminv_core.evaluation import Evaluation, make_protocol
    from ldminv_core.formatting import format_rate, format_rate_ci

    at = _app().run()
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    # no bare deltas on the metric cards; every card names its protocol, t and interval
    assert all(m.proto.delta == "" for m in at.metric), [m.proto.delta for m in at.metric]
    run = Run.open(env["run"])
    std = Evaluation(run, "sima", "standard", n_boot=DEFAULT_N_BOOT).arms()
    tpr_standard = _metric(at, "TPR@1%FPR (baseline)")
    assert tpr_standard == pytest.approx(std["baseline"].tpr_at_1fpr)
    captions = "\n".join(c.value for c in at.caption)
    ci = std["masked"].ci["auroc"]
    assert f"standard · {std['masked'].t_text} · drop 40 % · 95% CI {format_rate_ci(ci)}" in captions  # rates as 4-decimal fractions
    # the masking differences with their intervals and verdicts (from the findings)
    lines = _finding_lines(at)
    for f in Evaluation(run, "sima", "standard", n_boot=DEFAULT_N_BOOT).findings(40.0):
        if f.id.startswith("masking"):
            assert any(f"**{f.estimate:+.4f}**, 95% CI [{f.ci[0]:+.4f}, {f.ci[1]:+.4f}]" in v for v in lines.values())
    # the random control's spread over its seeds
    rand = std["random"]
    assert (f"AUROC {format_rate(min(rand.per_seed['auroc']))} to {format_rate(max(rand.per_seed['auroc']))}"
            in captions)

    _select_protocol(at, "paper")
    paper = Evaluation(run, "sima", "paper", n_boot=DEFAULT_N_BOOT).arms()
    tpr_paper = _metric(at, "TPR@1%FPR (baseline)")
    assert tpr_paper == pytest.approx(paper["baseline"].tpr_at_1fpr)
    assert tpr_paper != pytest.approx(tpr_standard)
    captions = "\n".join(c.value for c in at.caption)
    # each metric's own best t under paper
    for arm in (paper["baseline"], paper["masked"]):
        for m in ("auroc", "tpr_at_1fpr"):
            assert f"paper · t = {arm.best_t[m]} ·" in captions

    _select_protocol(at, "honest", folds=2)
    honest = Evaluation(run, "sima", make_protocol("honest", folds=2), n_boot=DEFAULT_N_BOOT)
    arms = honest.arms()
    assert _metric(at, "AUROC (baseline)") == pytest.approx(arms["baseline"].auroc)
    assert _metric(at, "TPR@1%FPR (masked)") == pytest.approx(arms["masked"].tpr_at_1fpr)
    captions = "\n".join(c.value for c in at.caption)
    assert f"realised FPR {format_rate(arms['baseline'].realised_fpr_at_1fpr)}" in captions
    assert f"realised FPR {format_rate(arms['masked'].realised_fpr_at_1fpr)}" in captions
    table = _dataframe_with(at, "realised FPR")
    assert list(table.index[:3]) == ["baseline", "masked", "random"]
    for name in ("baseline", "masked", "random"):
        assert float(table.loc[name, "realised FPR"]) == pytest.approx(arms[name].realised_fpr_at_1fpr, abs=5e-5)
        assert float(table.loc[name, "TPR@1%FPR"]) == pytest.approx(arms[name].tpr_at_1fpr, abs=5e-5)
    drops = [f"{f.drop_percent:g}" for f in arms["masked"].folds]
    assert table.loc["masked", "drop % (per fold)"] == (f"{drops[0]} (all)" if len(set(drops)) == 1 else ", ".join(drops))
    ts = [f.t for f in arms["baseline"].folds]
    assert table.loc["baseline", "t (per fold)"] == (f"{ts[0]} (all)" if len(set(ts)) == 1 else ", ".join(map(str, ts)))
    # the folds table: fold, t, drop, threshold, number of samples of every arm's fold
    folds = _dataframe_with(at, "threshold (score ≥)")
    assert len(folds) == 3 * 2
    for name in ("baseline", "masked"):
        rows = folds[folds["variant"] == name].reset_index(drop=True)
        for f, (_, row) in zip(arms[name].folds, rows.iterrows()):
            assert (int(row["fold"]), row["t"], int(row["samples"])) == (f.fold, f.t, len(f.sample_ids))
            assert row["threshold (score ≥)"] == ("+∞ (none)" if f.threshold is None else f"{f.threshold:.6g}")
            assert row["drop %"] == ("–" if f.drop_percent is None else f"{f.drop_percent:g}")


@pytest.mark.parametrize("protocol", ["paper", "honest"])
def test_findings_page_for_an_attack_without_timesteps(env, protocol):
    from ldminv_core.evaluation import Evaluation, make_protocol

    at = _app().run()
    _select_protocol(at, protocol)
    at.selectbox(key="sidebar_attack").select("pfami").run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    res = Evaluation(Run.open(env["run"]), "pfami", make_protocol(protocol, folds=2), n_boot=DEFAULT_N_BOOT).result()
    # the blind-baseline findings first (METHOD.md section 6), then the one geometry finding
    assert [f.id for f in res.findings] == ["blind_baseline", "attack_vs_blind", "attack_within_blind_strata",
                                            "distortion_quartiles"]
    text = "\n".join(m.value for m in at.markdown)
    assert res.findings[-1].statement in text
    assert any("cannot be masked" in c.value for c in at.caption)
    assert not any(k.startswith("AUROC vs drop") for k in _charts(at))


# ----------------------------------------------------------------------------- partial runs


@pytest.fixture(scope="module")
def partial_run(world, tmp_path_factory):
    """The fixture's analysis stopped after its maskable attacks, before the geometry."""
    out = tmp_path_factory.mktemp("partial") / "partial"
    config = AnalyzeConfig(model=str(world["model"]), members=str(world["members"]), heldout=str(world["heldout"]),
                           out=str(out), attacks=("sima", "pfami"), timesteps="0,10", topk=2, device="cpu",
                           batch_size=8, limit=8)
    seen: list[str] = []

    def stop(*_):
        return seen and seen[-1] == "geometry"

    with pytest.raises(AnalysisCancelled):
        run_analysis(config, progress=lambda s, d, t: seen.append(s), should_stop=stop)
    assert run_status(out) == "unfinished"
    return out


def test_partial_run_pages_show_what_exists_and_say_so(world, partial_run, monkeypatch):
    monkeypatch.setenv("LDMINV_HOME", str(world["home"]))
    monkeypatch.setenv("LDMINV_RUN", str(partial_run))
    at = _app().run()
    _no_exception(at)
    assert not at.error, [e.value for e in at.error]
    banner = [i.value for i in at.info if "Partial run" in i.value]
    assert banner and "Finished: SimA." in banner[0] and "PFAMI" in banner[0] and "geometry" in banner[0]
    # the SimA headline numbers are the evaluation layer's, on the finished stage
    run = Run.open(partial_run, partial=True)
    from ldminv_core.evaluation import Evaluation, make_protocol

    base = Evaluation(run, "sima", make_protocol("standard"), n_boot=0).baseline()
    assert _metric(at, "SimA AUROC") == pytest.approx(base.auroc, abs=5e-5)
    assert any("need the decoder geometry" in i.value for i in at.info)
    assert at.sidebar.selectbox(key="sidebar_attack").options == ["SimA"]  # PFAMI is not there yet
    assert any("Resume the analysis" in b.label for b in at.sidebar.button)  # nothing is running it

    for page in ("pages/distortion.py", "pages/masks_roc.py", "pages/dimensions.py", "pages/latent_map.py"):
        at.switch_page(page).run()
        _no_exception(at)
        assert any("needs the decoder geometry" in i.value for i in at.info), page
        assert not at.error, (page, [e.value for e in at.error])
    at.switch_page("pages/export.py").run()
    _no_exception(at)
    assert any("once the analysis is complete" in i.value for i in at.info)


def test_distortion_page_names_the_split_held_out(env):
    """The galleries and the sample viewer say "held-out" like the rest of the app, never the
    stored split value "heldout"."""
    at = _app().run()
    at.switch_page("pages/distortion.py").run()
    _no_exception(at)
    assert not at.get("image")  # the galleries' and the viewer's tabs are drawn only when open
    open_tab(at, distortion_view.VIEW_KEY, "Least and most distorted")
    _no_exception(at)
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert captions and not any("heldout" in c for c in captions), captions
    assert any("· held-out ·" in c for c in captions)  # the galleries do show held-out images
    assert not any(m.label == "Split" for m in at.metric)
    open_tab(at, distortion_view.VIEW_KEY, "Sample viewer")
    split = next(m for m in at.metric if m.label == "Split")
    assert split.value in ("member", "held-out")


def test_distortion_viewer_reconstruction_is_the_vae_decode_of_the_stored_latent(env, world):
    """The sample viewer's reconstruction comes from the background (the page never waits for the
    model) and equals diffusers' own VAE decode of the stored (scaled) latent."""
    import torch
    from diffusers import AutoencoderKL

    from ldminv_app import lazy, reconstruction_view

    at = _app().run()
    at.switch_page("pages/distortion.py").run()
    _no_exception(at)
    at = open_tab(at, distortion_view.VIEW_KEY, "Sample viewer")
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert reconstruction_view.CAPTION in captions
    # the shown array: the section's job for the viewer's sample (rank 1 = most distorted)
    run = Run.open(world["run"])
    index = int(np.argmax(run.log_volume))
    key, _ = reconstruction_view.reconstruction_job(run, index)
    assert lazy.results().ready(key)
    recon, exc = lazy.results().get(key)
    assert exc is None
    # oracle: diffusers' decode of the stored latent, in the viewer's uint8 convention
    vae = AutoencoderKL.from_pretrained(Path(world["model"]) / "vae").eval()
    z = torch.from_numpy(np.load(Path(world["run"]) / "latents.npy")[index : index + 1].astype(np.float32))
    with torch.no_grad():
        x = vae.decode(z / vae.config.scaling_factor).sample[0]
    want = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    want = np.repeat(want, 3, axis=0) if want.shape[0] == 1 else want[:3]
    assert recon.shape == want.transpose(1, 2, 0).shape
    assert np.abs(recon.astype(int) - want.transpose(1, 2, 0).astype(int)).max() <= 1


def test_masks_roc_log_axes_start_at_the_resolvable_rate(env, arrays):
    """The log-log ROC's FPR axis starts at 1 / n_negatives (held-out images under standard), the
    smallest false-positive rate the data can show, and its TPR axis at 1 / n_positives."""
    at = _app().run()
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    fig = next(v for k, v in _charts(at).items() if k.startswith("ROC, log-log"))
    labels = arrays["labels"]
    n_pos, n_neg = int(labels.sum()), int(labels.size - labels.sum())
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert fig["layout"]["xaxis"]["range"][0] == pytest.approx(np.log10(1.0 / n_neg), abs=0.05)
    assert fig["layout"]["yaxis"]["range"][0] == pytest.approx(np.log10(1.0 / n_pos), abs=0.05)
    # the legend's AUROC of each curve is the AUROC of the curve drawn (sklearn on its scores at the page's t)
    stat = arrays["terms"].astype(np.float64).sum(axis=(2, 3, 4))
    t = int(re.search(r"t = (\d+)", fig["layout"]["title"]["text"])[1])
    base = next(tr for tr in fig["data"] if str(tr.get("name", "")).startswith("baseline"))
    shown = float(re.search(r"AUROC (\d\.\d+)", base["name"])[1])
    want = roc_auc_score(labels, -stat[:, arrays["timesteps"].index(t)])
    assert shown == pytest.approx(want, abs=5e-5)
