"""Cached access to runs, models and the arrays the pages derive from them.

``st.cache_resource`` holds objects that are shared and never copied: opened runs, loaded
models, in-memory arrays, background analysis jobs, and one
:class:`~ldminv_core.evaluation.Evaluation` per (run, attack, protocol), which memoises every
reported number itself: there is no other cache of reported numbers. ``st.cache_data``
holds descriptive tables and images. Every cache key starts with the run's resolved path and
the modification time of its run.json (its "stamp"), so a recomputed run is never served stale
results. Moving a control on a page therefore only recomputes
from these cached objects: no model call, no file re-read.

Every choice is an explicit argument (protocol, folds, replicates): this module never reads the
session; :mod:`ldminv_app.state`, above it, fills in the session's choices.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ldminv_core import embedding, masks
from ldminv_core.errors import RunError
from ldminv_core.cores import usable_cores
from ldminv_core.evaluation import DEFAULT_N_BOOT, Evaluation, make_protocol, tables
from ldminv_core.evaluation.grids import grid_cache_dir
from ldminv_core.runs import Run
from ldminv_core.evaluation.pair_shift import heldout_member_shift

from .images import load_display_image, load_thumbnail, png_data_uri, to_rgb_uint8
from .job_registry import JobRegistry, registry

__all__ = [
    "run_key",
    "open_run",
    "get_model",
    "model_loaded",
    "MODEL_CACHE_ENTRIES",
    "PRELOAD_MODEL_MAX_BYTES",
    "preload_model_size",
    "influence",
    "latents",
    "stored_umap",
    "compute_umap",
    "terms",
    "evaluation",
    "PAGE_N_BOOT",
    "PREVIEW_N_BOOT",
    "baseline_scores",
    "best_t_index",
    "dimension_table",
    "thumbnail",
    "thumbnail_uri",
    "display_image",
    "reconstruction",
    "job_registry",
    "clear_run_caches",
    "influence_row",
    "protocol_evaluations",
    "warm_run",
    "warm_controls",
    "warm_dimension_tables",
]


#: Bootstrap replicates of the intervals on the pages: the evaluation layer's one default, as the CLI
#: report and the HTML export (one finding has the same interval everywhere).
PAGE_N_BOOT = DEFAULT_N_BOOT
#: The faster choice the Masks & ROC page offers while tuning (labelled there; the Export page
#: follows whichever that page shows).
PREVIEW_N_BOOT = 200

# --------------------------------------------------------------------------- keys


@functools.lru_cache(maxsize=64)
def _stamp_of(run_json: str, mtime_ns: int, size: int) -> int:
    """The stamp of one version of a run.json (parsed once per version, not on every lookup)."""
    try:
        with open(run_json, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return 0
    if isinstance(data, dict) and data.get("status") != "complete":
        stages = data.get("stages")
        done = sorted(str(k) for k, v in stages.items() if v is True) if isinstance(stages, dict) else []
        digest = hashlib.sha256(("partial:" + ",".join(done)).encode()).digest()
        return -int.from_bytes(digest[:7], "big") - 1  # negative: never equal to an mtime
    return mtime_ns


def run_key(path: str | os.PathLike) -> tuple[str, int]:
    """(resolved path, stamp) of a run folder. The stamp is run.json's mtime_ns for a complete
    run; for an unfinished one it changes only when a stage finishes (its batch counters move
    every few seconds and must not invalidate every cached result); 0 when missing."""
    folder = Path(path).expanduser().resolve()
    try:
        st_ = (folder / "run.json").stat()
    except OSError:
        return str(folder), 0
    return str(folder), _stamp_of(str(folder / "run.json"), int(st_.st_mtime_ns), int(st_.st_size))


# --------------------------------------------------------------------------- resources


@st.cache_resource(max_entries=8, show_spinner=False)
def _open_run(path: str, stamp: int) -> Run:
    return Run.open(path, partial=True)


def open_run(path: str | os.PathLike) -> Run:
    """The run at ``path``: complete, or partial with its finished stages (``Run.open(path,
    partial=True)``), cached by :func:`run_key`.

    Raises RunError (not cached) when the folder is missing, not a run, or has no finished stage.
    """
    return _open_run(*run_key(path))


#: Models kept loaded by the server at once (the least recently used is dropped first).
MODEL_CACHE_ENTRIES = 2


@st.cache_resource(max_entries=MODEL_CACHE_ENTRIES, show_spinner="Loading the model…")
def _load_model(source: str, device: str, dtype_name: str):
    import torch

    from ldminv_core.models.loading import load_model

    return load_model(source, device=device, dtype=getattr(torch, dtype_name))


def model_source(run: Run) -> str | None:
    """The model folder or hub id a run was computed with (from run.json)."""
    for where in (run.settings, run.settings.get("config", {})):
        for key in ("model", "model_path", "model_source"):
            value = where.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _preload_limit() -> int:
    """``LDMINV_PRELOAD_MODEL_MB`` (default 1024; 0: never) in bytes; a value that is not a whole
    number of MB is ignored with a warning in the server's log."""
    raw = os.environ.get("LDMINV_PRELOAD_MODEL_MB", "").strip()
    if raw:
        try:
            mb = int(raw)
            if mb >= 0:
                return mb << 20
        except ValueError:
            pass
        import logging

        logging.getLogger(__name__).warning("LDMINV_PRELOAD_MODEL_MB: expected a whole number of MB >= 0, got %r; "
                                            "using 1024", raw)
    return 1024 << 20


