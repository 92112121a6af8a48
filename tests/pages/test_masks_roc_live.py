"""The live Masks & ROC page: the drop marker lies on the drop curve at any drop (also off the 5 %
grid), a slider step is a lookup once the neighbouring drops are prefetched, the random arm at one
t equals the full random statistic, ROC curves are thinned, rates are shown in %, and low-FPR
cautions appear where negatives are too few (page, text report, JSON report)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ldminv_app import figures, masks_view, warm
from ldminv_core import metrics
from ldminv_core.evaluation import Evaluation, fpr_support
from ldminv_core.evaluation.wording import low_fpr_cautions
from ldminv_core.formatting import format_rate, format_rate_ci
from ldminv_core.report import build_report, format_report

from support.apptest import open_tab
from synthetic_runs import write_run

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """60 members / 60 held-out, d = 2 * 4 * 4 = 32, 3 timesteps, member terms a little smaller."""
    rng = np.random.default_rng(3)
    n, t, shape = 120, 3, (2, 4, 4)
    labels = np.repeat([1, 0], n // 2)
    terms = rng.gamma(2.0, 1.0, size=(n, t, *shape)).astype(np.float32)
    influence = rng.normal(size=(n, *shape)).astype(np.float32)
    # coordinates of high influence carry the membership signal
    signal = (influence > 0) * (labels[:, None, None, None] == 1)
    terms *= np.where(signal, 0.8, 1.0)[:, None].astype(np.float32)
    folder = tmp_path_factory.mktemp("live") / "run"
    return write_run(folder, terms=terms, influence=influence, log_volume=rng.normal(size=n), labels=labels,
                     timesteps=[0, 10, 20])


def _arr(value) -> np.ndarray:
    import base64

    if isinstance(value, dict) and "bdata" in value:
        out = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return out.reshape(value["shape"]) if "shape" in value else out
    return np.asarray(value)


# --------------------------------------------------------------------------- core


def test_drop_curves_with_an_extra_drop_hold_it_in_order(run):
    ev = Evaluation(run, "sima", "standard", n_boot=50)
    ti = ev.headline_t_index()
    grid = ev.drop_curves(ti)
    merged = ev.drop_curves(ti, extra=(37.0,))
    assert merged.percents == tuple(sorted((*grid.percents, 37.0)))
    k = merged.percents.index(37.0)
    alone = ev.drop_curves(ti, percents=(37.0,))
    for m in ("auroc", "tpr_at_1fpr", "asr"):
        assert merged.masked[m][k] == alone.masked[m][0]
        assert merged.random_mean[m][k] == pytest.approx(alone.random_mean[m][0], abs=1e-15)
        assert merged.masked_lo[m][k] == alone.masked_lo[m][0]
        # the grid points are unchanged
        np.testing.assert_array_equal(np.delete(merged.masked[m], k), grid.masked[m])
    # the point equals the masked arm at the same drop and t (standard: one t)
    assert merged.masked["auroc"][k] == pytest.approx(ev.arms(37.0)["masked"].auroc, abs=1e-12)
    # a grid drop as "extra" changes nothing
    assert ev.drop_curves(ti, extra=(40.0,)).percents == grid.percents


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_random_arm_at_one_t_equals_the_full_random_statistic(run, protocol):
    from ldminv_core.evaluation import make_protocol

    proto = make_protocol(protocol, folds=2) if protocol == "honest" else protocol
    ev = Evaluation(run, "sima", proto, n_boot=0)
    rand = ev.arms(33.0)["random"]
    ref = Evaluation(run, "sima", proto, n_boot=0)
    if protocol == "standard":
        ti = ref.headline_t_index()
        expected = [metrics.auroc(-ref.random_stat(33.0, s)[:, ti], ref.labels) for s in ref.seeds]
        assert rand.per_seed["auroc"] == pytest.approx(expected, abs=1e-12)
    # the same numbers whether the full (N, T) random statistic was computed first or not
    for s in ref.seeds:
        ref.random_stat(33.0, s)
    assert ref.arms(33.0)["random"].per_seed["auroc"] == pytest.approx(rand.per_seed["auroc"], abs=1e-12)


def test_prefetch_makes_the_next_drop_a_lookup(run):
    ev = Evaluation(run, "sima", "standard", n_boot=50)
    ti = ev.headline_t_index()
    ev.arms(40.0)
    warmer = warm.Warmer()  # the server's one prefetcher (ldminv_app.warm), a fresh one per test
    warm.prefetch_drops(ev, [41.0, 39.0, 200.0], t_index=ti, into=warmer)  # an invalid drop is skipped
    assert warmer.idle(timeout=60)
    for key in (("arms", 41.0), ("arms", 39.0), ("findings", 41.0), ("masked_per_t", 41.0)):
        assert key in ev._memo, key
    t0 = time.perf_counter()
    fresh = Evaluation(run, "sima", "standard", n_boot=50)
    assert ev.arms(41.0)["masked"].auroc == fresh.arms(41.0)["masked"].auroc
    assert ev.drop_curves(ti, extra=(41.0,)).percents == fresh.drop_curves(ti, extra=(41.0,)).percents
    assert time.perf_counter() - t0 < 30


def test_lookups_are_not_blocked_by_a_part_being_computed(run):
    """A part computed in another thread does not block a lookup of a part already there."""
    import threading

    ev = Evaluation(run, "sima", "standard", n_boot=50)
    ev.arms(40.0)
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(10)
        return 1

    worker = threading.Thread(target=lambda: ev._cached(("slow",), slow))
    worker.start()
    started.wait(10)
    t0 = time.perf_counter()
    ev.arms(40.0)
    assert time.perf_counter() - t0 < 1.0
    release.set()
    worker.join(10)
    assert ev._memo[("slow",)] == 1


# --------------------------------------------------------------------------- figures and formats


def test_thin_curve_keeps_the_ends_and_the_shape():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=3000), rng.integers(0, 2, 3000)
    curve = metrics.roc(scores + labels, labels)
    for log_scale in (False, True):
        x, y = figures.thin_curve(curve.fpr, curve.tpr, 200, log_scale=log_scale)
        assert len(x) <= 202 and (x[0], y[0], x[-1], y[-1]) == (curve.fpr[0], curve.tpr[0], curve.fpr[-1],
                                                                  curve.tpr[-1])
        assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0)
        # every kept point is a point of the curve
        assert set(zip(x.tolist(), y.tolist())) <= set(zip(curve.fpr.tolist(), curve.tpr.tolist()))
    fig = figures.roc_curves({"masked": (curve.fpr, curve.tpr)}, max_points=200)
    assert len(fig.data[0].x) <= 202
    short = figures.thin_curve(np.array([0, 1.0]), np.array([0, 1.0]), 200)
    assert len(short[0]) == 2


def test_drop_band_chart_marks_the_drop_on_the_curve():
    x = np.array([30.0, 35.0, 37.0, 40.0])
    y = np.array([0.70, 0.71, 0.74, 0.72])
    fig = figures.drop_curves_with_bands(x, masked=y, masked_band=(y - 0.01, y + 0.01), random_mean=y - 0.05,
                                         random_band=(y - 0.06, y - 0.04), baseline=0.7, baseline_ci=(0.68, 0.72),
                                         n_seeds=5, current=37.0)
    marker = next(t for t in fig.data if t.name == "masked at 37%")
    assert (marker.x[0], marker.y[0]) == (37.0, 0.74)
    assert marker.marker.color == figures.VARIANT_COLORS["masked"]


def test_rate_format():
    assert format_rate(0.810494) == "0.8105" and format_rate(None) == "–" and format_rate(float("nan")) == "–"
    assert format_rate_ci((0.7778, 0.84)) == "[0.7778, 0.8400]" and format_rate_ci((float("nan"), 0.1)) == "–"


# --------------------------------------------------------------------------- report and page


def test_report_cautions_when_negatives_are_few(run):
    report = build_report(run, attack="sima", n_boot=20)
    json.dumps(report, allow_nan=False)
    # 60 held-out: 1% FPR admits no false positive on all samples nor in a quartile (15)
    expected = fpr_support(__import__("ldminv_core.evaluation", fromlist=["x"]).make_protocol("standard"),
                           n_members=60, n_heldout=60, fpr=0.01).warning()
    assert expected is not None
    assert [c["scope"] for c in report["cautions"]] == ["all samples", "each log-volume quartile"]
    assert report["cautions"][0] == {"metric": "tpr_at_1fpr", "scope": "all samples", "text": expected}
    text = format_report(report)
    assert f"Caution (TPR@1%FPR): {expected}" in text
    base = report["attacks"]["sima"]["baseline"]
    assert format_rate(base["auroc"]) in text  # rates as 4-decimal fractions, as on every page
    assert 0 <= base["auroc"] <= 1
    assert low_fpr_cautions("standard", n_members=1000, n_heldout=1000, metrics_shown=("tpr_at_1fpr",)) == {}


@pytest.fixture
def app_env(run, monkeypatch, tmp_path):
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    return run


def test_marker_at_a_non_grid_drop_lies_on_the_plotted_curve(app_env):
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page("pages/masks_roc.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.slider(key="drop_percent").set_value(37).run()
    assert not at.exception, [e.value for e in at.exception]
    ev = Evaluation(app_env, "sima", "standard", n_boot=200)
    masked = ev.arms(37.0)["masked"]
    card = next(m for m in at.metric if m.label == "AUROC (masked)")
    assert float(card.value) == pytest.approx(masked.auroc, abs=1e-12)
    assert card.proto.format == "%.4f"  # a 4-decimal fraction, as on every page
    # the ROC curves (the open tab by default) are thinned to about 200 points; the other tabs wait
    shown = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
             for c in at.get("plotly_chart")}
    roc = next(v for k, v in shown.items() if k.startswith("ROC ("))
    assert all(len(_arr(tr["x"])) <= 202 for tr in roc["data"])
    assert not any(" vs drop" in k or " vs timestep" in k for k in shown), list(shown)
    open_tab(at, masks_view.CHART_VIEW_KEY, "Against the drop %")
    assert not at.exception, [e.value for e in at.exception]
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
              for c in at.get("plotly_chart")}
    for m, title in (("auroc", "AUROC vs drop"), ("tpr_at_1fpr", "TPR@1%FPR vs drop")):
        spec = next(v for k, v in charts.items() if k.startswith(title))
        curve = next(tr for tr in spec["data"] if tr.get("name") == "masked")
        marker = next(tr for tr in spec["data"] if tr.get("name") == "masked at 37%")
        xs, ys = list(_arr(curve["x"])), _arr(curve["y"])
        mx, my = float(_arr(marker["x"])[0]), float(_arr(marker["y"])[0])
        assert mx == 37.0 and 37.0 in xs and ys[xs.index(37.0)] == pytest.approx(my, abs=0)
        expected = ev.drop_curves(ev.headline_t_index(), extra=(37.0,))
        assert my == pytest.approx(expected.masked[m][expected.percents.index(37.0)], abs=1e-12)
    # the low-FPR caution beside TPR@1%FPR (60 held-out images are too few for 1% FPR)
    captions = "\n".join(c.value for c in at.caption)
    assert "Caution:" in captions and "60 held-out images" in captions
    assert not any(k.startswith("ROC") for k in charts), list(charts)  # only the open tab is drawn


def test_the_drop_and_replicates_are_kept_across_a_visit_to_another_page(app_env):
    """Streamlit forgets a widget's value when another page's run does not draw it: the page puts
    the drop, the global mask, the replicates and the open chart tab back, and its numbers are those
    at that drop."""
    at = AppTest.from_file(APP, default_timeout=90).run()
    at.switch_page("pages/masks_roc.py").run()
    at.slider(key="drop_percent").set_value(55).run()
    at.toggle(key="use_global").set_value(True).run()
    open_tab(at, masks_view.CHART_VIEW_KEY, "Against the drop %")
    at.switch_page("pages/findings.py").run()
    assert "drop_percent" not in at.session_state  # what Streamlit does to a widget not drawn
    assert masks_view.CHART_VIEW_KEY not in at.session_state
    at.switch_page("pages/masks_roc.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="drop_percent").value == 55
    assert at.toggle(key="use_global").value is True
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("AUROC vs drop %") for t in titles) and not any(t.startswith("ROC") for t in titles)
    masked = Evaluation(app_env, "sima", "standard", n_boot=200).arms(55.0)["masked"]
    card = next(m for m in at.metric if m.label == "AUROC (masked)")
    assert float(card.value) == pytest.approx(masked.auroc, abs=1e-12)
    # and the slider still moves from there
    at.slider(key="drop_percent").set_value(56).run()
    assert at.slider(key="drop_percent").value == 56


def test_drop_curve_bands_name_their_replicates(run):
    """The shaded bands of the drop curves say how many bootstrap replicates they rest on."""
    ev = Evaluation(run, "sima", "standard", n_boot=120)
    curves = ev.drop_curves(ev.headline_t_index())
    assert curves.n_boot == 120
    assert ev.drop_curves(ev.headline_t_index(), n_boot=0).n_boot == 0
    fig = figures.drop_curves_with_bands(
        curves.percents, masked=curves.masked["auroc"], masked_band=(curves.masked_lo["auroc"], curves.masked_hi["auroc"]),
        random_mean=curves.random_mean["auroc"], random_band=(curves.random_lo["auroc"], curves.random_hi["auroc"]),
        baseline=curves.baseline["auroc"], baseline_ci=curves.baseline_ci["auroc"], n_seeds=len(curves.seeds),
        n_boot=curves.n_boot)
    assert "95% CI of masked and baseline (120 bootstrap replicates)" in fig.layout.xaxis.title.text

