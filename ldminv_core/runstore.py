"""The run folder: what ``analyze`` writes and the dashboard and ``report`` read.

Layout (fixed by the method reference, section 3)::

    run.json                 settings, provenance, "status": "running" | "complete", "stages"
    samples.parquet          one row per image: sample_id, path, split, caption, log_volume
    latents.npy              float32 (N, C, h, w) scaled encoder means
    influence.npy            float32 (N, C, h, w) 0.5 * log(G_ii + 1e-12)
    residuals/<attack>.npy   (N, T, C, h, w) per-coordinate attack terms (float32 or float16)
    scores/<attack>.npy      (N,) membership scores of attacks that are not maskable (PFAMI)

Every small file is written atomically (temporary file + ``os.replace``); large arrays are
``np.lib.format.open_memmap`` files filled batch by batch, and the batch counter in run.json
only moves after the batch's data is flushed. A stage is marked done in run.json
("stages") only after all its arrays are complete and flushed, and ``status`` becomes
"complete" in the very last write. :meth:`Run.open` refuses an unfinished run by default;
``Run.open(path, partial=True)`` opens one read-only with exactly its finished stages
(``Run.partial``, ``Run.stages_done``, ``Run.pending_stages``): an array of a stage that is
not marked done is never read, so a half-written array is never seen. A ``run.lock`` file holds the writer's process id while a
:class:`RunWriter` is open, so two writers never share a folder.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import socket
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .errors import RunError, UnknownNameError


class StageNotReadyError(RunError):
    """A partial run was asked for the output of a stage that has not finished yet."""

__all__ = [
    "RUN_FORMAT",
    "RunWriter",
    "StageNotReadyError",
    "Run",
    "RunInfo",
    "run_status",
    "planned_stages",
    "list_runs",
    "delete_run",
    "default_runs_root",
]

RUN_FORMAT = "ldminv-run"
RUN_FORMAT_VERSION = 1
RUN_JSON = "run.json"
SAMPLES = "samples.parquet"
LATENTS = "latents.npy"
INFLUENCE = "influence.npy"
LOCK = "run.lock"
SAMPLE_COLUMNS = ("sample_id", "path", "split", "caption", "log_volume")
SPLITS = ("member", "heldout")

# writers holding a folder in this process (the lock file cannot tell them apart)
_OPEN_WRITERS: "weakref.WeakValueDictionary[str, RunWriter]" = weakref.WeakValueDictionary()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so tuples compare equal to the lists read back."""
    return json.loads(json.dumps(value))


