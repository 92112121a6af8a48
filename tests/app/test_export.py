"""Tests of the export: the HTML report, the per-sample CSV and the Export page.

One small run is computed per session with the real analysis pipeline (a tiny random diffusers
model, real PNG images, SimA at three timesteps and PFAMI). Every number in the exported files
is compared with an oracle recomputed here from the run's files: sklearn for the metrics,
plain numpy for the masked statistics, ``build_report`` for the report JSON.
"""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score, roc_curve
from streamlit.testing.v1 import AppTest

from ldminv_core.errors import LdminvError, ShapeError, UnknownNameError
from ldminv_core.evaluation import DEFAULT_N_BOOT, finding_title, verdict_words
from ldminv_core.masks import random_drop_mask
from ldminv_core.report import build_report
from ldminv_core.runs import Run

from ldminv_app import html_report
from support.apptest import settle
from support.fixture_runs import N_PER_SPLIT, TIMESTEPS, build_fixture_run, masked_scores
from support.html_report import findings_rows, parse, report_json, table_dict

# One real analysis per session, then reports with many bootstrap replicates: over ~10 s.
pytestmark = pytest.mark.slow

APP = str(Path(__file__).resolve().parents[2] / "app.py")


# --------------------------------------------------------------------------- the run fixture


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return build_fixture_run(tmp_path_factory.getbasetemp() / "ldminv-export-fixture")


@pytest.fixture(scope="session")
def arrays(run_dir):
    """The run's arrays read straight from its files."""
    samples = pd.read_parquet(run_dir / "samples.parquet")
    settings = json.loads((run_dir / "run.json").read_text())
    return {
        "samples": samples,
        "settings": settings,
        "labels": (samples["split"].to_numpy() == "member").astype(np.int8),
        "log_volume": samples["log_volume"].to_numpy(dtype=np.float64),
        "terms": np.load(run_dir / "residuals" / "sima.npy").astype(np.float64),
        "influence": np.load(run_dir / "influence.npy"),
        "pfami": np.load(run_dir / "scores" / "pfami.npy").astype(np.float64),
    }


# --------------------------------------------------------------------------- oracles


def sk_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUROC, TPR@1%FPR, TPR@0.1%FPR and ASR from sklearn's ROC curve."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return {
        "AUROC": roc_auc_score(labels, scores),
        "TPR@1%FPR": tpr[fpr <= 0.01].max(),
        "ASR": ((tpr + 1 - fpr) / 2).max(),
    }


# --------------------------------------------------------------------------- HTML report

T_USED = 10  # a timestep that is not forced to be the best one
DROP = 40
SEED = 3
N_BOOT = 200


@pytest.fixture(scope="module")
def manual_keep() -> np.ndarray:
    keep = np.zeros((4, 4, 4), dtype=bool)
    keep[1] = True
    keep[3, 0, :2] = True
    return keep


@pytest.fixture(scope="module")
def sima_report(run_dir, manual_keep):
    doc = html_report.build_html_report(
        Run.open(run_dir), attack="sima", t=T_USED, drop_percent=DROP, random_seed=SEED,
        manual_mask=manual_keep, include_global=True, n_boot=N_BOOT,
    )
    return doc, parse(doc)


def test_report_has_every_section_and_is_offline(sima_report):
    doc, p = sima_report
    assert doc.startswith("<!DOCTYPE html>")
    for sid, title in html_report.SECTIONS.items():
        assert sid in p.ids, sid
    assert p.h2 == list(html_report.SECTIONS.values())
    # plotly.js inlined exactly once; no script or stylesheet fetched from the network
    assert doc.count("plotly.js v") == 1
    bundles = [s for s in p.scripts if "plotly.js v" in s["text"]]
    assert len(bundles) == 1 and len(bundles[0]["text"]) > 1_000_000
    assert [s["src"] for s in p.scripts if s["src"]] == []
    assert all(not str(link.get("href", "")).startswith(("http://", "https://", "//")) for link in p.links)
    # the bundle comes before the first figure's Plotly.newPlot call, and every figure is drawn
    first_plot = doc.index("Plotly.newPlot")
    assert doc.index("plotly.js v") < first_plot
    # shift check (blind AUROC bars), findings (quartile bars, AUROC vs drop), 2 ROC, 2 drop, 2 timestep,
    # log-volume, quartiles vs t, influence
    assert len(p.plot_divs) == 12
    for div_id in p.plot_divs:
        assert len(re.findall(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + '"', doc)) == 1


