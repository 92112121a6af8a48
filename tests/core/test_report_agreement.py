"""The ``agreement`` entry of ``report --json`` and its text table: the same numbers as
:func:`ldminv_core.evaluation.agreement` under the report's protocol, seed and replicates; absent
from a one-attack report; the who-flags-whom rows are the flagged samples, most flags first."""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import pytest

from ldminv_core.evaluation import agreement
from ldminv_core.report import build_report, format_report
from ldminv_core.runs import Run

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "demo32"


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Run:
    """A copy of the golden run without its cache (nothing written into tests/golden)."""
    dst = tmp_path_factory.mktemp("golden") / "demo32"
    shutil.copytree(GOLDEN, dst, ignore=shutil.ignore_patterns(".ldminv-cache"))
    return Run.open(dst)


N_BOOT = 30


def _num(x):
    return None if not math.isfinite(x) else pytest.approx(x, abs=1e-12)


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_report_json_has_the_agreement_of_the_evaluation_layer(golden, protocol):
    run = golden
    report = json.loads(json.dumps(build_report(run, protocol=protocol, n_boot=N_BOOT, seed=1), allow_nan=False))
    got = report["agreement"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = agreement(run, protocol, n_boot=N_BOOT, seed=1, level=report["ci_level"])
    assert got["protocol"] == protocol and got["attacks"] == list(run.attacks) and len(got["pairs"]) == 10
    assert got["counts"] == want.counts
    for entry, pair in zip(got["pairs"], want.pairs):
        assert (entry["a"], entry["b"]) == (pair.a, pair.b)
        for k, j in pair.jaccard.items():
            assert entry["jaccard"][k]["value"] == _num(j.value) and entry["jaccard"][k]["reason"] == j.reason
            assert entry["jaccard"][k]["ci"] == [_num(v) for v in j.ci]
        for k, s in pair.spearman.items():
            assert entry["spearman"][k]["rho"] == _num(s.rho)
            assert entry["spearman"][k]["ci"] == [_num(v) for v in s.ci]
    flagged = [s for s in want.samples if s.flagged_by]
    assert [r["sample_id"] for r in got["samples"]] == [s.sample_id for s in flagged]
    assert got["n_unflagged"] == len(want.samples) - len(flagged)
    text = format_report(report)
    assert "Agreement between attacks" in text and "Who flags whom" in text
    assert sum(line.lstrip().startswith(("sima ", "pia ", "loss ", "secmi ")) for line in text.splitlines()) >= 10


def test_a_one_attack_report_has_no_agreement(golden):
    report = build_report(golden, attack="sima", n_boot=0)
    assert "agreement" not in report
    assert "Agreement between attacks" not in format_report(report)


def test_html_export_shows_the_agreement_with_thumbnails(tmp_path):
    import re

    import numpy as np
    from PIL import Image

    from ldminv_app.html_report.document import build_html_report

    # a copy of the golden run whose samples point at readable images (the thumbnails are embedded)
    dst = tmp_path / "demo32"
    shutil.copytree(GOLDEN, dst, ignore=shutil.ignore_patterns(".ldminv-cache"))
    golden = Run.open(dst)
    samples = golden.samples.copy()
    for i, _ in enumerate(samples["path"]):
        path = tmp_path / f"img_{i}.png"
        Image.fromarray(np.full((8, 8, 3), i, dtype=np.uint8), mode="RGB").save(path)
        samples.loc[i, "path"] = str(path)
    samples.to_parquet(Path(golden.path) / "samples.parquet")
    run = Run.open(golden.path)
    doc = build_html_report(run, attack="sima", protocol="paper", n_boot=N_BOOT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = agreement(run, "paper", n_boot=N_BOOT)
    table = re.search(r'<table[^>]*id="who-flags-table".*?</table>', doc, re.S).group(0)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    flagged = want.flagged_samples()
    assert flagged and len(rows) == len(flagged)
    assert [int(re.search(r"<td>(\d+)</td>", r).group(1)) for r in rows] == [s.sample_id for s in flagged]
    assert all('src="data:image/png;base64,' in r for r in rows)
    assert 'id="agreement-table"' in doc and 'id="agreement-counts-table"' in doc