#: On a run's first open, its model is loaded in the background (for the Distortion page's
#: reconstruction: 3.2 s on the demo when that page asked first) when its local folder holds at
#: most this many bytes (``LDMINV_PRELOAD_MODEL_MB``, default 1024 MB; 0 turns it off); a larger
#: model (a Stable Diffusion checkpoint: several GB of memory) loads only when the page asks.
PRELOAD_MODEL_MAX_BYTES = _preload_limit()


def preload_model_size(run: Run) -> int | None:
    """The bytes of the run's local model folder when it may be loaded in the background (at most
    :data:`PRELOAD_MODEL_MAX_BYTES`), else None (no model recorded, a hub id, a file, too large)."""
    source = model_source(run)
    if source is None or not os.path.isdir(source) or PRELOAD_MODEL_MAX_BYTES <= 0:
        return None
    total = 0
    for root, _dirs, files in os.walk(source):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                continue
            if total > PRELOAD_MODEL_MAX_BYTES:
                return None
    return total


#: The (source, device, dtype) of the models in ``_load_model``'s cache, least recently used first:
#: the same order and size as that cache (an LRU of :data:`MODEL_CACHE_ENTRIES`), so that a model
#: it has dropped is not reported as loaded.
_LOADED_MODELS: OrderedDict[tuple[str, str, str], None] = OrderedDict()
_LOADED_MODELS_LOCK = threading.Lock()


def get_model(run: Run, *, device: str = "cpu", dtype_name: str = "float32"):
    """The run's model (``loading.load_model``), loaded once per source/device/dtype; the server
    keeps the :data:`MODEL_CACHE_ENTRIES` most recently used."""
    source = model_source(run)
    if source is None:
        raise RunError(f"{run.path / 'run.json'}: no model path recorded; cannot decode latents")
    model = _load_model(source, device, dtype_name)
    with _LOADED_MODELS_LOCK:
        key = (source, device, dtype_name)
        _LOADED_MODELS[key] = None
        _LOADED_MODELS.move_to_end(key)
        while len(_LOADED_MODELS) > MODEL_CACHE_ENTRIES:
            _LOADED_MODELS.popitem(last=False)
    return model


def model_loaded(run: Run, *, device: str = "cpu", dtype_name: str = "float32") -> bool:
    """Whether the run's model is in the server's model cache (:func:`get_model`; a decode is then
    a fraction of a second: no need to compute it in the background)."""
    with _LOADED_MODELS_LOCK:
        return (model_source(run), device, dtype_name) in _LOADED_MODELS


@st.cache_resource(max_entries=4, show_spinner=False)
def _influence(path: str, stamp: int) -> np.ndarray:
    return np.array(_open_run(path, stamp).influence, dtype=np.float32)