def _best_t_index(arrays) -> int:
    """The standard protocol's t: the best baseline AUROC over t by sklearn (first on ties)."""
    aurocs = [roc_auc_score(arrays["labels"], -arrays["terms"][:, i].sum(axis=(1, 2, 3))) for i in range(len(TIMESTEPS))]
    return int(np.argmax(aurocs))


def test_report_metrics_equal_sklearn_on_recomputed_scores(sima_report, arrays, manual_keep):
    _, p = sima_report
    ti = _best_t_index(arrays)
    terms_t = arrays["terms"][:, ti]
    labels = arrays["labels"]
    n = labels.shape[0]
    mean_influence = arrays["influence"].mean(axis=0)  # float32, as the dashboard ranks
    expected = {
        "baseline": -terms_t.sum(axis=(1, 2, 3)),
        "masked": masked_scores(terms_t, arrays["influence"], DROP),
        "global": masked_scores(terms_t, np.broadcast_to(mean_influence, arrays["influence"].shape), DROP),
        "manual": -(terms_t * manual_keep).sum(axis=(1, 2, 3)),
    }
    table = table_dict(p.tables["metrics-table"])
    assert list(table) == ["baseline", "masked", "random", "global", "manual"]
    for name, scores in expected.items():
        assert table[name]["t"] == f"t = {TIMESTEPS[ti]}", name
        for metric, value in sk_metrics(scores, labels).items():
            assert table[name][metric] == f"{value:.4f}", (name, metric)
        lo, hi = (float(x) for x in table[name]["AUROC 95% CI"].strip("[]").split(","))
        assert 0.0 <= lo <= hi <= 1.0
    # the random control: the mean over its five seeds SEED..SEED+4
    per_seed = [sk_metrics(-(terms_t * random_drop_mask((n, 4, 4, 4), DROP, seed=s)).sum(axis=(1, 2, 3)), labels)
                for s in range(SEED, SEED + 5)]
    for metric in ("AUROC", "TPR@1%FPR", "ASR"):
        assert table["random"][metric] == f"{np.mean([m[metric] for m in per_seed]):.4f}", metric
    assert table["masked"]["drop"] == f"{DROP} %"
    # the settings name what produced the numbers
    fig_settings = table_dict(p.tables["figure-settings-table"])
    assert fig_settings["protocol"]["value"].startswith("standard: members positive")
    assert fig_settings["attack"]["value"] == "SimA (sima)"
    assert fig_settings["timestep t"]["value"] == f"t = {TIMESTEPS[ti]} (metrics); t = {T_USED} (drop curves)"
    assert fig_settings["drop percentage"]["value"].startswith(f"{DROP} %")
    assert f"({int(round(64 * DROP / 100))} of 64 coordinates dropped)" in fig_settings["drop percentage"]["value"]
    assert fig_settings["random seed"]["value"].startswith(f"{SEED} ")
    assert f"keeps {int(manual_keep.sum())} of 64" in fig_settings["manual mask"]["value"]
    assert f"{N_BOOT} stratified replicates" in fig_settings["bootstrap"]["value"]


