"""The blind baseline and the low-FPR honesty (METHOD.md section 6) in the CLI report (JSON and
text) and the HTML export.

Three small synthetic runs with real PNG files: ``shift`` (held-out images brighter than the
members: the files alone separate the folders), ``alike`` (both folders drawn from one image
generator) and ``swap`` (alike images, but the attack's statistic is larger for members: its
AUROC lies below chance). In ``shift`` and ``alike`` the members of the most distorted half
carry a membership signal, so ``distortion_quartiles`` is supported in both. Oracles: sklearn's
own cross-fitting of the files' features (``cross_val_predict`` on the honest folds),
``roc_auc_score``, ``scipy.stats.binomtest``; the single source of every number is
``Evaluation(run, attack, protocol)``.
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ldminv_core.data.blind_features import blind_features
from ldminv_core.evaluation import (CONFOUNDED_WORDS, Evaluation, below_chance_text, make_protocol, shift_advice,
                                    shift_headline)
from ldminv_core.report import build_report, format_report
from ldminv_core.runs import Run
from ldminv_app import html_report
from ldminv_app.html_report.markup import esc
from synthetic_runs import write_run

N_BOOT = 200
N_PER_SPLIT = 40


def make_run(folder: Path, *, brightness: float = 0.0, swap: bool = False, seed: int = 0) -> Run:
    """A finished run of 40 members and 40 held-out 24x24 PNGs: SimA terms (2 timesteps) and PFAMI
    scores. ``brightness`` is added to every held-out pixel; the members of the most distorted
    half have smaller terms (a membership signal that grows with distortion), or, with ``swap``,
    every member has larger terms (the attack reads the folders the wrong way round)."""
    rng = np.random.default_rng(seed)
    n = 2 * N_PER_SPLIT
    labels = np.r_[np.ones(N_PER_SPLIT, dtype=np.int64), np.zeros(N_PER_SPLIT, dtype=np.int64)]
    log_volume = rng.normal(size=n)
    terms = rng.exponential(1.0, size=(n, 2, 2, 3, 3)).astype(np.float32)
    if swap:
        terms[labels == 1] *= 1.6
    else:
        terms[(labels == 1) & (log_volume > np.median(log_volume))] *= 0.6
    run = write_run(folder, terms=terms, influence=rng.normal(size=(n, 2, 3, 3)).astype(np.float32),
                    log_volume=log_volume, labels=labels, timesteps=[0, 10],
                    pfami=rng.normal(size=n) + 0.5 * labels)
    pixels_rng = np.random.default_rng(seed + 100)
    for path, y in zip(run.samples["path"], labels):
        pixels = pixels_rng.normal(110 + brightness * (1 - y), 30, size=(24, 24, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB").save(path)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    base = tmp_path_factory.mktemp("report-blind")
    return {"shift": make_run(base / "shift", brightness=30.0),
            "alike": make_run(base / "alike"),
            "swap": make_run(base / "swap", swap=True)}


@pytest.fixture(scope="module")
def reports(runs) -> dict[tuple[str, str], dict]:
    """build_report of every run under standard and honest (computed once)."""
    return {(name, protocol): build_report(run, protocol=protocol, n_boot=N_BOOT)
            for name, run in runs.items() for protocol in ("standard", "honest")}


def group(report: dict, name: str) -> dict:
    return next(g for g in report["blind"]["groups"] if g["group"] == name)


# --------------------------------------------------------------------------- report JSON


@pytest.mark.parametrize("protocol", ["standard", "honest"])
@pytest.mark.slow
def test_blind_json_equals_sklearn_on_the_out_of_fold_scores(runs, reports, protocol):
    run = runs["shift"]
    report = reports["shift", protocol]
    json.dumps(report, allow_nan=False)  # what `report --json` prints
    labels = run.labels.astype(np.int64)
    ev = Evaluation(run, "sima", make_protocol(protocol), n_boot=N_BOOT)
    blind = ev.blind()
    assert report["blind"]["available"] and blind.available
    assert [g["group"] for g in report["blind"]["groups"]] == [g.group for g in blind.groups] == \
        ["meta", "pixels", "caption", "all"][:len(blind.groups) - 1] + ["all"]
    # the oracle: sklearn's own cross-fitting of the files' features on the honest folds
    feats = blind_features([str(p) for p in run.samples["path"]])
    x_all = np.hstack([feats.groups[g] for g in feats.groups])
    model = make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky", max_iter=1000, random_state=0))
    oof = cross_val_predict(model, x_all, labels, cv=PredefinedSplit(ev.blind_folds()), method="predict_proba")[:, 1]
    np.testing.assert_allclose(blind.scores["all"], oof, atol=1e-6)
    assert group(report, "all")["auroc"] == pytest.approx(roc_auc_score(labels, oof), abs=1e-9)
    for g in report["blind"]["groups"]:
        assert g["auroc"] == pytest.approx(roc_auc_score(labels, blind.scores[g["group"]]), abs=1e-12), g["group"]
        lo, hi = g["auroc_ci"]
        assert lo <= g["auroc"] <= hi and g["ci"]["auroc"] == [lo, hi]
        assert g["below_chance"] is (hi < 0.5)
    # the brighter held-out folder: pixels separate, the run-level shift entry says so in the evaluation's words
    assert group(report, "pixels")["verdict"] == "supported" and group(report, "all")["verdict"] == "supported"
    assert report["shift"] == {"separable": True, "separating_groups": list(blind.separating_groups),
                               "headline": shift_headline(blind), "advice": shift_advice(blind)}
    assert "pixels" in report["shift"]["separating_groups"] and report["shift"]["advice"]
    assert report["blind"]["finding"]["id"] == "blind_baseline" and report["blind"]["finding"]["verdict"] == "supported"
    assert report["blind"]["folds"] == 5 and report["blind"]["classifier"] == blind.classifier
    assert all(a["shifted"] for a in report["attacks"].values())


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_exact_intervals_and_counts_of_every_tpr(runs, reports, protocol):
    run = runs["shift"]
    report = reports["shift", protocol]
    labels = run.labels.astype(np.int64)
    n_neg = int((labels == 0).sum())
    entries = [(f"{a}/{k}", arm) for a, att in report["attacks"].items()
               for k in ("baseline", "masked", "random") if (arm := att.get(k)) is not None]
    entries += [(f"blind/{g['group']}", g) for g in report["blind"]["groups"]]
    counted = 0
    for where, e in entries:
        lf = e["low_fpr"]
        if where.endswith("/random"):
            assert lf is None  # a mean over seeds has no single count
            continue
        counted += 1
        k, n = lf["true_positives"], lf["n_positives"]
        ci = stats.binomtest(k, n).proportion_ci(method="exact")
        assert lf["exact_ci"] == pytest.approx([ci.low, ci.high], abs=1e-12), where
        assert n == N_PER_SPLIT and lf["n_negatives"] == n_neg
        assert e["tpr_at_1fpr"] == pytest.approx(k / n, abs=1e-12), where  # the rate is the count
        assert lf["rests_on"] == f"1% FPR = 0 of {n_neg} held-out images"  # floor(0.01 * 40) = 0
        assert lf["threshold_fixed"] is (protocol == "honest")
    assert counted == 3 + len(report["blind"]["groups"])
    if protocol == "standard":  # the count against sklearn's ROC: the largest TPR at FPR <= 1%
        ev = Evaluation(run, "pfami", make_protocol(protocol), n_boot=0)
        fpr, tpr, _ = roc_curve(labels, ev.scores("baseline"), drop_intermediate=False)
        lf = report["attacks"]["pfami"]["baseline"]["low_fpr"]
        assert lf["true_positives"] == round(tpr[fpr <= 0.01].max() * N_PER_SPLIT)


def test_findings_carry_caveats_only_on_separable_folders(reports):
    shifted, alike = reports["shift", "standard"], reports["alike", "standard"]
    assert alike["shift"]["separable"] is False and alike["shift"]["advice"] == ""
    assert group(alike, "all")["verdict"] == "inconclusive"
    for f in alike["findings"]:
        assert f["caveat"] == "" and f["confounded"] is False, f["id"]
    blind_ids = {"blind_baseline", "attack_vs_blind", "attack_within_blind_strata"}
    for f in shifted["findings"]:
        assert f["confounded"] is (f["id"] not in blind_ids), f["id"]
        assert f["confounded"] is bool(f["caveat"])
        if f["caveat"]:
            assert f["statement"].endswith(f["caveat"]) and "not evidence of membership" in f["caveat"]
    # the same geometry effect is supported in both runs; only the separable one qualifies it
    dq = {name: next(f for f in r["findings"] if f["attack"] == "sima" and f["id"] == "distortion_quartiles")
          for name, r in (("shift", shifted), ("alike", alike))}
    assert dq["shift"]["verdict"] == dq["alike"]["verdict"] == "supported"
    assert "as the paper reports" in dq["alike"]["statement"]
    assert "as the paper reports" not in dq["shift"]["statement"]


# --------------------------------------------------------------------------- report text


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_text_report_opens_with_the_shift_check(reports, protocol):
    report = reports["shift", protocol]
    text = format_report(report)
    lines = text.splitlines()
    headline = report["shift"]["headline"]
    assert headline.startswith("Distribution shift") and headline in lines
    attack_table = next(i for i, line in enumerate(lines) if line.startswith("attack  arm"))
    assert lines.index(headline) < attack_table  # before the attacks
    assert f"What to do: {report['shift']['advice']}" in lines
    assert lines[attack_table - 1].startswith("Shifted folders: the attacks below")  # the arms are qualified too
    assert "40 label permutations" in report["blind"]["intervals"]  # how the blind intervals are made, said
    assert f"AUROC intervals: {report['blind']['intervals']}." in text
    # the per-group table: blind AUROC [CI], bootstrap and exact TPR intervals, the count
    for g in report["blind"]["groups"]:
        row = next(line for line in lines[:attack_table] if line.strip().startswith(g["group"] + " "))
        lo, hi = g["auroc_ci"]
        elo, ehi = g["low_fpr"]["exact_ci"]
        for cell in (f"{g['auroc']:.4f}", f"[{lo:.4f}, {hi:.4f}]", f"[{elo:.4f}, {ehi:.4f}]",
                     f"{g['low_fpr']['true_positives']}/{g['low_fpr']['n_positives']}", g["verdict"]):
            assert cell in row, (cell, row)
    # no unqualified membership or geometry claim on separable folders
    assert "as the paper reports" not in text
    confounded = [f for f in report["findings"] if f["confounded"]]
    assert confounded and text.count("    Caveat: ") == len(confounded)
    for f in confounded:
        line = next(li for li in lines if li.startswith(f"- [{f['attack']}]") and f"({f['id']})" in li)
        if f["verdict"] in ("supported", "contradicted"):
            assert CONFOUNDED_WORDS in line
        assert f["caveat"] not in line  # printed once, on the next line
        assert lines[lines.index(line) + 1] == f"    Caveat: {f['caveat']}"
    assert "on folders the files alone separate (not evidence of membership)" in text
    # every TPR@1%FPR says what it rests on, with the exact interval beside the bootstrap one
    assert text.count("TPR@1%FPR rests on 1% FPR = 0 of 40 held-out images") == 2
    base = report["attacks"]["sima"]["baseline"]
    row = next(line for line in lines[attack_table:] if line.startswith("sima ") and "baseline" in line)
    elo, ehi = base["low_fpr"]["exact_ci"]
    blo, bhi = base["ci"]["tpr_at_1fpr"]
    assert f"[{blo:.4f}, {bhi:.4f}]  [{elo:.4f}, {ehi:.4f}]" in row


def test_text_report_of_folders_alike_reads_as_before(reports):
    report = reports["alike", "standard"]
    text = format_report(report)
    assert report["shift"]["headline"].startswith("No shift detected") and report["shift"]["headline"] in text
    assert "What to do:" not in text and "Caveat:" not in text and CONFOUNDED_WORDS not in text
    assert "Shifted folders" not in text
    assert "as the paper reports" in text  # the supported geometry claim stands unqualified
    assert "files alone separate" not in text


def test_below_chance_aurocs_are_named_never_plain(reports):
    report = reports["swap", "standard"]
    base = report["attacks"]["sima"]["baseline"]
    assert base["below_chance"] is True and base["auroc_ci"][1] < 0.5  # the attack reads the folders backwards
    text = format_report(report)
    row = next(line for line in text.splitlines() if line.startswith("sima ") and "baseline" in line)
    assert f"{base['auroc']:.4f} (below chance)" in row
    assert f"sima baseline AUROC {base['auroc']:.4f}: {below_chance_text(base['auroc'], base['auroc_ci'])}" in text
    for name, r in reports.items():  # an arm is marked exactly when its interval lies below 0.5
        for att in r["attacks"].values():
            for key in ("baseline", "masked", "random"):
                if att.get(key) is not None:
                    assert att[key]["below_chance"] is (att[key]["auroc_ci"][1] < 0.5), (name, key)
    plain = format_report(reports["alike", "standard"])
    assert "below chance" not in plain.split("Findings (")[0]


# --------------------------------------------------------------------------- HTML export


def plot_traces(doc: str) -> list[list[dict]]:
    """The trace lists of every Plotly.newPlot call in the document."""
    out = []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', doc):
        traces, _ = json.JSONDecoder().raw_decode(doc, m.end())
        out.append(traces)
    return out


def plot_array(value) -> np.ndarray:
    """A trace's coordinates: a plain list, or plotly's typed array {"dtype", "bdata" (base64)}."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=np.float64)


