"""Tests of the Streamlit dashboard with streamlit.testing.v1.AppTest.

One small run is computed per session with the real analysis pipeline (a tiny random
diffusers model, real PNG images, SimA + PFAMI at three timesteps); the app is pointed at it
with LDMINV_RUN. Expected numbers are recomputed here from the run's files with the core
(masks / metrics) and checked against sklearn.
"""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from streamlit.testing.v1 import AppTest

from ldminv_core import metrics
from ldminv_core.analyze import AnalysisCancelled, AnalyzeConfig, run_analysis
from ldminv_core.masks import DropSweep, manual_mask, masked_statistic, percentile_drop_mask
from ldminv_core.runstore import Run, run_status

from tiny_models import tiny_scheduler, tiny_unet, tiny_vae, write_image_folder

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = (
    "pages/findings.py",
    "pages/model_data.py",
    "pages/distortion.py",
    "pages/dimensions.py",
    "pages/masks_roc.py",
    "pages/latent_map.py",
)
TIMEOUT = 90
LATENT_CHANNELS = 2  # d = 2 * 4 * 4 = 32 keeps the exact Jacobian cheap


def _build_model(folder: Path, *, unet_channels: int = LATENT_CHANNELS) -> Path:
    tiny_vae(image_channels=1, latent_channels=LATENT_CHANNELS, seed=0).save_pretrained(folder / "vae")
    tiny_unet(in_channels=unet_channels, seed=1).save_pretrained(folder / "unet")
    tiny_scheduler().save_pretrained(folder / "scheduler")
    return folder


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


def _charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by title."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = (spec["layout"].get("title") or {}).get("text") or f"untitled-{len(out)}"
        out[title] = spec
    return out


def _arr(value) -> np.ndarray:
    """A figure array as plotly serialises it: a list, or a base64 typed array {dtype, bdata}."""
    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return out.reshape(value["shape"]) if "shape" in value else out
    return np.asarray(value)


def _no_exception(at: AppTest) -> None:
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
    # the drop-percentage curve holds the same numbers (DropSweep.statistics + evaluate_many)
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

    def start(model: str, heldout: str | None = None) -> str:
        at.text_input(key="new_model_path").input(model)
        if heldout is not None:
            at.text_input(key="new_heldout_path").input(heldout)
        at.button(key="new_start").click().run()
        _no_exception(at)
        assert at.session_state["active_run"] == run_path
        assert at.session_state["analysis_job"] is None
        errors = [e.value for e in at.error]
        assert len(errors) == 1, errors
        return errors[0]

    missing = tmp_path / "no_such_model"
    msg = start(str(missing))
    assert str(missing) in msg and "does not exist" in msg

    msg = start(str(env["members"]))  # a folder of images, not a model
    assert str(env["members"]) in msg and "vae/" in msg

    mismatched = _build_model(tmp_path / "mismatched", unet_channels=LATENT_CHANNELS + 1)
    msg = start(str(mismatched))
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
    assert done.stages_seen == ["encode", "geometry", "sima"]
    assert (done.done, done.total) == (4, 4)
    assert len(Run.open(done.result)) == 4


