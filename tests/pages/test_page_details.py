"""Rough edges a new user met in the browser, each pinned by a test: the latent map keeps its
selection across colourings, its notice goes once the UMAP exists, thumbnails have full captions and
low-FPR TPRs carry their caution; one coordinate label everywhere; readable Dimensions figures;
every chart downloadable from plotly's toolbar; the dimension table as CSV and attack names as
displayed in the Export page; the low-FPR caution in the HTML report; quick, readable defaults and
cost estimate on the Model & data page.

Runs are synthetic (``synthetic_runs.write_run``): every score, label and influence is known.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.testing.v1 import AppTest

from support.apptest import open_tab, settle
from ldminv_core import embedding
from ldminv_core.pipeline.cost import format_duration
from ldminv_core.evaluation import dimension_table, fpr_support, make_protocol, subset_metrics
from ldminv_core.runs import Run

from ldminv_app import figures, html_report
from ldminv_app.html_report.sections.settings import manual_text
from synthetic_runs import write_run

# Every test here computes whole analyses or runs many page scripts: over ~10 s each.
pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 120
SHAPE = (2, 4, 4)  # d = 32
TIMESTEPS = [0, 10, 20]


def _make_run(folder: Path, *, n_members: int, n_heldout: int, seed: int = 0, images: bool = True) -> Run:
    """A finished SimA + PFAMI run whose members have smaller terms at t = 10 (some signal)."""
    rng = np.random.default_rng(seed)
    n = n_members + n_heldout
    labels = np.r_[np.ones(n_members, dtype=np.int8), np.zeros(n_heldout, dtype=np.int8)]
    terms = rng.gamma(2.0, 1.0, size=(n, len(TIMESTEPS), *SHAPE)).astype(np.float32)
    terms[labels == 1, 1] *= 0.8
    influence = rng.normal(size=(n, *SHAPE)).astype(np.float32)
    log_volume = rng.normal(size=n)
    run = write_run(folder, terms=terms, influence=influence, log_volume=log_volume, labels=labels,
                    timesteps=TIMESTEPS, pfami=rng.normal(size=n))
    if images:
        for i, p in enumerate(run.samples["path"]):
            Image.fromarray(rng.integers(0, 255, size=(16, 16), dtype=np.uint8), mode="L").save(p)
    return run


def _store_umap(run: Run) -> np.ndarray:
    """An embedding stored as ``cached_umap_embedding`` stores it (no numba compile in the tests)."""
    xy = np.random.default_rng(1).normal(size=(len(run), 2)).astype(np.float32)
    np.save(Path(run.path) / embedding.UMAP_FILE, xy)
    (Path(run.path) / embedding.UMAP_SETTINGS_FILE).write_text(json.dumps({"seed": 0, "n_neighbors": 15, "n": len(run)}))
    return xy


@pytest.fixture
def small_run(tmp_path, monkeypatch) -> Run:
    run = _make_run(tmp_path / "runs" / "small", n_members=12, n_heldout=12)
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    return run


def _page(name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page(f"pages/{name}.py").run()
    _ok(at)
    return at


def _ok(at: AppTest) -> None:
    settle(at)  # the Findings page's background sections
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _charts(at: AppTest) -> dict[str, tuple[dict, dict]]:
    """title -> (figure spec, plotly config) of every chart on the page."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = (spec["layout"].get("title") or {}).get("text") or f"untitled-{len(out)}"
        out[title] = (spec, json.loads(el.proto.config or "{}"))
    return out


def _umap_fig(at: AppTest) -> dict:
    return next(spec for title, (spec, _) in _charts(at).items() if title.startswith("UMAP"))


def _select(at: AppTest, rows: list[int]) -> AppTest:
    """What the browser sends after a box selection of ``rows`` on the latent map (AppTest has no
    plotly selection API: the chart's widget state is added to the next run's widget states)."""
    chart = next(el for el in at.get("plotly_chart") if el.proto.id.endswith("umap_chart"))
    states = at._tree.get_widget_states()
    w = states.widgets.add()
    w.id = chart.proto.id
    points = [{"curve_number": 0, "point_number": r, "point_index": r, "customdata": [r, r]} for r in rows]
    w.string_value = json.dumps({"selection": {"points": points, "point_indices": rows, "box": [], "lasso": []}})
    return at._run(WidgetStates(widgets=list(states.widgets)))


