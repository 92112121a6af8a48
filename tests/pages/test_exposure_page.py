"""The Findings page's exposure list with streamlit.testing's AppTest, on a synthetic run with two
attacks and real image files: the members shown, their ranks, flags and log-volumes equal the
evaluation layer's ``exposure_list``; every row has its thumbnail; the CSV download is offered."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldminv_app import findings_view
from ldminv_app.exposure_view import EXPOSURE_ROWS
from ldminv_app.state import default_attack
from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.exposure import exposure_list
from ldminv_core.runs import Run
from support.apptest import open_app, open_tab
from synthetic_runs import write_run

pytestmark = pytest.mark.slow  # the Findings page's evaluations of two attacks with bootstrap: over 10 s


def _run(folder: Path) -> Run:
    rng = np.random.default_rng(5)
    labels = np.r_[np.ones(60, np.int64), np.zeros(120, np.int64)]
    terms = rng.gamma(2.0, 1.0, size=(180, 2, 2, 2, 2)).astype(np.float32)
    terms[labels == 1] *= rng.uniform(0.3, 1.0, size=(60, 1, 1, 1, 1)).astype(np.float32)
    pfami = (labels + rng.normal(0, 1.0, 180)).astype(np.float32)
    run = write_run(folder, terms=terms, influence=rng.normal(size=(180, 2, 2, 2)).astype(np.float32),
                    log_volume=rng.normal(size=180), labels=labels, timesteps=[0, 10], pfami=pfami)
    for path in run.samples["path"]:
        Image.fromarray(rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8), mode="RGB").save(path)
    return run


def test_findings_page_shows_the_members_most_at_risk(tmp_path, monkeypatch):
    run = _run(tmp_path / "runs" / "exposed")
    at = open_app(run.path, tmp_path, monkeypatch)
    # the tabs below the findings are drawn only when open: "Every attack" first
    assert not any("member_rank" in el.value.columns for el in at.dataframe)
    assert any(h.value == "All attacks" for h in at.subheader)
    at = open_tab(at, findings_view.MORE_TABS_KEY, findings_view.EXPOSURE_TAB)
    assert not any(h.value == "All attacks" for h in at.subheader)
    assert any(h.value == "Which training images are most at risk?" for h in at.subheader)
    shown = next(el.value for el in at.dataframe if "member_rank" in el.value.columns)
    attack = default_attack(run)  # the page's attack before any choice
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = exposure_list({a: Evaluation(run, a, "standard", n_boot=0) for a in run.attacks},
                             attack=attack, arm="masked")
    top = want.top(EXPOSURE_ROWS)
    assert len(shown) == EXPOSURE_ROWS
    assert list(shown["member_rank"]) == list(range(1, EXPOSURE_ROWS + 1))
    assert list(shown["file"]) == [Path(e.path).name for e in top]
    assert list(shown["flagged_by"]) == [";".join(e.flagged_by) for e in top]
    np.testing.assert_allclose(shown["score"], [e.score for e in top])
    np.testing.assert_allclose(shown["log_volume"], [e.log_volume for e in top])
    assert all(str(v).startswith("data:image/png;base64,") for v in shown["image"])
    assert any(e.n_flagged for e in top)
    assert at.get("download_button")
