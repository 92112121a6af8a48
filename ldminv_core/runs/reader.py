"""The run folder's reader, :class:`Run`: a finished run (or, asked for, the finished stages of
an unfinished one), read-only, its arrays memory-mapped on access.

:meth:`Run.open` checks every field of run.json it uses (:mod:`.schema`) and resolves every file
inside the folder (:func:`.files.inside`); NaN / infinite log-volumes of a finished geometry are
refused at open; the large arrays are checked lazily (:meth:`Run.check_finite`,
:meth:`Run.nonfinite_report`, ``Run.terms(attack, validate=True)``) so opening stays fast.
``Run.open(path, partial=True)`` opens an unfinished run read-only with exactly its finished
stages (``Run.partial``, ``Run.stages_done``, ``Run.pending_stages``): an array of a stage that is
not marked done is never read, so a half-written array is never seen.

The reader only reads: the scores computed from a run's arrays are the evaluation layer's
(:mod:`ldminv_core.evaluation.run_scores`).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import NonFiniteRunError, RunError, UnknownNameError
from .files import inside, load_npy, npy_header, read_json
from .layout import INFLUENCE, LATENTS, RUN_JSON, SAMPLES, planned_stages
from .lock import lock_holder
from .schema import _is_run_json, _type_name, check_log_volume, check_samples, first_ids, validate_run_json

__all__ = ["Run", "StageNotReadyError"]


class StageNotReadyError(RunError):
    """A partial run was asked for the output of a stage that has not finished yet."""


def _scan_nonfinite_rows(arr: np.ndarray, chunk_bytes: int = 1 << 26) -> np.ndarray:
    """(N,) bool: which rows (samples) of ``arr`` hold NaN or infinite values; reads ``arr`` (a
    memory map) in chunks of about ``chunk_bytes``."""
    n = arr.shape[0]
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    row = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
    step = max(1, chunk_bytes // row)
    for i in range(0, n, step):
        block = np.asarray(arr[i:i + step])
        out[i:i + step] = ~np.isfinite(block).reshape(block.shape[0], -1).all(axis=1)
    return out


# ----------------------------------------------------------------------------- the steps of Run.open


def _resolve_folder(path: str | Path) -> Path:
    """The run folder, resolved (RunError when missing or a file)."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        if folder.exists():
            raise RunError(f"run folder {folder}: expected a run folder, got a file")
        raise RunError(f"run folder {folder} does not exist")
    return folder.resolve()


def _read_settings(folder: Path) -> dict:
    """run.json of ``folder``: inside it, an ldminv run, with a string status and an object of
    stages (RunError naming the file and the key otherwise)."""
    try:
        json_path = inside(folder, RUN_JSON)
    except RunError as exc:
        if not (folder / RUN_JSON).exists() and not (folder / RUN_JSON).is_symlink():
            raise RunError(f"{folder} is not a run folder: {RUN_JSON} is missing") from exc
        raise
    data = read_json(json_path)
    if not _is_run_json(data):
        raise RunError(f"{folder / RUN_JSON}: not an ldminv run (no format/status)")
    if not isinstance(data["status"], str):
        raise RunError(f"{folder / RUN_JSON}: key 'status': expected a string, got {_type_name(data['status'])}")
    stages = data.get("stages", {})
    if not isinstance(stages, dict):
        raise RunError(f"{folder / RUN_JSON}: key 'stages': expected an object of stage name -> true/false, "
                       f"got {_type_name(stages)}")
    return data


def _refuse_unfinished(folder: Path, data: dict, *, partial: bool) -> None:
    """Raise RunError for a run that cannot be opened yet (being written, or interrupted)."""
    owner = lock_holder(folder)
    state = (f"being written by process {owner.get('pid', '?')}" if owner is not None
             else "unfinished (interrupted)")
    hint = ("it has no finished stage yet" if partial else
            "run analyze again with the same settings to finish it")
    raise RunError(
        f"run {folder} is {state}: status {data['status']!r}, expected 'complete'; {hint}"
    )


def _read_samples(folder: Path) -> tuple[pd.DataFrame, Path]:
    """(samples table, its checked real path); RunError when unreadable or malformed."""
    samples_path = folder / SAMPLES
    real_samples = inside(folder, SAMPLES)
    try:
        samples = pd.read_parquet(real_samples)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several error types
        raise RunError(f"{samples_path}: cannot read ({exc})") from exc
    check_samples(samples, str(samples_path))
    if "log_volume" not in samples.columns:
        raise RunError(f"{samples_path}: column 'log_volume' is missing")
    return samples, real_samples


