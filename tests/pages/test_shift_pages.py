"""The dashboard's shift check (METHOD.md section 6, issue 22) with streamlit.testing's AppTest.

Two real runs of the analysis pipeline on a tiny random model (SimA + PFAMI at three
timesteps): one whose held-out images are brighter files than the members (distribution shift
that no model is needed to see: the blind baseline separates the folders), and one whose two
folders are drawn alike. A third, synthetic run (no image files, so no blind baseline) has an
attack whose AUROC lies below chance. The expected numbers are the evaluation layer's, checked
against sklearn's AUROC / ROC and scipy's exact binomial interval.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve
from streamlit.testing.v1 import AppTest

from ldminv_app import state

from ldminv_app.blind import BLIND_CURVE

from ldminv_app.cards import statement_text
from ldminv_core.evaluation import (CONFOUNDED_WORDS, DEFAULT_N_BOOT, Evaluation, below_chance_text, make_protocol,
                                    shift_advice, shift_headline)
from ldminv_core.runs import Run
from support.apptest import arr as _arr, build_model as _build_model, charts as _charts, settle
from support.shift_runs import N_PER_FOLDER, SHIFT_BRIGHTNESS, analyze
from synthetic_runs import write_run

# Every test here computes whole analyses or runs many page scripts: over ~10 s each.
pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 120
BLIND_IDS = ("blind_baseline", "attack_vs_blind", "attack_within_blind_strata")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{"shifted": held-out images brighter, "alike": both folders drawn alike}, one tiny model."""
    base = tmp_path_factory.mktemp("shift_pages")
    model = _build_model(base / "model")
    return {"shifted": analyze(base / "shifted", model, brightness=SHIFT_BRIGHTNESS),
            "alike": analyze(base / "alike", model, brightness=0.0)}


def open_app(run: Path, monkeypatch, home: Path, *, protocol: str = "standard", page: str | None = None) -> AppTest:
    monkeypatch.setenv("LDMINV_HOME", str(home))
    monkeypatch.setenv("LDMINV_RUN", str(run))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    ok(at)
    if protocol != at.session_state[state.PROTOCOL]:
        at.selectbox(key="sidebar_protocol").select(protocol).run()
        ok(at)
    if page is not None:
        at.switch_page(page).run()
        ok(at)
    return settle(at)


def ok(at: AppTest) -> None:
    settle(at)  # the Findings page's background sections
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def evaluation(at: AppTest, run: Path, attack: str = "sima") -> Evaluation:
    """The evaluation the page shows: the session's protocol (and folds), the pages' replicates."""
    name = at.session_state[state.PROTOCOL]
    proto = make_protocol(name, folds=int(at.session_state[state.FOLDS])) if name == "honest" else make_protocol(name)
    return Evaluation(Run.open(run), attack, proto, n_boot=DEFAULT_N_BOOT)