def test_report_opens_with_the_findings_of_build_report(sima_report, run_dir):
    doc, p = sima_report
    assert doc.index('id="findings"') < doc.index('id="run-settings"')
    rows = findings_rows(p)
    report = build_report(Run.open(run_dir), attack="sima", drop=DROP, seed=SEED, n_boot=N_BOOT)
    assert list(rows) == [f["id"] for f in report["findings"]]
    for f in report["findings"]:
        row = rows[f["id"]]
        assert row["verdict"] == verdict_words(f["verdict"], f["estimate"]) and row["statement"] == f["statement"]
        assert row["finding"] == finding_title(f["id"]) + f["id"]  # the title, the id beneath it
        assert row["estimate"] == f"{f['estimate']:+.4f}"
        assert row["95% CI"] == f"[{f['ci'][0]:.4f}, {f['ci'][1]:.4f}]"
    assert '<p class="lead" id="protocol-line">Protocol <b>standard</b>' in doc


def test_report_run_settings_quartiles_and_json(sima_report, arrays, run_dir):
    _, p = sima_report
    settings = arrays["settings"]
    rows = table_dict(p.tables["run-settings-table"])
    assert rows["model"]["value"] == settings["model"]
    assert rows["members folder"]["value"] == settings["members"]
    assert rows["held-out folder"]["value"] == settings["heldout"]
    assert rows["members / held-out"]["value"] == f"{N_PER_SPLIT} / {N_PER_SPLIT}"
    assert rows["latent shape"]["value"] == "4×4×4 (d = 64)"
    assert rows["log-volume top-k"]["value"] == str(settings["geometry"]["topk"])
    assert rows["influence"]["value"] == settings["geometry"]["influence"]
    for pkg in ("ldminv", "torch", "diffusers"):
        assert rows[f"{pkg} version"]["value"] == settings["versions"][pkg]
    assert "0, 10, 20" in rows["attack sima"]["value"]

    # AUROC by quartile: stable argsort of log-volume split in four, sklearn within each, at the best t
    ti = _best_t_index(arrays)
    labels = arrays["labels"]
    base = -arrays["terms"][:, ti].sum(axis=(1, 2, 3))
    q_rows = table_dict(p.tables["quartile-table"])
    for q, idx in enumerate(np.array_split(np.argsort(arrays["log_volume"], kind="stable"), 4), start=1):
        y = labels[idx]
        row = q_rows[f"Q{q}"]
        assert int(row["n"]) == len(idx) and int(row["members"]) == int(y.sum())
        want = f"{roc_auc_score(y, base[idx]):.4f}" if 0 < y.sum() < len(y) else "–"
        ci = row["AUROC 95% CI"]
        if ci != "–" and float(ci.strip("[]").split(",")[1]) < 0.5:  # never a plain number below chance
            want += " (below chance)"
        assert row["AUROC (baseline)"] == want, q
        assert row["t"] == f"t = {TIMESTEPS[ti]}"

    # timestep table: baseline AUROC at every t
    t_rows = table_dict(p.tables["timestep-table"])
    for i, t in enumerate(TIMESTEPS):
        s = -arrays["terms"][:, i].sum(axis=(1, 2, 3))
        assert t_rows[str(t)]["AUROC (baseline)"] == f"{roc_auc_score(labels, s):.4f}"

    # the report JSON is build_report's, unchanged (saved by a link, not printed in the page)
    assert not p.pre
    shown = report_json(p)
    assert shown == json.loads(json.dumps(build_report(Run.open(run_dir), attack="sima", drop=DROP, seed=SEED,
                                                       n_boot=N_BOOT)))