def _run_id(run: Run) -> str:
    return str(Path(run.path).resolve())


# --------------------------------------------------------------------------- latent map


def test_latent_map_selection_survives_recolouring_and_clears(small_run):
    _store_umap(small_run)
    at = _page("latent_map")
    assert any("Select points" in c.value for c in at.caption)
    rows = [0, 1, 2, 13, 14]
    _select(at, rows)
    _ok(at)
    assert at.session_state["_umap_selection"][_run_id(small_run)] == rows
    assert [s.value for s in at.subheader] == ["Selection: 5 samples (3 members, 2 held-out)"]
    assert _umap_fig(at)["data"][0]["selectedpoints"] == rows  # re-applied to the chart

    for colour in ("split", "attack score", "influence of a coordinate", "log-volume"):
        at.selectbox(key="umap_color").select(colour).run()
        _ok(at)
        assert [s.value for s in at.subheader] == ["Selection: 5 samples (3 members, 2 held-out)"], colour
        assert _umap_fig(at)["data"][0]["selectedpoints"] == rows, colour

    at.button(key="umap_clear").click().run()
    _ok(at)
    assert not at.subheader and at.session_state["_umap_selection"][_run_id(small_run)] == []
    assert "selectedpoints" not in _umap_fig(at)["data"][0]


def test_latent_map_split_legend_sits_below_the_plot_and_says_held_out(small_run):
    _store_umap(small_run)
    at = _page("latent_map")
    at.selectbox(key="umap_color").select("split").run()
    _ok(at)
    fig = _umap_fig(at)
    legend = fig["layout"]["legend"]
    assert legend["orientation"] == "h" and legend["y"] < 0  # under the axes, clear of the toolbar
    names = [t.get("name") for t in fig["data"] if t.get("showlegend", True) is not False]
    assert sorted(names) == ["held-out", "member"]
    assert "heldout" not in json.dumps(fig["data"][0]["hovertemplate"]) + json.dumps(fig["data"][0]["customdata"])


def test_latent_map_selection_metrics_and_low_fpr_caution(tmp_path, monkeypatch):
    run = _make_run(tmp_path / "runs" / "big", n_members=110, n_heldout=110, images=False)
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    _store_umap(run)
    at = _page("latent_map")
    proto = make_protocol("standard")

    def shown(label: str) -> float:
        return float(next(m for m in at.metric if m.label == label).value)

    # 10 samples: 5 held-out images are far too few for 1% FPR -> the caution of fpr_support
    rows = list(range(5)) + list(range(110, 115))
    _select(at, rows)
    _ok(at)
    t = int(next(re.search(r"scores at t = (\d+)", c.value) for c in at.caption if "scores at t = " in c.value)[1])
    scores_all = -run.terms("sima")[:, TIMESTEPS.index(t)].astype(np.float64).sum(axis=(1, 2, 3))
    want = subset_metrics(scores_all, run.labels, rows, protocol=proto)
    assert shown("AUROC (selection)") == pytest.approx(want["auroc"], abs=1e-4)
    assert shown("TPR@1%FPR (selection)") == pytest.approx(want["tpr_at_1fpr"], abs=1e-4)
    caution = fpr_support(proto, n_members=5, n_heldout=5, fpr=0.01).warning()
    assert caution and any(caution in c.value for c in at.caption)

    # every sample: 110 held-out images back a 1% FPR -> no caution
    _select(at, list(range(len(run))))
    _ok(at)
    assert fpr_support(proto, n_members=110, n_heldout=110, fpr=0.01).warning() is None
    assert not any("FPR rests on" in c.value or "is undefined" in c.value for c in at.caption)


def test_latent_map_thumbnail_captions_are_full(small_run):
    _store_umap(small_run)
    at = _page("latent_map")
    _select(at, [0, 12])
    _ok(at)
    captions = [c.value for c in at.caption]
    lv = small_run.log_volume
    assert f"member #0  \nlog-vol {lv[0]:.2f}" in captions
    assert f"held-out #12  \nlog-vol {lv[12]:.2f}" in captions
    assert not any(re.search(r"\bmemb\b|\bheld\b(?!-)", c) for c in captions)
    assert len(at.get("image")) == 2


