"""The Findings page's neighbours (ldminv_app.findings_warm), with streamlit.testing's AppTest on a
synthetic run with two attacks and real image files: once the page has been drawn and the warm-up
is idle, an attack switch and a protocol switch draw every section in their first run (no
"computing in the background" line), and the sections drawn from the warmed store equal the
evaluation layer's numbers (the agreement pairs against ``agreement``)."""
from __future__ import annotations

import warnings

import pytest
from streamlit.testing.v1 import AppTest

from ldminv_app import cache, exposure_view, findings_view, findings_warm, lazy, warm
from ldminv_app.agreement_tables import pair_table
from ldminv_core.evaluation import DEFAULT_N_BOOT, agreement
from support.apptest import open_app, open_tab
from support.two_attack_run import two_attack_run


pytestmark = pytest.mark.slow  # three protocols of two attacks with bootstrap, computed in the background


def _pending(at: AppTest) -> list[str]:
    return [c.value for c in at.caption if lazy.PENDING_WORDS in c.value]


def test_attack_and_protocol_switches_find_their_sections_ready(tmp_path, monkeypatch):
    run = two_attack_run(tmp_path / "runs" / "warm")
    at = open_app(run.path, tmp_path, monkeypatch)
    at = open_tab(at, findings_view.MORE_TABS_KEY, findings_view.AGREEMENT_TAB)  # the open tab stays open
    attack = at.selectbox(key="sidebar_attack").value
    other = next(a for a in run.attacks if a != attack)
    # 1. the neighbours' jobs are in the store once the warm-up is idle
    assert warm.warmer().idle(300)
    jobs = findings_warm.neighbour_jobs(run, attack, protocol="standard", folds=at.session_state["folds"],
                                        tab=findings_view.AGREEMENT_TAB)
    # the other attack's findings; the two other protocols' findings and agreement (the open tab)
    assert len(jobs) == (len(run.attacks) - 1) + 2 * 2
    assert all(lazy.results().ready(key) for key, _ in jobs)
    # a tab never opened is not computed in the background
    paper = {a: cache.protocol_evaluations(run, a, folds=at.session_state["folds"])["paper"] for a in run.attacks}
    assert not lazy.results().ready(exposure_view.job(run, attack, evaluations=paper)[0])
    # 2. an attack switch: every section in the first run
    at.selectbox(key="sidebar_attack").select(other).run()
    assert not at.exception, [e.value for e in at.exception]
    assert _pending(at) == []
    # 3. back, then a protocol switch: every section in the first run, the agreement the core's
    at.selectbox(key="sidebar_attack").select(attack).run()
    assert warm.warmer().idle(300)
    at.selectbox(key="sidebar_protocol").select("paper").run()
    assert not at.exception, [e.value for e in at.exception]
    assert _pending(at) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = agreement(run, "paper", n_boot=DEFAULT_N_BOOT)
    pairs = next(el.value for el in at.dataframe if "Jaccard (all)" in el.value.columns)
    assert pairs.astype(str).equals(pair_table(want).astype(str))


def test_a_fold_change_under_honest_finds_its_sections_ready(tmp_path, monkeypatch):
    run = two_attack_run(tmp_path / "runs" / "folds")
    at = open_app(run.path, tmp_path, monkeypatch)
    attack = at.selectbox(key="sidebar_attack").value
    at.selectbox(key="sidebar_protocol").select("honest").run()
    folds = at.session_state["folds"]
    assert warm.warmer().idle(300)
    # the neighbouring fold counts' sections were warmed, headline result included
    jobs = findings_warm.neighbour_jobs(run, attack, protocol="honest", folds=folds, tab=findings_view.EVERY_ATTACK_TAB)
    assert findings_warm.neighbour_folds(folds) == [folds + 1, folds - 1]
    assert all(lazy.results().ready(key) for key, _ in jobs)
    at.number_input(key="sidebar_folds").increment().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["folds"] == folds + 1
    assert _pending(at) == []  # every section in the first run
    # not warmed under another protocol: the fold count does not change its numbers
    assert len(findings_warm.neighbour_jobs(run, attack, protocol="standard", folds=folds)) == 1 + 2 * 2
