"""The drop grids of one attack of a run: every masked / random / global statistic the evaluation
reports, at the drop percentages 0, 1, ..., 99 and every timestep, from one chunked pass.

:class:`AttackGrids` holds, for one attack of one opened run:

- the per-sample influence order at ``round(d * p / 100)`` drops (``standard``, ``honest``)
  and at the percentile-threshold counts (``paper``);
- each seed's random order at ``round(d * p / 100)`` and ``int(d * p / 100)`` drops;
- the shared ranking by mean influence (the global mask) at ``round(d * p / 100)`` drops.

Built by :func:`ldminv_core.evaluation.grid_engine.build_drop_grids` (the terms are read once, in blocks of
samples); it holds (settings) x N x T float64 -- about 1 GB at N = 5000, T = 20, whatever d --
instead of the N x T x (d + 1) cumulative sums of a :class:`~ldminv_core.masks.DropSweep`
(13 GB per order there). Identical rows of two rules are stored once. :func:`attack_grids`
shares one instance between every :class:`~ldminv_core.evaluation.Evaluation` of the same run
object and attack (the protocols, bootstrap sizes), built once even when asked from several
threads.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import masks
from . import grid_engine
from ..errors import LdminvError
from ldminv_core.runs import CACHE_DIR, Run, load_npy

__all__ = ["AttackGrids", "attack_grids", "attack_totals", "grid_index", "grid_cache_dir", "RULES", "CACHE_FOLDER"]

#: Counting rules of the grids: "round" = ``masks.drop_count``, "threshold" = the paper's
#: per-sample percentile threshold (influence order), "int" = ``masks.paper_drop_count`` (random).
RULES: tuple[str, ...] = ("round", "threshold", "int")


#: Bumped whenever the layout or the numbers of the disk copy change.
_CACHE_VERSION = 1
#: Folder of derived, re-computable files inside a run folder (safe to delete).
CACHE_FOLDER = CACHE_DIR


def _file_id(arr: Any) -> str:
    name = getattr(arr, "filename", None)
    if not name:
        return "mem-" + hashlib.sha1(np.ascontiguousarray(arr).tobytes()[: 1 << 20]).hexdigest()[:12]
    st = os.stat(name)
    return f"{os.path.basename(name)}-{st.st_size}-{st.st_mtime_ns}"


def _source_name(terms: Any) -> str | None:
    """The terms file a disk copy is made from (its base name), or None for in-memory terms."""
    name = getattr(terms, "filename", None)
    return os.path.basename(name) if name else None


def _cache_name(terms: Any, influence: Any, seeds: Sequence[int]) -> str:
    """Name of the disk copy of the grids of these terms (file, size, mtime) and influence."""
    key = "|".join([_file_id(terms), _file_id(influence), ",".join(map(str, seeds)), str(tuple(np.shape(terms)))])
    return "grids-" + hashlib.sha1(key.encode()).hexdigest()[:16]


def grid_index(drop: float) -> int | None:
    """Index of ``drop`` in :data:`ldminv_core.evaluation.grid_engine.GRID_PERCENTS` (0..99), or None off the grid."""
    p = float(drop)
    if p.is_integer() and 0 <= p < len(grid_engine.GRID_PERCENTS):
        return int(p)
    return None


def _dedupe(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Stack the count matrices (K, N) of several rules, storing identical rows once:
    (unique rows (U, N), rule -> (K,) row index into them)."""
    uniq: list[np.ndarray] = []
    seen: dict[bytes, int] = {}
    index: dict[str, np.ndarray] = {}
    for rule, mat in rows.items():
        idx = np.empty(mat.shape[0], dtype=np.int64)
        for k, row in enumerate(mat):
            key = np.ascontiguousarray(row).tobytes()
            if key not in seen:
                seen[key] = len(uniq)
                uniq.append(row)
            idx[k] = seen[key]
        index[rule] = idx
    return np.stack(uniq), index


