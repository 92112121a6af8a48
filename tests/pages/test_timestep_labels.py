"""Every page says which numbers follow the sidebar's timestep and which keep the protocol's t.

The sidebar t sets the per-timestep views (curves against the drop %, the dimension ranking, ...);
the metric cards, findings, ROC curves and metrics tables keep the t their protocol chooses. With
the sidebar t away from the protocol's, the sidebar, the Masks & ROC header and the Export header
must name both t's; under ``paper`` (each metric its own best t) the TPR@1%FPR cards name their t
and the Masks & ROC ROC caption says that they are not read off the curves drawn at the AUROC's t.
Also: the metrics table names what a global or manual mask drops (no bare "per fold:"), the
small-sample TPR caution of Findings spans the page, the picked-coordinates checkbox has a row.

Run (synthetic, 60 members / 60 held-out, timesteps 20..100): a shift of every member's terms at
t = 60 (best AUROC) and a few held-out images far out at t = 40 (best TPR at 1% member FPR under
``paper``; one member far out at t = 60 keeps TPR low there).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ldminv_app import masks_view
from support.apptest import open_tab, settle
from ldminv_core.evaluation import Evaluation, make_protocol

from synthetic_runs import write_run

# Every test here computes whole analyses or runs many page scripts: over ~10 s each.
pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMESTEPS = [20, 40, 60, 80, 100]
SIDEBAR_T = 100


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rng = np.random.default_rng(5)
    n, shape = 120, (2, 4, 4)
    labels = np.repeat([1, 0], n // 2)
    terms = rng.gamma(2.0, 1.0, size=(n, len(TIMESTEPS), *shape)).astype(np.float32)
    member = labels[:, None, None, None] == 1
    terms[:, 2] *= np.where(member, 0.9, 1.0).astype(np.float32)  # t = 60: every member a little lower
    terms[np.flatnonzero(labels == 0)[:12], 1] *= 3.0  # t = 40: 12 held-out images far out
    terms[0, 2] *= 4.0  # t = 60: one member far out
    folder = tmp_path_factory.mktemp("t-labels") / "run"
    return write_run(folder, terms=terms, influence=rng.normal(size=(n, *shape)).astype(np.float32),
                     log_volume=rng.normal(size=n), labels=labels, timesteps=TIMESTEPS)


@pytest.fixture
def app(run, monkeypatch, tmp_path):
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    at = settle(AppTest.from_file(APP, default_timeout=120).run())
    assert not at.exception, [e.value for e in at.exception]
    return at


def _go(at, page: str) -> AppTest:
    settle(at.switch_page(f"pages/{page}.py").run())
    assert not at.exception, [e.value for e in at.exception]
    return at


def _protocol(at, name: str) -> None:
    settle(at.selectbox(key="sidebar_protocol").set_value(name).run())
    assert not at.exception, [e.value for e in at.exception]


def _sidebar(at) -> str:
    return "\n".join(c.value for c in at.sidebar.caption)


def _chart_titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def _metrics_table(at):
    return next(df.value for df in at.dataframe if df.value.index.name == "variant")


def test_the_fixture_separates_the_protocol_t_from_the_sidebar_t(run):
    """What the other tests rely on: standard picks t = 60; paper's TPR picks t = 40."""
    std = Evaluation(run, "sima", "standard", n_boot=0).arms(40.0)
    paper = Evaluation(run, "sima", "paper", n_boot=0).arms(40.0)
    assert std["baseline"].best_t == {"auroc": 60, "tpr_at_1fpr": 60, "asr": 60}
    assert paper["baseline"].best_t["auroc"] == 60 and paper["baseline"].best_t["tpr_at_1fpr"] == 40
    assert paper["masked"].best_t["tpr_at_1fpr"] != paper["masked"].best_t["auroc"]