def influence(run: Run) -> np.ndarray:
    """(N, C, h, w) float32 influence, in memory (read once per run)."""
    return _influence(*run_key(run.path))


def influence_row(run: Run, index: int) -> np.ndarray:
    """(C, h, w) float32 influence of one sample, read off the memory-mapped file alone."""
    return np.array(run.influence[int(index)], dtype=np.float32)


@st.cache_resource(max_entries=4, show_spinner=False)
def _latents(path: str, stamp: int) -> np.ndarray:
    return np.array(_open_run(path, stamp).latents, dtype=np.float32)


def latents(run: Run) -> np.ndarray:
    """(N, C, h, w) float32 latents, in memory (read once per run)."""
    return _latents(*run_key(run.path))


@st.cache_resource(show_spinner=False)
def _umap_store() -> dict[tuple, np.ndarray]:
    """Embeddings this server computed, by (run path, stamp, N, seed, neighbours): only those
    that could not be saved in their run folder (a read-only folder) are looked up here."""
    return {}


def stored_umap(run: Run, *, seed: int, n_neighbors: int) -> np.ndarray | None:
    """The run's UMAP for these settings when it was computed before, else None: the copy saved
    in the run folder (``embedding.read_cached_umap``, one file per setting), or the one this
    server kept when the folder could not be written. Both are keyed by the same settings."""
    n = len(run)
    xy = embedding.read_cached_umap(run.path, n, seed=int(seed), n_neighbors=int(n_neighbors))
    if xy is None:
        xy = _umap_store().get((*run_key(run.path), n, int(seed), int(n_neighbors)))
    return xy


def compute_umap(run: Run, *, seed: int, n_neighbors: int) -> tuple[np.ndarray, str | None]:
    """Compute the run's UMAP for these settings and save it in the run folder next to those of
    other settings. Returns (the (N, 2) embedding, None), or (the embedding, the reason it could
    not be saved) when the folder is not writable: it is then kept for this server's lifetime."""
    xy = embedding.umap_embedding(latents(run), seed=int(seed), n_neighbors=int(n_neighbors))
    try:
        embedding.store_umap(run.path, xy, seed=int(seed), n_neighbors=int(n_neighbors))
    except RunError as exc:
        _umap_store()[(*run_key(run.path), len(run), int(seed), int(n_neighbors))] = xy
        return xy, str(exc)
    return xy, None


def terms(run: Run, attack: str, *, protocol: str, folds: int) -> np.ndarray:
    """(N, T, C, h, w) per-coordinate terms of a maskable attack: the memory-mapped array the
    cached evaluation of (``protocol``, ``folds``) reads (no second copy in memory)."""
    return evaluation(run, attack, protocol=protocol, folds=folds).terms()


@st.cache_resource(max_entries=32, show_spinner=False)
def _evaluation(path: str, stamp: int, attack: str, protocol: str, folds: int, n_boot: int) -> Evaluation:
    return Evaluation(_open_run(path, stamp), attack, make_protocol(protocol, folds=folds), n_boot=n_boot)


def evaluation(run: Run, attack: str, *, protocol: str, folds: int, n_boot: int | None = None) -> Evaluation:
    """The one cached :class:`~ldminv_core.evaluation.Evaluation` of (run path, run.json stamp,
    attack, protocol, folds, n_boot): it memoises its own parts (per-t curves, arms per drop,
    quartiles, findings, sweeps), so every page and every control reuses what was computed once.

    ``protocol`` / ``folds`` are explicit (the session's choice: :func:`ldminv_app.state.evaluation`),
    ``n_boot`` defaults to :data:`PAGE_N_BOOT`. The folds are part of the key only for ``honest`` (the
    other protocols do not use them), so changing the folds never recomputes a ``standard`` evaluation.
    """
    name = protocol
    k = int(folds) if name == "honest" else 5
    nb = PAGE_N_BOOT if n_boot is None else int(n_boot)
    key = run_key(run.path)
    warmer().foreground()
    ev = _evaluation(*key, attack, name, k, nb)
    if not ev.grids_ready():
        # the one pass over the terms that every masked / random number reads from (shared by the
        # protocols of this run); a minute or so for a Stable-Diffusion-size run, once per run: a
        # copy is saved in the run folder, so a later server opens it memory-mapped in a second
        text = "Summing the attack terms at every drop percentage and timestep (once per run)…"
        with st.spinner(text):
            bar = st.progress(0.0, text=text)
            try:
                ev.grids(progress=lambda f: bar.progress(min(1.0, float(f)), text=f"{text} {100 * f:.0f} %"))
            finally:
                bar.empty()
        if PAGE_N_BOOT == nb:
            _first_open_extras(run, attack, ev, folds=int(folds))
    return ev


