"""Tests of ldminv_core.embedding: UMAP of latents and its cache in the run folder."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ldminv_core import embedding
from ldminv_core.errors import NonFiniteError, RunError, ShapeError


@pytest.fixture(scope="module")
def latents() -> np.ndarray:
    rng = np.random.default_rng(3)
    # two well separated clusters so the embedding has structure to preserve
    a = rng.normal(0.0, 1.0, size=(12, 2, 3, 3))
    b = rng.normal(6.0, 1.0, size=(12, 2, 3, 3))
    return np.concatenate([a, b]).astype(np.float32)


def test_umap_embedding_matches_umap_learn_and_is_seeded(latents):
    import umap

    emb = embedding.umap_embedding(latents, seed=7, n_neighbors=5)
    assert emb.shape == (latents.shape[0], 2)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        oracle = umap.UMAP(
            n_components=2, n_neighbors=5, random_state=7, n_jobs=1, init="spectral"
        ).fit_transform(latents.reshape(latents.shape[0], -1))
    np.testing.assert_allclose(emb, oracle, rtol=0, atol=1e-5)

    again = embedding.umap_embedding(latents, seed=7, n_neighbors=5)
    np.testing.assert_array_equal(emb, again)
    other = embedding.umap_embedding(latents, seed=8, n_neighbors=5)
    assert not np.array_equal(emb, other)

    # the two clusters stay apart: every point is nearer its own cluster's centre
    ca, cb = emb[:12].mean(0), emb[12:].mean(0)
    da = np.linalg.norm(emb - ca, axis=1)
    db = np.linalg.norm(emb - cb, axis=1)
    assert (da[:12] < db[:12]).all() and (db[12:] < da[12:]).all()


def test_umap_embedding_small_input_and_progress():
    rng = np.random.default_rng(0)
    small = rng.normal(size=(4, 1, 2, 2)).astype(np.float32)
    calls = []
    emb = embedding.umap_embedding(
        small, n_neighbors=15, progress=lambda s, d, t: calls.append((s, d, t))
    )
    assert emb.shape == (4, 2) and emb.dtype == np.float32
    assert calls == [("umap", 0, 1), ("umap", 1, 1)]


@pytest.mark.parametrize(
    "bad, exc, words",
    [
        (np.zeros((5, 4, 4), np.float32), ShapeError, "(N, C, h, w)"),
        (np.zeros((2, 1, 2, 2), np.float32), ShapeError, "at least 3"),
        (np.full((5, 1, 2, 2), np.nan, np.float32), NonFiniteError, "finite"),
    ],
)
def test_umap_embedding_rejects_bad_input(bad, exc, words):
    with pytest.raises(exc, match="latents") as info:
        embedding.umap_embedding(bad)
    assert words in str(info.value)


def test_cached_embedding_written_once_and_reused(tmp_path, latents, monkeypatch):
    first = embedding.cached_umap_embedding(tmp_path, latents, seed=1, n_neighbors=5)
    direct = embedding.umap_embedding(latents, seed=1, n_neighbors=5)
    np.testing.assert_array_equal(first, direct)
    stored = np.load(tmp_path / embedding.UMAP_FILE)
    np.testing.assert_array_equal(stored, first)
    assert json.loads((tmp_path / embedding.UMAP_SETTINGS_FILE).read_text()) == {
        "seed": 1,
        "n_neighbors": 5,
        "n": latents.shape[0],
    }
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    mtime = (tmp_path / embedding.UMAP_FILE).stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the cached embedding should have been reused")

    monkeypatch.setattr(embedding, "umap_embedding", fail)
    second = embedding.cached_umap_embedding(tmp_path, latents, seed=1, n_neighbors=5)
    np.testing.assert_array_equal(second, first)
    assert (tmp_path / embedding.UMAP_FILE).stat().st_mtime_ns == mtime

    # other settings are not served from the cache
    with pytest.raises(AssertionError, match="reused"):
        embedding.cached_umap_embedding(tmp_path, latents, seed=2, n_neighbors=5)


def test_cached_embedding_needs_a_folder(tmp_path, latents):
    with pytest.raises(RunError, match="run_dir"):
        embedding.cached_umap_embedding(tmp_path / "missing", latents)
