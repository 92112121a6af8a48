"""Agreement between attacks (METHOD.md section 7) against an independent recomputation: scores
summed from the raw terms with numpy, the headline t by sklearn's AUROC, the 1%-FPR thresholds
from sklearn's ``roc_curve``, Jaccard indices from Python sets, Spearman from
``scipy.stats.spearmanr`` (every bootstrap replicate too, on the same stratified design), on a
synthetic run and on the golden demo32 run (5 attacks); an attack against its copy agrees
perfectly; an attack flagging nothing gives NaN with the reason."""
from __future__ import annotations

import itertools
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from ldminv_core.evaluation import Evaluation, agreement, combine_strata, resample_index
from ldminv_core.runs import Run
from synthetic_runs import write_run

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "demo32"


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Run:
    """A copy of the golden run without its cache (nothing written into tests/golden)."""
    dst = tmp_path_factory.mktemp("golden") / "demo32"
    shutil.copytree(GOLDEN, dst, ignore=shutil.ignore_patterns(".ldminv-cache"))
    return Run.open(dst)


N_BOOT = 40


# ---------------------------------------------------------------------- the oracle


def _oracle_flags(scores, labels, *, heldout_positive=False, strict=False):
    """Flags at the largest-TPR ROC point with FPR <= 1% (< 1% strict), from sklearn's roc_curve."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    key, pos = (-s, ~y) if heldout_positive else (s, y)
    fpr, tpr, thr = roc_curve(pos.astype(int), key, drop_intermediate=False)
    ok = np.flatnonzero(fpr < 0.01 if strict else fpr <= 0.01)
    return key >= thr[ok[np.argmax(tpr[ok])]]


def _oracle_scores(run: Run, attack: str, metric: str, *, paper=False) -> np.ndarray:
    """Baseline scores at the t the protocol reports ``metric`` at, recomputed from the raw arrays."""
    y = np.asarray(run.labels).astype(int)
    if not run.is_maskable(attack):
        return np.asarray(run.stored_scores(attack), dtype=np.float64)
    terms = np.asarray(run.terms(attack), dtype=np.float64)
    stat = terms.reshape(terms.shape[0], terms.shape[1], -1).sum(axis=2)
    if paper and metric == "tpr_at_1fpr":
        values = []
        for t in range(stat.shape[1]):
            values.append(_oracle_flags(-stat[:, t], y, heldout_positive=True, strict=True)[y == 0].mean())
        ti = int(np.argmax(values))
    else:
        ti = int(np.argmax([roc_auc_score(y, -stat[:, t]) for t in range(stat.shape[1])]))
    return -stat[:, ti]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(np.flatnonzero(a)), set(np.flatnonzero(b))
    return len(sa & sb) / len(sa | sb) if sa and sb else float("nan")


def _column_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard over a replicate's columns (a sample drawn twice counts twice)."""
    return float(np.sum(a & b) / np.sum(a | b)) if a.any() and b.any() else float("nan")


def _interval(values, level=0.95):
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"), float("nan"))
    return tuple(np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2]))


def _same(x, y):
    return (np.isnan(x) and np.isnan(y)) or x == pytest.approx(y, abs=1e-9)


def _check_against_oracle(run: Run, protocol: str, *, n_boot: int, paper=False) -> None:
    y = np.asarray(run.labels).astype(int)
    ag = agreement(run, protocol, n_boot=n_boot, seed=3)
    flags = {a: _oracle_flags(_oracle_scores(run, a, "tpr_at_1fpr", paper=paper), y, heldout_positive=paper,
                              strict=paper) for a in run.attacks}
    scores = {a: _oracle_scores(run, a, "auroc", paper=paper) for a in run.attacks}
    for a in run.attacks:
        assert np.array_equal(ag.flagged[a], flags[a]), a
    design = resample_index(combine_strata(y), n_boot=n_boot, seed=3)
    rep = {a: np.stack([_oracle_flags(scores_t[idx], y, heldout_positive=paper, strict=paper) for idx in design])
           for a, scores_t in ((a, _oracle_scores(run, a, "tpr_at_1fpr", paper=paper)) for a in run.attacks)}
    subsets = {"all": np.ones(y.size, bool), "member": y == 1, "heldout": y == 0}
    for a, b in itertools.combinations(run.attacks, 2):
        pair = ag.pair(a, b)
        for k, rows in subsets.items():
            got = pair.jaccard[k]
            assert _same(got.value, _jaccard(flags[a] & rows, flags[b] & rows)), (a, b, k)
            assert (got.reason != "") == np.isnan(got.value)
            want_ci = _interval([_column_jaccard(ra[rows], rb[rows]) for ra, rb in zip(rep[a], rep[b])])
            assert all(_same(g, w) for g, w in zip(got.ci, want_ci)), (a, b, k, got.ci, want_ci)
        for k, split in (("member", 1), ("heldout", 0)):
            rows = np.flatnonzero(y == split)
            got = pair.spearman[k]
            assert got.rho == pytest.approx(stats.spearmanr(scores[a][rows], scores[b][rows]).statistic, abs=1e-12)
            reps = [stats.spearmanr(scores[a][idx[rows]], scores[b][idx[rows]]).statistic for idx in design]
            want_ci = _interval(reps)
            assert got.ci == pytest.approx(want_ci, abs=1e-9)
    # who flags whom: every sample once, most flags first, each row's attacks the oracle's
    counts = [s.n_flagged for s in ag.samples]
    assert counts == sorted(counts, reverse=True) and len(ag.samples) == y.size
    for s in ag.samples:
        assert s.flagged_by == tuple(a for a in run.attacks if flags[a][s.index])
        assert s.split == ("member" if y[s.index] else "heldout")
        assert s.file == run.samples["path"].iloc[s.index]