_FIRST_OPEN: set = set()
_FIRST_OPEN_LOCK = threading.Lock()


def _first_open_extras(run: Run, attack: str, ev: Evaluation, *, folds: int) -> None:
    """Once per server, run and attack, after the grids, in the background: the Dimensions table at
    the headline timestep (a few seconds for an SD-size run; saved next to the run, so the page
    opens at once now and in later servers), then the other protocols' default views, then the
    run's model when it is small (:data:`PRELOAD_MODEL_MAX_BYTES`)."""
    key = (*run_key(run.path), attack)
    with _FIRST_OPEN_LOCK:
        if key in _FIRST_OPEN:
            return
        _FIRST_OPEN.add(key)
    if run.is_maskable(attack) and run.has_geometry:
        # first in the background queue, not before this page's numbers (the Dimensions page
        # computes it itself if it is opened sooner)
        warm_dimension_tables(run, attack, [ev.headline_t_index()])
    warm_run(run, attack, folds=folds)
    if preload_model_size(run) is not None:
        # behind the evaluations, once the server has imported torch itself (an import holds the
        # interpreter lock for seconds: never while a page waits): the Distortion page's
        # reconstruction needs the model
        from . import preimport

        preimport.after_torch(lambda: warmer().submit([(("model", *key[:2]), lambda: _preload(run))], front=False))


def _preload(run: Run) -> None:
    """The run's model, loaded in the background; its objects then out of the collector's sight
    (they live as long as the server: :func:`ldminv_app.preimport.freeze_survivors`)."""
    from .preimport import freeze_survivors

    get_model(run)
    freeze_survivors()


def protocol_evaluations(run: Run, attack: str, *, folds: int, n_boot: int | None = None) -> dict[str, Evaluation]:
    """The cached evaluation of every protocol (honest with ``folds``), created here (cheap: nothing
    is computed until asked)."""
    from ldminv_core.evaluation import PROTOCOLS

    key = run_key(run.path)
    nb = PAGE_N_BOOT if n_boot is None else int(n_boot)
    return {p: _evaluation(*key, attack, p, int(folds) if p == "honest" else 5, nb) for p in PROTOCOLS}


# --------------------------------------------------------------------------- background warm-up

# the one background prefetcher lives in warm.py
from .warm import warmer  # noqa: E402


def _page_parts(ev: Evaluation, drop: float | None, t_index: int) -> None:
    """What the Findings and Masks & ROC pages ask an evaluation for at one drop and t."""
    ev.arms(drop)
    ev.findings(drop)
    for arm in ("baseline", "masked", "random"):
        ev.scores(arm, drop)
    if drop is not None:
        ev.masked_per_t(drop)
    ev.drop_curves(t_index, extra=() if drop is None else (drop,))


def warm_run(run: Run, attack: str, *, folds: int) -> None:
    """After the first open: every protocol's Findings and default Masks & ROC view, in the
    background (queued behind what the pages ask for)."""
    if not run.is_maskable(attack):
        return
    key = run_key(run.path)
    evs = protocol_evaluations(run, attack, folds=folds)
    tasks = []
    for name, e in evs.items():
        tasks.append((("result", key, attack, name), lambda e=e: (e.result(), e.drop_curves(e.headline_t_index()))))
    for name, e in evs.items():
        for drop in ((None, 40.0) if name == "honest" else (40.0,)):
            tasks.append((("page", key, attack, name, drop),
                          lambda e=e, drop=drop: _page_parts(e, drop, e.headline_t_index())))
    warmer().submit(tasks, front=False)