def test_first_start_computes_the_demo_once_then_opens_it(world, monkeypatch, tmp_path):
    from ldminv_core import demo

    # a small stand-in for the bundled demo: the fixture's model and images
    monkeypatch.setattr(demo, "DEMO_MODEL_DIR", Path(world["model"]))
    monkeypatch.setattr(demo, "DEMO_MEMBERS_DIR", Path(world["members"]))
    monkeypatch.setattr(demo, "DEMO_HELDOUT_DIR", Path(world["heldout"]))
    monkeypatch.setattr(
        demo, "DEMO_ANALYZE_DEFAULTS",
        {"attacks": ("sima",), "timesteps": "0,10", "topk": 2, "batch_size": 8, "limit": 2},
    )
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LDMINV_RUN", raising=False)
    demo_dir = (tmp_path / "home" / "runs" / "demo").resolve()
    assert run_status(demo_dir) is None

    at = _app().run()
    _no_exception(at)
    assert run_status(demo_dir) == "complete"
    assert at.session_state["active_run"] == str(demo_dir)
    assert at.title[0].value == "Findings"
    assert "2 members / 2 held-out" in "\n".join(m.value for m in at.sidebar.markdown)
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


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
def test_findings_page_shows_the_evaluation_of_the_protocol(env, arrays, protocol):
    from ldminv_core.evaluation import Evaluation, make_protocol

    at = _app().run()
    _no_exception(at)
    assert at.title[0].value == "Findings"
    if protocol != "standard":
        at.selectbox(key="sidebar_protocol").select(protocol).run()
        _no_exception(at)
    if protocol == "honest":
        at.number_input(key="sidebar_folds").set_value(2).run()
        _no_exception(at)
    assert at.session_state["protocol"] == protocol
    folds = 2 if protocol == "honest" else 5
    ev = Evaluation(Run.open(env["run"]), "sima", make_protocol(protocol, folds=folds), n_boot=200)
    res = ev.result()
    # every finding's statement and estimate, as the core computes them
    text = "\n".join(m.value for m in at.markdown)
    assert f"protocol **{protocol}**" in "\n".join(c.value for c in at.caption)
    lines = _finding_lines(at)
    for f in res.findings:
        assert f.statement in text, f.id
        line = next(v for v in lines.values() if f"**{f.estimate:+.4f}**" in v)
        assert f"[{f.ci[0]:+.4f}, {f.ci[1]:+.4f}]" in line
        assert f":{ {'supported': 'green', 'contradicted': 'red'}.get(f.verdict, 'gray')}-badge[{f.verdict}]" in text
    # the quartile chart: AUROC per quartile with its interval, from the core and sklearn (standard)
    bars = next(v for k, v in _charts(at).items() if k.startswith("Baseline AUROC by distortion quartile"))
    ys = _arr(bars["data"][0]["y"]).astype(float)
    np.testing.assert_allclose(ys, [q.auroc for q in res.quartiles], atol=1e-12, equal_nan=True)
    if protocol == "standard":
        stat = arrays["terms"].astype(np.float64).sum(axis=(2, 3, 4))
        t = _best_t_index(arrays)
        np.testing.assert_allclose(ys, _quartile_aurocs(-stat[:, t], arrays["labels"], arrays["log_volume"]),
                                   atol=1e-12, equal_nan=True)
    # the attack overview: both attacks' baseline AUROC and TPR@1%FPR
    overview = next(v for k, v in _charts(at).items() if k.startswith("Baseline AUROC and TPR@1%FPR of every attack"))
    aurocs = _arr(overview["data"][0]["y"]).astype(float)
    for i, name in enumerate(("sima", "pfami")):
        arm = Evaluation(Run.open(env["run"]), name, make_protocol(protocol, folds=folds), n_boot=200).arms()["baseline"]
        assert aurocs[i] == pytest.approx(arm.auroc, abs=1e-12)
    assert protocol in overview["layout"]["title"]["text"]


def test_protocol_selector_changes_the_numbers_and_honest_shows_realised_fpr(env):
    from ldminv_core.evaluation import Evaluation, make_protocol

    at = _app().run()
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    tpr_standard = _metric(at, "TPR@1%FPR (baseline)")
    run = Run.open(env["run"])
    assert tpr_standard == pytest.approx(Evaluation(run, "sima", "standard", n_boot=200).arms()["baseline"].tpr_at_1fpr)
    at.selectbox(key="sidebar_protocol").select("paper").run()
    _no_exception(at)
    tpr_paper = _metric(at, "TPR@1%FPR (baseline)")
    assert tpr_paper == pytest.approx(Evaluation(run, "sima", "paper", n_boot=200).arms()["baseline"].tpr_at_1fpr)
    at.selectbox(key="sidebar_protocol").select("honest").run()
    at.number_input(key="sidebar_folds").set_value(2).run()
    _no_exception(at)
    honest = Evaluation(run, "sima", make_protocol("honest", folds=2), n_boot=200)
    arms = honest.arms()
    assert _metric(at, "AUROC (baseline)") == pytest.approx(arms["baseline"].auroc)
    captions = "\n".join(c.value for c in at.caption)
    assert f"realised FPR {arms['baseline'].realised_fpr_at_1fpr:.4f}" in captions
    table = at.dataframe[0].value
    assert "realised FPR" in table.columns and list(table.index[:3]) == ["baseline", "masked", "random"]
    assert table.loc["masked", "drop"] == arms["masked"].drop_text