def _expected_arrays(run: "Run") -> dict[str, tuple[tuple[int, ...], str | None]]:
    """{relative path: (shape, dtype name run.json records or None)} of every array of the run's
    finished stages."""
    n, lat = len(run.samples), run.latent_shape
    expected: dict[str, tuple[tuple[int, ...], str | None]] = {LATENTS: ((n, *lat), None)}
    if run.has_geometry:
        expected[INFLUENCE] = ((n, *lat), None)
    for name, spec in run.settings["attacks"].items():
        if name not in run.stages_done:
            continue
        if spec.get("kind", "terms") == "terms":
            expected[f"residuals/{name}.npy"] = ((n, len(spec["timesteps"]), *lat), spec.get("dtype"))
        else:
            expected[f"scores/{name}.npy"] = ((n,), None)
    return expected


def _check_array(run: "Run", rel: str, shape: tuple[int, ...], dtype_name: str | None) -> None:
    """The array ``rel`` of ``run``: inside the folder, of ``shape``, floating-point, and of the
    dtype run.json records (RunError naming the file and both values otherwise)."""
    folder = run.path
    got, dtype = npy_header(run._file(rel))
    if got != shape:
        raise RunError(
            f"{folder / rel}: shape {got} does not match the run's expected {shape} "
            f"({len(run.samples)} samples in {SAMPLES}, latent_shape {run.latent_shape})"
        )
    if dtype.kind != "f":
        raise RunError(f"{folder / rel}: dtype {dtype} is not a floating-point type; expected float32 "
                       "(residuals: float32 or float16)")
    if dtype_name is not None:
        try:
            want = np.dtype(dtype_name)
        except TypeError as exc:
            raise RunError(f"{folder / RUN_JSON}: key 'attacks.{rel[10:-4]}.dtype': {dtype_name!r} is "
                           "not a dtype name") from exc
        if want != dtype:
            raise RunError(f"{folder / rel}: dtype {dtype} does not match run.json's "
                           f"'attacks.{rel[10:-4]}.dtype' {dtype_name!r}")