def exact_ci(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return float(ci.low), float(ci.high)


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def blind_trace(chart: dict) -> dict:
    found = [tr for tr in chart["data"] if str(tr.get("name", "")).startswith(BLIND_CURVE)]
    assert len(found) == 1, [tr.get("name") for tr in chart["data"]]
    return found[0]


# --------------------------------------------------------------------------- shifted folders


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_findings_opens_with_the_shift_check_and_flags_every_membership_finding(runs, monkeypatch, tmp_path,
                                                                               protocol):
    at = open_app(runs["shifted"], monkeypatch, tmp_path, protocol=protocol)
    ev = evaluation(at, runs["shifted"])
    blind = ev.blind()
    labels = ev.labels
    # the fixture is what it claims: the brighter held-out files are told apart by their pixels alone
    assert blind.separable and blind.separating_groups == ("pixels",)
    for g in blind.groups:
        assert g.auroc == pytest.approx(roc_auc_score(labels, blind.scores[g.group]), abs=1e-12), g.group

    # the card: the verdict in words as the first warning of the page, before every finding
    warnings = texts(at.warning)
    headline = shift_headline(blind)
    assert headline.startswith("Distribution shift: the files alone, without the model, tell members from held-out")
    assert warnings[0] == headline
    markdown = texts(at.markdown)
    card = next(i for i, m in enumerate(markdown) if "Shift check" in m)
    first_finding = next(i for i, m in enumerate(markdown) if "Can the files alone, without the model" in m)
    assert card < first_finding
    # one chart: blind AUROC per feature group with its 95% interval, a chance line at 0.5
    chart = next(v for k, v in _charts(at).items() if k.startswith("Blind AUROC per feature group"))
    bars = chart["data"][0]
    ys = _arr(bars["y"]).astype(float)
    np.testing.assert_allclose(ys, [g.auroc for g in blind.groups], atol=1e-12)
    np.testing.assert_allclose(ys + _arr(bars["error_y"]["array"]).astype(float),
                               [g.ci["auroc"][1] for g in blind.groups], atol=1e-12)
    np.testing.assert_allclose(ys - _arr(bars["error_y"]["arrayminus"]).astype(float),
                               [g.ci["auroc"][0] for g in blind.groups], atol=1e-12)
    assert [s["y0"] for s in chart["layout"]["shapes"]] == [0.5]  # the chance line
    assert chart["layout"]["xaxis"]["title"]["text"] == "dotted line: chance AUROC (0.5)"
    # the numbers of all groups together; TPR@1%FPR with what it rests on and its exact interval
    everything = blind.group("all")
    assert next(m.value for m in at.metric if m.label == "Blind AUROC (all groups)") == f"{everything.auroc:.4f}"
    low = everything.low_fpr
    lo, hi = exact_ci(low.true_positives, low.n_positives)
    captions = "\n".join(texts(at.caption))
    assert f"1% FPR = {low.allowed_false_positives} of {N_PER_FOLDER} held-out images" in captions
    assert f"exact 95% CI [{lo:.4f}, {hi:.4f}] (Clopper-Pearson, {low.true_positives} of {low.n_positives} members)" \
        in captions
    # what to do: the separating group, and how to build a matched held-out set
    advice = shift_advice(blind)
    assert "pixels" in advice and "held-out set that matches the members" in advice
    assert f"**What to do.** {advice}" in markdown

    # every membership / geometry finding carries its caveat, visibly, and no unqualified verdict
    res = ev.result()
    usual = [f for f in res.findings if f.id not in BLIND_IDS]
    assert [f.id for f in res.findings[:3]] == list(BLIND_IDS) and usual
    for f in usual:
        assert f.caveat and f.caveat in warnings, f.id
        assert statement_text(f) in markdown, f.id  # the statement, its caveat shown apart
        if f.verdict in ("supported", "contradicted"):
            assert any(f":orange-badge[{f.verdict}] *on these folders, {CONFOUNDED_WORDS}*" in m for m in markdown)
    assert any(f.verdict in ("supported", "contradicted") for f in usual)  # a verdict the caveat qualifies
    table = next(df.value for df in settle(at).dataframe if "verdict" in df.value.columns and "attack" in df.value.columns)
    membership = table[~table["finding"].str.startswith(("Blind baseline", "Attack vs blind", "Attack within"))]
    claims = membership[membership["verdict"].str.startswith(("supported", "contradicted"))]
    assert len(claims) and all(v.endswith(CONFOUNDED_WORDS) for v in claims["verdict"])
    assert not any("as the paper reports" in m for m in markdown)

    # the headline ROC: the blind baseline dashed beside the attack's, on the same samples
    roc = next(v for k, v in _charts(at).items() if "baseline ROC" in k)
    trace = blind_trace(roc)
    assert trace["line"]["dash"] == "dash"
    if protocol == "standard":  # members positive: sklearn's ROC of the out-of-fold scores
        fpr, tpr, _ = roc_curve(labels, blind.scores["all"], drop_intermediate=False)
        x, y = _arr(trace["x"]).astype(float), _arr(trace["y"]).astype(float)
        fpr, tpr = np.clip(fpr, 1 / ev.run.n_heldout, 1), np.clip(tpr, 1 / ev.run.n_members, 1)  # the log axes
        points = set(zip(fpr.round(12), tpr.round(12)))
        assert set(zip(x.round(12), y.round(12))) <= points


def test_masks_and_distortion_draw_the_blind_roc_beside_the_attack(runs, monkeypatch, tmp_path):
    at = open_app(runs["shifted"], monkeypatch, tmp_path, protocol="honest", page="pages/masks_roc.py")
    ev = evaluation(at, runs["shifted"])
    blind = ev.blind()
    blind_auroc = roc_auc_score(ev.labels, blind.scores["all"])
    rocs = {k: v for k, v in _charts(at).items() if k.startswith("ROC")}
    assert len(rocs) == 2
    for chart in rocs.values():
        trace = blind_trace(chart)
        assert trace["name"] == f"{BLIND_CURVE} (AUROC {blind_auroc:.4f})"
        assert trace["line"]["dash"] == "dash"
        assert all(tr["line"].get("dash") != "dash" for tr in chart["data"] if tr is not trace and "line" in tr
                   and tr.get("name") != "chance")
    captions = texts(at.caption)
    note = next(c for c in captions if c.startswith(":orange[**Distribution shift.**]"))
    assert f"blind AUROC {blind.group('all').auroc:.3f}" in note and "separating: pixels" in note
    # the TPR@1%FPR cards: how many held-out images the 1% rests on, and the exact interval
    arms = ev.arms()
    for name in ("baseline", "masked"):
        low = arms[name].low_fpr
        lo, hi = exact_ci(low.true_positives, low.n_positives)
        assert any(f"{low.rests_on()} · exact 95% CI [{lo:.4f}, {hi:.4f}]" in c for c in captions), name

    at.switch_page("pages/distortion.py").run()
    ok(at)
    chart = next(v for k, v in _charts(at).items() if "beside the files alone" in k)
    trace = blind_trace(chart)
    assert trace["line"]["dash"] == "dash" and trace["name"] == f"{BLIND_CURVE} (AUROC {blind_auroc:.4f})"
    finding = next(f for f in ev.findings() if f.id == "distortion_quartiles")
    assert finding.caveat in texts(at.warning)
    assert any(c.startswith(":orange[**Distribution shift.**]") for c in texts(at.caption))


# --------------------------------------------------------------------------- folders drawn alike


def test_folders_drawn_alike_get_no_caveat(runs, monkeypatch, tmp_path):
    at = open_app(runs["alike"], monkeypatch, tmp_path)
    ev = evaluation(at, runs["alike"])
    blind = ev.blind()
    lo, hi = blind.group("all").ci["auroc"]
    assert blind.available and lo < 0.5 < hi
    headline = shift_headline(blind)
    assert headline.startswith("No shift detected") and headline in texts(at.info)
    assert shift_advice(blind) == "" and not any(m.startswith("**What to do.**") for m in texts(at.markdown))
    res = ev.result()
    assert not any(f.caveat for f in res.findings)
    page = "\n".join(texts(at.warning) + texts(at.markdown) + texts(at.caption))
    for words in (CONFOUNDED_WORDS, "cannot be separated from the folders' difference", "orange-badge",
                  "Distribution shift", "files alone separate"):
        assert words not in page
    table = next(df.value for df in settle(at).dataframe if "verdict" in df.value.columns and "attack" in df.value.columns)
    assert not table["verdict"].str.contains(CONFOUNDED_WORDS, regex=False).any()
    # the blind curve is still drawn, the shift note is not
    at.switch_page("pages/masks_roc.py").run()
    ok(at)
    assert all(blind_trace(v) for k, v in _charts(at).items() if k.startswith("ROC"))
    assert not any("Distribution shift" in c for c in texts(at.caption))


# --------------------------------------------------------------------------- below chance, no blind baseline


@pytest.fixture(scope="module")
def reversed_run(tmp_path_factory) -> Path:
    """A synthetic run whose members have larger SimA terms (AUROC below chance) and whose image
    files do not exist (no blind baseline can be computed)."""
    rng = np.random.default_rng(0)
    n, shape = 80, (2, 4, 4)
    labels = np.r_[np.ones(40, dtype=np.int8), np.zeros(40, dtype=np.int8)]
    terms = rng.gamma(2.0, 1.0, size=(n, 3, *shape)).astype(np.float32)
    terms[labels == 1] *= 1.5
    run = write_run(tmp_path_factory.mktemp("reversed") / "run", terms=terms,
                    influence=rng.normal(size=(n, *shape)).astype(np.float32), log_volume=rng.normal(size=n),
                    labels=labels, timesteps=[0, 10, 20])
    return Path(run.path)


def test_below_chance_auroc_is_named_and_a_missing_blind_baseline_says_why(reversed_run, monkeypatch, tmp_path):
    at = open_app(reversed_run, monkeypatch, tmp_path)
    ev = evaluation(at, reversed_run)
    blind, base = ev.blind(), ev.baseline()
    assert not blind.available and blind.reason
    assert shift_headline(blind) == f"Blind baseline unavailable: {blind.reason}."
    assert shift_headline(blind) in texts(at.info)
    assert not any(k.startswith("Blind AUROC per feature group") for k in _charts(at))
    assert not any(str(tr.get("name", "")).startswith(BLIND_CURVE)
                   for v in _charts(at).values() for tr in v["data"])
    assert not ev.findings()[0].id.startswith("blind")  # no blind findings without the features
    # the attack's AUROC interval lies below 0.5: said so beside the number, never a plain number only
    assert base.below_chance
    text = below_chance_text(base.auroc, base.ci["auroc"])
    assert text.startswith("below chance (95% CI")
    assert any(text in c for c in texts(at.caption))  # the card
    assert any(c.startswith(":material/warning: **SimA**: AUROC") and text in c for c in texts(at.caption))  # table
    at.switch_page("pages/masks_roc.py").run()
    ok(at)
    card = next(c for c in texts(at.caption) if c.startswith("standard · ") and "below chance" in c)
    assert text in card
