"""The drop grids behind the dashboard's drop slider (ldminv_core.evaluation.grid_engine), tested
directly against an independent oracle: the direct masked sum ``masks.masked_statistic`` of the
mask that :mod:`ldminv_core.masks` builds for the same order, drop percentage and seed.

Every grid statistic (influence order at rounded and percentile-threshold counts, seeded random
order at rounded and truncated counts, a shared ranking) is checked at several drop percentages
and timestep selections, for several block sizes; then the degenerate cases: nothing dropped,
everything dropped, ties in the influence (at the bucket edges too).
"""
from __future__ import annotations

import numpy as np
import pytest

from ldminv_core import masks
from ldminv_core.errors import LdminvError, ShapeError
from ldminv_core.evaluation.grid_engine import DropGrid, OrderSpec, build_drop_grids, decomposed_statistic

N, T = 7, 4
LATENT = (2, 3, 4)
D = int(np.prod(LATENT))
PERCENTS = (0, 1, 5, 12.5, 25, 40, 50, 75, 99)
SEED = 3
CLOSE = dict(rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "terms": rng.normal(size=(N, T, *LATENT)).astype(np.float32),
        "influence": rng.normal(size=(N, *LATENT)).astype(np.float32),
        "ranking": rng.normal(size=LATENT).astype(np.float32),
    }


def _specs(influence: np.ndarray, ranking: np.ndarray) -> tuple[list[OrderSpec], dict[str, np.ndarray]]:
    rnd = np.array([masks.drop_count(D, p) for p in PERCENTS], dtype=np.int64)
    trunc = np.array([masks.paper_drop_count(D, p) for p in PERCENTS], dtype=np.int64)
    thr = masks.threshold_drop_counts_many(influence, PERCENTS)  # (K, N)
    specs = [
        OrderSpec("influence", rnd, influence),
        OrderSpec("influence", thr, influence),
        OrderSpec("random", rnd, seed=SEED),
        OrderSpec("random", trunc, seed=SEED),
        OrderSpec("ranking", rnd, ranking),
    ]
    return specs, {"round": rnd, "trunc": trunc, "threshold": thr}


def _oracle_masks(influence: np.ndarray, ranking: np.ndarray, p: float) -> list[np.ndarray]:
    """The keep-masks of the five specs of :func:`_specs` at ``p``, from the mask builders."""
    shape = (N, *LATENT)
    return [
        masks.percentile_drop_mask(influence, p),
        masks.percentile_threshold_mask(influence, p),
        masks.random_drop_mask(shape, p, seed=SEED),
        masks.random_drop_mask(shape, p, seed=SEED, n_drop=masks.paper_drop_count(D, p)),
        masks.global_drop_mask(ranking, p, n=N),
    ]


@pytest.mark.parametrize("t_index", [None, 2, [3, 1], [0, 1, 2]])
@pytest.mark.parametrize("block_samples", [None, 1, 3])
def test_every_grid_statistic_equals_the_direct_masked_sum(arrays, t_index, block_samples) -> None:
    terms, influence, ranking = arrays["terms"], arrays["influence"], arrays["ranking"]
    specs, counts = _specs(influence, ranking)
    grids, totals, chan = build_drop_grids(terms, specs, t_index=t_index, block_samples=block_samples,
                                           totals=True, channel_totals=True)
    t_sel = list(range(T)) if t_index is None else ([t_index] if isinstance(t_index, int) else list(t_index))
    assert len(grids) == len(specs)
    for grid, spec in zip(grids, specs):
        assert isinstance(grid, DropGrid)
        assert grid.t_index == t_sel and grid.kind == spec.kind
        assert grid.stats.shape == (len(PERCENTS), N, len(t_sel)) and grid.stats.dtype == np.float64
    np.testing.assert_array_equal(grids[0].counts, np.broadcast_to(counts["round"][:, None], (len(PERCENTS), N)))
    np.testing.assert_array_equal(grids[1].counts, counts["threshold"])
    np.testing.assert_array_equal(grids[3].counts[:, 0], counts["trunc"])
    assert grids[2].seed == SEED

    np.testing.assert_allclose(totals, masks.masked_statistic(terms)[:, t_sel], **CLOSE)
    for c in range(LATENT[0]):
        one_channel = masks.manual_mask(LATENT, channels=[c])
        np.testing.assert_allclose(chan[:, :, c], masks.masked_statistic(terms, one_channel)[:, t_sel], **CLOSE)

    for k, p in enumerate(PERCENTS):
        for grid, keep in zip(grids, _oracle_masks(influence, ranking, p)):
            oracle = masks.masked_statistic(terms, keep)  # (N, T)
            np.testing.assert_allclose(grid.statistic(k), oracle[:, t_sel], **CLOSE,
                                       err_msg=f"{grid.kind} at {p} %")
            for j, t in enumerate(t_sel):
                np.testing.assert_allclose(grid.at(k, t), oracle[:, t], **CLOSE)