def test_latent_map_compute_shows_progress_caches_and_drops_the_notice(small_run, monkeypatch):
    calls = []

    def fake_umap(latents, *, seed=0, n_neighbors=15, progress=None):
        calls.append((latents.shape, seed, n_neighbors))
        return np.random.default_rng(seed).normal(size=(latents.shape[0], 2)).astype(np.float32)

    monkeypatch.setattr(embedding, "umap_embedding", fake_umap)
    at = _page("latent_map")
    assert any(i.value.startswith("No UMAP with these settings yet") for i in at.info)
    assert not at.get("plotly_chart")
    at.button(key="umap_compute").click().run()
    _ok(at)
    assert not any("No UMAP" in i.value for i in at.info)  # the notice is gone on this very run
    assert not [b for b in at.button if b.key == "umap_compute"]
    [status] = at.status
    assert status.state == "complete" and status.label.startswith(f"UMAP of {len(small_run)} latents computed in")
    assert _umap_fig(at)  # the map is drawn at once
    assert len(calls) == 1 and calls[0][0] == (len(small_run), *SHAPE)
    at.run()
    _ok(at)
    assert not at.info and not at.status and len(calls) == 1  # read back, not recomputed


# --------------------------------------------------------------------------- labels


def test_one_coordinate_label_everywhere(small_run):
    assert figures.coord_label(1, 2, 3) == "ch 1 · y 2 · x 3"
    keep = np.zeros((2, 4, 4), dtype=bool)
    keep[1, 2, 3] = True
    text = manual_text(keep)
    assert "ch 0: 0, ch 1: 1" in text and "ch 1 · y 2 · x 3" in text and "c0:" not in text

    at = _page("dimensions")
    picker = at.multiselect(key="dim_picked")
    assert picker.format_func(1 * 16 + 2 * 4 + 3) == "ch 1 · y 2 · x 3  (#27)"

    _store_umap(small_run)
    at.switch_page("pages/latent_map.py").run()
    at.selectbox(key="umap_color").select("influence of a coordinate").run()
    at.number_input(key="umap_coord_c").set_value(1).run()
    _ok(at)
    marker = _umap_fig(at)["data"][0]["marker"]
    assert marker["colorbar"]["title"]["text"] == "influence (ch 1 · y 0 · x 0)"


def _dimension_charts(at: AppTest) -> dict[str, tuple[dict, dict]]:
    """The Dimensions page's charts of every tab (only the open tab is drawn: each opened in turn)."""
    charts = {}
    for view in ("Mean influence", "AUROC of each coordinate", "Influence against AUROC"):
        drawn = _charts(open_tab(at, "dim_chart_view", view))
        assert len(drawn) == 1, (view, list(drawn))
        charts.update(drawn)
    return charts


def test_dimensions_figures_have_readable_titles(small_run):
    at = _page("dimensions")
    charts = _dimension_charts(at)
    scatter, _ = charts["Coordinate influence vs its own AUROC"]
    layout_text = json.dumps(scatter["layout"]["xaxis"]["title"]) + json.dumps(scatter["layout"]["yaxis"]["title"])
    hover = " ".join(t["hovertemplate"] for t in scatter["data"])
    for raw in ("influence_mean", "auroc"):
        assert raw not in layout_text and raw not in hover.replace("AUROC", "")
    assert "mean influence" in hover and "AUROC of the coordinate alone" in hover
    assert "ch %{customdata[0]} · y %{customdata[1]} · x %{customdata[2]}" in hover

    mean_map, _ = charts["Mean influence over samples"]
    auroc_title = next(t for t in charts if t.startswith("AUROC of each coordinate alone"))
    auroc_map, _ = charts[auroc_title]
    for fig in (mean_map, auroc_map):
        subtitles = [a["text"] for a in fig["layout"]["annotations"]]
        assert subtitles[:2] == ["channel 0", "channel 1"]
        ytitles = [v["title"].get("text") for k, v in fig["layout"].items() if k.startswith("yaxis") and "title" in v]
        xtitles = [v["title"].get("text") for k, v in fig["layout"].items() if k.startswith("xaxis") and "title" in v]
        assert "latent row y" in ytitles and "latent column x" in xtitles
        assert all("ch " in t["hovertemplate"] and " · y " in t["hovertemplate"] for t in fig["data"])
    heat = auroc_map["data"][0]
    assert heat["zmin"] + heat["zmax"] == pytest.approx(1.0)  # diverging, centred on 0.5