def warm_controls(run: Run, attack: str, drop: float | None, t_index: int, *, protocol: str, folds: int) -> None:
    """After a Masks & ROC run: the other protocols at this drop and t, and this protocol's
    neighbouring timesteps, computed in the background."""
    warmer().foreground()  # the page is still drawing its charts
    key = run_key(run.path)
    evs = protocol_evaluations(run, attack, folds=folds)
    current = protocol
    t_count = len(run.timesteps(attack))
    tasks = []
    ev = evs[current]
    for dt in (1, -1):
        ti = t_index + dt
        if 0 <= ti < t_count:
            tasks.append((("curves", key, attack, current, ti, drop),
                          lambda ti=ti: ev.drop_curves(ti, extra=() if drop is None else (drop,))))
    for name, e in evs.items():
        if name == current:
            continue
        drops = (None, drop) if name == "honest" else (drop if drop is not None else 40.0,)
        for p in drops:
            tasks.append((("page", key, attack, name, p), lambda e=e, p=p: (_page_parts(e, p, t_index), e.result(p))))
    # behind the neighbouring drops the page queued just before (the next slider step is the likelier
    # move); a newer call replaces these tasks when they have not started (the drop moved on)
    warmer().submit(tasks, front=False, group=("controls", key, attack))


def baseline_scores(run: Run, attack: str, *, protocol: str, folds: int) -> np.ndarray:
    """Membership scores without any mask: (N, T) for maskable attacks, (N, 1) otherwise (the
    same for every protocol; read from the cached evaluation of ``protocol`` / ``folds``)."""
    return -evaluation(run, attack, protocol=protocol, folds=folds).baseline_stat()


def best_t_index(run: Run, attack: str, *, protocol: str, folds: int) -> int:
    """Index of the timestep with the best baseline AUROC on all samples (first on ties)."""
    return evaluation(run, attack, protocol=protocol, folds=folds).headline_t_index()


def _term_shift(terms_t: np.ndarray, labels: np.ndarray, table: pd.DataFrame) -> np.ndarray:
    """The table's ``shift`` column (``ldminv_core.evaluation.pair_shift.heldout_member_shift``: median held-out
    minus member term over all pairs, never of the other sign than ``auroc`` - 0.5), in the
    table's row order; NaN when a class is missing."""
    lab = np.asarray(labels)
    if not ((lab == 1).any() and (lab != 1).any()):
        return np.full(len(table), np.nan)
    coords = table["coord"].to_numpy()
    by_coord = np.empty(len(table))
    by_coord[coords] = table["auroc"].to_numpy()
    values, _ = heldout_member_shift(terms_t.reshape(terms_t.shape[0], -1), lab, auroc=by_coord)
    return values[coords]


@st.cache_resource(max_entries=16, show_spinner=False)
def _dimension_table(path: str, stamp: int, attack: str, t_index: int) -> pd.DataFrame:
    """The table, from its copy in the run's cache folder when one matches the files, else
    computed (coordinate blocks of the terms at one t and of the influence) and saved there."""
    run = _open_run(path, stamp)
    terms = run.terms(attack)
    folder = grid_cache_dir(run)
    target = None
    if folder is not None:
        ident = "|".join(f"{os.path.basename(a.filename)}-{os.stat(a.filename).st_size}-{os.stat(a.filename).st_mtime_ns}"
                         for a in (terms, run.influence) if getattr(a, "filename", None))
        digest = hashlib.sha1(f"{ident}|{attack}|{int(t_index)}|v2".encode()).hexdigest()[:16]
        target = folder / f"dimensions-{digest}.parquet"  # parquet, not pickle: a run folder may come from anyone
        try:
            return pd.read_parquet(target)
        except Exception:  # noqa: BLE001 - missing or unreadable: compute it again
            pass
    terms_t = masks.read_timestep(terms, int(t_index))
    # on every core (at most four): numpy's sorts release the interpreter lock (2.9 s against 5.9 s
    # on two cores for N = 5000, d = 16384)
    table = tables.dimension_table(run.influence, terms_t, run.labels, workers=min(4, usable_cores()))
    table["shift"] = _term_shift(terms_t, run.labels, table)
    if target is not None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
            table.to_parquet(tmp, index=False)
            os.replace(tmp, target)
        except OSError:
            pass
    return table


