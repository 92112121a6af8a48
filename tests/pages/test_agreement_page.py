"""The Findings page's agreement section with streamlit.testing's AppTest, on a synthetic run with
two attacks and real image files: the counts, the pairs (Jaccard and Spearman with intervals) and
who flags whom (thumbnails of the flagged images) equal the evaluation layer's ``agreement``."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from ldminv_app.agreement_tables import pair_table
from ldminv_core.evaluation import DEFAULT_N_BOOT, agreement
from ldminv_core.runs import Run
from support.apptest import settle
from synthetic_runs import write_run

APP = str(Path(__file__).resolve().parents[2] / "app.py")
pytestmark = pytest.mark.slow  # the Findings page's evaluations of two attacks with bootstrap: over 10 s


def _run(folder: Path) -> Run:
    rng = np.random.default_rng(11)
    labels = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    terms = rng.gamma(2.0, 1.0, size=(200, 2, 2, 2, 2)).astype(np.float32)
    terms[labels == 1] *= rng.uniform(0.3, 1.0, size=(100, 1, 1, 1, 1)).astype(np.float32)
    stat = terms.astype(np.float64).reshape(200, 2, -1).sum(axis=2)
    pfami = (-stat[:, 0] + rng.normal(0, 1.0, 200)).astype(np.float32)
    run = write_run(folder, terms=terms, influence=rng.normal(size=(200, 2, 2, 2)).astype(np.float32),
                    log_volume=rng.normal(size=200), labels=labels, timesteps=[0, 10], pfami=pfami)
    for path in run.samples["path"]:
        Image.fromarray(rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8), mode="RGB").save(path)
    return run


def test_findings_page_shows_who_flags_whom(tmp_path, monkeypatch):
    run = _run(tmp_path / "runs" / "agree")
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path))
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    at = settle(AppTest.from_file(APP, default_timeout=180).run())
    assert not at.exception, [e.value for e in at.exception]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = agreement(run, "standard", n_boot=DEFAULT_N_BOOT)
    assert any(h.value == "Do the attacks flag the same images?" for h in at.subheader)
    frames = [el.value for el in at.dataframe]
    pairs = next(v for v in frames if "Jaccard (all)" in v.columns)
    assert pairs.astype(str).equals(pair_table(want).astype(str))
    counts = next(v for v in frames if "flagged members" in v.columns)
    assert list(counts["flagged members"]) == [want.counts[a]["member"] for a in want.attacks]
    who = next(v for v in frames if "flagged by" in v.columns)
    flagged = want.flagged_samples()
    assert flagged and list(who["sample id"]) == [s.sample_id for s in flagged][: len(who)]
    assert list(who["flagged by"]) == sorted(who["flagged by"], reverse=True)
    assert all(str(v).startswith("data:image/png;base64,") for v in who["image"])
