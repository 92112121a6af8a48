"""Checks of the figure builders' colour handling: arms keep one Okabe-Ito colour everywhere, a
diverging AUROC scale is centred on 0.5, and band charts draw every band the data define."""
from __future__ import annotations

import numpy as np

from ldminv_app import figures


def test_diverging_heatmap_is_centred_on_its_midpoint():
    maps = np.array([[[0.45, 0.62], [0.55, 0.50]]])  # (C=1, 2, 2): not symmetric around 0.5
    fig = figures.channel_heatmaps(maps, colorscale="RdBu_r", zmid=0.5)
    trace = fig.data[0]
    assert np.isclose(trace.zmin, 0.38) and np.isclose(trace.zmax, 0.62)
    assert np.isclose((trace.zmin + trace.zmax) / 2, 0.5)
    plain = figures.channel_heatmaps(maps)
    assert np.isclose(plain.data[0].zmin, 0.45) and np.isclose(plain.data[0].zmax, 0.62)


def test_arms_have_one_colour_everywhere():
    k = 3
    x = np.arange(k, dtype=float)
    fig = figures.drop_curves_with_bands(
        x, masked=x, masked_band=(x - 1, x + 1), random_mean=x, random_band=(x - 1, x + 1), baseline=0.5,
        baseline_ci=(0.4, 0.6), n_seeds=5,
    )
    lines = {t.name: t.line.color for t in fig.data if t.mode and "lines" in t.mode}
    assert lines["masked"] == figures.VARIANT_COLORS["masked"]
    assert lines["baseline"] == figures.VARIANT_COLORS["baseline"]
    assert lines["random (mean of 5 seeds)"] == figures.VARIANT_COLORS["random"]
    bands = [t for t in fig.data if t.fill == "toself"]  # baseline CI, seed range, masked CI
    assert [b.name for b in bands] == ["baseline 95% CI", "random: range over 5 seeds", "masked 95% CI"]
    assert "range of random over 5 seeds" in fig.layout.xaxis.title.text
    roc = figures.roc_curves({"masked": (np.array([0, 1.0]), np.array([0, 1.0])),
                              "random": (np.array([0, 1.0]), np.array([0, 1.0]))})
    assert [t.line.color for t in roc.data[:2]] == [figures.VARIANT_COLORS["masked"], figures.VARIANT_COLORS["random"]]
    # the five arm colours are distinct
    assert len(set(figures.VARIANT_COLORS.values())) == len(figures.VARIANT_COLORS)


def test_dimension_scatter_draws_a_large_latent_as_a_density_with_its_notable_points():
    import pandas as pd

    from ldminv_app.figures.scatter import DENSITY_MIN_POINTS, NOTABLE_POINTS

    def table(shape: tuple[int, int, int]) -> pd.DataFrame:
        n = int(np.prod(shape))
        rng = np.random.default_rng(0)
        ch, row, col = np.unravel_index(np.arange(n), shape)  # every coordinate once
        return pd.DataFrame({"coord": np.arange(n), "channel": ch, "row": row, "col": col,
                             "influence_mean": rng.random(n), "auroc": rng.random(n)})

    small = figures.dimension_scatter(table((4, 8, 8)))
    assert {t.type for t in small.data} == {"scatter"}  # SVG, every point, one trace per channel
    assert sum(len(t.x) for t in small.data) == 256 and len(small.data) == 4
    big = table((4, 25, 25))
    assert len(big) >= DENSITY_MIN_POINTS
    big.loc[7, "auroc"] = np.nan  # a coordinate without a defined AUROC is not counted
    large = figures.dimension_scatter(big)
    types = [t.type for t in large.data]
    assert "scattergl" not in types and types[0] == "heatmap"
    # 1. the density counts every coordinate with finite values, once
    z = np.asarray(large.data[0].z, dtype=float)
    assert np.nansum(z) == len(big) - 1
    counts, _, _ = np.histogram2d(big["influence_mean"].drop(7), big["auroc"].drop(7), bins=(60, 40))
    np.testing.assert_array_equal(np.nan_to_num(z), counts.T)
    # 2. the points: the most influential and the farthest from chance (an independent selection)
    want = set(big.sort_values("influence_mean", ascending=False, kind="stable").index[:NOTABLE_POINTS])
    want |= set((big["auroc"] - 0.5).abs().sort_values(ascending=False, kind="stable").index[:NOTABLE_POINTS])
    got = {(int(c), int(r), int(k)) for t in large.data[1:] if t.type == "scatter" and t.customdata is not None
           for c, r, k in t.customdata}
    assert got == {(int(big.channel[i]), int(big.row[i]), int(big.col[i])) for i in want}
    assert f"all {len(big)} coordinates" in large.layout.title.text