def test_report_under_the_paper_and_honest_protocols(run_dir, arrays):
    run = Run.open(run_dir)
    labels, terms = arrays["labels"], arrays["terms"]
    # paper: held-out positive, the statistic as the score, strict FPR < 1%, each metric its own t
    doc = html_report.build_html_report(run, attack="sima", protocol="paper", drop_percent=DROP, n_boot=0)
    p = parse(doc)
    table = table_dict(p.tables["metrics-table"])
    stat = terms.sum(axis=(2, 3, 4))  # (N, T)
    per_t = []
    for i in range(len(TIMESTEPS)):
        fpr, tpr, _ = roc_curve(1 - labels, stat[:, i], drop_intermediate=False)
        per_t.append((roc_auc_score(1 - labels, stat[:, i]), tpr[max(int((fpr < 0.01).sum()) - 1, 0)],
                      ((tpr + 1 - fpr) / 2).max()))
    per_t = np.array(per_t)
    for k, metric in enumerate(("AUROC", "TPR@1%FPR", "ASR")):
        assert table["baseline"][metric] == f"{per_t[:, k].max():.4f}", metric
    assert report_json(p)["protocol"]["name"] == "paper"
    # honest: folds table with every fold's own choices, realised FPR beside TPR
    doc = html_report.build_html_report(run, attack="sima", protocol="honest", folds=2, drop_percent=None, n_boot=0)
    p = parse(doc)
    table = table_dict(p.tables["metrics-table"])
    assert "realised FPR" in table["baseline"]
    folds = p.tables["folds-table"]
    report = report_json(p)
    assert len(folds) - 1 == 2 * 3  # 2 folds x (baseline, masked, random)
    assert sum(len(f["sample_ids"]) for f in report["attacks"]["sima"]["baseline"]["folds"]) == 2 * N_PER_SPLIT
    assert report["drop_percent"] is None


def test_report_of_an_unmaskable_attack(run_dir, arrays):
    doc = html_report.build_html_report(run_dir, attack="pfami", t=None, n_boot=0)
    p = parse(doc)
    for sid in html_report.SECTIONS:
        assert sid in p.ids
    table = table_dict(p.tables["metrics-table"])
    assert list(table) == ["baseline"]
    for metric, value in sk_metrics(arrays["pfami"], arrays["labels"]).items():
        assert table["baseline"][metric] == f"{value:.4f}"
    assert table["baseline"]["AUROC 95% CI"] == "–"
    assert "cannot be masked" in doc
    assert doc.count("plotly.js v") == 1
    assert len(p.plot_divs) == 6  # blind AUROC bars, findings quartile bars, 2 ROC, log-volume, influence heatmap


# --------------------------------------------------------------------------- CSV


