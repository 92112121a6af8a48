"""The exposure list (ldminv_core.evaluation.exposure) against an independent numpy / sklearn
recomputation on a synthetic run: member ranks, the 1%-FPR flags of every attack, log-volumes,
the order; the degenerate cases warn and say why."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from ldminv_core.errors import LdminvError, UnknownNameError
from ldminv_core.evaluation import Evaluation
from ldminv_core.evaluation.exposure import exposure_list
from ldminv_core.runs import Run, RunWriter
from tests.synthetic_runs import write_run

N_MEM, N_HELD, T, SHAPE = 40, 160, 3, (2, 3, 3)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    rng = np.random.default_rng(7)
    n = N_MEM + N_HELD
    labels = np.r_[np.ones(N_MEM, int), np.zeros(N_HELD, int)]
    terms = rng.normal(size=(n, T, *SHAPE)).astype(np.float32)
    terms[labels == 1, 1] -= 0.35  # members: smaller terms at t index 1
    influence = rng.normal(size=(n, *SHAPE)).astype(np.float32)
    pfami = (rng.normal(size=n) + 0.8 * labels).astype(np.float32)
    return write_run(tmp_path_factory.mktemp("exposure") / "run", terms=terms, influence=influence,
                     log_volume=rng.normal(size=n), labels=labels, timesteps=[10, 20, 30], pfami=pfami)


def _evs(run: Run, protocol: str) -> dict[str, Evaluation]:
    return {a: Evaluation(run, a, protocol, n_boot=0) for a in run.attacks}


def _flags(scores: np.ndarray, labels: np.ndarray, *, strict: bool) -> np.ndarray:
    """Members flagged at the largest-TPR sklearn ROC point with FPR <= 1% (< 1% strict)."""
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    ok = fpr < 0.01 if strict else fpr <= 0.01
    best = np.flatnonzero(ok)[np.argmax(tpr[ok])]
    return (scores >= thr[best]) & (labels == 1)


def _ranks(scores: np.ndarray, labels: np.ndarray) -> dict[int, int]:
    mem = np.flatnonzero(labels == 1)
    order = sorted(mem, key=lambda i: (-scores[i], i))
    return {int(i): r + 1 for r, i in enumerate(order)}


def _masked_stat(run: Run, drop: float) -> np.ndarray:
    terms = np.asarray(run.terms("sima"), dtype=np.float64).reshape(len(run), T, -1)
    infl = np.asarray(run.influence, dtype=np.float64).reshape(len(run), -1)
    k = int(round(infl.shape[1] * drop / 100))
    keep = np.ones_like(infl, dtype=bool)
    np.put_along_axis(keep, np.argsort(infl, axis=1)[:, :k], False, axis=1)
    return (terms * keep[:, None, :]).sum(axis=2)


def _check(lst, run, scores_main, flags_by_attack):
    labels = np.asarray(run.labels)
    want_rank = _ranks(scores_main, labels)
    assert [e.rank for e in lst.entries] == list(range(1, N_MEM + 1))
    assert {e.row: e.rank for e in lst.entries} == want_rank
    lv = np.asarray(run.samples["log_volume"], dtype=np.float64)
    for e in lst.entries:
        assert e.score == pytest.approx(scores_main[e.row])
        assert e.log_volume == lv[e.row]
        assert e.flagged_by == tuple(a for a in ("sima", "pfami") if flags_by_attack[a][e.row])
        assert e.path.endswith(f"img_{e.row}.png")
    assert lst.flagged_counts == {a: int(f.sum()) for a, f in flags_by_attack.items()}
    assert lst.n_members == N_MEM and lst.n_heldout == N_HELD and lst.notes == ()


def test_standard_baseline_and_masked_equal_numpy(run):
    labels = np.asarray(run.labels)
    base = -np.asarray(run.terms("sima"), dtype=np.float64).reshape(len(run), T, -1).sum(axis=2)
    ti = int(np.argmax([roc_auc_score(labels, base[:, j]) for j in range(T)]))
    pf = np.asarray(run.stored_scores("pfami"), dtype=np.float64)
    lst = exposure_list(_evs(run, "standard"), attack="sima", arm="baseline")
    assert (lst.arm, lst.t, lst.drop_percent, lst.protocol) == ("baseline", [10, 20, 30][ti], None, "standard")
    _check(lst, run, base[:, ti], {"sima": _flags(base[:, ti], labels, strict=False),
                                   "pfami": _flags(pf, labels, strict=False)})
    assert lst.flagged_counts["sima"] > 0
    masked = -_masked_stat(run, 40.0)[:, ti]  # standard: the headline t of the baseline
    lst = exposure_list(_evs(run, "standard"), attack="sima", arm="masked", drop=40.0)
    assert (lst.arm, lst.drop_percent, lst.attack_arms) == ("masked", 40.0, {"sima": "masked", "pfami": "baseline"})
    _check(lst, run, masked, {"sima": _flags(masked, labels, strict=False),
                              "pfami": _flags(pf, labels, strict=False)})


def test_ranked_by_pfami(run):
    labels = np.asarray(run.labels)
    pf = np.asarray(run.stored_scores("pfami"), dtype=np.float64)
    with pytest.warns(RuntimeWarning, match="cannot be masked"):
        lst = exposure_list(_evs(run, "standard"), attack="pfami", arm="masked")
    assert lst.arm == "baseline" and lst.t is None
    assert {e.row: e.rank for e in lst.entries} == _ranks(pf, labels)


def test_paper_flags_at_its_tpr_t_strict(run):
    labels = np.asarray(run.labels)
    base = -np.asarray(run.terms("sima"), dtype=np.float64).reshape(len(run), T, -1).sum(axis=2)
    # paper: each metric at its own best t; TPR@1%FPR with held-out positive (the statistic), FPR < 1%
    tprs = []
    for j in range(T):
        fpr, tpr, _ = roc_curve(1 - labels, -base[:, j], drop_intermediate=False)
        tprs.append(tpr[fpr < 0.01].max())
    t_tpr = int(np.argmax(tprs))
    t_auc = int(np.argmax([roc_auc_score(labels, base[:, j]) for j in range(T)]))
    pf = np.asarray(run.stored_scores("pfami"), dtype=np.float64)
    lst = exposure_list(_evs(run, "paper"), attack="sima", arm="baseline")
    assert lst.t == [10, 20, 30][t_auc]
    _check(lst, run, base[:, t_auc], {"sima": _flags(base[:, t_tpr], labels, strict=True),
                                      "pfami": _flags(pf, labels, strict=True)})


def test_honest_flags_are_the_reported_tpr(run):
    evs = _evs(run, "honest")
    lst = exposure_list(evs, attack="sima", arm="masked")
    assert lst.t is None and lst.drop_percent is None  # per fold
    for a in ("sima", "pfami"):
        arm = evs[a].arms()["masked" if a == "sima" else "baseline"]
        assert lst.flagged_counts[a] / N_MEM == pytest.approx(arm.tpr_at_1fpr)
    scores = evs["sima"].scores("masked")
    assert {e.row: e.rank for e in lst.entries} == _ranks(scores, np.asarray(run.labels))


def test_no_geometry_warns_and_nans(tmp_path, run):
    writer = RunWriter(tmp_path / "partial", settings={"synthetic": True}, samples=run.samples)
    writer.update(latent_shape=list(SHAPE), attacks={"pfami": {"kind": "scores"}})
    writer.write_array("latents.npy", np.zeros((len(run), *SHAPE), dtype=np.float32))
    writer.write_array("scores/pfami.npy", np.asarray(run.stored_scores("pfami")))
    for stage in ("encode", "pfami"):  # everything but the geometry stage
        writer.mark_stage_done(stage)
    writer.close()
    part = Run.open(tmp_path / "partial", partial=True)
    assert not part.has_geometry
    with pytest.warns(RuntimeWarning, match="no geometry stage"):
        lst = exposure_list({"pfami": Evaluation(part, "pfami", n_boot=0)}, attack="pfami", arm="baseline")
    assert np.isnan([e.log_volume for e in lst.entries]).all()
    assert "log-volume NaN" in lst.log_volume_reason and lst.notes


def test_bad_arguments(run):
    evs = _evs(run, "standard")
    with pytest.raises(UnknownNameError, match="attack"):
        exposure_list(evs, attack="clid")
    with pytest.raises(UnknownNameError, match="arm"):
        exposure_list(evs, attack="sima", arm="random")
    with pytest.raises(LdminvError, match="evaluations"):
        exposure_list({}, attack="sima")
    with pytest.raises(LdminvError, match="under"):
        exposure_list({"sima": evs["sima"], "pfami": Evaluation(run, "pfami", "paper", n_boot=0)}, attack="sima")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exposure_list(evs, attack="sima", arm="baseline")