# ---------------------------------------------------------------------- synthetic runs


def _synthetic(tmp_path: Path, *, copy=False, constant=False) -> Run:
    rng = np.random.default_rng(5)
    n_mem, n_held = 150, 150
    labels = np.r_[np.ones(n_mem, int), np.zeros(n_held, int)]
    terms = rng.gamma(2.0, 1.0, size=(labels.size, 3, 2, 2, 2)).astype(np.float32)
    terms[labels == 1, 1] *= rng.uniform(0.3, 1.0, size=(n_mem, 1, 1, 1)).astype(np.float32)
    stat = terms.astype(np.float64).reshape(labels.size, 3, -1).sum(axis=2)
    if copy:
        pfami = -stat[:, 1]
    elif constant:
        pfami = np.zeros(labels.size)
    else:
        pfami = -stat[:, 1] + rng.normal(0, 2.0, labels.size) + 0.5 * labels
    return write_run(tmp_path / "run", terms=terms, influence=rng.normal(size=(labels.size, 2, 2, 2)),
                     log_volume=rng.normal(size=labels.size), labels=labels, timesteps=[0, 10, 20],
                     pfami=pfami.astype(np.float32))


def test_synthetic_standard_equals_the_oracle(tmp_path):
    run = _synthetic(tmp_path)
    _check_against_oracle(run, "standard", n_boot=N_BOOT)
    ag = agreement(run, "standard", n_boot=0)
    assert ag.counts["sima"]["member"] > 0 and ag.counts["pfami"]["member"] > 0
    assert all(np.isnan(v) for v in ag.pair("sima", "pfami").jaccard["all"].ci)  # no replicates, no interval


def test_synthetic_paper_equals_the_oracle(tmp_path):
    _check_against_oracle(_synthetic(tmp_path), "paper", n_boot=N_BOOT, paper=True)


def test_an_attack_agrees_with_its_copy(tmp_path):
    run = _synthetic(tmp_path, copy=True)
    ag = agreement(run, "standard", n_boot=N_BOOT)
    pair = ag.pair("sima", "pfami")
    assert ag.counts["sima"]["all"] > 0
    assert pair.jaccard["all"].value == 1.0 and pair.jaccard["all"].ci == (1.0, 1.0)
    assert pair.jaccard["member"].value == 1.0
    assert all(s.rho == pytest.approx(1.0) for s in pair.spearman.values())
    assert all(s.flagged_by in ((), ("sima", "pfami")) for s in ag.samples)


def test_an_attack_flagging_nothing_gives_nan_with_the_reason(tmp_path):
    run = _synthetic(tmp_path, constant=True)
    with pytest.warns(RuntimeWarning, match="pfami flags no sample"):
        ag = agreement(run, "standard", n_boot=N_BOOT)
    pair = ag.pair("sima", "pfami")
    assert ag.counts["pfami"]["all"] == 0
    for k in ("all", "member", "heldout"):
        assert np.isnan(pair.jaccard[k].value) and "pfami flags no" in pair.jaccard[k].reason
    assert np.isnan(pair.spearman["member"].rho) and "constant" in pair.spearman["member"].reason
    assert any("pfami" in w for w in ag.warnings)


def test_honest_flags_are_the_evaluations_transferred_decisions(tmp_path):
    run = _synthetic(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ag = agreement(run, "honest", n_boot=N_BOOT, seed=0)
    for a in run.attacks:
        low = Evaluation(run, a, "honest", n_boot=0).baseline().low_fpr
        assert ag.counts[a]["member"] == low.true_positives and ag.counts[a]["heldout"] == low.false_positives
    pair = ag.pair("sima", "pfami")
    assert _same(pair.jaccard["all"].value, _jaccard(ag.flagged["sima"], ag.flagged["pfami"]))


def test_unknown_attack_and_arm_are_refused(tmp_path):
    run = _synthetic(tmp_path)
    with pytest.raises(ValueError, match="attacks: 'nope'"):
        agreement(run, "standard", attacks=["sima", "nope"], n_boot=0)
    with pytest.raises(ValueError, match="arm"):
        agreement(run, "standard", arm="random", n_boot=0)


# ---------------------------------------------------------------------- the golden demo32 run


@pytest.mark.parametrize("protocol,paper", [("standard", False), ("paper", True)])
def test_golden_demo32_equals_the_oracle(golden, protocol, paper):
    run = golden
    assert len(run.attacks) == 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        _check_against_oracle(run, protocol, n_boot=N_BOOT, paper=paper)


def test_golden_demo32_honest_counts_are_the_arms(golden):
    run = golden
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ag = agreement(run, "honest", n_boot=N_BOOT)
    for a in run.attacks:
        low = Evaluation(run, a, "honest", n_boot=0).baseline().low_fpr
        assert (ag.counts[a]["member"], ag.counts[a]["heldout"]) == (low.true_positives, low.false_positives)
    for a, b in itertools.combinations(run.attacks, 2):
        assert _same(ag.pair(a, b).jaccard["all"].value, _jaccard(ag.flagged[a], ag.flagged[b]))