def test_csv_rows_and_scores(run_dir, arrays):
    text = html_report.per_sample_csv(Run.open(run_dir), attack="sima", t=20, drop_percent=DROP, random_seed=SEED)
    df = pd.read_csv(io.StringIO(text))
    samples, labels = arrays["samples"], arrays["labels"]
    n = len(samples)
    assert len(df) == n == 2 * N_PER_SPLIT
    assert tuple(df.columns) == html_report.CSV_COLUMNS
    assert df["sample_id"].tolist() == samples["sample_id"].tolist()
    assert df["path"].tolist() == samples["path"].tolist()
    assert df["split"].tolist() == samples["split"].tolist()
    assert df["caption"].tolist() == samples["caption"].tolist()
    np.testing.assert_allclose(df["log_volume"], arrays["log_volume"], rtol=1e-12)
    ti = TIMESTEPS.index(20)
    terms_t = arrays["terms"][:, ti]
    np.testing.assert_allclose(df["baseline_score"], -terms_t.sum(axis=(1, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(df["masked_score"], masked_scores(terms_t, arrays["influence"], DROP), rtol=1e-10)
    rand_keep = random_drop_mask((n, 4, 4, 4), DROP, seed=SEED)
    assert (rand_keep.reshape(n, -1).sum(axis=1) == 64 - round(64 * DROP / 100)).all()
    np.testing.assert_allclose(df["random_score"], -(terms_t * rand_keep).sum(axis=(1, 2, 3)), rtol=1e-10)
    # the masked and random scores really differ from the baseline (the masks did something)
    assert not np.allclose(df["masked_score"], df["baseline_score"])
    # quartiles: stable argsort of log-volume split into four groups
    want_q = np.empty(n, dtype=int)
    for q, idx in enumerate(np.array_split(np.argsort(arrays["log_volume"], kind="stable"), 4), start=1):
        want_q[idx] = q
    assert df["distortion_quartile"].tolist() == want_q.tolist()
    # rank 1 = highest baseline score; ranks are a permutation of 1..N ordered like the scores
    assert sorted(df["rank_baseline"]) == list(range(1, n + 1))
    by_rank = df.sort_values("rank_baseline")["baseline_score"].to_numpy()
    assert (np.diff(by_rank) <= 0).all()
    assert (df["attack"] == "sima").all() and (df["t"] == 20).all() and (df["random_seed"] == SEED).all()
    assert (df["protocol"] == "standard").all() and (df["fold"] == 0).all()
    # AUROC from the CSV equals sklearn on the labels
    assert roc_auc_score(labels, df["baseline_score"]) == pytest.approx(
        roc_auc_score(labels, -terms_t.sum(axis=(1, 2, 3))), abs=0
    )


def test_csv_of_an_unmaskable_attack(run_dir, arrays):
    df = pd.read_csv(io.StringIO(html_report.per_sample_csv(run_dir, attack="pfami", t=None)))
    assert len(df) == 2 * N_PER_SPLIT
    np.testing.assert_allclose(df["baseline_score"], arrays["pfami"], rtol=1e-12)
    assert df["masked_score"].isna().all() and df["random_score"].isna().all()


def test_bad_inputs_raise_with_the_argument_named(run_dir):
    run = Run.open(run_dir)
    with pytest.raises(UnknownNameError, match="attack"):
        html_report.per_sample_csv(run, attack="nope", t=0)
    with pytest.raises(UnknownNameError, match=r"t: expected one of the timesteps .*\[0, 10, 20\].* got 5"):
        html_report.build_html_report(run, attack="sima", t=5)
    with pytest.raises(LdminvError, match="drop_percent"):
        html_report.per_sample_csv(run, attack="sima", t=0, drop_percent=100)
    with pytest.raises(LdminvError, match="random_seed"):
        html_report.per_sample_csv(run, attack="sima", t=0, random_seed=-1)
    with pytest.raises(ShapeError, match=r"manual_mask: expected shape \(4, 4, 4\)"):
        html_report.build_html_report(run, attack="sima", t=0, manual_mask=np.ones((4, 4), dtype=bool))
    with pytest.raises(LdminvError, match="t: attack 'pfami'"):
        html_report.per_sample_csv(run, attack="pfami", t=0)
    assert html_report.report_filename(run) == "ldminv-report-export-fixture.html"
    assert html_report.scores_filename(run) == "ldminv-scores-export-fixture.csv"


# --------------------------------------------------------------------------- the page


def test_export_page_renders_and_builds(run_dir, arrays, monkeypatch):
    monkeypatch.setenv("LDMINV_RUN", str(run_dir))
    monkeypatch.setenv("LDMINV_HOME", str(run_dir.parent.parent))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    # values left by the Masks & ROC page are picked up
    at.session_state["mask_settings"] = {"drop_percent": 55, "random_seed": 7}
    at.switch_page("pages/export.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Export"]
    assert at.slider(key="export_drop").value == 55
    assert at.number_input(key="export_seed").value == 7
    assert not at.get("download_button")
    at.button(key="export_build").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    labels = sorted(b.label for b in at.get("download_button"))
    assert labels == ["Download HTML report (SimA)", f"Download dimension CSV (SimA, t = {at.session_state['_export_built'][3]})",
                      "Download per-sample CSV (SimA)"]
    # the CSV preview shows the scores of the chosen settings (first rows), against the numpy oracles
    # recomputed from the run's files (not against the export's own per_sample_table, which the page calls)
    assert len(at.dataframe) == 1
    preview = at.dataframe[0].value
    rows = len(preview)
    assert preview["sample_id"].tolist() == arrays["samples"]["sample_id"].tolist()[:rows]
    t = int(preview["t"].iloc[0])
    terms_t = arrays["terms"][:, TIMESTEPS.index(t)]
    np.testing.assert_allclose(preview["masked_score"], masked_scores(terms_t, arrays["influence"], 55)[:rows],
                               rtol=1e-10)
    rand_keep = random_drop_mask(terms_t.shape, 55, seed=7)
    np.testing.assert_allclose(preview["random_score"], -(terms_t * rand_keep).sum(axis=(1, 2, 3))[:rows], rtol=1e-10)
    # a later rerun keeps the buttons and the settings even though the Masks settings are gone
    del at.session_state["mask_settings"]
    at.run()
    assert not at.exception
    assert at.slider(key="export_drop").value == 55
    assert len(at.get("download_button")) == 3


def test_export_page_with_an_unmaskable_attack(run_dir, monkeypatch):
    monkeypatch.setenv("LDMINV_RUN", str(run_dir))
    monkeypatch.setenv("LDMINV_HOME", str(run_dir.parent.parent))
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/export.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="sidebar_attack").select("pfami").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="export_drop").disabled
    at.button(key="export_build").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    assert len(at.get("download_button")) == 2
    preview = at.dataframe[0].value
    assert (preview["attack"] == "pfami").all() and preview["masked_score"].isna().all()
    np.testing.assert_allclose(
        preview["baseline_score"], np.load(run_dir / "scores" / "pfami.npy")[: len(preview)].astype(np.float64), rtol=1e-12
    )


# --------------------------------------------------------------------------- one source of numbers


@pytest.mark.parametrize("protocol", ["paper", "honest"])
def test_cli_html_and_findings_page_show_the_same_numbers(run_dir, monkeypatch, capsys, protocol):
    """The CLI report, the HTML export and the Findings page, each with its default bootstrap
    replicates, print the same findings (estimate, interval, verdict) and the same baseline metrics:
    one replicate count everywhere."""
    from ldminv_core.__main__ import main

    extra = ["--folds", "2"] if protocol == "honest" else []
    assert main(["report", str(run_dir), "--json", "--attack", "sima", "--protocol", protocol, *extra]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["n_boot"] == DEFAULT_N_BOOT
    folds = 2 if protocol == "honest" else None
    doc = html_report.build_html_report(run_dir, attack="sima", protocol=protocol, folds=folds,
                                   drop_percent=None if protocol == "honest" else 40, random_seed=0)
    p = parse(doc)
    html_rows = findings_rows(p)
    html_metrics = table_dict(p.tables["metrics-table"])
    assert f"{DEFAULT_N_BOOT} stratified replicates" in table_dict(p.tables["figure-settings-table"])["bootstrap"]["value"]

    monkeypatch.setenv("LDMINV_RUN", str(run_dir))
    monkeypatch.setenv("LDMINV_HOME", str(run_dir.parent.parent))
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.selectbox(key="sidebar_protocol").select(protocol).run()
    if protocol == "honest":
        at.number_input(key="sidebar_folds").set_value(2).run()
    settle(at)  # the findings are drawn once the background has them
    assert not at.exception, [e.value for e in at.exception]
    page_text = "\n".join(m.value for m in at.markdown)

    assert [f["id"] for f in cli["findings"]] == list(html_rows)
    for f in cli["findings"]:
        est, (lo, hi) = f["estimate"], f["ci"]
        assert html_rows[f["id"]]["estimate"] == f"{est:+.4f}"
        assert html_rows[f["id"]]["95% CI"] == f"[{lo:.4f}, {hi:.4f}]"
        assert html_rows[f["id"]]["statement"] == f["statement"]
        assert f["statement"] in page_text
        assert f"**{est:+.4f}**, 95% CI [{lo:+.4f}, {hi:+.4f}] ({DEFAULT_N_BOOT} bootstrap replicates)" in page_text
    base = cli["attacks"]["sima"]["baseline"]
    for metric, label in (("auroc", "AUROC"), ("tpr_at_1fpr", "TPR@1%FPR"), ("asr", "ASR")):
        assert html_metrics["baseline"][label] == f"{base[metric]:.4f}"