def _atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, allow_nan=False).encode("utf-8")
    _atomic_write_bytes(path, lambda fh: fh.write(text))


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read run settings ({exc})") from exc
    if not isinstance(data, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _is_run_json(data: dict) -> bool:
    return data.get("format") == RUN_FORMAT and "status" in data


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _lock_owner(folder: Path) -> int | None:
    """Process id of the live writer holding ``folder``'s lock on this host, else None."""
    try:
        text = (folder / LOCK).read_text(encoding="utf-8")
        info = json.loads(text)
        pid, host = int(info["pid"]), str(info["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if host != socket.gethostname():
        return None
    if pid == os.getpid():
        return pid
    return pid if _pid_alive(pid) else None


def _check_samples(samples: pd.DataFrame, where: str) -> pd.DataFrame:
    if not isinstance(samples, pd.DataFrame):
        raise RunError(f"{where}: expected a pandas DataFrame of samples, got {type(samples).__name__}")
    missing = [c for c in ("sample_id", "path", "split") if c not in samples.columns]
    if missing:
        raise RunError(f"{where}: expected columns {list(SAMPLE_COLUMNS)}, missing {missing}")
    ids = samples["sample_id"].to_numpy()
    if not np.array_equal(ids, np.arange(len(samples))):
        raise RunError(f"{where}: expected sample_id 0..{len(samples) - 1} in order")
    bad = sorted(set(samples["split"]) - set(SPLITS))
    if bad:
        raise RunError(f"{where}: expected split values {SPLITS}, found {bad}")
    return samples


def _write_parquet(path: Path, samples: pd.DataFrame) -> None:
    _atomic_write_bytes(path, lambda fh: samples.to_parquet(fh, index=False))


# ----------------------------------------------------------------------------- writing


class RunWriter:
    """Creates a run folder, or re-opens an unfinished one to resume it.

    Args:
        path: the run folder (created when missing; must be empty or an unfinished run).
        settings: the settings that define the results (e.g. the analysis configuration);
            stored under run.json "config". Re-opening an unfinished run with different
            settings raises RunError naming the keys that differ.
        samples: the samples table (sample_id 0..N-1, path, split, caption, log_volume);
            required for a new run, compared with the stored one on resume (None = keep).
        info: extra provenance merged into run.json's top level (not compared).

    Raises:
        RunError: folder holds a complete run, another kind of content, a run with other
            settings or samples, or is being written by another live process.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        settings: dict,
        samples: pd.DataFrame | None = None,
        info: dict | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve()
        settings = _jsonable(settings)
        self.resumed = False
        run_json = self.path / RUN_JSON
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"run folder {self.path} is a file; expected a folder")
        if run_json.is_file():
            data = _read_json(run_json)
            if not _is_run_json(data):
                raise RunError(f"{run_json}: not an ldminv run (no format/status); refusing to write there")
            if data["status"] == "complete":
                raise RunError(
                    f"run folder {self.path} already holds a complete run; open it, or delete it "
                    "(analyze --force) to recompute"
                )
            old = data.get("config", {})
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if diff:
                detail = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in diff[:4])
                raise RunError(
                    f"run folder {self.path} holds an unfinished run with different settings ({detail}); "
                    "re-run with the same settings to resume it, choose another output folder, or pass "
                    "--force to start over"
                )
            self._acquire_lock()
            self._data = data
            self.resumed = True
            stored = self.samples
            if samples is not None:
                _check_samples(samples, "samples")
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
            return
        if self.path.is_dir() and any(self.path.iterdir()):
            raise RunError(
                f"output folder {self.path} is not empty and holds no run.json; refusing to write a run "
                "there (choose a new or empty folder)"
            )
        if samples is None:
            raise RunError(f"samples: required to create the new run folder {self.path}")
        _check_samples(samples, "samples")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        _write_parquet(self.path / SAMPLES, samples.reset_index(drop=True))
        self._data = {
            "format": RUN_FORMAT,
            "format_version": RUN_FORMAT_VERSION,
            "status": "running",
            "created": _now(),
            "updated": _now(),
            "config": settings,
            "stages": {},
            "progress": {},
            **_jsonable(info or {}),
        }
        self._save()

    # -- lock ---------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        owner = _lock_owner(self.path)
        other = _OPEN_WRITERS.get(str(self.path))
        if owner == os.getpid() and other is not None and other is not self and getattr(other, "_locked", False):
            raise RunError(
                f"run folder {self.path} is being written by another writer in this process {owner}; "
                "wait for it or stop it"
            )
        if owner is not None and owner != os.getpid():
            raise RunError(f"run folder {self.path} is being written by process {owner}; wait for it or stop it")
        payload = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}).encode()
        _atomic_write_bytes(self.path / LOCK, lambda fh: fh.write(payload))
        self._locked = True
        _OPEN_WRITERS[str(self.path)] = self

    def close(self) -> None:
        """Release the folder's lock (the run stays resumable unless finished)."""
        if getattr(self, "_locked", False):
            if _lock_owner(self.path) == os.getpid():
                try:
                    (self.path / LOCK).unlink()
                except FileNotFoundError:
                    pass
            self._locked = False
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
        self._data["updated"] = _now()
        _write_json(self.path / RUN_JSON, self._data)

    @property
    def data(self) -> dict:
        """A copy of run.json as it stands."""
        return json.loads(json.dumps(self._data))

    def update(self, **info: Any) -> None:
        """Merge ``info`` into run.json's top level (atomic write)."""
        reserved = {"format", "format_version", "status", "config", "stages", "progress"} & set(info)
        if reserved:
            raise RunError(f"info: keys {sorted(reserved)} are managed by RunWriter")
        self._data.update(_jsonable(info))
        self._save()

    def stage_done(self, name: str) -> bool:
        """True once :meth:`mark_stage_done` was called for ``name`` (in any session)."""
        return bool(self._data["stages"].get(name, False))

    def mark_stage_done(self, name: str) -> None:
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
        _atomic_write_bytes(target, lambda fh: np.save(fh, arr, allow_pickle=False))

    def remove(self, relpath: str | Path) -> None:
        """Delete a file of the run if it exists (e.g. a stage's working file)."""
        target = self._resolve(relpath)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    @property
    def samples(self) -> pd.DataFrame:
        """The samples table as stored."""
        return pd.read_parquet(self.path / SAMPLES)

    def update_samples(self, samples: pd.DataFrame) -> None:
        """Replace samples.parquet atomically (same rows, possibly more columns)."""
        _check_samples(samples, "samples")
        stored = self.samples
        if len(stored) != len(samples) or stored["path"].tolist() != samples["path"].tolist():
            raise RunError(
                f"samples: expected the {len(stored)} rows of {self.path / SAMPLES} in order, got {len(samples)}"
            )
        _write_parquet(self.path / SAMPLES, samples.reset_index(drop=True))

    def finish(self) -> Path:
        """Mark the run complete (the last write) and release the lock; returns the folder."""
        self._data["status"] = "complete"
        self._data["finished"] = _now()
        self._save()
        self.close()
        return self.path


# ----------------------------------------------------------------------------- reading


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError as exc:
        raise RunError(f"{path}: file is missing") from exc
    except (ValueError, OSError) as exc:
        raise RunError(f"{path}: not a readable .npy array ({exc})") from exc
    return tuple(arr.shape), arr.dtype


def planned_stages(settings: dict) -> tuple[str, ...]:
    """The stages of a run in the order ``analyze`` computes them: "encode", the attacks that
    store per-coordinate terms, "geometry", then the attacks that store scores (cheap results
    first, so a partial run has AUROC and ROC curves as early as possible)."""
    attacks = settings.get("attacks", {})
    if not isinstance(attacks, dict):
        attacks = {str(a): {} for a in attacks}
    terms = [a for a, spec in attacks.items() if (spec or {}).get("kind", "terms") == "terms"]
    scored = [a for a in attacks if a not in terms]
    return ("encode", *terms, "geometry", *scored)


class Run:
    """A run folder, read-only; arrays are memory-mapped on access. Normally a complete run;
    ``Run.open(path, partial=True)`` also opens an unfinished one with its finished stages.

    Attributes:
        path: the folder.
        settings: run.json as a dict.
        samples: the samples table (DataFrame, one row per image in array order).
        labels: (N,) int8, 1 = member, 0 = held-out.
        latent_shape: (C, h, w).
    """

    def __init__(self, path: Path, settings: dict, samples: pd.DataFrame, *,
                 stages_done: tuple[str, ...] | None = None) -> None:
        self.path = path
        self.settings = settings
        self.samples = samples
        self.labels = (samples["split"].to_numpy() == "member").astype(np.int8)
        self.latent_shape = tuple(int(s) for s in settings["latent_shape"])
        planned = planned_stages(settings)
        self.partial = settings.get("status") != "complete"
        #: finished stages, in plan order (every planned stage when the run is complete)
        self.stages_done: tuple[str, ...] = planned if not self.partial else tuple(
            s for s in planned if s in set(stages_done or ()))
        #: planned stages not finished yet (empty when complete)
        self.pending_stages: tuple[str, ...] = tuple(s for s in planned if s not in self.stages_done)

    @property
    def has_geometry(self) -> bool:
        """True when the decoder geometry (influence, log-volume) is available."""
        return "geometry" in self.stages_done

    def _require(self, stage: str, what: str) -> None:
        if stage not in self.stages_done:
            raise StageNotReadyError(
                f"run {self.path} is partial: {what} comes from the {stage!r} stage, which has not finished "
                f"yet (finished: {', '.join(self.stages_done) or 'none'})"
            )

    @classmethod
    def open(cls, path: str | Path, *, partial: bool = False) -> "Run":
        """Open a run read-only, validating every array's shape against samples.parquet.

        Args:
            path: the run folder.
            partial: also open an unfinished run (being written, or interrupted) with exactly the
                stages it has finished; needs at least the "encode" stage. ``Run.partial`` tells
                which; only finished stages' arrays are opened and validated, their attacks
                listed in ``Run.attacks``, and asking for an unfinished stage's output raises
                :class:`StageNotReadyError`.

        Raises:
            RunError: folder or run.json missing, run unfinished (without ``partial``, or with
                no finished stage), samples or an array missing, or an array whose shape
                disagrees with the samples / run.json (file and both shapes named).
        """
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise RunError(f"run folder {folder} does not exist")
        folder = folder.resolve()
        try:
            data = _read_json(folder / RUN_JSON)
        except FileNotFoundError as exc:
            raise RunError(f"{folder} is not a run folder: {RUN_JSON} is missing") from exc
        if not _is_run_json(data):
            raise RunError(f"{folder / RUN_JSON}: not an ldminv run (no format/status)")
        stages = data.get("stages", {})
        if not isinstance(stages, dict):
            raise RunError(f"{folder / RUN_JSON}: 'stages' must be an object, got {type(stages).__name__}")
        done = tuple(str(k) for k, v in stages.items() if v is True)
        if data["status"] != "complete" and (not partial or "encode" not in done):
            owner = _lock_owner(folder)
            state = f"being written by process {owner}" if owner else "unfinished (interrupted)"
            hint = ("it has no finished stage yet" if partial else
                    "run analyze again with the same settings to finish it")
            raise RunError(
                f"run {folder} is {state}: status {data['status']!r}, expected 'complete'; {hint}"
            )
        for key in ("latent_shape", "attacks"):
            if key not in data:
                raise RunError(f"{folder / RUN_JSON}: key {key!r} is missing")
        try:
            samples = pd.read_parquet(folder / SAMPLES)
        except FileNotFoundError as exc:
            raise RunError(f"{folder / SAMPLES}: file is missing") from exc
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several error types
            raise RunError(f"{folder / SAMPLES}: cannot read ({exc})") from exc
        _check_samples(samples, str(folder / SAMPLES))
        if "log_volume" not in samples.columns:
            raise RunError(f"{folder / SAMPLES}: column 'log_volume' is missing")
        run = cls(folder, data, samples, stages_done=done)
        n, lat = len(samples), run.latent_shape
        expected: dict[str, tuple[int, ...]] = {LATENTS: (n, *lat)}
        if run.has_geometry:
            expected[INFLUENCE] = (n, *lat)
        for name, spec in data["attacks"].items():
            if name not in run.stages_done:
                continue
            if spec.get("kind", "terms") == "terms":
                expected[f"residuals/{name}.npy"] = (n, len(spec["timesteps"]), *lat)
            else:
                expected[f"scores/{name}.npy"] = (n,)
        for rel, shape in expected.items():
            got, _ = _npy_header(folder / rel)
            if got != shape:
                raise RunError(
                    f"{folder / rel}: shape {got} does not match the run's expected {shape} "
                    f"({n} samples in {SAMPLES}, latent_shape {lat})"
                )
        return run

    # -- samples ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    @property
    def n_members(self) -> int:
        return int(self.labels.sum())

    @property
    def n_heldout(self) -> int:
        return int(len(self.labels) - self.labels.sum())

    @property
    def log_volume(self) -> np.ndarray:
        """(N,) float64 decoder log-volume per sample (StageNotReadyError before "geometry")."""
        self._require("geometry", "the log-volume")
        return self.samples["log_volume"].to_numpy(dtype=np.float64)

    @property
    def latents(self) -> np.ndarray:
        """(N, C, h, w) float32 scaled encoder means (memory-mapped)."""
        return np.load(self.path / LATENTS, mmap_mode="r")

    @property
    def influence(self) -> np.ndarray:
        """(N, C, h, w) float32 0.5 * log(G_ii + 1e-12) (memory-mapped; StageNotReadyError
        before "geometry")."""
        self._require("geometry", "the influence")
        return np.load(self.path / INFLUENCE, mmap_mode="r")

    # -- attacks ------------------------------------------------------------------------
    @property
    def attacks(self) -> list[str]:
        """Names of the attacks the run holds, in the order they were requested (a partial run:
        only the finished ones)."""
        return [a for a in self.settings["attacks"] if a in self.stages_done]

    @property
    def pending_attacks(self) -> list[str]:
        """Attacks of a partial run that have not finished yet."""
        return [a for a in self.settings["attacks"] if a not in self.stages_done]

    def _spec(self, attack: str) -> dict:
        if attack in self.pending_attacks:
            self._require(attack, f"attack {attack!r}")
        if attack not in self.settings["attacks"]:
            raise UnknownNameError(f"attack: expected one of {self.attacks} (those in run {self.path}), got {attack!r}")
        return self.settings["attacks"][attack]

    def is_maskable(self, attack: str) -> bool:
        """True when the run stores per-coordinate terms for ``attack``."""
        return self._spec(attack).get("kind", "terms") == "terms"

    def timesteps(self, attack: str) -> list[int]:
        """The timesteps of ``attack`` (the T axis of its terms)."""
        return [int(t) for t in self._spec(attack)["timesteps"]]

    def terms(self, attack: str) -> np.ndarray:
        """(N, T, C, h, w) memory-mapped per-coordinate terms of a maskable attack."""
        if not self.is_maskable(attack):
            raise UnknownNameError(f"attack: {attack!r} stores scores, not per-coordinate terms (not maskable)")
        return np.load(self.path / "residuals" / f"{attack}.npy", mmap_mode="r")

    def pfami_scores(self) -> np.ndarray:
        """(N,) PFAMI membership scores (higher = member)."""
        return self.stored_scores("pfami")

    def stored_scores(self, attack: str) -> np.ndarray:
        """(N,) stored scores of a non-maskable attack."""
        if self.is_maskable(attack):
            raise UnknownNameError(f"attack: {attack!r} stores per-coordinate terms, not scores")
        return np.asarray(np.load(self.path / "scores" / f"{attack}.npy"), dtype=np.float64)

    def scores(self, attack: str, *, t_index: int | None = None) -> np.ndarray:
        """Membership scores (higher = member): -statistic of the full (unmasked) terms.

        Returns:
            (N, T) float64 for maskable attacks, or (N,) when ``t_index`` is given; PFAMI (and
            other stored-score attacks) always (N,).
        """
        from .masks import masked_statistic

        if not self.is_maskable(attack):
            return self.stored_scores(attack)
        terms = self.terms(attack)
        if t_index is None:
            return -masked_statistic(terms, None)
        t_count = terms.shape[1]
        if not -t_count <= int(t_index) < t_count:
            raise UnknownNameError(f"t_index: expected an index into {t_count} timesteps, got {t_index}")
        i = int(t_index) % t_count
        return -masked_statistic(terms[:, i : i + 1], None)[:, 0]


# ----------------------------------------------------------------------------- listing


@dataclass
class RunInfo:
    """One row of :func:`list_runs`. ``status``: "complete", "running" (a live process is
    writing it), "unfinished" (interrupted; resumable) or "broken" (unreadable run.json)."""

    path: Path
    status: str
    created: str | None
    model: str | None
    n_members: int | None
    n_heldout: int | None


def run_status(path: str | Path) -> str | None:
    """Status of the run folder at ``path`` as in :class:`RunInfo`, or None when ``path`` holds
    no run (missing, or without a readable ldminv run.json)."""
    folder = Path(path).expanduser()
    try:
        data = _read_json(folder / RUN_JSON)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except RunError:
        return "broken"
    if not _is_run_json(data):
        return None
    if data["status"] == "complete":
        return "complete"
    return "running" if _lock_owner(folder) else "unfinished"


def _iter_run_dirs(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if child.is_dir() and (child / RUN_JSON).is_file():
            yield child


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """Run folders directly under ``root`` (default :func:`default_runs_root`), newest first."""
    base = Path(root).expanduser() if root is not None else default_runs_root()
    infos: list[RunInfo] = []
    for folder in _iter_run_dirs(base):
        status = run_status(folder)
        if status is None:
            continue
        data: dict = {}
        if status != "broken":
            data = _read_json(folder / RUN_JSON)
        infos.append(
            RunInfo(
                path=folder.resolve(),
                status=status,
                created=data.get("created"),
                model=data.get("model"),
                n_members=data.get("n_members"),
                n_heldout=data.get("n_heldout"),
            )
        )
    infos.sort(key=lambda r: r.created or "", reverse=True)
    return infos


def delete_run(path: str | Path) -> None:
    """Delete a run folder (complete or unfinished).

    Raises:
        RunError: ``path`` is not a run folder (no ldminv run.json), or a live process is
            writing it.
    """
    folder = Path(path).expanduser()
    status = run_status(folder)
    if status in (None, "broken"):
        raise RunError(f"{folder} is not an ldminv run folder (no readable ldminv run.json); not deleting it")
    if status == "running":
        raise RunError(f"run {folder} is being written by process {_lock_owner(folder)}; stop it before deleting")
    shutil.rmtree(folder)


def default_runs_root() -> Path:
    """``$LDMINV_HOME/runs``, default ``~/.cache/ldminv/runs``."""
    home = os.environ.get("LDMINV_HOME") or "~/.cache/ldminv"
    return Path(home).expanduser() / "runs"
