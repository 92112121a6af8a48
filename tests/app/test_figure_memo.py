"""The figure memo: a builder runs once per argument content, again when any argument differs,
always for arguments it cannot compare; the store is bounded; a remembered figure equals a fresh one."""
from __future__ import annotations

import numpy as np
import pytest

from ldminv_app import figure_memo, figures


@pytest.fixture(autouse=True)
def _empty():
    figure_memo.clear()
    yield
    figure_memo.clear()


def _counting():
    calls = []

    def build(x, *, label="a"):
        calls.append((np.asarray(x).copy() if isinstance(x, np.ndarray) else x, label))
        return {"x": x, "label": label}

    return build, calls


def test_equal_content_is_built_once_and_any_difference_builds_again():
    build, calls = _counting()
    a = np.arange(5, dtype=np.float64)
    first = figure_memo.figure(build, a, label="a")
    again = figure_memo.figure(build, a.copy(), label="a")  # another array, same content
    assert again is first and len(calls) == 1
    figure_memo.figure(build, a + 1e-12, label="a")  # one bit differs
    figure_memo.figure(build, a.astype(np.float32), label="a")  # same values, another dtype
    figure_memo.figure(build, a, label="b")  # another keyword value
    assert len(calls) == 4
    assert figure_memo.stats()["hits"] == 1 and figure_memo.stats()["misses"] == 4


def test_arguments_it_cannot_compare_are_never_cached():
    build, calls = _counting()
    thing = object()
    figure_memo.figure(build, thing)
    figure_memo.figure(build, thing)
    assert len(calls) == 2 and figure_memo.stats()["uncached"] == 2


def test_the_store_keeps_the_newest_figures(monkeypatch):
    monkeypatch.setattr(figure_memo, "CAPACITY", 3)
    build, calls = _counting()
    for k in range(5):
        figure_memo.figure(build, k)
    assert figure_memo.stats()["size"] == 3
    figure_memo.figure(build, 4)  # kept
    figure_memo.figure(build, 0)  # dropped: built again
    assert len(calls) == 6


def test_a_remembered_chart_is_the_chart_built_afresh():
    x = np.arange(0, 95, 5.0)
    y = np.linspace(0.5, 0.7, len(x))
    kw = dict(masked=y, masked_band=(y - 0.05, y + 0.05), random_mean=y - 0.01, random_band=(y - 0.03, y + 0.02),
              baseline=0.6, baseline_ci=(0.55, 0.65), n_seeds=3, n_boot=100, current=40.0, title="t")
    memo = figure_memo.figure(figures.drop_curves_with_bands, x, **kw)
    assert figure_memo.figure(figures.drop_curves_with_bands, x, **kw) is memo
    assert memo.to_json() == figures.drop_curves_with_bands(x, **kw).to_json()


def test_the_drop_marker_is_the_shape_and_note_of_add_vline():
    import plotly.graph_objects as go

    fig = figures.metric_vs_drop(np.array([0.0, 10.0]), {"masked": np.array([0.6, 0.7])}, current=10.0)
    ref = go.Figure()
    ref.add_vline(x=10.0, line_dash="dot", line_color="#555555", annotation_text="10%", annotation_position="top")
    assert fig.to_dict()["layout"]["shapes"] == ref.to_dict()["layout"]["shapes"]
    assert fig.to_dict()["layout"]["annotations"] == ref.to_dict()["layout"]["annotations"]
