"""The large-run code paths on a scaled-down synthetic run (N = 200, 4x16x16 so d = 1024, T = 4,
float16 residuals memory-mapped): drop grids, the evaluation's grid path, the resampled metrics
and the memory bound of the chunked pass, each against an independent oracle
(``masks.masked_statistic`` with explicit masks, sklearn, ``convention_metrics``)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from ldminv_core.evaluation import grid_engine
from ldminv_core.evaluation.run_scores import run_scores
from ldminv_core import masks  # noqa: E402
from ldminv_core.errors import LdminvError, ShapeError  # noqa: E402
from ldminv_core.evaluation import Evaluation, convention_metrics, make_protocol  # noqa: E402
from ldminv_core.evaluation.grids import AttackGrids, attack_grids, attack_totals, grid_index  # noqa: E402
from ldminv_core.evaluation.protocols import convention_metrics_resampled  # noqa: E402
from ldminv_core.runs import Run
from scripts.make_synthetic_run import write_synthetic_run  # noqa: E402

N, LATENT, T = 200, (4, 16, 16), 4
D = 4 * 16 * 16
PCTS = (0, 1, 13, 40, 41, 75, 99)


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Run:
    folder = tmp_path_factory.mktemp("large") / "run"
    write_synthetic_run(folder, n=N, latent_shape=LATENT, timesteps=T, dtype="float16", seed=3)
    return Run.open(folder)


def test_synthetic_run_follows_the_contract(big: Run) -> None:
    terms = big.terms("sima")
    assert isinstance(terms, np.memmap) and terms.dtype == np.float16 and terms.shape == (N, T, *LATENT)
    assert big.n_members == N // 2 and big.n_heldout == N - N // 2
    assert big.influence.shape == (N, *LATENT) and np.isfinite(big.log_volume).all()
    # the planted member signal: the baseline is informative at some timestep (N = 200 is noisy)
    aucs = [roc_auc_score(big.labels, run_scores(big, "sima", t_index=t)) for t in range(T)]
    assert max(aucs) > 0.55


def test_drop_grids_match_explicit_masks(big: Run) -> None:
    terms, inf = big.terms("sima"), np.asarray(big.influence)
    # coarse influence values: many ties, so the flat-index rule at bucket edges is exercised
    tied = np.round(inf * 2) / 2
    rnd = np.array([masks.drop_count(D, p) for p in PCTS])
    trunc = np.array([masks.paper_drop_count(D, p) for p in PCTS])
    thr = masks.threshold_drop_counts_many(tied, PCTS)
    ranking = tied.mean(axis=0)
    specs = [grid_engine.OrderSpec("influence", rnd, tied), grid_engine.OrderSpec("influence", thr, tied),
             grid_engine.OrderSpec("random", np.r_[rnd, trunc], seed=4), grid_engine.OrderSpec("ranking", rnd, ranking)]
    for block in (7, None):
        (g_inf, g_thr, g_rnd, g_rank), totals = grid_engine.build_drop_grids(terms, specs, block_samples=block, totals=True)
        np.testing.assert_array_equal(totals, masks.masked_statistic(terms))
        for k, p in enumerate(PCTS):
            close = dict(rtol=1e-10, atol=1e-9)
            np.testing.assert_allclose(g_inf.stats[k], masks.masked_statistic(terms, masks.percentile_drop_mask(tied, p)), **close)
            np.testing.assert_allclose(g_thr.stats[k], masks.masked_statistic(
                terms, masks.percentile_threshold_mask(tied, p)), **close)
            np.testing.assert_allclose(g_rnd.stats[k], masks.masked_statistic(
                terms, masks.random_drop_mask((N, *LATENT), p, seed=4)), **close)
            np.testing.assert_allclose(g_rnd.stats[len(PCTS) + k], masks.masked_statistic(
                terms, masks.random_drop_mask((N, *LATENT), p, seed=4, n_drop=int(trunc[k]))), **close)
            np.testing.assert_allclose(g_rank.stats[k], masks.masked_statistic(
                terms, masks.global_drop_mask(ranking, p, n=N)), **close)
    one = grid_engine.build_drop_grids(terms, specs[:1], t_index=2)[0]
    np.testing.assert_allclose(one.stats[:, :, 0], g_inf.stats[:, :, 2], rtol=1e-12)
    assert one.at(3, 2).shape == (N,)


def test_drop_grid_bad_inputs(big: Run) -> None:
    terms = big.terms("sima")
    with pytest.raises(LdminvError):
        grid_engine.build_drop_grids(terms, [grid_engine.OrderSpec("random", [D + 1])])
    with pytest.raises(LdminvError):
        grid_engine.build_drop_grids(terms, [grid_engine.OrderSpec("sorted", [1])])
    with pytest.raises(ShapeError):
        grid_engine.build_drop_grids(terms, [grid_engine.OrderSpec("influence", [1], np.zeros((N, 2, 2, 2)))])
    with pytest.raises(ValueError):  # every error is a ValueError subclass
        grid_engine.build_drop_grids(terms, [grid_engine.OrderSpec("random", np.zeros((2, N + 1), dtype=np.int64))])


def test_threshold_counts_many_matches_one_at_a_time() -> None:
    rng = np.random.default_rng(0)
    inf = rng.integers(0, 7, size=(23, 2, 3, 5)).astype(np.float32)
    pcts = [0, 0.5, 10, 33.3, 40, 90, 99.9]
    np.testing.assert_array_equal(masks.threshold_drop_counts_many(inf, pcts),
                                  np.stack([masks.threshold_drop_counts(inf, p) for p in pcts]))


def test_sparse_manual_mask_matches_a_direct_sum(big: Run) -> None:
    terms = big.terms("sima")
    keep = masks.manual_mask(LATENT, coords=[3, 77, 500, 1023])
    direct = np.asarray(terms, dtype=np.float64).reshape(N, T, D)[:, :, [3, 77, 500, 1023]].sum(axis=2)
    np.testing.assert_allclose(masks.masked_statistic(terms, keep), direct, rtol=1e-12)
    np.testing.assert_array_equal(masks.masked_statistic(terms, np.zeros(LATENT, dtype=bool)), np.zeros((N, T)))


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
def test_evaluation_grid_path_matches_oracles(big: Run, protocol: str) -> None:
    ev = Evaluation(big, "sima", protocol, n_boot=20)
    terms, inf = ev.terms(), ev.influence()
    paper = protocol == "paper"
    for p in (40.0, 7.0):
        keep = masks.percentile_threshold_mask(inf, p) if paper else masks.percentile_drop_mask(inf, p)
        np.testing.assert_allclose(ev.masked_stat(p), masks.masked_statistic(terms, keep), rtol=1e-10)
        n_drop = masks.paper_drop_count(D, p) if paper else masks.drop_count(D, p)
        rand = masks.masked_statistic(terms, masks.random_drop_mask(inf.shape, p, seed=1, n_drop=n_drop))
        np.testing.assert_allclose(ev.random_stat(p, 1), rand, rtol=1e-10)
    np.testing.assert_allclose(ev.global_stat(40.0), masks.masked_statistic(
        terms, masks.global_drop_mask(inf.mean(axis=0), 40.0, n=1)[0]), rtol=1e-10)
    # off the grid: summed from the terms, the same rule
    keep = masks.percentile_threshold_mask(inf, 40.5) if paper else masks.percentile_drop_mask(inf, 40.5)
    np.testing.assert_allclose(ev.masked_stat(40.5), masks.masked_statistic(terms, keep), rtol=1e-12)
    arms = ev.arms(40.0)
    if protocol == "standard":
        t = ev.headline_t_index()
        oracle = roc_auc_score(big.labels, -masks.masked_statistic(terms, masks.percentile_drop_mask(inf, 40.0))[:, t])
        assert arms["masked"].auroc == pytest.approx(oracle, abs=1e-12)
        curves = ev.drop_curves(t, extra=(40.5,))
        k = curves.percents.index(40.5)
        oracle = roc_auc_score(big.labels, -masks.masked_statistic(terms, masks.percentile_drop_mask(inf, 40.5))[:, t])
        assert curves.masked["auroc"][k] == pytest.approx(oracle, abs=1e-12)
    assert 0.0 <= arms["random"].auroc <= 1.0


def test_grids_and_totals_are_shared_per_run(big: Run) -> None:
    a = Evaluation(big, "sima", "standard", n_boot=0)
    b = Evaluation(big, "sima", "paper", n_boot=0)
    assert a.grids() is b.grids()
    assert a.baseline_stat() is b.baseline_stat() is attack_totals(big, "sima")
    np.testing.assert_array_equal(a.baseline_stat(), masks.masked_statistic(big.terms("sima")))
    assert attack_grids(big, "sima", a.seeds) is a.grids()
    assert grid_index(40.0) == 40 and grid_index(40.5) is None and grid_index(99) == 99


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
def test_resampled_metrics_equal_gathered(protocol: str) -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.standard_normal(150), 1)  # ties
    labels = (rng.random(150) < 0.4).astype(np.int8)
    index = rng.integers(0, 150, size=(40, 150))
    proto = make_protocol(protocol)
    want = convention_metrics(scores[index], labels, proto)
    got = convention_metrics_resampled(scores, labels, index, proto)
    for m in want:
        np.testing.assert_array_equal(got[m], want[m])
    single = convention_metrics_resampled(scores, np.ones(150), index, proto)
    assert all(np.isnan(v).all() for v in single.values())


@pytest.mark.parametrize("protocol", ["standard", "paper"])
def test_resampled_metrics_in_blocks_on_threads_equal_the_gathered_ones(protocol, monkeypatch) -> None:
    """Blocks of 3 replicates on 3 threads: each replicate's numbers equal ``convention_metrics`` of
    its gathered scores (the oracle), exactly, in replicate order."""
    from ldminv_core.evaluation.protocols import conventions

    rng = np.random.default_rng(7)
    scores = np.round(rng.standard_normal(120), 1)  # ties
    labels = (rng.random(120) < 0.5).astype(np.int8)
    index = rng.integers(0, 120, size=(31, 120))  # 31 replicates: a short last block
    proto = make_protocol(protocol)
    want = convention_metrics(scores[index], labels, proto)
    g = np.unique(scores).size
    monkeypatch.setattr(conventions, "RESAMPLE_BLOCK_VALUES", 3 * 2 * g)
    monkeypatch.setattr(conventions, "RESAMPLE_THREAD_MIN", 1)
    monkeypatch.setattr(conventions, "RESAMPLE_THREADS", 3)
    monkeypatch.setattr(conventions, "usable_cores", lambda: 3)
    seen = []
    real = conventions._resampled_curve_metrics
    monkeypatch.setattr(conventions, "_resampled_curve_metrics",
                        lambda counts, *a: seen.append(counts.shape[0]) or real(counts, *a))
    got = conventions.convention_metrics_resampled(scores, labels, index, proto)
    assert sorted(seen) == [1] + [3] * 10  # the blocks really were small
    for m in want:
        np.testing.assert_array_equal(got[m], want[m])


#: Peak traced memory of one grid pass, in a fresh interpreter: in the test session other threads
#: (a page's background worker, the app's prefetcher) may allocate while tracemalloc is on.
_PEAK = """
import sys, tracemalloc
import numpy as np
from ldminv_core import masks
from ldminv_core.evaluation import grid_engine
from ldminv_core.runs import Run
run, d, block = Run.open(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
terms = run.terms("sima")
rnd = np.array([masks.drop_count(d, p) for p in grid_engine.GRID_PERCENTS])
specs = [grid_engine.OrderSpec("random", rnd, seed=0)]
tracemalloc.start()
grid_engine.build_drop_grids(terms, specs, block_samples=block)
print(tracemalloc.get_traced_memory()[1])
"""


def test_grid_pass_memory_is_bounded_by_the_block(big: Run) -> None:
    import subprocess

    rnd = np.array([masks.drop_count(D, p) for p in grid_engine.GRID_PERCENTS])
    results = len(rnd) * N * T * 8

    def peak(block: int) -> int:
        proc = subprocess.run([sys.executable, "-c", _PEAK, str(big.path), str(D), str(block)],
                              capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[3])
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout.strip().splitlines()[-1])

    small, whole = peak(8), peak(N)
    block_bytes = 8 * T * D * 8  # one block of terms as float64
    assert small < results + 12 * block_bytes + (2 << 20)
    assert small < whole  # the knob bounds the working memory
    # all of N * T * d as float64 (what a DropSweep at every count would hold) is far above it
    assert small < N * T * (D + 1) * 8 / 2


def test_attack_grids_direct(big: Run) -> None:
    g = AttackGrids(big.terms("sima"), np.asarray(big.influence), (0,), block_samples=50)
    assert g.masked(40, "round").shape == (N, T) and g.nbytes > 0
    with pytest.raises(LdminvError):
        g.random(3, 9, "round")
    with pytest.raises(LdminvError):
        g.masked(3, "int")


# --------------------------------------------------------------------------- grids against DropSweep


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Run:
    folder = tmp_path_factory.mktemp("small") / "run"
    write_synthetic_run(folder, n=120, latent_shape=(2, 8, 8), timesteps=3, dtype="float16", seed=5)
    return Run.open(folder)


def _arm_numbers(arm) -> list[float]:
    out = [arm.auroc, arm.tpr_at_1fpr, arm.asr]
    for m in ("auroc", "tpr_at_1fpr", "asr"):
        out += list(arm.ci[m])
    out += [f.drop_percent or -1.0 for f in arm.folds] + [f.t or -1 for f in arm.folds]
    return out


def _everything(ev: Evaluation, drop: float | None) -> dict[str, np.ndarray]:
    res = ev.result(drop)
    out = {
        "arms": np.array([v for a in (res.baseline, res.masked, res.random) for v in _arm_numbers(a)], dtype=float),
        "findings": np.array([v for f in res.findings for v in (f.estimate, *f.ci)], dtype=float),
        "quartiles": np.array([v for q in res.quartiles for v in (q.auroc, q.tpr_at_1fpr, q.asr, *q.auroc_ci)]),
    }
    ti = ev.headline_t_index()
    curves = ev.drop_curves(ti, extra=(41.0,))
    for field in ("masked", "masked_lo", "masked_hi", "random_mean", "random_lo", "random_hi"):
        out[f"curves_{field}"] = np.concatenate([np.asarray(getattr(curves, field)[m]) for m in ("auroc", "tpr_at_1fpr")])
    if drop is not None:
        out["masked_per_t"] = np.concatenate([ev.masked_per_t(drop)[m] for m in ("auroc", "tpr_at_1fpr", "asr")])
        out["global"] = np.asarray(ev.global_stat(drop))
    return out


@pytest.mark.parametrize("protocol", ["standard", "paper", "honest"])
def test_grid_results_equal_dropsweep_results(small: Run, protocol: str, monkeypatch) -> None:
    """Every reported number read off the grids equals the one of the DropSweep / full-sum path."""
    drops = (40.0, 13.0, None) if protocol == "honest" else (40.0, 13.0)
    ev = Evaluation(small, "sima", protocol, n_boot=30)
    with_grids = {p: _everything(ev, p) for p in drops}
    assert ("grids",) in ev._memo
    monkeypatch.setattr(Evaluation, "_on_grid", lambda self, drop: None)
    ref = Evaluation(small, "sima", protocol, n_boot=30)
    for p in drops:
        expected = _everything(ref, p)
        for key, value in with_grids[p].items():
            np.testing.assert_allclose(value, expected[key], rtol=0, atol=1e-12, err_msg=f"{protocol} {p} {key}")
    assert ("grids",) not in ref._memo


def test_grids_disk_copy_round_trip(small: Run) -> None:
    ev = Evaluation(small, "sima", "standard", n_boot=0)
    built = ev.grids()
    again = Evaluation(Run.open(small.path), "sima", "standard", n_boot=0)
    assert again.baseline_stat() is not None  # the baseline is read off the disk copy
    loaded = again.grids()
    assert loaded.from_disk and loaded is not built
    for k in (0, 13, 40, 99):
        for rule in ("round", "threshold"):
            np.testing.assert_array_equal(loaded.masked(k, rule), built.masked(k, rule))
        np.testing.assert_array_equal(loaded.random(k, 2, "int"), built.random(k, 2, "int"))
        np.testing.assert_array_equal(loaded.ranking(k), built.ranking(k))
    np.testing.assert_array_equal(loaded.totals, built.totals)
    np.testing.assert_array_equal(loaded.channel_totals, built.channel_totals)
    np.testing.assert_array_equal(again.baseline_stat(), ev.baseline_stat())
    # the cache folder is ldminv's: deleting the run removes it with everything else
    from ldminv_core.runs import OWNED_DIRS
    assert ".ldminv-cache" in OWNED_DIRS and (Path(small.path) / ".ldminv-cache").is_dir()


def test_a_rewritten_terms_file_replaces_its_stale_disk_copy(tmp_path) -> None:
    """New terms (a recomputed attack stage) get new grids, and the copy made from the old file
    is removed instead of piling up next to the run."""
    import os

    folder = tmp_path / "run"
    write_synthetic_run(folder, n=40, latent_shape=(2, 4, 4), timesteps=2, dtype="float16", seed=8)
    first = Evaluation(Run.open(folder), "sima", "standard", n_boot=0).grids()
    cache = folder / ".ldminv-cache"
    copies = lambda: sorted(p.name for p in cache.glob("grids-*"))  # noqa: E731
    assert len(copies()) == 1 and not first.from_disk
    terms_file = folder / "residuals" / "sima.npy"
    arr = np.load(terms_file)
    np.save(terms_file, arr * 2)
    os.utime(terms_file, ns=(terms_file.stat().st_atime_ns, terms_file.stat().st_mtime_ns + 10**9))
    rebuilt = Evaluation(Run.open(folder), "sima", "standard", n_boot=0).grids()
    assert not rebuilt.from_disk and len(copies()) == 1
    np.testing.assert_allclose(rebuilt.totals, 2 * np.asarray(first.totals), rtol=1e-12)
    assert Evaluation(Run.open(folder), "sima", "standard", n_boot=0).grids().from_disk


def test_manual_stat_matches_masked_statistic(small: Run) -> None:
    ev = Evaluation(small, "sima", "standard", n_boot=0)
    terms = ev.terms()
    shape = small.latent_shape
    cases = [dict(channels=[0]), dict(channels=[0, 1]), dict(coords=[0, 5, 63, 64, 127]),
             dict(channels=[1], positions=[(0, 0), (3, 4)]),
             dict(channels=[0, 1], positions=[(r, c) for r in range(8) for c in range(8) if (r, c) != (2, 2)]),
             dict(channels=[0], positions=[(r, c) for r in range(4) for c in range(8)])]  # half: a full pass
    for kw in cases:
        keep = masks.manual_mask(shape, **kw)
        got = ev.manual_stat(keep)
        np.testing.assert_allclose(got, masks.masked_statistic(terms, keep), rtol=1e-12, atol=1e-9, err_msg=str(kw))
        assert ev.manual_stat(keep.copy()) is got  # memoised per mask
    none = np.zeros(shape, dtype=bool)
    np.testing.assert_array_equal(ev.manual_stat(none), 0.0)
    np.testing.assert_allclose(masks.gathered_statistic(terms, [3, 1, 100], [1.0, -2.0, 0.5]),
                               np.asarray(terms, dtype=np.float64).reshape(120, 3, -1)[:, :, [3, 1, 100]] @ [1.0, -2.0, 0.5],
                               rtol=1e-12)


def test_dimension_table_in_coordinate_blocks(small: Run, monkeypatch) -> None:
    from ldminv_core.evaluation import tables

    inf = np.asarray(small.influence, dtype=np.float64)
    terms_t = np.asarray(small.terms("sima")[:, 1], dtype=np.float64)
    whole = tables.dimension_table(inf, terms_t, small.labels)
    monkeypatch.setattr(tables, "_COORD_BLOCK", 24)  # blocks that do not divide d = 128
    blocked = tables.dimension_table(small.influence, small.terms("sima")[:, 1], small.labels)
    assert list(blocked.columns) == list(whole.columns) and len(blocked) == 128
    # blocks on three threads: the same table, bit for bit
    threaded = tables.dimension_table(small.influence, small.terms("sima")[:, 1], small.labels, workers=3)
    assert threaded.equals(blocked)
    for col in whole.columns:
        np.testing.assert_allclose(blocked[col].to_numpy(dtype=float), whole[col].to_numpy(dtype=float), rtol=1e-12)
    flat = inf.reshape(120, -1)
    np.testing.assert_allclose(blocked.sort_values("coord")["influence_mean"], flat.mean(axis=0), rtol=1e-12)
    lab = np.asarray(small.labels)
    k = int(blocked.iloc[5]["coord"])
    assert blocked.iloc[5]["auroc"] == pytest.approx(roc_auc_score(lab, -terms_t.reshape(120, -1)[:, k]), abs=1e-12)


def test_fold_threshold_matches_sklearn() -> None:
    from sklearn.metrics import roc_curve

    from ldminv_core.evaluation.evaluator import _threshold_at_1fpr

    rng = np.random.default_rng(0)
    for i in range(300):
        n = int(rng.integers(2, 300))
        y = rng.random(n) < rng.uniform(0.05, 0.95)
        if y.all() or not y.any():
            continue
        s = rng.integers(0, 8, n).astype(float) if i % 2 else rng.normal(size=n)
        fpr, tpr, thr = roc_curve(y.astype(np.int8), s, drop_intermediate=False)
        ok = np.flatnonzero(fpr <= 0.01)
        assert _threshold_at_1fpr(s, y) == float(thr[ok[np.argmax(tpr[ok])]])


def test_column_auroc_equals_auroc_many() -> None:
    from ldminv_core import metrics
    from ldminv_core.evaluation.tables import _column_auroc

    rng = np.random.default_rng(4)
    y = rng.random(300) < 0.4
    for scores in (rng.normal(size=(50, 300)), rng.integers(0, 5, (50, 300)).astype(float),
                   -(rng.normal(size=(50, 300)) ** 2).astype(np.float16).astype(np.float32)):
        np.testing.assert_array_equal(_column_auroc(scores, y), metrics.auroc_many(scores, y.astype(np.int8)))
    assert np.isnan(_column_auroc(scores, np.zeros(300, dtype=bool))).all()


def test_column_auroc_of_float32_rows_equals_sklearn_with_ties_signs_and_signed_zeros() -> None:
    """The float32 / float16 path (two sorts of value-and-label keys): ties, negative values, -0.0
    beside +0.0, the extremes of float32, against sklearn's roc_auc_score row by row and auroc_many exactly."""
    from sklearn.metrics import roc_auc_score

    from ldminv_core import metrics
    from ldminv_core.evaluation.tables import _column_auroc

    rng = np.random.default_rng(7)
    y = rng.random(257) < 0.35
    ties = rng.integers(-3, 4, (40, 257)).astype(np.float32)
    zeros = np.where(rng.random((40, 257)) < 0.5, np.float32(-0.0), np.float32(0.0))
    zeros[:, ::7] = rng.normal(size=(40, 37)).astype(np.float32)
    wide = (rng.standard_cauchy((40, 257)) * 1e30).astype(np.float32)
    wide[0, :3] = [np.float32(3.4e38), np.float32(-3.4e38), np.float32(-1e-45)]
    for scores in (ties, zeros, wide, rng.normal(size=(40, 257)).astype(np.float16)):
        got = _column_auroc(scores, y)
        want = np.array([roc_auc_score(y, row.astype(np.float64)) for row in scores])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(got, metrics.auroc_many(scores.astype(np.float64), y.astype(np.int8)))