def test_grid_lookups_refuse_what_the_grid_does_not_hold(arrays) -> None:
    grid = build_drop_grids(arrays["terms"], [OrderSpec("random", [0, 3])], t_index=[1, 2])[0]
    with pytest.raises(LdminvError, match=r"setting index must be 0\.\.1"):
        grid.statistic(2)
    with pytest.raises(LdminvError, match=r"t_index 0 is not in this grid's timesteps \[1, 2\]"):
        grid.at(0, 0)
    assert grid.nbytes == 2 * N * 2 * 8


def test_drop_nothing_and_drop_everything(arrays) -> None:
    terms, influence, ranking = arrays["terms"], arrays["influence"], arrays["ranking"]
    plain = masks.masked_statistic(terms)
    specs = [OrderSpec("influence", [0, D], influence), OrderSpec("random", [0, D], seed=1),
             OrderSpec("ranking", [0, D], ranking)]
    for grid in build_drop_grids(terms, specs):
        np.testing.assert_allclose(grid.stats[0], plain, **CLOSE)  # drop 0: the unmasked statistic
        np.testing.assert_array_equal(grid.stats[1], np.zeros((N, T)))  # drop all d: nothing summed
    # drop 0 through the mask builders and the grids' own counting
    zero = masks.percentile_drop_mask(influence, 0)
    assert zero.all()
    np.testing.assert_allclose(build_drop_grids(terms, [OrderSpec("influence", [masks.drop_count(D, 0)], influence)])[0]
                               .stats[0], masks.masked_statistic(terms, zero), **CLOSE)


def test_ties_in_the_influence_follow_the_flat_index_rule(arrays) -> None:
    """Influence with few distinct values (ties inside and across the buckets' edges, one sample
    constant): the grids drop equal values in flat-index order, as percentile_drop_mask does, and
    the percentile-threshold counts drop every value equal to the threshold."""
    terms = arrays["terms"]
    rng = np.random.default_rng(1)
    tied = rng.integers(0, 3, size=(N, *LATENT)).astype(np.float32)
    tied[2] = 1.0  # one sample with a single value everywhere
    rnd = np.array([masks.drop_count(D, p) for p in PERCENTS], dtype=np.int64)
    thr = masks.threshold_drop_counts_many(tied, PERCENTS)
    assert (thr[PERCENTS.index(25)] != rnd[PERCENTS.index(25)]).any()  # ties make the two rules differ
    per_sample = np.stack([np.full(N, r) for r in rnd]) + (np.arange(N) % 2)[None] * (rnd < D)[:, None]
    g_rnd, g_thr, g_per = build_drop_grids(terms, [OrderSpec("influence", rnd, tied), OrderSpec("influence", thr, tied),
                                                   OrderSpec("influence", per_sample, tied)], block_samples=2)
    order = np.argsort(tied.reshape(N, D), axis=1, kind="stable")
    for k, p in enumerate(PERCENTS):
        np.testing.assert_allclose(g_rnd.stats[k], masks.masked_statistic(terms, masks.percentile_drop_mask(tied, p)),
                                   **CLOSE)
        np.testing.assert_allclose(g_thr.stats[k], masks.masked_statistic(
            terms, masks.percentile_threshold_mask(tied, p)), **CLOSE)
        keep = np.ones((N, D), dtype=bool)  # per-sample counts: the first counts[k, n] of the stable order
        for n in range(N):
            keep[n, order[n, : per_sample[k, n]]] = False
        np.testing.assert_allclose(g_per.stats[k], masks.masked_statistic(terms, keep.reshape(N, *LATENT)), **CLOSE)


def test_decomposed_statistic_equals_the_masked_sum(arrays) -> None:
    terms = arrays["terms"]
    _, chan = build_drop_grids(terms, [OrderSpec("random", [0])], channel_totals=True)
    for kw in ({"channels": [1]}, {"coords": [0, 5]}, {"channels": [0], "positions": [(1, 2)]},
               {"coords": [i for i in range(D) if i != 7]}):
        keep = masks.manual_mask(LATENT, **kw)
        got = decomposed_statistic(terms, keep, chan, sparse_share=1.0)
        np.testing.assert_allclose(got, masks.masked_statistic(terms, keep), **CLOSE, err_msg=str(kw))
    assert decomposed_statistic(terms, masks.manual_mask(LATENT, coords=list(range(0, D, 2))), chan,
                                sparse_share=0.1) is None  # reading more than the share: a full pass is cheaper


def test_bad_specs(arrays) -> None:
    terms, influence = arrays["terms"], arrays["influence"]
    with pytest.raises(LdminvError, match="specs"):
        build_drop_grids(terms, [])
    with pytest.raises(LdminvError, match=rf"counts must lie in 0\.\.{D}"):
        build_drop_grids(terms, [OrderSpec("random", [D + 1])])
    with pytest.raises(LdminvError, match="kind"):
        build_drop_grids(terms, [OrderSpec("sorted", [1])])
    with pytest.raises(ShapeError, match="influence must have shape"):
        build_drop_grids(terms, [OrderSpec("influence", [1], influence[:, :1])])
    with pytest.raises(LdminvError, match="block_samples"):
        build_drop_grids(terms, [OrderSpec("random", [1])], block_samples=0)