def warm_dimension_tables(run: Run, attack: str, t_indices) -> None:
    """The Dimensions tables at these timestep indices, computed (and saved) in the background."""
    key = run_key(run.path)
    t_count = len(run.timesteps(attack))
    warmer().foreground()
    warmer().submit([(("dimensions", key, attack, int(t)), lambda t=int(t): _dimension_table(*key, attack, t))
                     for t in t_indices if 0 <= int(t) < t_count])


def dimension_table(run: Run, attack: str, t_index: int) -> pd.DataFrame:
    """``ldminv_core.evaluation.tables.dimension_table`` of the attack's terms at one timestep
    (descriptive, the same under every protocol) with a ``shift`` column (the Hodges-Lehmann
    shift of the term, held-out minus member: of the sign of ``auroc`` - 0.5), cached."""
    key = run_key(run.path)
    with st.spinner("Ranking the latent coordinates (once per timestep; saved next to the run)…"):
        return _dimension_table(*key, attack, int(t_index))


# --------------------------------------------------------------------------- images


def _file_stamp(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


@st.cache_data(max_entries=4096, show_spinner=False)
def _thumbnail(path: str, stamp: int, size: int) -> np.ndarray | None:
    return load_thumbnail(path, size=size)


def thumbnail(path: str, *, size: int = 96) -> np.ndarray | None:
    """uint8 (h, w, 3) thumbnail of an image file, or None when unreadable (cached)."""
    return _thumbnail(str(path), _file_stamp(str(path)), int(size))


@functools.lru_cache(maxsize=4096)
def _thumbnail_uri(path: str, stamp: int, size: int) -> str | None:
    image = _thumbnail(path, stamp, size)
    return None if image is None else png_data_uri(image)


def thumbnail_uri(path: str, *, size: int = 96) -> str | None:
    """The thumbnail of :func:`thumbnail` as a PNG data URI (for an image column), or None when
    unreadable; encoded once per file version and size (a table of thumbnails redraws at once)."""
    return _thumbnail_uri(str(path), _file_stamp(str(path)), int(size))


@st.cache_data(max_entries=256, show_spinner=False)
def _display_image(path: str, stamp: int, resolution: int, channels: int) -> np.ndarray | None:
    return load_display_image(path, resolution=resolution, channels=channels)


def display_image(path: str, *, resolution: int, channels: int = 3) -> np.ndarray | None:
    """The image centre-cropped and resized to the model's resolution (grey for 1-channel
    models), uint8 (R, R, 3), or None when unreadable (cached)."""
    return _display_image(str(path), _file_stamp(str(path)), int(resolution), int(channels))


@st.cache_data(max_entries=256, show_spinner="Decoding…")
def _reconstruction(path: str, stamp: int, index: int) -> np.ndarray:
    import torch

    run = _open_run(path, stamp)
    model = get_model(run)
    z = torch.from_numpy(np.array(_latents(path, stamp)[int(index)][None], dtype=np.float32))
    return to_rgb_uint8(model.decode(z)[0])


def reconstruction(run: Run, index: int) -> np.ndarray:
    """Decoded stored latent of sample row ``index``: uint8 (H, W, 3) (model loaded once)."""
    return _reconstruction(*run_key(run.path), int(index))


# --------------------------------------------------------------------------- jobs


@st.cache_resource(show_spinner=False)
def job_registry() -> JobRegistry:
    """The server-wide registry of analysis jobs (:func:`ldminv_app.job_registry.registry`)."""
    return registry()


def clear_run_caches() -> None:
    """Drop every cached run-derived object (after a run was deleted or recomputed)."""
    for fn in (_open_run, _influence, _latents, _evaluation, _dimension_table):
        fn.clear()
    for fn in (_reconstruction,):
        fn.clear()
    _thumbnail_uri.cache_clear()
