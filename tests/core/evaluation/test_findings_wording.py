"""One voice for the findings on every surface: the same bootstrap replicates (and so the same
intervals) in the CLI report, the dashboard and the HTML export; rates labelled as the fractions
they are, with a key to the text report's t column; tiny effects named as such by one shared
formatter; the HTML report's titles, ROC legends, log axes and report JSON link; the Findings
page's summary line and its table of every attack's verdicts.

Runs are synthetic (``synthetic_runs.write_run``), so every effect is planted: one run with a
masking effect that is statistically supported but far below 0.01 AUROC.
"""
from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from ldminv_app import cache, figures, html_report
from ldminv_core.evaluation import (
    DEFAULT_N_BOOT,
    FINDING_TITLES,
    PRACTICAL_AUROC,
    Evaluation,
    Finding,
    effect_sentence,
    finding_title,
    findings_summary,
    make_protocol,
    tiny_note,
    verdict_words,
)
from ldminv_core.formatting import format_rate
from ldminv_core.report import build_report, format_report

from support.apptest import settle
from support.html_report import findings_rows, parse, report_json, table_dict
from synthetic_runs import write_run

APP = str(Path(__file__).resolve().parents[3] / "app.py")


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """60 members / 60 held-out, d = 2 * 4 * 4 = 32, 3 timesteps, two caption classes, PFAMI scores;
    high-influence coordinates of members are a little smaller."""
    rng = np.random.default_rng(3)
    n, shape = 120, (2, 4, 4)
    labels = np.repeat([1, 0], n // 2)
    terms = rng.gamma(2.0, 1.0, size=(n, 3, *shape)).astype(np.float32)
    influence = rng.normal(size=(n, *shape)).astype(np.float32)
    terms *= np.where((influence > 0) * (labels[:, None, None, None] == 1), 0.8, 1.0)[:, None].astype(np.float32)
    captions = [f"a photo of a {('bag', 'shoe')[i % 2]}" for i in range(n)]
    return write_run(tmp_path_factory.mktemp("voice") / "run3", terms=terms, influence=influence,
                     log_volume=rng.normal(size=n), labels=labels, timesteps=[0, 10, 20], captions=captions,
                     pfami=rng.normal(size=n) + 0.3 * labels)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """500 members / 500 held-out, one timestep. The 19 coordinates of highest influence carry the
    membership signal (held-out terms 0.15 larger); the 13 of lowest influence (the 40% a sample
    drops) are near-constant, members' a hair larger: dropping them helps every replicate a little,
    so masking beats the baseline by a tiny, statistically supported margin."""
    rng = np.random.default_rng(0)
    n, shape = 1000, (2, 4, 4)
    labels = np.repeat([1, 0], n // 2)
    influence = np.broadcast_to(np.arange(32, dtype=np.float32).reshape(shape), (n, *shape)).copy()
    signal = rng.normal(size=(n, 1, *shape)) + 0.15 * (labels == 0)[:, None, None, None, None]
    low = 0.01 * (rng.normal(size=(n, 1, *shape)) + 0.5 * (labels == 1)[:, None, None, None, None])
    terms = np.where((influence >= 13)[:, None], signal, low).astype(np.float32)
    return write_run(tmp_path_factory.mktemp("voice") / "tiny", terms=terms, influence=influence,
                     log_volume=rng.normal(size=n), labels=labels, timesteps=[0],
                     pfami=rng.normal(size=n) + 0.2 * labels)


@pytest.fixture(scope="module")
def tiny_finding(tiny_run) -> Finding:
    """The planted finding, from the evaluation layer with the default replicates."""
    f = Evaluation(tiny_run, "sima", "standard").findings(40.0)
    found = next(x for x in f if x.id == "masking_vs_baseline")
    assert found.verdict == "supported" and 0 < found.estimate < PRACTICAL_AUROC, found  # the planted effect
    return found


def _app(run, monkeypatch, tmp_path) -> AppTest:
    monkeypatch.setenv("LDMINV_RUN", str(run.path))
    monkeypatch.setenv("LDMINV_HOME", str(tmp_path / "home"))
    return AppTest.from_file(APP, default_timeout=120)


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# --------------------------------------------------------------------------- the shared formatter


def _finding(verdict: str, estimate: float, metric: str = "auroc", fid: str = "masking_vs_baseline") -> Finding:
    return Finding(id=fid, metric=metric, estimate=estimate, ci=(estimate - 0.001, estimate + 0.001),
                   verdict=verdict, statement="")


def test_verdict_words_name_tiny_effects():
    assert verdict_words("supported", 0.0015) == "supported but tiny (+0.0015 AUROC)"
    assert verdict_words("contradicted", -0.003) == "contradicted but tiny (-0.0030 AUROC)"
    assert verdict_words("supported", 0.05) == "supported"
    assert verdict_words("supported", PRACTICAL_AUROC) == "supported"  # the threshold itself is not tiny
    assert verdict_words("inconclusive", 0.001) == "inconclusive"  # an inconclusive verdict says no more
    assert verdict_words("undefined", float("nan")) == "undefined"
    assert verdict_words("supported", 0.002, metric="tpr_at_1fpr") == "supported"  # no AUROC threshold for TPR
    f = _finding("supported", 0.0015)
    as_json = {"id": f.id, "metric": f.metric, "estimate": f.estimate, "verdict": f.verdict}
    assert effect_sentence(f) == effect_sentence(as_json)
    assert effect_sentence(f).startswith("Statistically supported but tiny: +0.0015 AUROC, below the 0.01 AUROC")
    assert effect_sentence(_finding("supported", 0.2)) is None
    assert effect_sentence(_finding("inconclusive", 0.001)) is None
    assert "0.01" in tiny_note()


def test_findings_summary_counts_every_verdict():
    fs = [_finding("supported", 0.0015), _finding("supported", 0.05), _finding("inconclusive", 0.01),
          _finding("contradicted", -0.2)]
    assert (findings_summary(fs, context="the standard protocol, SimA (t = 10)")
            == "2 of 4 findings supported (1 of them tiny), 1 contradicted, 1 inconclusive, under the standard "
               "protocol, SimA (t = 10).")
    assert findings_summary(fs[:1]) == "1 of 1 finding supported (tiny)."
    assert findings_summary([fs[2], _finding("undefined", float("nan"))]) == "0 of 2 findings supported, 1 inconclusive, 1 undefined."
    assert findings_summary([]) == "No findings."
    assert finding_title("distortion_quartiles") == FINDING_TITLES["distortion_quartiles"]
    assert finding_title("something_new") == "something_new"


# --------------------------------------------------------------------------- the text report


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
def test_text_report_labels_fractions_and_keys_the_t_column(run3, protocol):
    folds = 2 if protocol == "honest" else None
    report = build_report(run3, protocol=protocol, folds=folds, n_boot=50)
    text = format_report(report)
    # units: the rates are fractions, and the text says so (nothing claims percent)
    assert "in %" not in text and "(%)" not in text
    assert "AUROC, ASR, TPR and FPR as fractions in [0, 1]" in text
    assert "Baseline AUROC (fraction) by decoder log-volume quartile" in text
    assert "intervals: 95% CI, 50 stratified bootstrap replicates" in text
    base = report["attacks"]["sima"]["baseline"]
    assert format_rate(base["auroc"]) in text and 0 <= base["auroc"] <= 1
    # the t column and its key
    keys = [line for line in text.splitlines() if line.startswith("Key: t")]
    assert len(keys) == 1
    for arm_name in ("baseline", "masked", "random"):
        arm = report["attacks"]["sima"][arm_name]
        if protocol == "paper":
            bt = arm["best_t"]
            cell = (str(bt["auroc"]) if len(set(bt.values())) == 1
                    else f"{bt['auroc']}/{bt['tpr_at_1fpr']}/{bt['asr']}")
        elif protocol == "honest":
            cell = "folds " + "/".join(str(f["t"]) for f in arm["folds"])
        else:
            cell = str(arm["best_t"]["auroc"])
        row = next(line for line in text.splitlines() if re.search(rf"\b{arm_name}\b", line)
                   and format_rate(arm["auroc"]) in line)
        assert f"  {cell}  " in row, (cell, row)
    if protocol == "paper":
        assert "\"a/b/c\" = each metric at its own best t: a for AUROC, b for TPR@1%FPR, c for ASR" in keys[0]
        # the fixture has arms whose metrics peak at different t: the key is needed
        assert any(len(set(report["attacks"]["sima"][a]["best_t"].values())) > 1 for a in ("baseline", "masked", "random"))
    elif protocol == "honest":
        assert "the timestep each fold chose on the other folds" in keys[0]
    else:
        assert "the timestep of every metric of the row" in keys[0]


def test_text_report_names_the_tiny_effect(tiny_run, tiny_finding, capsys):
    from ldminv_core.__main__ import main

    assert main(["report", str(tiny_run.path), "--attack", "sima", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n_boot"] == DEFAULT_N_BOOT
    f = next(x for x in printed["findings"] if x["id"] == "masking_vs_baseline")
    assert (f["estimate"], tuple(f["ci"])) == (tiny_finding.estimate, tiny_finding.ci)
    assert main(["report", str(tiny_run.path), "--attack", "sima"]) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if "(masking_vs_baseline)" in x)
    assert line.startswith(f"- [sima] {FINDING_TITLES['masking_vs_baseline']} (masking_vs_baseline): "
                           f"supported but tiny ({f['estimate']:+.4f} AUROC). ")
    assert tiny_note() in text
    assert f"[sima] {findings_summary(printed['findings'], context='the standard protocol')}" in text
    assert f"Findings (95% paired bootstrap intervals, {DEFAULT_N_BOOT} replicates):" in text


# --------------------------------------------------------------------------- one replicate count


@pytest.mark.slow
def test_cli_dashboard_and_export_use_one_replicate_count(tiny_run, tiny_finding, monkeypatch, tmp_path, capsys):
    from ldminv_core.__main__ import main

    assert cache.PAGE_N_BOOT == DEFAULT_N_BOOT
    # the CLI report, with its defaults
    assert main(["report", str(tiny_run.path), "--json", "--attack", "sima"]) == 0
    cli = json.loads(capsys.readouterr().out)
    cli_f = next(x for x in cli["findings"] if x["id"] == "masking_vs_baseline")
    # the HTML export, with its defaults
    html = parse(html_report.build_html_report(tiny_run, attack="sima"))
    html_f = findings_rows(html)["masking_vs_baseline"]
    assert f"{DEFAULT_N_BOOT} stratified replicates" in table_dict(html.tables["figure-settings-table"])["bootstrap"]["value"]
    # the dashboard: the Findings page (landing page)
    at = settle(_app(tiny_run, monkeypatch, tmp_path).run())  # with the background sections drawn
    _no_exception(at)
    card = next(m.value for m in at.markdown if m.value.startswith("AUROC masked − baseline:"))
    lo, hi = tiny_finding.ci
    assert cli["n_boot"] == DEFAULT_N_BOOT
    assert (cli_f["estimate"], tuple(cli_f["ci"])) == (tiny_finding.estimate, (lo, hi))
    assert html_f["95% CI"] == f"[{lo:.4f}, {hi:.4f}]" and html_f["estimate"] == f"{tiny_finding.estimate:+.4f}"
    assert card == (f"AUROC masked − baseline: **{tiny_finding.estimate:+.4f}**, 95% CI [{lo:+.4f}, {hi:+.4f}] "
                    f"({DEFAULT_N_BOOT} bootstrap replicates)")

    # the Export page builds with the count the pages show, whichever page was visited first
    at.switch_page("pages/export.py").run()
    _no_exception(at)
    assert f"95% CI, {DEFAULT_N_BOOT} bootstrap replicates" in "\n".join(m.value for m in at.markdown)
    # the page counts the files it writes (a report and two CSV files)
    assert any("generate the report and the CSV files" in i.value for i in at.info)
    assert not any("both files" in i.value for i in at.info)
    at.button(key="export_build").click().run()
    _no_exception(at)
    assert at.session_state["_export_built"][8] == DEFAULT_N_BOOT
    # after the Masks & ROC page (its default count) the export is the same
    at.switch_page("pages/masks_roc.py").run()
    _no_exception(at)
    assert at.select_slider(key="n_boot").value == DEFAULT_N_BOOT
    at.switch_page("pages/export.py").run()
    _no_exception(at)
    assert at.session_state["_export_built"][8] == DEFAULT_N_BOOT and len(at.get("download_button")) == 3
    # a faster preview chosen there is what the export then uses, and says so
    at.switch_page("pages/masks_roc.py").run()
    at.select_slider(key="n_boot").set_value(cache.PREVIEW_N_BOOT).run()
    _no_exception(at)
    at.switch_page("pages/export.py").run()
    _no_exception(at)
    assert f"95% CI, {cache.PREVIEW_N_BOOT} bootstrap replicates" in "\n".join(m.value for m in at.markdown)
    assert any("faster preview chosen on the Masks & ROC page" in c.value for c in at.caption)
    at.button(key="export_build").click().run()
    _no_exception(at)
    assert at.session_state["_export_built"][8] == cache.PREVIEW_N_BOOT


# --------------------------------------------------------------------------- the Findings page


def test_findings_page_summary_every_attack_table_and_tiny_effect(tiny_run, tiny_finding, monkeypatch, tmp_path):
    at = settle(_app(tiny_run, monkeypatch, tmp_path).run())  # with the background sections drawn
    _no_exception(at)
    ev = Evaluation(tiny_run, "sima", "standard")
    res = ev.result()
    base = res.baseline
    # one summary line at the top, from the shared formatter
    summary = next(m.value for m in at.markdown if "findings supported" in m.value)
    assert summary.startswith("**" + findings_summary(
        res.findings, context=f"the standard protocol, SimA ({base.t_text})") + "**")
    assert "(tiny)" in summary or "of them tiny" in summary
    # the tiny effect is named on its card, in words and with its size
    text = "\n".join(m.value for m in at.markdown)
    assert f"*but tiny ({tiny_finding.estimate:+.4f} AUROC)*" in text
    assert effect_sentence(tiny_finding) in [c.value for c in at.caption]
    # every attack x every finding: estimate, interval and verdict of each, from the evaluation layer
    table = next(df.value for df in at.dataframe if "verdict" in df.value.columns)
    expected = [(label, f) for name, label in (("sima", "SimA"), ("pfami", "PFAMI"))
                for f in Evaluation(tiny_run, name, "standard").findings()]
    assert len(table) == len(expected) >= 4
    for (_, row), (label, f) in zip(table.iterrows(), expected):
        assert row["attack"] == label and row["finding"] == finding_title(f.id, short=True)
        assert row["estimate"] == pytest.approx(f.estimate, abs=1e-12)
        assert row["95% CI"] == f"[{f.ci[0]:+.4f}, {f.ci[1]:+.4f}]"
        assert row["verdict"] == verdict_words(f.verdict, f.estimate, metric=f.metric)
    assert any(tiny_note() in c.value for c in at.caption)


# --------------------------------------------------------------------------- the HTML report


def _figures(doc: str) -> list[dict]:
    """Every plotly figure of the report: {"data", "layout"} decoded from its Plotly.newPlot call."""
    dec = json.JSONDecoder()
    out = []
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', doc):
        data, end = dec.raw_decode(doc, m.end())
        layout, _ = dec.raw_decode(doc, doc.index("{", end))
        out.append({"data": data, "layout": layout})
    return out


_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def _arr(value) -> np.ndarray:
    """A figure array as plotly serialises it: a list, or a base64 typed array {dtype, bdata}."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).astype(np.float64)
    return np.asarray(value, dtype=np.float64)


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
@pytest.mark.slow
def test_html_report_titles_random_legend_log_axes_and_json_link(run3, protocol):
    folds = 2 if protocol == "honest" else None
    drop = None if protocol == "honest" else 40
    doc = html_report.build_html_report(run3, attack="sima", protocol=protocol, folds=folds, drop_percent=drop)
    p = parse(doc)
    ids = set(FINDING_TITLES)
    # findings under their titles; the raw ids never as a heading, only as the small label beneath
    rows = findings_rows(p)
    assert set(rows) <= ids and len(rows) == 4
    assert p.finding_titles == [FINDING_TITLES[i] for i in rows]
    for heading in [*p.headings, *p.finding_titles]:
        assert not any(i in heading for i in ids), heading
    assert len(re.findall(r'<span class="finding-id">', doc)) == len(rows)
    summary = re.search(r'<p class="summary" id="findings-summary"><b>(.*?)</b></p>', doc).group(1)
    res = Evaluation(run3, "sima", make_protocol(protocol, folds=folds or 5)).result(drop)
    assert html.unescape(summary) == findings_summary(
        res.findings, context=f"the {protocol} protocol, SimA ({res.baseline.t_text})")

    # the random curve is one seed, named so; its legend AUROC is that seed's row of the per-seed table
    seeds = table_dict(p.tables["random-seeds-table"])
    metrics_rows = table_dict(p.tables["metrics-table"])
    assert seeds["mean"]["AUROC"] == metrics_rows["random"]["AUROC"]
    rocs = [f for f in _figures(doc) if str(f["layout"]["title"]["text"]).startswith("ROC")]
    assert len(rocs) == 2
    if protocol == "paper":  # each metric has its own t: the curves say they are at the AUROC's
        t_words = ", ".join(f"{a} {getattr(res, a).best_t['auroc']}" for a in ("baseline", "masked", "random"))
        assert all(f"(AUROC's t: {t_words})" in f["layout"]["title"]["text"] for f in rocs)
    n_neg, n_pos = (run3.n_members, run3.n_heldout) if protocol == "paper" else (run3.n_heldout, run3.n_members)
    for fig in rocs:
        by_name = {tr["name"]: tr for tr in fig["data"]}
        names = [n for n in by_name if n.startswith("random")]
        assert len(names) == 1
        m = re.fullmatch(r"random, seed (\d+) \(AUROC (\d\.\d{4})\)", names[0])
        assert m, names[0]
        assert m.group(2) == seeds[m.group(1)]["AUROC"]
        assert m.group(2) == format_rate(res.random.per_seed["auroc"][res.random.seeds.index(int(m.group(1)))])
        for arm in ("baseline", "masked"):
            assert next(n for n in by_name if n.startswith(arm + " ")) == f"{arm} (AUROC {metrics_rows[arm]['AUROC']})"
        if fig["layout"]["xaxis"].get("type") != "log":
            # the drawn curve is the one the legend names: its area is that AUROC
            tr = by_name[names[0]]
            x, y = _arr(tr["x"]), _arr(tr["y"])
            assert _trapezoid(y, x) == pytest.approx(res.random.per_seed["auroc"][0], abs=1e-9)
        else:
            # the log axes start at the smallest rates the held-out count (x) and member count (y) resolve
            for axis, n in (("xaxis", n_neg), ("yaxis", n_pos)):
                spec = fig["layout"][axis]
                assert spec["range"][0] >= np.log10(1 / n) - 1e-12 and spec["range"][1] == 0
                assert min(spec["tickvals"]) >= 1 / n - 1e-12
                assert all(re.fullmatch(r"0\.\d+|1", t) for t in spec["ticktext"]), spec["ticktext"]
    assert "The random curve is seed 0 alone" in doc

    # no JSON dump in the page: a link saves the report JSON, which is build_report's
    assert not p.pre and '"n_members":' not in re.sub(r'href="[^"]*"', "", doc.split('id="report-json"')[1])
    want = build_report(run3, attack="sima", protocol=protocol, folds=folds, drop=drop)
    assert report_json(p) == json.loads(json.dumps(want))
    link = next(a for a in p.anchors if a.get("id") == "report-json-link")
    assert link["download"] == html_report.report_json_filename(run3, "sima")


# --------------------------------------------------------------------------- the ROC figure


def test_log_roc_axes_start_at_the_resolvable_rate():
    fpr, tpr = np.linspace(0, 1, 61), np.sqrt(np.linspace(0, 1, 61))
    fig = figures.roc_curves({"random": (fpr, tpr)}, log_scale=True, n_negatives=60, n_positives=200,
                             labels={"random": "random, seed 3"}, aurocs={"random": 0.6})
    lay = fig.layout
    assert lay.xaxis.range[0] == pytest.approx(np.log10(1 / 60)) and lay.yaxis.range[0] == pytest.approx(np.log10(1 / 200))
    assert list(lay.xaxis.ticktext) == ["0.02", "0.05", "0.1", "0.2", "0.5", "1"]
    assert list(lay.yaxis.ticktext) == ["0.01", "0.1", "1"]  # three decades fit: the decades alone
    assert not lay.shapes  # 1% FPR lies below what 60 negatives resolve: no line there
    assert fig.data[0].name == "random, seed 3 (AUROC 0.6000)"
    assert min(fig.data[0].x) == pytest.approx(1 / 60)  # FPR 0 drawn at the axis' edge
    big = figures.roc_curves({"baseline": (fpr, tpr)}, log_scale=True, n_negatives=5000, n_positives=5000)
    assert list(big.layout.xaxis.ticktext) == ["0.001", "0.01", "0.1", "1"]
    assert len(big.layout.shapes) == 1 and big.layout.shapes[0].x0 == 0.01
    plain = figures.roc_curves({"baseline": (fpr, tpr)}, log_scale=True)  # class sizes unknown: the old floor
    assert plain.layout.xaxis.range[0] == pytest.approx(-4) and "µ" not in "".join(plain.layout.xaxis.ticktext)
