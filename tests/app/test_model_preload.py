"""The background load of a small run's model (ldminv_app.cache.preload_model_size) and the hook
that starts it only once the server has imported torch itself (ldminv_app.preimport.after_torch)."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from ldminv_app import cache, preimport


def _run(model: str | None) -> SimpleNamespace:
    return SimpleNamespace(settings={} if model is None else {"model": model}, path="/nowhere")


def test_a_small_local_folder_is_preloaded_and_its_size_is_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "PRELOAD_MODEL_MAX_BYTES", 1 << 30)  # the default (tests turn it off)
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.bin").write_bytes(b"x" * 1000)
    (tmp_path / "model_index.json").write_text("{}")
    assert cache.preload_model_size(_run(str(tmp_path))) == 1002


def test_no_preload_without_a_local_folder_or_above_the_limit(tmp_path, monkeypatch):
    assert cache.preload_model_size(_run(None)) is None
    assert cache.preload_model_size(_run("someone/some-hub-model")) is None
    (tmp_path / "w.bin").write_bytes(b"x" * 2048)
    assert cache.preload_model_size(_run(str(tmp_path / "w.bin"))) is None  # a file, not a folder
    monkeypatch.setattr(cache, "PRELOAD_MODEL_MAX_BYTES", 1024)
    assert cache.preload_model_size(_run(str(tmp_path))) is None
    monkeypatch.setattr(cache, "PRELOAD_MODEL_MAX_BYTES", 0)  # LDMINV_PRELOAD_MODEL_MB=0: never
    assert cache.preload_model_size(_run(str(tmp_path))) is None


@pytest.mark.parametrize("raw, mb", [("", 1024), ("0", 0), ("12", 12), (" 7 ", 7), ("-1", 1024), ("lots", 1024)])
def test_the_preload_limit_comes_from_the_environment(monkeypatch, raw, mb):
    monkeypatch.setenv("LDMINV_PRELOAD_MODEL_MB", raw)
    assert cache._preload_limit() == mb << 20


def test_after_torch_waits_for_the_import_then_calls_at_once(monkeypatch):
    monkeypatch.setattr(preimport, "_torch_done", False)
    monkeypatch.setattr(preimport, "_after", [])
    monkeypatch.setattr(preimport, "_torch_in_process", lambda: False)  # a server before the import
    called = []
    preimport.after_torch(lambda: called.append("first"))
    assert called == []  # waits for the preimport thread
    imported = threading.Thread(target=preimport._torch_imported)
    imported.start()
    imported.join(5)
    assert called == ["first"]
    preimport.after_torch(lambda: called.append("second"))
    assert called == ["first", "second"]  # torch is there: at once


def test_model_loaded_follows_the_model_cache_when_it_drops_a_model(monkeypatch):
    """``model_loaded`` says True only while the model is in ``_load_model``'s cache: that cache keeps
    the MODEL_CACHE_ENTRIES most recently used, and a model it has dropped loads again (the oracle:
    the loader is called anew)."""
    from collections import OrderedDict

    from ldminv_core.models import loading

    loads: list[str] = []
    monkeypatch.setattr(loading, "load_model", lambda source, **kw: loads.append(source) or object())
    monkeypatch.setattr(cache, "_LOADED_MODELS", OrderedDict())
    cache._load_model.clear()
    runs = {name: _run(f"/models/{name}") for name in "abc"}
    assert cache.MODEL_CACHE_ENTRIES == 2
    try:
        for name in ("a", "b", "a", "c"):  # c pushes out the least recently used: b
            cache.get_model(runs[name])
        assert loads == ["/models/a", "/models/b", "/models/c"]
        assert [cache.model_loaded(runs[n]) for n in "abc"] == [True, False, True]
        cache.get_model(runs["a"])
        assert len(loads) == 3  # a was in the cache, as model_loaded said
        cache.get_model(runs["b"])
        assert loads[-1] == "/models/b"  # b was not: loaded again (and c, now the oldest, dropped)
        assert [cache.model_loaded(runs[n]) for n in "abc"] == [True, True, False]
    finally:
        cache._load_model.clear()
