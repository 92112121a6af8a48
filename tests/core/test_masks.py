"""Tests of ldminv_core.masks against direct masked sums and index-by-index oracles."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ldminv_core import masks, term_blocks
from ldminv_core.errors import EmptyInputError, LdminvError, NonFiniteError, ShapeError

N, T, C, H, W = 9, 3, 4, 5, 6
D = C * H * W
PERCENTS = (0, 10, 40, 73.5, 90)


def direct_sum(terms: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """Oracle statistic: float64 sum of the kept terms, sample by sample."""
    t64 = np.asarray(terms, dtype=np.float64)
    out = np.zeros(t64.shape[:2])
    for n in range(t64.shape[0]):
        k = np.ones(t64.shape[2:], bool) if keep is None else (keep if keep.ndim == 3 else keep[n])
        for t in range(t64.shape[1]):
            out[n, t] = t64[n, t][k].sum()
    return out


@pytest.fixture
def data(tmp_path: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    terms32 = rng.gamma(2.0, 1.0, size=(N, T, C, H, W)).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "terms.npy", mode="w+", dtype=np.float16, shape=terms32.shape)
    mm[:] = terms32
    mm.flush()
    terms16 = np.load(tmp_path / "terms.npy", mmap_mode="r")
    influence = rng.normal(size=(N, C, H, W)).astype(np.float32)
    influence[0] = np.round(influence[0])  # heavy ties in one sample
    return {"terms32": terms32, "terms16": terms16, "influence": influence}


def test_drop_count() -> None:
    for d in (1, 7, 10, 64, 1024, 16384):
        for p in (0, 0.5, 10, 25, 33.3, 40, 73.5, 99.9):
            assert masks.drop_count(d, p) == round(d * p / 100)
    assert masks.drop_count(10, 25) == 2  # 2.5 rounds to even
    assert masks.drop_count(10, 35) == 4  # 3.5 rounds to even
    for bad in (100, 100.0, -1, float("nan"), "40", None):
        with pytest.raises(LdminvError, match="drop_percent"):
            masks.drop_count(10, bad)
    with pytest.raises(LdminvError, match="d: expected an integer >= 1"):
        masks.drop_count(0, 10)


def test_zero_drop_is_no_mask(data: dict[str, np.ndarray]) -> None:
    for terms in (data["terms32"], data["terms16"]):
        plain = np.asarray(terms, dtype=np.float64).sum(axis=(2, 3, 4))
        keep = masks.percentile_drop_mask(data["influence"], 0)
        assert keep.all()
        np.testing.assert_allclose(masks.masked_statistic(terms, keep), plain, rtol=1e-12)
        np.testing.assert_allclose(masks.masked_statistic(terms, None), plain, rtol=1e-12)
        np.testing.assert_allclose(masks.DropSweep.by_influence(terms, data["influence"]).statistic(0), plain, rtol=1e-12)


def test_percentile_mask_keeps_highest_influence(data: dict[str, np.ndarray]) -> None:
    influence = data["influence"]
    for p in PERCENTS:
        keep = masks.percentile_drop_mask(influence, p)
        assert keep.shape == influence.shape and keep.dtype == bool
        n_drop = masks.drop_count(D, p)
        for n in range(N):
            flat = influence[n].reshape(-1)
            # oracle: sort (value, flat index) pairs; the first n_drop are dropped
            dropped = {i for _, i in sorted((float(v), i) for i, v in enumerate(flat))[:n_drop]}
            expected = np.array([i not in dropped for i in range(D)])
            np.testing.assert_array_equal(keep[n].reshape(-1), expected)
            assert keep[n].sum() == D - n_drop
            if 0 < n_drop < D:
                assert flat[keep[n].reshape(-1)].min() >= flat[~keep[n].reshape(-1)].max()


@pytest.mark.parametrize("which", ["terms32", "terms16"])
def test_sweep_equals_masked_statistic(data: dict[str, np.ndarray], which: str) -> None:
    terms, influence = data[which], data["influence"]
    sweep = masks.DropSweep.by_influence(terms, influence)
    stacked = sweep.statistics(PERCENTS)
    assert stacked.shape == (len(PERCENTS), N, T)
    for k, p in enumerate(PERCENTS):
        keep = masks.percentile_drop_mask(influence, p)
        expected = direct_sum(terms, keep)
        np.testing.assert_allclose(masks.masked_statistic(terms, keep), expected, rtol=1e-12)
        np.testing.assert_allclose(sweep.statistic(p), expected, rtol=1e-10)
        np.testing.assert_allclose(stacked[k], expected, rtol=1e-10)


def test_masked_statistic_blocks_and_mask_forms(data: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    terms = data["terms16"]
    shared = masks.manual_mask((C, H, W), channels=[0, 2])
    per_sample = np.repeat(shared[None], N, axis=0)
    full = masks.masked_statistic(terms, shared)
    np.testing.assert_allclose(full, direct_sum(terms, shared), rtol=1e-12)
    np.testing.assert_allclose(masks.masked_statistic(terms, per_sample), full, rtol=1e-12)
    np.testing.assert_allclose(masks.masked_statistic(terms, shared.astype(np.int8)), full, rtol=1e-12)
    sweep_full = masks.DropSweep.by_influence(terms, data["influence"]).statistics(PERCENTS)
    rand_full = masks.random_drop_mask((N, C, H, W), 40, seed=2)
    # blocks of 2 samples: same results
    monkeypatch.setattr(term_blocks, "_BLOCK_ELEMENTS", 2 * T * D)  # the block reader of masks
    np.testing.assert_allclose(masks.masked_statistic(terms, shared), full, rtol=1e-12)
    np.testing.assert_allclose(masks.masked_statistic(terms, per_sample), full, rtol=1e-12)
    np.testing.assert_allclose(
        masks.DropSweep.by_influence(terms, data["influence"]).statistics(PERCENTS), sweep_full, rtol=1e-12
    )
    np.testing.assert_array_equal(masks.random_drop_mask((N, C, H, W), 40, seed=2), rand_full)


def test_t_index(data: dict[str, np.ndarray]) -> None:
    terms, influence = data["terms32"], data["influence"]
    full = masks.DropSweep.by_influence(terms, influence).statistics(PERCENTS)
    one = masks.DropSweep.by_influence(terms, influence, t_index=1)
    assert one.statistic(40).shape == (N,)
    np.testing.assert_allclose(one.statistic(40), full[2, :, 1], rtol=1e-12)
    np.testing.assert_allclose(one.statistics(PERCENTS), full[:, :, 1], rtol=1e-12)
    some = masks.DropSweep.by_influence(terms, influence, t_index=[2, 0])
    np.testing.assert_allclose(some.statistics(PERCENTS), full[:, :, [2, 0]], rtol=1e-12)
    with pytest.raises(LdminvError, match=r"t_index: expected an integer in \[0, 2\], got 3 \(int\)"):
        masks.DropSweep.by_influence(terms, influence, t_index=3)
    with pytest.raises(EmptyInputError):
        masks.DropSweep.by_influence(terms, influence, t_index=[])


def test_random_drop(data: dict[str, np.ndarray]) -> None:
    shape = (N, C, H, W)
    for p in PERCENTS:
        a = masks.random_drop_mask(shape, p, seed=5)
        assert a.shape == shape and a.dtype == bool
        assert (a.reshape(N, -1).sum(axis=1) == D - masks.drop_count(D, p)).all()
        np.testing.assert_array_equal(masks.random_drop_mask(shape, p, seed=5), a)
        if 0 < masks.drop_count(D, p):
            assert not np.array_equal(masks.random_drop_mask(shape, p, seed=6), a)
            rows = {a[n].tobytes() for n in range(N)}
            assert len(rows) > 1  # samples get different sets
    # the dropped coordinates cover the latent roughly uniformly
    big = masks.random_drop_mask((2000, 2, 2, 2), 50, seed=0)
    freq = (~big).mean(axis=0)
    assert np.abs(freq - 0.5).max() < 0.05
    # sweep and mask agree for the same seed
    for terms in (data["terms32"], data["terms16"]):
        sweep = masks.DropSweep.random(terms, seed=5)
        for p in PERCENTS:
            expected = direct_sum(terms, masks.random_drop_mask(shape, p, seed=5))
            np.testing.assert_allclose(sweep.statistic(p), expected, rtol=1e-10)


def test_global_and_ranking(data: dict[str, np.ndarray]) -> None:
    terms = data["terms32"]
    ranking = data["influence"].mean(axis=0)
    ranking[0, 0, :3] = ranking[0, 0, 3]  # ties, broken by flat index
    sweep = masks.DropSweep.by_ranking(terms, ranking)
    flat = ranking.reshape(-1)
    for p in PERCENTS:
        keep = masks.global_drop_mask(ranking, p, n=N)
        assert keep.shape == (N, C, H, W)
        assert (keep == keep[0]).all()
        n_drop = masks.drop_count(D, p)
        dropped = {i for _, i in sorted((float(v), i) for i, v in enumerate(flat))[:n_drop]}
        np.testing.assert_array_equal(keep[0].reshape(-1), [i not in dropped for i in range(D)])
        np.testing.assert_allclose(sweep.statistic(p), direct_sum(terms, keep), rtol=1e-10)


def test_manual_mask() -> None:
    keep = masks.manual_mask((C, H, W), channels=[1, 3], positions=[(0, 0), (4, 5)])
    for c in range(C):
        for r in range(H):
            for col in range(W):
                assert keep[c, r, col] == (c in (1, 3) and (r, col) in ((0, 0), (4, 5)))
    assert masks.manual_mask((C, H, W)).all()
    coords = [0, 7, D - 1]
    k2 = masks.manual_mask((C, H, W), coords=coords)
    assert sorted(np.flatnonzero(k2.reshape(-1)).tolist()) == coords
    k3 = masks.manual_mask((C, H, W), channels=[0], coords=coords)
    assert np.flatnonzero(k3.reshape(-1)).tolist() == [0, 7]
    assert not masks.manual_mask((C, H, W), channels=[]).any()
    with pytest.raises(LdminvError, match=r"channels: expected an integer in \[0, 3\], got 4 \(int\)"):
        masks.manual_mask((C, H, W), channels=[4])
    with pytest.raises(LdminvError, match=r"positions row: expected an integer in \[0, 4\], got 5 \(int\)"):
        masks.manual_mask((C, H, W), positions=[(5, 0)])
    with pytest.raises(LdminvError, match=r"positions column: expected an integer in \[0, 5\], got -1 \(int\)"):
        masks.manual_mask((C, H, W), positions=[(0, -1)])
    with pytest.raises(LdminvError, match=r"coords: expected an integer in \[0, 119\], got 120 \(int\)"):
        masks.manual_mask((C, H, W), coords=[D])
    with pytest.raises(LdminvError, match=r"\(row, col\) pairs"):
        masks.manual_mask((C, H, W), positions=[3])
    with pytest.raises(ShapeError, match="latent_shape"):
        masks.manual_mask((C, H))


def test_custom_order(data: dict[str, np.ndarray]) -> None:
    terms = data["terms32"]
    rng = np.random.default_rng(1)
    order = np.stack([rng.permutation(D) for _ in range(N)])
    sweep = masks.DropSweep(terms, order)
    for p in PERCENTS:
        keep = np.ones((N, D), bool)
        for n in range(N):
            keep[n, order[n, : masks.drop_count(D, p)]] = False
        np.testing.assert_allclose(sweep.statistic(p), direct_sum(terms, keep.reshape(N, C, H, W)), rtol=1e-10)
    bad = order.copy()
    bad[3, 0] = bad[3, 1]
    with pytest.raises(LdminvError, match="permutation"):
        masks.DropSweep(terms, bad)
    with pytest.raises(ShapeError, match=r"\(9, 120\).*\(9, 119\)"):
        masks.DropSweep(terms, order[:, 1:])


def test_shape_and_value_errors(data: dict[str, np.ndarray]) -> None:
    terms, influence = data["terms32"], data["influence"]
    with pytest.raises(ShapeError, match=r"influence.*\(9, 4, 5, 6\).*\(8, 4, 5, 6\)"):
        masks.DropSweep.by_influence(terms, influence[:8])
    with pytest.raises(ShapeError, match="terms"):
        masks.masked_statistic(terms[0], None)
    with pytest.raises(ShapeError, match=r"mask.*\(4, 5, 6\).*\(4, 5, 5\)"):
        masks.masked_statistic(terms, np.ones((C, H, W - 1), bool))
    with pytest.raises(LdminvError, match="mask must be boolean"):
        masks.masked_statistic(terms, np.full((C, H, W), 0.5))
    with pytest.raises(ShapeError, match="influence"):
        masks.percentile_drop_mask(influence[0], 10)
    with pytest.raises(LdminvError, match="drop_percent"):
        masks.percentile_drop_mask(influence, 100)
    with pytest.raises(ShapeError, match="ranking"):
        masks.DropSweep.by_ranking(terms, influence[0, :2])
    with pytest.raises(ShapeError, match="shape"):
        masks.random_drop_mask((N, C, H), 10)
    bad_terms = terms.copy()
    bad_terms[4, 1, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="terms"):
        masks.masked_statistic(bad_terms, None)
    bad_inf = influence.copy()
    bad_inf[2, 0, 0, 0] = np.inf
    with pytest.raises(NonFiniteError, match="influence"):
        masks.percentile_drop_mask(bad_inf, 40)
    sweep = masks.DropSweep.by_influence(terms, influence)
    with pytest.raises(LdminvError, match="drop_percent"):
        sweep.statistic(-5)
