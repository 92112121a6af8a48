"""The Findings page's agreement section with streamlit.testing's AppTest, on a synthetic run with
two attacks and real image files: the counts, the pairs (Jaccard and Spearman with intervals) and
who flags whom (thumbnails of the flagged images) equal the evaluation layer's ``agreement``."""
from __future__ import annotations

import warnings

import pytest

from ldminv_app import findings_view
from ldminv_app.agreement_tables import pair_table
from ldminv_core.evaluation import DEFAULT_N_BOOT, agreement
from support.apptest import open_app, open_tab
from support.two_attack_run import two_attack_run

pytestmark = pytest.mark.slow  # the Findings page's evaluations of two attacks with bootstrap: over 10 s


def test_findings_page_shows_who_flags_whom(tmp_path, monkeypatch):
    run = two_attack_run(tmp_path / "runs" / "agree")
    at = open_app(run.path, tmp_path, monkeypatch)
    at = open_tab(at, findings_view.MORE_TABS_KEY, findings_view.AGREEMENT_TAB)
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
