"""Tests of ldminv_core.embedding: UMAP of latents and its cache in the run folder."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ldminv_core import embedding
from ldminv_core.errors import NonFiniteError, RunError, ShapeError

# UMAP compiles with numba on first use (about 15 s), whichever test comes first.
pytestmark = pytest.mark.slow


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
    stored_at = embedding.umap_file(tmp_path, latents.shape[0], seed=1, n_neighbors=5)
    assert stored_at.parent == tmp_path / ".ldminv-cache" / "umap"
    np.testing.assert_array_equal(np.load(stored_at), first)
    assert not [p for p in stored_at.parent.iterdir() if p.name.endswith(".tmp")]
    mtime = stored_at.stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("the cached embedding should have been reused")

    monkeypatch.setattr(embedding, "umap_embedding", fail)
    second = embedding.cached_umap_embedding(tmp_path, latents, seed=1, n_neighbors=5)
    np.testing.assert_array_equal(second, first)
    assert stored_at.stat().st_mtime_ns == mtime

    # other settings are not served from the cache
    with pytest.raises(AssertionError, match="reused"):
        embedding.cached_umap_embedding(tmp_path, latents, seed=2, n_neighbors=5)


def test_every_setting_is_kept_and_read_back_by_its_own_settings(tmp_path, latents, monkeypatch):
    """Seed 0, then seed 1, then seed 0 again: both stay stored, each read back by its settings
    (a single file holding the last setting lost seed 0 when seed 1 was computed)."""
    calls = []

    def fake(arr, *, seed=0, n_neighbors=15, progress=None):
        calls.append((seed, n_neighbors))
        return np.random.default_rng([seed, n_neighbors]).normal(size=(arr.shape[0], 2)).astype(np.float32)

    monkeypatch.setattr(embedding, "umap_embedding", fake)
    n = latents.shape[0]
    e0 = embedding.cached_umap_embedding(tmp_path, latents, seed=0, n_neighbors=5)
    e1 = embedding.cached_umap_embedding(tmp_path, latents, seed=1, n_neighbors=5)
    e0_again = embedding.cached_umap_embedding(tmp_path, latents, seed=0, n_neighbors=5)
    e0_k7 = embedding.cached_umap_embedding(tmp_path, latents, seed=0, n_neighbors=7)
    assert calls == [(0, 5), (1, 5), (0, 7)]
    np.testing.assert_array_equal(e0_again, e0)
    assert not np.array_equal(e0, e1) and not np.array_equal(e0, e0_k7)
    for seed, k, want in ((0, 5, e0), (1, 5, e1), (0, 7, e0_k7)):
        np.testing.assert_array_equal(embedding.read_cached_umap(tmp_path, n, seed=seed, n_neighbors=k), want)
    assert embedding.read_cached_umap(tmp_path, n, seed=2, n_neighbors=5) is None
    assert embedding.read_cached_umap(tmp_path, n + 1, seed=0, n_neighbors=5) is None  # other samples


def test_reads_the_single_file_of_earlier_versions_when_its_settings_match(tmp_path):
    xy = np.arange(20, dtype=np.float32).reshape(10, 2)
    np.save(tmp_path / embedding.UMAP_FILE, xy)
    (tmp_path / embedding.UMAP_SETTINGS_FILE).write_text(json.dumps({"seed": 3, "n_neighbors": 15, "n": 10}))
    np.testing.assert_array_equal(embedding.read_cached_umap(tmp_path, 10, seed=3, n_neighbors=15), xy)
    assert embedding.read_cached_umap(tmp_path, 10, seed=0, n_neighbors=15) is None
    # a stored file of the same settings wins over it
    newer = -xy
    embedding.store_umap(tmp_path, newer, seed=3, n_neighbors=15)
    np.testing.assert_array_equal(embedding.read_cached_umap(tmp_path, 10, seed=3, n_neighbors=15), newer)


def test_store_errors_are_clear(tmp_path):
    with pytest.raises(ShapeError, match=r"emb: expected an array of shape \(N, 2\)"):
        embedding.store_umap(tmp_path, np.zeros((4, 3)), seed=0, n_neighbors=5)
    with pytest.raises(RunError, match="run_dir"):
        embedding.store_umap(tmp_path / "missing", np.zeros((4, 2)), seed=0, n_neighbors=5)
    (tmp_path / ".ldminv-cache").write_text("a file where the cache folder goes")
    with pytest.raises(RunError, match=r"could not store the UMAP in .*umap-n4-neighbours5-seed0\.npy"):
        embedding.store_umap(tmp_path, np.zeros((4, 2)), seed=0, n_neighbors=5)


def test_cached_embedding_needs_a_folder(tmp_path, latents):
    with pytest.raises(RunError, match="run_dir"):
        embedding.cached_umap_embedding(tmp_path / "missing", latents)