def test_sidebar_t_away_from_the_protocol_t_is_named_beside_it(app, run):
    at = app
    at.select_slider(key="sidebar_t").set_value(SIDEBAR_T).run()
    assert not at.exception, [e.value for e in at.exception]
    for page in ("findings", "distortion", "dimensions", "masks_roc", "latent_map", "export"):
        _go(at, page)
        sidebar = _sidebar(at)
        assert f"Sidebar t = {SIDEBAR_T}; the protocol's numbers: t = 60." in sidebar, (page, sidebar)
        assert "Headline t = 60, chosen by the standard protocol" in sidebar, (page, sidebar)

    _go(at, "masks_roc")
    header = next(m.value for m in at.markdown if "(sidebar)" in m.value)
    assert "cards, findings, ROC curves and metrics table at the standard protocol's t = 60" in header
    assert f"the curves against the drop % at the sidebar's t = {SIDEBAR_T}" in header
    # what the header says is what the page shows
    card_captions = [c.value for c in at.caption if c.value.startswith("standard · ")]
    assert len(card_captions) == 4 and all(" t = 60 " in c for c in card_captions), card_captions
    titles = _chart_titles(at)
    assert [t for t in titles if t.startswith("ROC")] == ["ROC (standard, t = 60)", "ROC, log-log (standard, t = 60)"]
    open_tab(at, masks_view.CHART_VIEW_KEY, "Against the drop %")
    assert sum(t.startswith(f"AUROC vs drop %, t = {SIDEBAR_T}") for t in _chart_titles(at)) == 1
    open_tab(at, masks_view.CHART_VIEW_KEY, "ROC curves")
    table = _metrics_table(at)
    assert set(table["t"]) == {"t = 60"}

    _go(at, "export")
    header = next(m.value for m in at.markdown if "Change the protocol" in m.value)
    assert "findings, ROC curves and metrics table at the standard protocol's t = 60" in header
    assert f"the curves against the drop % at the sidebar's t = {SIDEBAR_T}" in header

    # back at the protocol's t: one t, said once
    at.select_slider(key="sidebar_t").set_value(60).run()
    _go(at, "masks_roc")
    header = next(m.value for m in at.markdown if "(sidebar)" in m.value)
    assert "all at t = 60 (the standard protocol's t and the sidebar's)" in header
    assert "Sidebar t =" not in _sidebar(at)


def test_paper_tpr_cards_name_their_own_t_beside_curves_at_the_auroc_t(app, run):
    at = app
    _protocol(at, "paper")
    arms = Evaluation(run, "sima", make_protocol("paper"), n_boot=200).arms(40.0)
    base, masked = arms["baseline"], arms["masked"]
    sidebar = _sidebar(at)
    # the sidebar t (60) is the AUROC's, not TPR's: the sidebar says so
    assert "Sidebar t = 60; the protocol's numbers: t: AUROC 60, TPR@1%FPR 40, ASR 60." in sidebar, sidebar

    # Findings: the TPR card beside the ROC names its own t
    roc_title = next(t for t in _chart_titles(at) if "baseline ROC" in t)
    assert roc_title.endswith("(paper, t = 60)")
    captions = [c.value for c in at.caption]
    assert any(c.startswith("t = 40 · 95% CI") for c in captions), captions
    assert any(c.startswith("t = 60 · 95% CI") for c in captions), captions

    # Masks & ROC: the ROC caption names both t's of every arm shown as a card
    _go(at, "masks_roc")
    caption = next(c.value for c in at.caption if c.value.startswith("Paper convention"))
    assert (f"the curves are at the AUROC's (baseline t = {base.best_t['auroc']}, masked t = "
            f"{masked.best_t['auroc']}") in caption
    assert (f"the TPR@1%FPR cards at TPR's own (baseline t = {base.best_t['tpr_at_1fpr']}, masked t = "
            f"{masked.best_t['tpr_at_1fpr']})") in caption
    assert "cannot be read off these curves" in caption
    tpr_cards = [c.value for c in at.caption if c.value.startswith("paper · t = 40")]
    assert len(tpr_cards) == 2, [c.value for c in at.caption]


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_metrics_table_names_what_global_and_manual_masks_drop(app, protocol):
    at = app
    if protocol != "standard":
        _protocol(at, protocol)
        at.number_input(key="sidebar_folds").set_value(2).run()
    _go(at, "masks_roc")
    at.toggle(key="use_global").set_value(True).run()
    at.toggle(key="use_manual").set_value(True).run()
    at.multiselect(key="manual_channels").set_value([0]).run()
    assert not at.exception, [e.value for e in at.exception]
    table = _metrics_table(at)
    column = "drop % (per fold)" if protocol == "honest" else "drop"
    drops = table[column].to_dict()
    assert drops["global"] == "40 % (global ranking)"
    assert drops["manual"] == "keeps 16 of 32 (manual)"
    assert drops["baseline"] == "–"
    assert not any(str(v).strip().startswith("per fold") and str(v).strip().endswith(":") for v in drops.values())
    assert not any(str(v).strip() in ("per fold:", "per fold: %") for v in drops.values()), drops


def test_caution_spans_the_page_and_the_picked_checkbox_has_a_row(app):
    at = app
    # Findings: 60 held-out images are too few for TPR at 1% FPR; the caution is not in a card's column
    cautions = [w for w in at.warning if "held-out images" in w.value]
    assert cautions, [w.value for w in at.warning]
    in_columns = [w for col in at.columns for w in col.warning if "held-out images" in w.value]
    assert in_columns == []
    # Masks & ROC: the "picked on the Dimensions page" checkbox is on its own row of the expander
    _go(at, "masks_roc")
    expander = next(e for e in at.expander if e.label.startswith("Manual mask"))
    assert [c.key for c in expander.checkbox] == ["manual_use_picked"]
    assert all(c.key != "manual_use_picked" for col in expander.columns for c in col.checkbox)