# ----------------------------------------------------------------------------- the reader


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
        self._files: dict[str, Path] = {}  # relative path -> checked real path
        self._nonfinite: dict[str, np.ndarray] = {}  # relative path -> (N,) bool, once scanned
        self._derived: dict[tuple, Any] = {}  # see derived()
        self._derived_lock = threading.Lock()
        self._derived_locks: dict[tuple, threading.RLock] = {}

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

    def _file(self, rel: str) -> Path:
        """The checked real path of the run's file ``rel`` (inside the folder, a regular file)."""
        real = self._files.get(rel)
        if real is None:
            real = self._files[rel] = inside(self.path, rel)
        return real

    @classmethod
    def open(cls, path: str | Path, *, partial: bool = False) -> "Run":
        """Open a run read-only, validating run.json and every array's shape and dtype.

        Every field of run.json that is used is checked (``status`` a string, ``stages`` an
        object of booleans, ``latent_shape`` 3 positive integers, ``attacks`` an object of known
        attack name -> spec with ``kind`` "terms" / "scores" and integer ``timesteps``); every file
        read must resolve inside the folder and be a regular file (a symbolic link pointing
        outside is refused). A finished geometry must have finite log-volumes. The large arrays
        are not scanned here (opening stays fast): see :meth:`check_finite`.

        Args:
            path: the run folder.
            partial: also open an unfinished run (being written, or interrupted) with exactly the
                stages it has finished; needs at least the "encode" stage. ``Run.partial`` tells
                which; only finished stages' arrays are opened and validated, their attacks
                listed in ``Run.attacks``, and asking for an unfinished stage's output raises
                :class:`StageNotReadyError`.

        Raises:
            RunError: folder or run.json missing, run.json malformed (file and key named), run
                unfinished (without ``partial``, or with no finished stage), samples or an array
                missing, outside the folder or not a regular file, or an array whose shape or
                dtype disagrees with the samples / run.json (file and both named).
            NonFiniteRunError (a RunError): NaN / infinite log-volumes of a finished geometry
                (samples.parquet, the column and the first sample ids named).
        """
        # 1. the folder and its run.json (an ldminv run, finished unless partial is asked for)
        folder = _resolve_folder(path)
        data = _read_settings(folder)
        done = tuple(str(k) for k, v in data.get("stages", {}).items() if v is True)
        if data["status"] != "complete" and (not partial or "encode" not in done):
            _refuse_unfinished(folder, data, partial=partial)
        validate_run_json(data, folder / RUN_JSON)
        # 2. the samples table (finite log-volumes once the geometry is done)
        samples, real_samples = _read_samples(folder)
        run = cls(folder, data, samples, stages_done=done)
        run._files[SAMPLES] = real_samples
        if run.has_geometry:
            check_log_volume(samples, folder / SAMPLES)
        # 3. every finished stage's array: inside the folder, of the expected shape and dtype
        for rel, (shape, dtype_name) in _expected_arrays(run).items():
            _check_array(run, rel, shape, dtype_name)
        return run

    def derived(self, key: tuple, make: "Any") -> Any:
        """``make()`` computed once per opened run and ``key``: results that depend on the run's
        data alone, not on the attack (e.g. the blind baseline under one protocol, which every
        attack's evaluation shares). ``make`` is a callable without arguments."""
        try:
            return self._derived[key]
        except KeyError:
            pass
        with self._derived_lock:  # one lock per key: a part may ask for another part while it is made
            lock = self._derived_locks.setdefault(key, threading.RLock())
        with lock:
            if key not in self._derived:
                self._derived[key] = make()
            return self._derived[key]

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
        return load_npy(self._file(LATENTS), mmap_mode="r")

    @property
    def influence(self) -> np.ndarray:
        """(N, C, h, w) float32 0.5 * log(G_ii + 1e-12) (memory-mapped; StageNotReadyError
        before "geometry"). Not scanned for NaN: see :meth:`check_finite`."""
        self._require("geometry", "the influence")
        return load_npy(self._file(INFLUENCE), mmap_mode="r")

    # -- finiteness ---------------------------------------------------------------------
    def _array_files(self, attack: str | None, *, latents: bool) -> list[str]:
        rels = [LATENTS] if latents else []
        if self.has_geometry:
            rels.append(INFLUENCE)
        for name in ([attack] if attack is not None else self.attacks):
            self._spec(name)
            rels.append(f"residuals/{name}.npy" if self.is_maskable(name) else f"scores/{name}.npy")
        return rels

    def _nonfinite_rows(self, rel: str) -> np.ndarray:
        bad = self._nonfinite.get(rel)
        if bad is None:
            bad = self._nonfinite[rel] = _scan_nonfinite_rows(load_npy(self._file(rel), mmap_mode="r"))
        return bad

    def nonfinite_report(self, attack: str | None = None, *, latents: bool = True,
                         limit: int = 5) -> dict[str, dict]:
        """Which stored arrays hold NaN or infinite values, and in which samples.

        Scans (once per file; the result is cached on this object) the influence and the
        terms / scores of ``attack`` (default every finished attack), and the latents unless
        ``latents=False``.

        Returns:
            {file path: {"count": samples affected, "sample_ids": the first ``limit`` of them,
            "paths": their image paths}}; empty when every value is finite.
        """
        out: dict[str, dict] = {}
        for rel in self._array_files(attack, latents=latents):
            bad = self._nonfinite_rows(rel)
            if bad.any():
                idx = np.flatnonzero(bad)
                out[str(self.path / rel)] = {
                    "count": int(idx.size),
                    "sample_ids": [int(i) for i in self.samples["sample_id"].to_numpy()[idx[:limit]]],
                    "paths": [str(p) for p in self.samples["path"].to_numpy()[idx[:limit]]],
                }
        return out

    def check_finite(self, attack: str | None = None, *, latents: bool = False) -> None:
        """Raise :class:`~ldminv_core.errors.NonFiniteRunError` (a NonFiniteError and a RunError)
        naming the first file holding NaN / infinite values, how many samples and the first
        sample ids; checks the influence and ``attack``'s terms / scores (default every finished
        attack), and the latents when ``latents``. Scans each file once (cached)."""
        n = len(self.samples)
        for rel in self._array_files(attack, latents=latents):
            bad = self._nonfinite_rows(rel)
            if bad.any():
                raise NonFiniteRunError(
                    f"{self.path / rel}: {int(bad.sum())} of {n} samples hold NaN or infinite values, at "
                    f"{first_ids(self.samples, bad)}; the stage that wrote it produced non-finite numbers; "
                    "delete the run and analyze again"
                )

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

    def terms(self, attack: str, *, validate: bool = False) -> np.ndarray:
        """(N, T, C, h, w) memory-mapped per-coordinate terms of a maskable attack; with
        ``validate``, first scans them (once) and raises NonFiniteRunError naming the file and
        the samples holding NaN / infinite values."""
        if not self.is_maskable(attack):
            raise UnknownNameError(f"attack: {attack!r} stores scores, not per-coordinate terms (not maskable)")
        rel = f"residuals/{attack}.npy"
        if validate:
            self._raise_nonfinite(rel)
        return load_npy(self._file(rel), mmap_mode="r")

    def _raise_nonfinite(self, rel: str) -> None:
        bad = self._nonfinite_rows(rel)
        if bad.any():
            raise NonFiniteRunError(
                f"{self.path / rel}: {int(bad.sum())} of {len(bad)} samples hold NaN or infinite values, at "
                f"{first_ids(self.samples, bad)}; delete the run and analyze again"
            )

    def pfami_scores(self) -> np.ndarray:
        """(N,) PFAMI membership scores (higher = member)."""
        return self.stored_scores("pfami")

    def stored_scores(self, attack: str, *, validate: bool = False) -> np.ndarray:
        """(N,) stored scores of a non-maskable attack (``validate``: as in :meth:`terms`)."""
        if self.is_maskable(attack):
            raise UnknownNameError(f"attack: {attack!r} stores per-coordinate terms, not scores")
        rel = f"scores/{attack}.npy"
        if validate:
            self._raise_nonfinite(rel)
        return np.asarray(load_npy(self._file(rel)), dtype=np.float64)

