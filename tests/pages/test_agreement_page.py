"""The Findings page's agreement section with streamlit.testing's AppTest, on a synthetic run with
two attacks and real image files: the counts, the pairs (Jaccard and Spearman with intervals) and
who flags whom (thumbnails of the flagged images) equal the evaluation layer's ``agreement``."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from ldminv_app.agreement_tables import pair_table
from ldminv_core.evaluation import DEFAULT_N_BOOT, agreement
from support.apptest import settle
from support.two_attack_run import two_attack_run

APP = str(Path(__file__).resolve().parents[2] / "app.py")
pytestmark = pytest.mark.slow  # the Findings page's evaluations of two attacks with bootstrap: over 10 s


def test_findings_page_shows_who_flags_whom(tmp_path, monkeypatch):
    run = two_attack_run(tmp_path / "runs" / "agree")
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
