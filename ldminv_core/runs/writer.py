"""The run folder's writer, :class:`RunWriter`: creates a run folder, or re-opens an unfinished
one to resume it, and records its progress.

Every small file is written atomically (temporary file + ``os.replace``); large arrays are
``np.lib.format.open_memmap`` files filled batch by batch, and the batch counter in run.json
only moves after the batch's data is flushed. A stage is marked done in run.json ("stages") only
after all its arrays are complete and flushed, and ``status`` becomes "complete" in the very last
write. The writer holds the folder's lock (:mod:`.lock`) for its whole lifetime.
"""
from __future__ import annotations

import json
import os
import shutil
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RunError
from .files import atomic_write_bytes, inside, jsonable, now, read_json, write_json, write_parquet
from .layout import LOCK, RUN_FORMAT, RUN_FORMAT_VERSION, RUN_JSON, SAMPLES, _TMP_RE
from .lock import LockBusy, describe_holder, is_creation_leftover, release_lock, take_lock
from .schema import _is_run_json, check_samples

__all__ = ["RunWriter"]

# writers holding a folder in this process (the lock file cannot tell them apart)
_OPEN_WRITERS: "weakref.WeakValueDictionary[str, RunWriter]" = weakref.WeakValueDictionary()


class RunWriter:
    """Creates a run folder, or re-opens an unfinished one to resume it.

    Args:
        path: the run folder (created when missing; must be empty or an unfinished run). A
            folder holding only what a creation killed before run.json was written leaves
            (``run.lock``, ``samples.parquet``, ldminv's temporary files) counts as empty.
        settings: the settings that define the results (e.g. the analysis configuration);
            stored under run.json "config". Re-opening an unfinished run with different
            settings raises RunError naming the keys that differ.
        samples: the samples table (sample_id 0..N-1, path, split, caption, log_volume);
            required for a new run, compared with the stored one on resume (None = keep).
        info: extra provenance merged into run.json's top level (not compared).
        force_unlock: take the folder even when its lock is held, by removing the lock file
            first (CLI: ``analyze --break-lock``). Only for a lock whose holder is known to be
            gone (e.g. a writer on another host that crashed); a live holder keeps writing.

    The writer holds an exclusive ``flock`` on ``run.lock`` until :meth:`close` / :meth:`finish`
    (or until the process ends: the kernel drops it, so it never goes stale).

    Raises:
        RunError: folder holds a complete run, another kind of content, a run with other
            settings or samples, or is being written by another writer (the holder named).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        settings: dict,
        samples: pd.DataFrame | None = None,
        info: dict | None = None,
        force_unlock: bool = False,
    ) -> None:
        self._lock_fd: int | None = None
        self._locked = False
        self.path = Path(path).expanduser().resolve()
        settings = jsonable(settings)
        self.resumed = False
        run_json = self.path / RUN_JSON
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"run folder {self.path} is a file; expected a folder")
        if (run_json.is_file() or run_json.is_symlink()) and not is_creation_leftover(self.path):
            # cheap checks first (no lock file is ever created in a folder that is not ours)
            self._check_resumable(settings)
            self._acquire_lock(force_unlock)
            try:
                self._resume(settings, samples, info)
            except BaseException:
                self.close()
                raise
            return
        self._check_new_folder()
        if samples is None:
            raise RunError(f"samples: required to create the new run folder {self.path}")
        check_samples(samples, "samples")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock(force_unlock)
        try:
            if run_json.is_file() and not is_creation_leftover(self.path):
                # another writer created the run between our look and our lock
                self._check_resumable(settings)
                self._resume(settings, samples, info)
                return
            self._create(settings, samples, info)
        except BaseException:
            self.close()
            raise

    # -- creating / resuming ------------------------------------------------------------
    def _create(self, settings: dict, samples: pd.DataFrame, info: dict | None) -> None:
        for entry in list(self.path.iterdir()):  # leftovers of a killed creation
            if _TMP_RE.match(entry.name) and entry.is_file() and not entry.is_symlink():
                entry.unlink()
        wrote_samples = False
        try:
            write_parquet(self.path / SAMPLES, samples.reset_index(drop=True))
            wrote_samples = True
            self._data = {
                "format": RUN_FORMAT,
                "format_version": RUN_FORMAT_VERSION,
                "status": "running",
                "created": now(),
                "updated": now(),
                "config": settings,
                "stages": {},
                "progress": {},
                **jsonable(info or {}),
            }
            self._save()
        except BaseException:
            if wrote_samples and not (self.path / RUN_JSON).exists():
                try:
                    (self.path / SAMPLES).unlink()
                except OSError:
                    pass
            raise

    def _check_new_folder(self) -> None:
        """A folder without run.json may be written when it is empty or holds only what ldminv
        leaves when killed during creation (run.lock, then samples.parquet, temporary files)."""
        if not self.path.is_dir():
            return
        entries = list(self.path.iterdir())
        names = {e.name for e in entries}
        leftover_json = is_creation_leftover(self.path)
        foreign = []
        for e in entries:
            if e.is_symlink():
                foreign.append(e.name)
            elif e.name == LOCK and e.is_file() or e.name == RUN_JSON and leftover_json:
                continue
            elif e.name == SAMPLES and e.is_file() and LOCK in names and not (self.path / LOCK).is_symlink():
                continue
            elif e.is_file() and (m := _TMP_RE.match(e.name)) and m.group("name") in (RUN_JSON, SAMPLES, LOCK):
                continue
            else:
                foreign.append(e.name)
        if foreign:
            shown = ", ".join(sorted(foreign)[:5]) + (" ..." if len(foreign) > 5 else "")
            raise RunError(
                f"output folder {self.path} is not empty and holds no run.json ({len(foreign)} other "
                f"entr{'y' if len(foreign) == 1 else 'ies'}: {shown}); refusing to write a run there "
                "(choose a new or empty folder)"
            )

    def _read_run_json(self) -> dict:
        run_json = self.path / RUN_JSON
        inside(self.path, RUN_JSON)
        return read_json(run_json)

    def _check_resumable(self, settings: dict) -> dict:
        run_json = self.path / RUN_JSON
        data = self._read_run_json()
        if not _is_run_json(data):
            raise RunError(f"{run_json}: not an ldminv run (no format/status); refusing to write there")
        if data["status"] == "complete":
            raise RunError(
                f"run folder {self.path} already holds a complete run; open it, or delete it "
                "(analyze --force) to recompute"
            )
        if not isinstance(data["status"], str):
            raise RunError(f"{run_json}: key 'status': expected a string, got {type(data['status']).__name__}")
        for key in ("config", "stages", "progress"):
            if key in data and not isinstance(data[key], dict):
                raise RunError(f"{run_json}: key {key!r}: expected an object, got {type(data[key]).__name__}")
        old = data.get("config", {})
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            detail = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in diff[:4])
            raise RunError(
                f"run folder {self.path} holds an unfinished run with different settings ({detail}); "
                "re-run with the same settings to resume it, choose another output folder, or pass "
                "--force to start over"
            )
        return data

    def _resume(self, settings: dict, samples: pd.DataFrame | None, info: dict | None) -> None:
        data = self._check_resumable(settings)  # again, now that we hold the lock
        data.setdefault("stages", {})
        data.setdefault("progress", {})
        samples_path = self.path / SAMPLES
        if not samples_path.exists() and not samples_path.is_symlink():
            raise RunError(
                f"{samples_path}: file is missing (run.json records stages done "
                f"{sorted(k for k, v in data['stages'].items() if v)}, progress {data['progress']}); "
                "the run cannot be resumed: delete it (analyze --force) to recompute"
            )
        inside(self.path, SAMPLES)
        self._data = data
        self.resumed = True
        if samples is not None:
            stored = self.samples
            check_samples(samples, "samples")
            same = len(stored) == len(samples) and all(
                stored[c].astype(str).tolist() == samples[c].astype(str).tolist()
                for c in ("sample_id", "path", "split")
            )
            if not same:
                raise RunError(
                    f"run folder {self.path} holds an unfinished run over other images "
                    f"({len(stored)} stored, {len(samples)} now, or other paths); re-run on the same "
                    "folders to resume, or pass --force to start over"
                )
        if info:
            self.update(**info)

    # -- lock ---------------------------------------------------------------------------
    def _acquire_lock(self, force_unlock: bool = False) -> None:
        try:
            fd, flocked = take_lock(self.path)
        except LockBusy as busy:
            if not force_unlock:
                raise RunError(
                    f"run folder {self.path} is being written by {describe_holder(busy.info)} "
                    f"({self.path / LOCK} is locked); wait for it or stop it. If that writer is "
                    "gone (e.g. it ran on another host), break the lock with analyze --break-lock "
                    "(RunWriter(..., force_unlock=True))"
                ) from None
            try:
                (self.path / LOCK).unlink()
            except FileNotFoundError:
                pass
            try:
                fd, flocked = take_lock(self.path)
            except LockBusy as again:
                raise RunError(
                    f"run folder {self.path}: broke the lock, but {describe_holder(again.info)} took it "
                    "again at once; stop that writer"
                ) from None
        self._lock_fd, self._flocked, self._lock_pid = fd, flocked, os.getpid()
        self._locked = True
        _OPEN_WRITERS[str(self.path)] = self

    def close(self) -> None:
        """Release the folder's lock (the run stays resumable unless finished)."""
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            self._lock_fd = None
            self._locked = False
            release_lock(self.path, fd, self._flocked, self._lock_pid)
            if _OPEN_WRITERS.get(str(self.path)) is self:
                del _OPEN_WRITERS[str(self.path)]

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- run.json -----------------------------------------------------------------------
    def _save(self) -> None:
        self._data["updated"] = now()
        write_json(self.path / RUN_JSON, self._data)

    @property
    def data(self) -> dict:
        """A copy of run.json as it stands."""
        return json.loads(json.dumps(self._data))

    def update(self, **info: Any) -> None:
        """Merge ``info`` into run.json's top level (atomic write)."""
        reserved = {"format", "format_version", "status", "config", "stages", "progress"} & set(info)
        if reserved:
            raise RunError(f"info: keys {sorted(reserved)} are managed by RunWriter")
        self._data.update(jsonable(info))
        self._save()

    def stage_done(self, name: str) -> bool:
        """True once :meth:`mark_stage_done` was called for ``name`` (in any session)."""
        return bool(self._data["stages"].get(name, False))

    def mark_stage_done(self, name: str) -> None:
        """Record stage ``name`` as finished (call only after all its arrays are flushed)."""
        self._data["stages"][name] = True
        self._save()

    def progress(self, name: str) -> int:
        """Number of samples of stage ``name`` whose results are safely on disk."""
        return int(self._data["progress"].get(name, 0))

    def set_progress(self, name: str, done: int) -> None:
        """Record that the first ``done`` samples of stage ``name`` are on disk. Call only
        after flushing the arrays that hold them."""
        self._data["progress"][name] = int(done)
        self._save()

    # -- arrays -------------------------------------------------------------------------
    def _resolve(self, relpath: str | Path) -> Path:
        target = (self.path / relpath).resolve()
        if self.path not in target.parents:
            raise RunError(f"relpath: expected a path inside {self.path}, got {relpath!r}")
        return target

    def open_array(
        self, relpath: str | Path, shape: tuple[int, ...], dtype: Any, *, stage: str | None = None
    ) -> np.memmap:
        """A writable memory-mapped ``.npy`` array at ``relpath``.

        An existing file of the same shape and dtype is re-opened as is (resuming); otherwise
        a new one is created, and when ``stage`` is given that stage's progress is reset to 0
        (its earlier batches are gone).
        """
        target = self._resolve(relpath)
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        if target.is_file():
            try:
                arr = np.lib.format.open_memmap(target, mode="r+")
                if arr.shape == shape and arr.dtype == dtype:
                    return arr
                del arr
            except (ValueError, OSError):
                pass
        target.parent.mkdir(parents=True, exist_ok=True)
        if stage is not None and self.progress(stage):
            self.set_progress(stage, 0)
        return np.lib.format.open_memmap(target, mode="w+", dtype=dtype, shape=shape)

    def write_array(self, relpath: str | Path, array: np.ndarray) -> None:
        """Write a whole ``.npy`` array atomically."""
        target = self._resolve(relpath)
        arr = np.asarray(array)
        atomic_write_bytes(target, lambda fh: np.save(fh, arr, allow_pickle=False))

    def remove(self, relpath: str | Path) -> None:
        """Delete a file of the run if it exists (e.g. a stage's working file)."""
        rel = Path(relpath)
        parent = Path(os.path.realpath(self.path / rel.parent))
        if rel.is_absolute() or ".." in rel.parts or not rel.name or (
                parent != self.path and self.path not in parent.parents):
            raise RunError(f"relpath: expected a path inside {self.path}, got {relpath!r}")
        target = parent / rel.name
        if target.is_symlink():
            target.unlink()  # a link: remove the link, never what it points to
        elif target.is_dir():
            shutil.rmtree(target)  # rmtree never follows links inside
        elif target.exists():
            target.unlink()

    @property
    def samples(self) -> pd.DataFrame:
        """The samples table as stored."""
        return pd.read_parquet(self.path / SAMPLES)

    def update_samples(self, samples: pd.DataFrame) -> None:
        """Replace samples.parquet atomically (same rows, possibly more columns)."""
        check_samples(samples, "samples")
        stored = self.samples
        if len(stored) != len(samples) or stored["path"].tolist() != samples["path"].tolist():
            raise RunError(
                f"samples: expected the {len(stored)} rows of {self.path / SAMPLES} in order, got {len(samples)}"
            )
        write_parquet(self.path / SAMPLES, samples.reset_index(drop=True))

    def finish(self) -> Path:
        """Mark the run complete (the last write) and release the lock; returns the folder."""
        self._data["status"] = "complete"
        self._data["finished"] = now()
        self._save()
        self.close()
        return self.path