def test_html_export_opens_with_the_shift_check(runs):
    run = runs["shift"]
    doc = html_report.build_html_report(run, attack="sima", n_boot=N_BOOT)
    report = build_report(run, attack="sima", drop=40.0, n_boot=N_BOOT)
    # the shift section comes first, with the evaluation's headline and advice
    assert list(html_report.SECTIONS)[0] == "shift"
    assert doc.index('id="shift"') < doc.index('id="findings"') < doc.index('id="metrics"')
    shift = doc[doc.index('id="shift"'):doc.index('id="findings"')]
    assert 'class="shift-box shifted"' in shift
    assert esc(report["shift"]["headline"]) in shift and esc(report["shift"]["advice"]) in shift
    for g in report["blind"]["groups"]:  # the per-group table
        lo, hi = g["auroc_ci"]
        elo, ehi = g["low_fpr"]["exact_ci"]
        assert re.search(rf"<td>{g['group']}</td>.*?<td>{g['auroc']:.4f}</td>\s*<td>\[{lo:.4f}, {hi:.4f}\]</td>"
                         rf".*?<td>\[{elo:.4f}, {ehi:.4f}\]</td>\s*<td>{g['low_fpr']['true_positives']} of "
                         rf"{g['low_fpr']['n_positives']} members</td>", shift, re.S), g["group"]
    assert "1% FPR = 0 of 40 held-out images" in shift
    # confounded findings: verdict words and their caveat, no unqualified paper claim
    assert "as the paper reports" not in doc
    for f in report["findings"]:
        if f["confounded"]:
            row = re.search(rf'<tr data-finding="{f["id"]}" class="confounded">(.*?)</tr>', doc, re.S).group(1)
            assert esc(f["caveat"]) in row
            if f["verdict"] in ("supported", "contradicted"):
                assert esc(CONFOUNDED_WORDS) in row
    # metrics: qualified on shifted folders; the exact interval and the count beside every TPR@1%FPR
    metrics = doc[doc.index('id="metrics"'):]
    assert metrics.index('id="metrics-shifted"') < metrics.index('id="metrics-table"')
    base = report["attacks"]["sima"]["baseline"]
    elo, ehi = base["low_fpr"]["exact_ci"]
    assert f"<td>[{elo:.4f}, {ehi:.4f}]</td>" in doc[doc.index('id="metrics"'):doc.index('id="roc"')]
    # the blind ROC (all groups) drawn dashed beside the attack's, its points those of convention_roc
    from ldminv_core.evaluation import convention_roc
    ev = Evaluation(run, "sima", make_protocol("standard"), n_boot=0)
    want = convention_roc(ev.blind().scores["all"], run.labels, ev.protocol)
    blind_traces = [t for traces in plot_traces(doc) for t in traces
                    if str(t.get("name", "")).startswith(html_report.BLIND_CURVE_LABEL)]
    assert len(blind_traces) == 2  # linear and log-log ROC
    assert all(t["line"]["dash"] == "dash" for t in blind_traces)
    np.testing.assert_allclose(plot_array(blind_traces[0]["x"]), want.fpr)
    np.testing.assert_allclose(plot_array(blind_traces[0]["y"]), want.tpr)
    # offline: nothing fetched from elsewhere
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', doc)


def test_html_export_of_folders_alike_and_of_a_swapped_attack(runs):
    doc = html_report.build_html_report(runs["alike"], attack="sima", n_boot=N_BOOT)
    shift = doc[doc.index('id="shift"'):doc.index('id="findings"')]
    assert "No shift detected" in shift and 'id="shift-advice"' not in shift and "shift-box shifted" not in shift
    assert 'class="confounded"' not in doc and 'class="caveat"' not in doc and "metrics-shifted" not in doc
    assert "as the paper reports" in doc
    doc = html_report.build_html_report(runs["swap"], attack="sima", n_boot=N_BOOT)
    report = build_report(runs["swap"], attack="sima", drop=40.0, n_boot=N_BOOT)
    base = report["attacks"]["sima"]["baseline"]
    metrics = doc[doc.index('id="metrics"'):doc.index('id="roc"')]
    assert f"<td>{base['auroc']:.4f} (below chance)</td>" in metrics
    assert esc(below_chance_text(base["auroc"], base["auroc_ci"])) in metrics