def test_every_chart_of_my_pages_has_the_download_toolbar(small_run):
    assert figures.PLOTLY_CONFIG["displaylogo"] is False
    assert "sendChartToCloud" in figures.PLOTLY_CONFIG["modeBarButtonsToRemove"]
    assert figures.plotly_config("a b", image_format="svg")["toImageButtonOptions"] == {
        "format": "svg", "filename": "a_b", "scale": 2}
    _store_umap(small_run)
    at = _page("dimensions")
    seen = list(_dimension_charts(at).values())
    at.switch_page("pages/latent_map.py").run()
    _select(at, [0, 1, 12, 13])
    _ok(at)
    seen += list(_charts(at).values())
    assert len(seen) == 5  # 2 heatmaps, the scatter, the map, the selection's ROC
    for spec, config in seen:
        assert config.get("displaylogo") is False and config.get("displayModeBar") == "hover"
        assert config["toImageButtonOptions"]["format"] in ("png", "svg")
        assert config["toImageButtonOptions"]["filename"].startswith("ldminv-")
        assert "toImage" not in json.dumps(config.get("modeBarButtonsToRemove", []))


# --------------------------------------------------------------------------- export


def test_export_page_offers_the_dimension_table_with_attack_names(small_run):
    at = _page("export")
    at.button(key="export_build").click().run()
    _ok(at)
    buttons = {b.key: b for b in at.get("download_button")}
    t = int(at.session_state["_export_built"][3])
    assert buttons["export_download_dims"].label == f"Download dimension CSV (SimA, t = {t})"
    assert buttons["export_download_html"].label == "Download HTML report (SimA)"
    assert buttons["export_download_csv"].label == "Download per-sample CSV (SimA)"
    name = html_report.dimensions_filename(small_run, "sima", t)
    assert name == f"ldminv-dimensions-small-SimA-t{t}.csv"
    assert any(name in c.value for c in at.caption)
    assert html_report.report_filename(small_run, "sima") == "ldminv-report-small-SimA.html"
    assert html_report.report_filename(small_run) == "ldminv-report-small.html"

    # the CSV is the Dimensions page's table of every coordinate, with what produced it
    ti = TIMESTEPS.index(t)
    want = dimension_table(small_run.influence, small_run.terms("sima")[:, ti].astype(np.float64), small_run.labels)
    got = pd.read_csv(io.StringIO(html_report.dimension_csv(want, attack="sima", t=t)))
    assert len(got) == 32 and (got["attack"] == "sima").all() and (got["t"] == t).all()
    np.testing.assert_allclose(got["auroc"], want["auroc"], rtol=1e-12)
    assert list(got["coord"]) == list(want["coord"])

    # PFAMI has no per-coordinate terms: no dimension table
    at.selectbox(key="sidebar_attack").select("pfami").run()
    at.button(key="export_build").click().run()
    _ok(at)
    keys = sorted(b.key for b in at.get("download_button"))
    assert keys == ["export_download_csv", "export_download_html"]


def test_attack_labels_of_the_export_match_the_dashboard(tmp_path):
    """The export's title and the dashboard's attack selector name an attack the same way."""
    from ldminv_core.choices import ATTACK_LABELS, attack_label
    run = _make_run(tmp_path / "labels", n_members=12, n_heldout=12, images=False)
    doc = html_report.build_html_report(run, attack="sima", n_boot=0)
    assert f"{ATTACK_LABELS['sima']} · protocol standard" in doc
    assert ATTACK_LABELS["sima"] == "SimA" and attack_label("sima") == "SimA"