class AttackGrids:
    """Masked, random and global statistics of one attack at every grid drop and timestep.

    Args:
        terms: (N, T, C, h, w) terms (memory-mapped).
        influence: (N, C, h, w) influence.
        seeds: seeds of the random control.
        block_samples: samples per block of the pass (memory knob; None = about 64 MiB).
        cache_folder: a folder holding (or to receive) a disk copy of the grids: loaded
            memory-mapped when it is there and complete, written after a build otherwise
            (skipped silently when it cannot be written). None: memory only.
        cache_source: the base name of the terms file the copy is made from (default: that of
            ``terms`` when it is a memory map); after a save, older copies from the same file and
            seeds are removed.
        progress: called with the share of samples done (0..1) during a build.

    Attributes:
        percents: the grid, 0..99.
        nbytes: memory held by the statistics.
        totals: (N, T) unmasked statistic (as ``masks.masked_statistic(terms)``).
    """

    def __init__(self, terms: np.ndarray, influence: np.ndarray, seeds: Sequence[int], *,
                 block_samples: int | None = None, cache_folder: str | os.PathLike | None = None,
                 cache_source: str | None = None, progress: Callable[[float], None] | None = None) -> None:
        self.percents: tuple[int, ...] = tuple(grid_engine.GRID_PERCENTS)
        self.seeds = tuple(int(s) for s in seeds)
        self.from_disk = False
        folder = None if cache_folder is None else Path(cache_folder)
        if folder is not None and self._load(folder):
            self.from_disk = True
            return
        n = int(terms.shape[0])
        d = int(np.prod(terms.shape[2:]))
        ps = self.percents
        rnd = np.array([masks.drop_count(d, p) for p in ps], dtype=np.int64)
        trunc = np.array([masks.paper_drop_count(d, p) for p in ps], dtype=np.int64)
        thr = masks.threshold_drop_counts_many(influence, ps)
        inf_rows, self._inf_index = _dedupe({"round": np.broadcast_to(rnd[:, None], (len(ps), n)), "threshold": thr})
        rnd_rows, self._rnd_index = _dedupe({"round": rnd[:, None], "int": trunc[:, None]})
        ranking = np.asarray(influence, dtype=np.float32).mean(axis=0)
        specs = [grid_engine.OrderSpec("influence", inf_rows, influence)]
        specs += [grid_engine.OrderSpec("random", rnd_rows[:, 0], seed=s) for s in self.seeds]
        specs.append(grid_engine.OrderSpec("ranking", rnd, ranking))
        grids, self.totals, self.channel_totals = grid_engine.build_drop_grids(
            terms, specs, block_samples=block_samples, totals=True, channel_totals=True, progress=progress)
        self._influence = grids[0]
        self._random = dict(zip(self.seeds, grids[1:-1]))
        self._ranking = grids[-1]
        self.mean_influence = ranking
        self._set_nbytes()
        if folder is not None:
            self._save(folder, source=cache_source or _source_name(terms))

    def _set_nbytes(self) -> None:
        grids = [self._influence, *self._random.values(), self._ranking]
        self.nbytes = int(sum(g.nbytes for g in grids) + self.totals.nbytes + self.channel_totals.nbytes)

    # ---- the disk copy next to the run (a second server opens it in a second, memory-mapped)

    def _arrays(self) -> dict[str, np.ndarray]:
        out = {"totals": self.totals, "channel_totals": self.channel_totals, "mean_influence": self.mean_influence,
               "inf_stats": self._influence.stats, "inf_counts": self._influence.counts,
               "rank_stats": self._ranking.stats, "rank_counts": self._ranking.counts}
        for rule, idx in self._inf_index.items():
            out[f"inf_index_{rule}"] = idx
        for rule, idx in self._rnd_index.items():
            out[f"rnd_index_{rule}"] = idx
        for seed, g in self._random.items():
            out[f"random_{seed}_stats"] = g.stats
            out[f"random_{seed}_counts"] = g.counts
        return out

    def _save(self, folder: Path, *, source: str | None = None) -> None:
        """Write the disk copy to ``folder`` (atomically), then remove older copies made from
        the same terms file (``source``) with the same seeds: after a recomputed attack stage
        the stale grids do not pile up next to the run."""
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            tmp.mkdir(parents=True, exist_ok=True)
            for name, arr in self._arrays().items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
            (tmp / "meta.json").write_text(json.dumps({"version": _CACHE_VERSION, "seeds": list(self.seeds),
                                                        "t_index": self._influence.t_index, "source": source}))
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except OSError:  # a read-only run folder: the grids stay in memory only
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if source is None:
            return
        for other in folder.parent.glob("grids-*"):
            if other == folder or not other.is_dir() or ".tmp-" in other.name:
                continue
            try:
                meta = json.loads((other / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            if meta.get("source") == source and tuple(meta.get("seeds", ())) == self.seeds:
                shutil.rmtree(other, ignore_errors=True)

    def _load(self, folder: Path) -> bool:
        try:
            meta = json.loads((folder / "meta.json").read_text())
            if meta.get("version") != _CACHE_VERSION or tuple(meta.get("seeds", ())) != self.seeds:
                return False
            ld = lambda name: load_npy(folder / f"{name}.npy", mmap_mode="r")  # noqa: E731
            t_index = [int(t) for t in meta["t_index"]]
            self.totals = ld("totals")
            self.channel_totals = ld("channel_totals")
            self.mean_influence = np.asarray(ld("mean_influence"))
            self._influence = grid_engine.DropGrid(ld("inf_stats"), np.asarray(ld("inf_counts")), t_index, "influence", 0)
            self._ranking = grid_engine.DropGrid(ld("rank_stats"), np.asarray(ld("rank_counts")), t_index, "ranking", 0)
            self._inf_index = {r: np.asarray(ld(f"inf_index_{r}")) for r in ("round", "threshold")}
            self._rnd_index = {r: np.asarray(ld(f"rnd_index_{r}")) for r in ("round", "int")}
            self._random = {s: grid_engine.DropGrid(ld(f"random_{s}_stats"), np.asarray(ld(f"random_{s}_counts")), t_index,
                                              "random", s) for s in self.seeds}
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self._set_nbytes()
        return True

    def masked(self, k: int, rule: str) -> np.ndarray:
        """(N, T) statistic dropping each sample's lowest-influence coordinates at grid drop
        ``k`` under ``rule`` ("round" or "threshold"). Read-only view."""
        if rule not in ("round", "threshold"):
            raise LdminvError(f"rule: expected 'round' or 'threshold', got {rule!r}")
        return self._influence.statistic(int(self._inf_index[rule][k]))

    def random(self, k: int, seed: int, rule: str) -> np.ndarray:
        """(N, T) statistic of the random control of ``seed`` at grid drop ``k`` under ``rule``
        ("round" or "int"). Read-only view."""
        if rule not in ("round", "int"):
            raise LdminvError(f"rule: expected 'round' or 'int', got {rule!r}")
        if int(seed) not in self._random:
            raise LdminvError(f"seed {seed!r} is not among the grid's seeds {self.seeds}")
        return self._random[int(seed)].statistic(int(self._rnd_index[rule][k]))

    def ranking(self, k: int) -> np.ndarray:
        """(N, T) statistic of the global mask (lowest mean influence dropped) at grid drop ``k``."""
        return self._ranking.statistic(int(k))

    def masked_many(self, ks: Sequence[int], rule: str, t_index: int) -> np.ndarray:
        """(K, N) masked statistics at the grid drops ``ks`` and one timestep index."""
        rows = self._inf_index[rule][np.asarray(ks, dtype=np.int64)]
        return self._influence.stats[rows, :, int(t_index)]

    def random_many(self, ks: Sequence[int], seed: int, rule: str, t_index: int) -> np.ndarray:
        """(K, N) random-control statistics at the grid drops ``ks`` and one timestep index."""
        rows = self._rnd_index[rule][np.asarray(ks, dtype=np.int64)]
        return self._random[int(seed)].stats[rows, :, int(t_index)]


_STORE: "weakref.WeakKeyDictionary[Run, dict[tuple, Any]]" = weakref.WeakKeyDictionary()
_STORE_LOCK = threading.Lock()


def grid_cache_dir(run: Run) -> Path | None:
    """Where the disk copies of a run's grids live (``<run>/.ldminv-cache``); None when the
    ``LDMINV_NO_DISK_CACHE`` environment variable is set."""
    if os.environ.get("LDMINV_NO_DISK_CACHE"):
        return None
    return Path(run.path) / CACHE_FOLDER


def attack_grids(run: Run, attack: str, seeds: Sequence[int], *, terms: np.ndarray | None = None,
                 influence: np.ndarray | None = None, block_samples: int | None = None,
                 progress: Callable[[float], None] | None = None) -> AttackGrids:
    """The :class:`AttackGrids` of ``attack`` of this run object and ``seeds``, built once and
    shared by every caller holding the same :class:`Run` (dropped with it). A copy is saved in
    the run folder (:func:`grid_cache_dir`) and memory-mapped by later opens of the same files."""
    key = (str(attack), tuple(int(s) for s in seeds))
    with _STORE_LOCK:
        per_run = _STORE.setdefault(run, {})
        slot = per_run.setdefault(key, {"lock": threading.Lock(), "grids": None})
    with slot["lock"]:
        if slot["grids"] is None:
            root = grid_cache_dir(run)
            folder = source = None
            if root is not None:
                try:
                    stored = run.terms(attack)
                    folder = root / _cache_name(stored, run.influence, key[1])
                    source = _source_name(stored)
                except (OSError, LdminvError):
                    folder = None
            slot["grids"] = AttackGrids(
                run.terms(attack) if terms is None else terms,
                run.influence if influence is None else influence,
                key[1], block_samples=block_samples, cache_folder=folder, cache_source=source, progress=progress)
        return slot["grids"]


def _disk_copy(run: Run, attack: str, seeds: Sequence[int]) -> bool:
    """True when a complete disk copy of these grids lies next to the run."""
    root = grid_cache_dir(run)
    if root is None or not run.has_geometry:
        return False
    try:
        return (root / _cache_name(run.terms(attack), run.influence, tuple(int(s) for s in seeds)) / "meta.json").is_file()
    except (OSError, LdminvError):
        return False


def attack_totals(run: Run, attack: str, *, terms: np.ndarray | None = None,
                  seeds: Sequence[int] | None = None) -> np.ndarray:
    """(N, T) unmasked statistic ``masks.masked_statistic(terms)`` of ``attack``, computed once per
    run object and shared (every protocol's baseline; taken from built grids when there are some,
    or from the disk copy of the grids of ``seeds`` when there is one)."""
    if seeds is not None and _disk_copy(run, attack, seeds):
        return attack_grids(run, attack, seeds, terms=terms).totals
    key = ("totals", str(attack))
    with _STORE_LOCK:
        per_run = _STORE.setdefault(run, {})
        slot = per_run.setdefault(key, {"lock": threading.Lock(), "grids": None})
        built = [v["grids"] for k, v in per_run.items() if k[0] == str(attack) and v["grids"] is not None]
    with slot["lock"]:
        if slot["grids"] is None:
            slot["grids"] = built[0].totals if built else masks.masked_statistic(
                run.terms(attack) if terms is None else terms, None)
        return slot["grids"]
