"""Run comparison (evaluation/compare.py): a run against itself, the paired interval against an
independent numpy / sklearn recomputation on the same bootstrap indices, refusals of runs on
different samples, and the exposure lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.compare import compare_runs, flagged_at_1fpr
from ldminv_core.evaluation.compare_samples import SampleMismatchError
from ldminv_core.runs import Run
from tests.synthetic_runs import write_run

N_HALF = 40


def _pixels(n: int, seed: int = 11) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8) for _ in range(n)]


def _run(folder: Path, *, shrink: float, seed: int, pixels: list[np.ndarray], n_half: int = N_HALF) -> Run:
    """A synthetic run whose members' terms are scaled by ``shrink`` (smaller = more leakage),
    with the same image files (written from ``pixels``) as every other run of the test."""
    rng = np.random.default_rng(seed)
    n = 2 * n_half
    labels = np.r_[np.ones(n_half, dtype=np.int64), np.zeros(n_half, dtype=np.int64)]
    terms = rng.exponential(1.0, size=(n, 3, 2, 3, 3)).astype(np.float32)
    terms[labels == 1] *= shrink
    geo = np.random.default_rng(99)  # the same geometry (VAE) in every run
    run = write_run(folder, terms=terms, influence=geo.normal(size=(n, 2, 3, 3)).astype(np.float32),
                    log_volume=geo.normal(size=n), labels=labels, timesteps=[0, 10, 20])
    for path, px in zip(run.samples["path"], pixels):
        Image.fromarray(px, mode="RGB").save(path)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cmp")
    px = _pixels(2 * N_HALF)
    a = _run(base / "a", shrink=0.9, seed=1, pixels=px)
    b = _run(base / "b", shrink=0.6, seed=2, pixels=px)
    return a, b, px, base


@pytest.mark.parametrize("protocol", ["standard", "honest"])
def test_a_run_against_itself_changes_nothing(runs, protocol):
    a = runs[0]
    (cmp,) = compare_runs([a, a], protocol=protocol, n_boot=200)
    assert cmp.metrics and cmp.findings
    for m in cmp.metrics:
        assert m.difference == 0 or (np.isnan(m.a) and np.isnan(m.b))
        if np.isfinite(m.difference):
            assert m.ci == (0.0, 0.0)
            assert m.verdict == "inconclusive"
    for f in cmp.findings:
        if np.isfinite(f.difference):
            assert f.difference == 0
            assert f.verdict in ("inconclusive", "undefined")
    paired = [f for f in cmp.findings if f.id.startswith("masking")]
    assert paired and all(f.verdict == "inconclusive" for f in paired)
    for e in cmp.exposure:
        assert e.newly_exposed.size == 0 and e.no_longer_exposed.size == 0


def _independent_design(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The stratified bootstrap of resampling.py written again: strata = split, processed in
    increasing id order from one default_rng(seed)."""
    rng = np.random.default_rng(seed)
    index = np.empty((n_boot, labels.size), dtype=np.int64)
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        index[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return index


def _baseline_auroc_reps(run: Run, design: np.ndarray) -> tuple[float, np.ndarray]:
    """AUROC at the best-AUROC t (standard protocol), on the data and on every replicate."""
    terms = np.load(run.path / "residuals" / "sima.npy").astype(np.float64)
    stat = terms.reshape(terms.shape[0], terms.shape[1], -1).sum(axis=2)
    labels = np.asarray(run.labels)
    aucs = [roc_auc_score(labels, -stat[:, t]) for t in range(stat.shape[1])]
    score = -stat[:, int(np.argmax(aucs))]
    reps = np.array([roc_auc_score(labels[row], score[row]) for row in design])
    return roc_auc_score(labels, score), reps


def test_paired_interval_equals_an_independent_recomputation(runs):
    a, b = runs[0], runs[1]
    n_boot, seed = 300, 4
    (cmp,) = compare_runs([a, b], protocol="standard", n_boot=n_boot, seed=seed)
    design = _independent_design(np.asarray(a.labels), n_boot, seed)
    auc_a, reps_a = _baseline_auroc_reps(a, design)
    auc_b, reps_b = _baseline_auroc_reps(b, design)
    m = next(x for x in cmp.metrics if x.attack == "sima" and x.arm == "baseline" and x.metric == "auroc")
    assert m.a == pytest.approx(auc_a, abs=1e-12) and m.b == pytest.approx(auc_b, abs=1e-12)
    assert m.difference == pytest.approx(auc_b - auc_a, abs=1e-12)
    lo, hi = np.quantile(reps_b - reps_a, [0.025, 0.975])
    assert m.ci == pytest.approx((lo, hi), abs=1e-12)
    # B's members are much closer to the model: the leakage rises, supported
    assert m.difference > 0 and m.verdict == "rises"
    assert m.verdict == ("rises" if lo > 0 else "falls" if hi < 0 else "inconclusive")


def test_exposure_lists_are_the_flags_of_b_not_a(runs):
    a, b = runs[0], runs[1]
    (cmp,) = compare_runs([a, b], protocol="standard", n_boot=50)
    e = next(x for x in cmp.exposure if x.attack == "sima")
    ev_a, ev_b = Evaluation(a, "sima", "standard", n_boot=0), Evaluation(b, "sima", "standard", n_boot=0)
    labels = np.asarray(a.labels)
    for ev, flags in ((ev_a, e.flagged_a), (ev_b, e.flagged_b)):
        score = ev.scores("baseline")
        # independent: the largest-TPR ROC point with held-out FPR <= 1% (no ties in continuous data)
        neg = np.sort(score[labels == 0])[::-1]
        allowed = int(np.floor(0.01 * neg.size))  # 0 false positives of 40
        thr = neg[allowed - 1] if allowed else neg[0]
        expect = score > thr if not allowed else score >= thr
        np.testing.assert_array_equal(flags, expect)
        np.testing.assert_array_equal(flagged_at_1fpr(ev), flags)
    np.testing.assert_array_equal(e.newly_exposed, np.flatnonzero(e.flagged_b & ~e.flagged_a))
    np.testing.assert_array_equal(e.no_longer_exposed, np.flatnonzero(e.flagged_a & ~e.flagged_b))
    assert e.newly_exposed.size > 0


def test_runs_on_other_files_are_refused_naming_the_ids(runs, tmp_path):
    a, _, px, _ = runs
    other = [p.copy() for p in px]
    other[3] = 255 - other[3]
    other[7] = 255 - other[7]
    c = _run(tmp_path / "c", shrink=0.6, seed=2, pixels=other)
    with pytest.raises(SampleMismatchError, match=r"2 sample ids \(3, 7\).*img_3\.png"):
        compare_runs([a, c], n_boot=10)


def test_runs_of_other_sizes_are_refused_naming_the_counts(runs, tmp_path):
    a, _, px, _ = runs
    c = _run(tmp_path / "c", shrink=0.6, seed=2, pixels=px[:60], n_half=30)
    with pytest.raises(SampleMismatchError, match=r"A has 80 \(40 members, 40 held-out\), B has 60"):
        compare_runs([a, c], n_boot=10)


def test_cli_compare_prints_the_evaluation_numbers(runs, capsys):
    import json

    from ldminv_core.cli.main import main

    a, b = runs[0], runs[1]
    assert main(["compare", str(a.path), str(b.path), "--json", "--n-boot", "100", "--protocol", "honest"]) == 0
    out = json.loads(capsys.readouterr().out)
    (cmp,) = compare_runs([a, b], protocol="honest", n_boot=100)
    assert out["protocol"]["name"] == "honest"
    assert len(out["metrics"]) == len(cmp.metrics) and len(out["findings"]) == len(cmp.findings)
    for got, want in zip(out["metrics"], cmp.metrics):
        assert (got["attack"], got["arm"], got["metric"], got["verdict"]) == (want.attack, want.arm, want.metric,
                                                                              want.verdict)
        assert got["difference"] == pytest.approx(want.difference, nan_ok=True)
    e = out["exposure"][0]
    assert [x["sample_id"] for x in e["newly_exposed"]] == cmp.exposure[0].newly_exposed.tolist()
    assert main(["compare", str(a.path), str(a.path), "--n-boot", "50"]) == 0
    text = capsys.readouterr().out
    assert "inconclusive" in text and "rises" not in text.split("Metrics")[1]


def test_cli_compare_refuses_other_samples(runs, tmp_path, capsys):
    from ldminv_core.cli.main import main

    a, _, px, _ = runs
    c = _run(tmp_path / "c", shrink=0.6, seed=2, pixels=px[:60], n_half=30)
    assert main(["compare", str(a.path), str(c.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "A has 80" in err and "B has 60" in err
    assert main(["compare", str(a.path)]) == 2
    assert "at least two" in capsys.readouterr().err