def test_html_report_cautions_low_fpr_tpr_only_when_negatives_are_few(tmp_path):
    few = _make_run(tmp_path / "few", n_members=12, n_heldout=12, images=False)
    doc = html_report.build_html_report(few, attack="sima", n_boot=0)
    caution = fpr_support(make_protocol("standard"), n_members=12, n_heldout=12, fpr=0.01).warning()
    assert 'id="metrics-fpr-caution"' in doc and caution.replace("'", "&#x27;") in doc
    assert '"toImageButtonOptions"' in doc and '"sendChartToCloud"' in doc  # PNG download yes, cloud upload no
    assert 'id="quartile-fpr-caution"' in doc  # 3 held-out images per quartile
    assert "<h2>Metrics</h2>" in doc and "SimA, protocol standard" in doc

    many = _make_run(tmp_path / "many", n_members=220, n_heldout=220, images=False)
    doc = html_report.build_html_report(many, attack="sima", n_boot=0)
    assert 'id="metrics-fpr-caution"' not in doc  # 220 held-out images back 1% FPR
    # a quartile holds about 55 held-out images: too few, and flagged there
    assert 'id="quartile-fpr-caution"' in doc and " ⚠</td>" in doc


# --------------------------------------------------------------------------- model & data


def test_model_page_lora_box_errors_name_the_line_and_the_file(tmp_path, monkeypatch):
    """The LoRA box of the new-analysis form: a malformed line and a missing adapter are one-line
    errors naming what is wrong, and the form keeps what the user typed."""
    from ldminv_core import demo

    if not demo.demo_available():
        pytest.skip("the demo assets are not in this checkout")
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    at = _page("model_data")
    assert at.selectbox(key="new_latent").value == "mean" and at.selectbox(key="new_log_volume").value == "topk"
    at.text_area(key="new_lora").input("adapters/style @ strong").run()
    at.button(key="new_estimate").click().run()
    assert not at.exception
    assert any("LoRA adapters, line 1: expected 'PATH' or 'PATH @ SCALE'" in e.value for e in at.error)
    missing = tmp_path / "no-such-lora"
    at.text_area(key="new_lora").input(f"{missing} @ 0.5").run()
    at.button(key="new_estimate").click().run()
    assert not at.exception
    assert any(str(missing) in e.value for e in at.error), [e.value for e in at.error]
    assert at.text_area(key="new_lora").value == f"{missing} @ 0.5"
    assert "cost_preview" not in at.session_state


def test_model_page_defaults_are_quick_and_the_estimate_is_readable(tmp_path, monkeypatch):
    from ldminv_core import demo

    if not demo.demo_available():
        pytest.skip("the demo assets are not in this checkout")
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    run = _make_run(tmp_path / "runs" / "r", n_members=4, n_heldout=4, images=False)
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    at = _page("model_data")
    assert at.multiselect(key="new_attacks").value == ["sima", "pia"]
    assert at.number_input(key="new_limit").value == 100
    assert at.text_input(key="new_timesteps").value == "0:300:30"
    at.button(key="new_estimate").click().run()
    _ok(at)
    config_repr, text, seconds, rows, *_ = at.session_state["cost_preview"]
    assert "limit=100" in config_repr and "attacks=('sima', 'pia')" in config_repr
    # the work is fixed by the defaults: 200 images, 256 JVPs each, 10 timesteps of SimA and PIA
    table = next(df.value for df in at.dataframe if "est. time" in df.value.columns)
    by_stage = table.set_index("stage")
    assert by_stage.loc["geometry", "decoder JVP/VJP"] == "51,200"
    assert by_stage.loc["sima", "UNet calls"] == "2,000" and by_stage.loc["pia", "UNet calls"] == "2,200"
    assert by_stage.loc["total", "est. time"] == format_duration(seconds)
    assert seconds < 3600  # the old defaults (all 2000 images, 30 t, PFAMI) took hours on this machine
    shown = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert f"about **{format_duration(seconds)}**" in shown
    assert not re.search(r"\b\d{3,}(\.\d+)? s\b", shown + " ".join(table["est. time"]))  # never "26078 s"
    assert text.splitlines()[-1] in [c.value for c in at.caption]  # the last line, whole
