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
not marked done is never read, so a half-written array is never seen.

Trust: run.json is data, not code. :meth:`Run.open` checks every field it uses (types, attack
names against :data:`KNOWN_ATTACKS`) and resolves every array path inside the folder (a symbolic
link pointing outside, or anything but a regular file, is refused), so a crafted run.json cannot
make ldminv read files elsewhere. NaN / infinite log-volumes of a finished geometry stage are
refused at open; the large arrays are checked lazily (:meth:`Run.check_finite`,
:meth:`Run.nonfinite_report`, ``Run.terms(attack, validate=True)``) so opening stays fast.

Locking: a :class:`RunWriter` holds an exclusive ``fcntl.flock`` on ``run.lock`` for its whole
lifetime (the file also records host, pid, the process start time and the boot id, for messages
and for file systems without flock). The kernel drops the lock when the process dies, so a lock
left by a killed writer is never stale, and :func:`run_status` says "running" only while the lock
is really held. ``RunWriter(..., force_unlock=True)`` breaks a lock that is held (CLI:
``analyze --break-lock``).

Deleting: :func:`delete_run` removes only the files a run owns (:data:`OWNED_FILES`,
:data:`OWNED_DIRS`, ldminv's temporary files), unlinks symbolic links instead of following them,
refuses a run folder that is itself a symbolic link, and refuses (deleting nothing) a folder
holding files ldminv does not own, naming them.
"""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
import shutil
import socket
import stat as _stat
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .errors import NonFiniteRunError, RunError, UnknownNameError

try:  # POSIX; elsewhere the lock falls back to an exclusive create
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - not POSIX
    _fcntl = None  # type: ignore[assignment]


class StageNotReadyError(RunError):
    """A partial run was asked for the output of a stage that has not finished yet."""

__all__ = [
    "RUN_FORMAT",
    "load_npy",
    "load_npz",
    "RunWriter",
    "StageNotReadyError",
    "Run",
    "RunInfo",
    "run_status",
    "planned_stages",
    "list_runs",
    "delete_run",
    "default_runs_root",
    "KNOWN_ATTACKS",
    "ATTACK_KINDS",
    "OWNED_FILES",
    "OWNED_DIRS",
]

_NPY_LOCK = threading.Lock()


def load_npy(path: str | os.PathLike, *, mmap_mode: str | None = None) -> np.ndarray:
    """``np.load`` of one .npy file (no pickles), one thread at a time.

    numpy parses the header with ``ast.literal_eval``, and CPython 3.11's AST builder is not
    safe when two threads build an AST at once ("AST constructor recursion depth mismatch"):
    the dashboard's background warm-up and a running analysis both open arrays. With
    ``mmap_mode`` only the header is read under the lock.
    """
    with _NPY_LOCK:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)


def load_npz(path: str | os.PathLike, keys: "list[str] | tuple[str, ...]") -> dict[str, np.ndarray]:
    """The arrays ``keys`` of one .npz file (no pickles), read whole under the lock of
    :func:`load_npy`. Raises KeyError naming a missing key."""
    with _NPY_LOCK, np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in keys}


RUN_FORMAT = "ldminv-run"
RUN_FORMAT_VERSION = 1
RUN_JSON = "run.json"
SAMPLES = "samples.parquet"
LATENTS = "latents.npy"
INFLUENCE = "influence.npy"
LOCK = "run.lock"
SAMPLE_COLUMNS = ("sample_id", "path", "split", "caption", "log_volume")
SPLITS = ("member", "heldout")
#: Attack names a run.json may hold (the same as ``ldminv_core.attacks.ATTACKS``, checked by a
#: test; kept here so that reading a run does not import torch).
KNOWN_ATTACKS: tuple[str, ...] = ("sima", "pia", "loss", "secmi", "pfami")
#: ``attacks.<name>.kind`` values: per-coordinate terms (residuals/) or stored scores (scores/).
ATTACK_KINDS: tuple[str, ...] = ("terms", "scores")
#: Files directly in a run folder that ldminv writes (umap.* by ldminv_core.embedding).
OWNED_FILES: frozenset[str] = frozenset({RUN_JSON, SAMPLES, LATENTS, INFLUENCE, LOCK, "umap.npy", "umap.json",
                                        "blind_features.npz"})
#: Folders of a run: residuals/<attack>.npy, scores/<attack>.npy, _work/ (analyze's scratch),
#: .ldminv-cache/ (derived arrays the evaluation and the dashboard re-compute when missing).
CACHE_DIR = ".ldminv-cache"
OWNED_DIRS: frozenset[str] = frozenset({"residuals", "scores", "_work", CACHE_DIR})
#: Owned folders whose whole content is ldminv's (no per-file check).
_SCRATCH_DIRS = frozenset({"_work", CACHE_DIR})
# temporary files of _atomic_write_bytes / embedding._atomic_write: ".<name>.<random>.tmp"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp$")
#: seconds a writer retries a lock that is busy (a status probe holds it for microseconds)
_LOCK_RETRY_S = 0.25

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
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _proc_start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (Linux: field 22 of /proc/<pid>/stat, clock ticks since
    boot), or None where /proc does not tell."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
        return text[text.rindex(")") + 2:].split()[19]
    except (OSError, ValueError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _lock_payload() -> bytes:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start_time": _proc_start_time(os.getpid()),
        "boot_id": _boot_id(),
        "since": _now(),
    }
    return json.dumps(info).encode("utf-8")


def _open_lock_for_reading(folder: Path) -> int | None:
    """A read-only descriptor of ``folder/run.lock`` when it is a regular file (never through a
    link, never blocking), else None. The caller closes it."""
    try:
        fd = os.open(folder / LOCK, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if _stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def _read_lock_info(folder: Path) -> dict | None:
    """The holder recorded in ``folder/run.lock`` (pid, host, start_time, boot_id, since), or None
    when the file is missing, a link, or unreadable."""
    fd = _open_lock_for_reading(folder)
    if fd is None:
        return None
    try:
        raw = os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        info = json.loads(raw.decode("utf-8"))
        info["pid"] = int(info["pid"])
        info["host"] = str(info["host"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    return info if isinstance(info, dict) else None


def _lock_info_alive(info: dict) -> bool:
    """Whether the process recorded in a lock file still runs (used where flock is unavailable):
    same host, pid alive, same boot, and the same process start time (a pid reused by another
    process has another start time). A lock of another host cannot be checked: alive."""
    if info.get("host") != socket.gethostname():
        return True
    pid = int(info["pid"])
    if info.get("boot_id") and _boot_id() and info["boot_id"] != _boot_id():
        return False
    if not _pid_alive(pid):
        return False
    recorded, now = info.get("start_time"), _proc_start_time(pid)
    if recorded is not None and now is not None and str(recorded) != str(now):
        return False
    return True


def _describe_holder(info: dict | None) -> str:
    if not info:
        return "another process (its run.lock records no holder yet)"
    here = info.get("host") == socket.gethostname()
    who = f"process {info['pid']}" + ("" if here else f" on host {info.get('host')!r}")
    if here and info["pid"] == os.getpid():
        who += " (this process: another RunWriter is open)"
    if info.get("since"):
        who += f" since {info['since']}"
    return who


_FLOCK_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOSYS", -1)}


class _LockBusy(Exception):
    """The run folder's lock is held by someone else (carries the holder's info)."""

    def __init__(self, info: dict | None) -> None:
        super().__init__(info)
        self.info = info


def _open_lock_file(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or path.is_symlink():
            raise RunError(
                f"{path}: is a symbolic link; expected ldminv's own lock file (a regular file). "
                "Remove the link by hand"
            ) from exc
        raise RunError(f"{path}: cannot open the run's lock file ({exc})") from exc


def _take_lock(folder: Path, *, wait: float = _LOCK_RETRY_S) -> tuple[int, bool]:
    """Take ``folder``'s writer lock: (fd, True) with an exclusive flock held on the open
    ``run.lock``, or (fd, False) on a file system without flock, where the lock file was made by an
    exclusive create. Writes the holder record into the file. Raises _LockBusy when held."""
    path = folder / LOCK
    deadline = time.monotonic() + wait
    while True:
        use_flock = _fcntl is not None
        if use_flock:
            fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT)
            try:
                if not _stat.S_ISREG(os.fstat(fd).st_mode):
                    raise RunError(f"{path}: expected ldminv's lock file (a regular file), found something else")
                _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise _LockBusy(_read_lock_info(folder)) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno not in _FLOCK_UNSUPPORTED:
                    raise RunError(f"{path}: cannot lock the run folder ({exc})") from exc
                use_flock = False
            except BaseException:
                os.close(fd)
                raise
            if use_flock:
                # the file may have been unlinked (a closing writer) or replaced between our open
                # and our flock: then we hold a lock on a file nobody else will look at; retry
                try:
                    st = os.stat(path, follow_symlinks=False)
                    same = (st.st_ino, st.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev)
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                try:
                    payload = _lock_payload()
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, payload, 0)
                    os.fsync(fd)
                except OSError as exc:
                    os.close(fd)
                    raise RunError(f"{path}: cannot write the run's lock file ({exc})") from exc
                return fd, True
        # no flock: exclusive create; a lock file of a dead process (or a reused pid) is stale
        try:
            fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except RunError:
            if not path.exists() or path.is_symlink():
                raise
            info = _read_lock_info(folder)
            if info is not None and _lock_info_alive(info):
                if time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                raise _LockBusy(info) from None
            if info is None and time.monotonic() < deadline:
                time.sleep(0.01)  # being written right now
                continue
            try:
                path.unlink()  # stale: its process is gone
            except FileNotFoundError:
                pass
            continue
        try:
            os.write(fd, _lock_payload())
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise RunError(f"{path}: cannot write the run's lock file ({exc})") from exc
        return fd, False


def _release_lock(folder: Path, fd: int, flocked: bool, owner_pid: int) -> None:
    """Remove ``run.lock`` (when it is still the file we locked, and we are the process that took
    it, not a forked child) and close ``fd`` (which drops the flock)."""
    path = folder / LOCK
    try:
        if os.getpid() == owner_pid:
            try:
                st = os.stat(path, follow_symlinks=False)
                fst = os.fstat(fd)
                if (st.st_ino, st.st_dev) == (fst.st_ino, fst.st_dev):
                    path.unlink()
            except FileNotFoundError:
                pass
    finally:
        os.close(fd)


def _lock_holder(folder: Path) -> dict | None:
    """The holder of ``folder``'s writer lock ({"pid", "host", ...}; {} when it records none), or
    None when nobody holds it. Probes with a shared flock, which never blocks a reader and leaves
    the writer's lock untouched; where flock is unavailable, judges the recorded holder (host,
    pid, process start time, boot id)."""
    fd = _open_lock_for_reading(folder)
    if fd is None:
        return None
    try:
        if _fcntl is not None:
            try:
                _fcntl.flock(fd, _fcntl.LOCK_SH | _fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_lock_info(folder) or {}
            except OSError as exc:
                if exc.errno not in _FLOCK_UNSUPPORTED:
                    return None
            else:
                _fcntl.flock(fd, _fcntl.LOCK_UN)
                return None
    finally:
        os.close(fd)
    info = _read_lock_info(folder)
    return info if info is not None and _lock_info_alive(info) else None


def _lock_owner(folder: Path) -> int | None:
    """Process id of the writer holding ``folder``'s lock (0 when it records none), else None."""
    info = _lock_holder(folder)
    if info is None:
        return None
    return int(info.get("pid", 0))


def _kind(mode: int) -> str:
    for test, name in ((_stat.S_ISDIR, "a folder"), (_stat.S_ISFIFO, "a named pipe"), (_stat.S_ISSOCK, "a socket"),
                       (_stat.S_ISCHR, "a character device"), (_stat.S_ISBLK, "a block device"),
                       (_stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def _inside(folder: Path, rel: str | Path) -> Path:
    """``folder / rel`` with every symbolic link resolved, checked to lie inside ``folder`` (the
    resolved run folder) and to be a regular file.

    Raises:
        RunError: the path (a link on it) leads outside the folder, is not a regular file, or is
            missing ("file is missing").
    """
    path = folder / rel
    real = Path(os.path.realpath(path))
    if folder not in real.parents:
        link = " (a symbolic link)" if path.is_symlink() else ""
        raise RunError(
            f"{path}{link}: resolves to {real}, outside the run folder {folder}; refusing to read it"
        )
    try:
        st = os.stat(real)
    except FileNotFoundError as exc:
        raise RunError(f"{path}: file is missing") from exc
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc})") from exc
    if not _stat.S_ISREG(st.st_mode):
        raise RunError(f"{path}: expected a regular file, found {_kind(st.st_mode)}")
    return real


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
        settings = _jsonable(settings)
        self.resumed = False
        run_json = self.path / RUN_JSON
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"run folder {self.path} is a file; expected a folder")
        if (run_json.is_file() or run_json.is_symlink()) and not _is_creation_leftover(self.path):
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
        _check_samples(samples, "samples")
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock(force_unlock)
        try:
            if run_json.is_file() and not _is_creation_leftover(self.path):
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
            _write_parquet(self.path / SAMPLES, samples.reset_index(drop=True))
            wrote_samples = True
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
        leftover_json = _is_creation_leftover(self.path)
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
        _inside(self.path, RUN_JSON)
        return _read_json(run_json)

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
        _inside(self.path, SAMPLES)
        self._data = data
        self.resumed = True
        if samples is not None:
            stored = self.samples
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

    # -- lock ---------------------------------------------------------------------------
    def _acquire_lock(self, force_unlock: bool = False) -> None:
        try:
            fd, flocked = _take_lock(self.path)
        except _LockBusy as busy:
            if not force_unlock:
                raise RunError(
                    f"run folder {self.path} is being written by {_describe_holder(busy.info)} "
                    f"({self.path / LOCK} is locked); wait for it or stop it. If that writer is "
                    "gone (e.g. it ran on another host), break the lock with analyze --break-lock "
                    "(RunWriter(..., force_unlock=True))"
                ) from None
            try:
                (self.path / LOCK).unlink()
            except FileNotFoundError:
                pass
            try:
                fd, flocked = _take_lock(self.path)
            except _LockBusy as again:
                raise RunError(
                    f"run folder {self.path}: broke the lock, but {_describe_holder(again.info)} took it "
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
            _release_lock(self.path, fd, self._flocked, self._lock_pid)
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
        arr = load_npy(path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise RunError(f"{path}: file is missing") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise RunError(f"{path}: not a readable .npy array ({exc})") from exc
    return tuple(arr.shape), arr.dtype


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _type_name(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__) + f" ({v!r})"[:80]


def _validate_run_json(data: dict, where: Path) -> None:
    """Check the fields of run.json that reading a run uses; RunError naming run.json and the key."""
    if not isinstance(data.get("status"), str):
        raise RunError(f"{where}: key 'status': expected a string, got {_type_name(data.get('status'))}")
    stages = data.get("stages", {})
    if not isinstance(stages, dict):
        raise RunError(f"{where}: key 'stages': expected an object of stage name -> true/false, "
                       f"got {_type_name(stages)}")
    for name, value in stages.items():
        if not isinstance(value, bool):
            raise RunError(f"{where}: key 'stages.{name}': expected true or false, got {_type_name(value)}")
    for key in ("latent_shape", "attacks"):
        if key not in data:
            raise RunError(f"{where}: key {key!r} is missing")
    shape = data["latent_shape"]
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(s) and s > 0 for s in shape)):
        raise RunError(f"{where}: key 'latent_shape': expected a list of 3 positive integers (C, h, w), "
                       f"got {_type_name(shape)}")
    attacks = data["attacks"]
    if not isinstance(attacks, dict) or not attacks:
        raise RunError(f"{where}: key 'attacks': expected a non-empty object of attack name -> spec, "
                       f"got {_type_name(attacks)}")
    for name, spec in attacks.items():
        if name not in KNOWN_ATTACKS:
            raise RunError(f"{where}: key 'attacks': unknown attack name {name!r}; expected names among "
                           f"{list(KNOWN_ATTACKS)}")
        if not isinstance(spec, dict):
            raise RunError(f"{where}: key 'attacks.{name}': expected an object, got {_type_name(spec)}")
        kind = spec.get("kind", "terms")
        if kind not in ATTACK_KINDS:
            raise RunError(f"{where}: key 'attacks.{name}.kind': expected one of {list(ATTACK_KINDS)}, "
                           f"got {_type_name(kind)}")
        ts = spec.get("timesteps")
        if kind == "terms" or ts is not None:
            if not (isinstance(ts, list) and all(_is_int(t) and t >= 0 for t in ts)) or (kind == "terms" and not ts):
                raise RunError(f"{where}: key 'attacks.{name}.timesteps': expected a non-empty list of "
                               f"non-negative integers, got {_type_name(ts)}")
        dtype = spec.get("dtype")
        if dtype is not None and not isinstance(dtype, str):
            raise RunError(f"{where}: key 'attacks.{name}.dtype': expected a dtype name such as "
                           f"'float32', got {_type_name(dtype)}")


def _first_ids(samples: pd.DataFrame, bad: np.ndarray, limit: int = 5) -> str:
    idx = np.flatnonzero(bad)
    shown = ", ".join(str(int(i)) for i in samples["sample_id"].to_numpy()[idx[:limit]])
    paths = ", ".join(repr(Path(str(p)).name) for p in samples["path"].to_numpy()[idx[:min(limit, 3)]])
    more = ", ..." if idx.size > limit else ""
    return f"sample ids {shown}{more} ({paths}{', ...' if idx.size > 3 else ''})"


def _check_log_volume(samples: pd.DataFrame, where: Path) -> None:
    """Refuse a finished geometry whose log-volumes are not all finite numbers."""
    col = samples["log_volume"]
    try:
        values = pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise RunError(f"{where}: column 'log_volume': expected numbers, got dtype {col.dtype} ({exc})") from exc
    bad = ~np.isfinite(values)
    n, k = len(values), int(bad.sum())
    if not k:
        return
    if k == n:
        what = "NaN" if np.isnan(values).all() else "NaN or infinite"
        raise NonFiniteRunError(
            f"{where}: column 'log_volume': all {n} values are {what}: the geometry stage wrote no "
            "log-volume, although run.json marks it done; delete the run and analyze again"
        )
    raise NonFiniteRunError(
        f"{where}: column 'log_volume': {k} of {n} values are NaN or infinite, at {_first_ids(samples, bad)}; "
        "the geometry stage wrote non-finite log-volumes; delete the run and analyze again"
    )


def _nonfinite_rows(arr: np.ndarray, chunk_bytes: int = 1 << 26) -> np.ndarray:
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


def planned_stages(settings: dict) -> tuple[str, ...]:
    """The stages of a run in the order ``analyze`` computes them: "encode", "blind" (the blind
    baseline's model-free features of the files; runs whose run.json has a "blind" entry, i.e.
    every run analysed since the stage exists), the attacks that store per-coordinate terms,
    "geometry", then the attacks that store scores (cheap results first, so a partial run has
    AUROC and ROC curves as early as possible)."""
    attacks = settings.get("attacks", {})
    if not isinstance(attacks, dict):
        attacks = {str(a): {} for a in attacks}
    terms = [a for a, spec in attacks.items() if (spec or {}).get("kind", "terms") == "terms"]
    scored = [a for a in attacks if a not in terms]
    blind = ("blind",) if "blind" in settings else ()
    return ("encode", *blind, *terms, "geometry", *scored)


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
            real = self._files[rel] = _inside(self.path, rel)
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
        folder = Path(path).expanduser()
        if not folder.is_dir():
            if folder.exists():
                raise RunError(f"run folder {folder}: expected a run folder, got a file")
            raise RunError(f"run folder {folder} does not exist")
        folder = folder.resolve()
        try:
            json_path = _inside(folder, RUN_JSON)
        except RunError as exc:
            if not (folder / RUN_JSON).exists() and not (folder / RUN_JSON).is_symlink():
                raise RunError(f"{folder} is not a run folder: {RUN_JSON} is missing") from exc
            raise
        data = _read_json(json_path)
        if not _is_run_json(data):
            raise RunError(f"{folder / RUN_JSON}: not an ldminv run (no format/status)")
        if not isinstance(data["status"], str):
            raise RunError(f"{folder / RUN_JSON}: key 'status': expected a string, got {_type_name(data['status'])}")
        stages = data.get("stages", {})
        if not isinstance(stages, dict):
            raise RunError(f"{folder / RUN_JSON}: key 'stages': expected an object of stage name -> true/false, "
                           f"got {_type_name(stages)}")
        done = tuple(str(k) for k, v in stages.items() if v is True)
        if data["status"] != "complete" and (not partial or "encode" not in done):
            owner = _lock_holder(folder)
            state = (f"being written by process {owner.get('pid', '?')}" if owner is not None
                     else "unfinished (interrupted)")
            hint = ("it has no finished stage yet" if partial else
                    "run analyze again with the same settings to finish it")
            raise RunError(
                f"run {folder} is {state}: status {data['status']!r}, expected 'complete'; {hint}"
            )
        _validate_run_json(data, folder / RUN_JSON)
        samples_path = folder / SAMPLES
        real_samples = _inside(folder, SAMPLES)
        try:
            samples = pd.read_parquet(real_samples)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several error types
            raise RunError(f"{samples_path}: cannot read ({exc})") from exc
        _check_samples(samples, str(samples_path))
        if "log_volume" not in samples.columns:
            raise RunError(f"{samples_path}: column 'log_volume' is missing")
        run = cls(folder, data, samples, stages_done=done)
        run._files[SAMPLES] = real_samples
        if run.has_geometry:
            _check_log_volume(samples, samples_path)
        n, lat = len(samples), run.latent_shape
        expected: dict[str, tuple[tuple[int, ...], str | None]] = {LATENTS: ((n, *lat), None)}
        if run.has_geometry:
            expected[INFLUENCE] = ((n, *lat), None)
        for name, spec in data["attacks"].items():
            if name not in run.stages_done:
                continue
            if spec.get("kind", "terms") == "terms":
                expected[f"residuals/{name}.npy"] = ((n, len(spec["timesteps"]), *lat), spec.get("dtype"))
            else:
                expected[f"scores/{name}.npy"] = ((n,), None)
        for rel, (shape, dtype_name) in expected.items():
            real = run._file(rel)
            got, dtype = _npy_header(real)
            if got != shape:
                raise RunError(
                    f"{folder / rel}: shape {got} does not match the run's expected {shape} "
                    f"({n} samples in {SAMPLES}, latent_shape {lat})"
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
            bad = self._nonfinite[rel] = _nonfinite_rows(load_npy(self._file(rel), mmap_mode="r"))
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
                    f"{_first_ids(self.samples, bad)}; the stage that wrote it produced non-finite numbers; "
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
                f"{_first_ids(self.samples, bad)}; delete the run and analyze again"
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


def _owned_tmp(name: str, owned: Any) -> bool:
    m = _TMP_RE.match(name)
    return bool(m) and m.group("name") in owned


def _is_creation_leftover(folder: Path) -> bool:
    """True when ``folder`` holds what a creation killed before samples.parquet was written leaves:
    an ldminv run.json recording no work (no stage done, no progress) with no samples.parquet,
    plus at most run.lock and ldminv's temporary files. Such a folder is re-created, not resumed."""
    rj = folder / RUN_JSON
    if rj.is_symlink() or not rj.is_file():
        return False
    if (folder / SAMPLES).exists() or (folder / SAMPLES).is_symlink():
        return False
    try:
        data = _read_json(rj)
    except (RunError, OSError):
        return False
    if not _is_run_json(data) or data.get("status") == "complete":
        return False
    stages, progress = data.get("stages", {}), data.get("progress", {})
    if not isinstance(stages, dict) or not isinstance(progress, dict):
        return False
    if any(v is True for v in stages.values()) or any(progress.values()):
        return False
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return all(not e.is_symlink() and e.is_file() and (e.name in (RUN_JSON, LOCK) or _owned_tmp(e.name, OWNED_FILES))
               for e in entries)


def _is_lock_leftover(folder: Path) -> bool:
    """True when ``folder`` holds no run.json but only run.lock, samples.parquet (next to
    run.lock) and ldminv's temporary files: a creation killed before run.json was written."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    names = {e.name for e in entries}
    if LOCK not in names:
        return False
    return all(not e.is_symlink() and e.is_file() and (e.name in (LOCK, SAMPLES) or _owned_tmp(e.name, OWNED_FILES))
               for e in entries)


def run_status(path: str | Path) -> str | None:
    """Status of the run folder at ``path`` as in :class:`RunInfo`, or None when ``path`` holds
    no run (missing, without a readable ldminv run.json, or only what a creation killed before
    any work leaves: such a folder is simply re-created). "running" only while a writer really
    holds the folder's lock."""
    folder = Path(path).expanduser()
    rj = folder / RUN_JSON
    try:
        if not rj.exists() and not rj.is_symlink():
            return None
    except OSError:
        return None
    try:
        real = _inside(folder.resolve(), RUN_JSON)
        data = _read_json(real)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except RunError:
        return "broken"
    if not _is_run_json(data):
        return None
    if data["status"] == "complete":
        return "complete"
    if _is_creation_leftover(folder):
        return None
    return "running" if _lock_holder(folder) is not None else "unfinished"


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
            try:
                data = _read_json(_inside(folder.resolve(), RUN_JSON))
            except (RunError, OSError):
                status, data = "broken", {}

        def _str(key: str) -> str | None:
            v = data.get(key)
            return v if isinstance(v, str) else None

        def _int(key: str) -> int | None:
            v = data.get(key)
            return v if _is_int(v) else None

        infos.append(
            RunInfo(
                path=folder.resolve(),
                status=status,
                created=_str("created"),
                model=_str("model"),
                n_members=_int("n_members"),
                n_heldout=_int("n_heldout"),
            )
        )
    infos.sort(key=lambda r: r.created or "", reverse=True)
    return infos


def _deletion_plan(folder: Path, *, take_foreign: bool = False) -> tuple[list[Path], list[Path], list[str]]:
    """(files and links to unlink, folders to remove deepest first, foreign entries) of a run
    folder. Links are never followed: a link bearing an owned name is unlinked, any other is
    foreign. ``take_foreign``: foreign entries are planned for removal too (links unlinked,
    folders walked without following links) and still listed."""
    files: list[Path] = []
    dirs: list[Path] = []
    foreign: list[str] = []

    def take(p: Path, rel: str) -> None:
        foreign.append(rel)
        if not take_foreign:
            return
        if not p.is_symlink() and p.is_dir():
            for e in os.scandir(p):
                take(Path(e.path), f"{rel.rstrip('/')}/{e.name}")
            dirs.append(p)
        else:
            files.append(p)

    def walk_owned_dir(d: Path, rel: str, allowed) -> None:
        # allowed(name) -> bool for files; None = anything (analyze's scratch folder)
        for e in os.scandir(d):
            p = Path(e.path)
            sub = f"{rel}/{e.name}"
            if e.is_symlink() or e.is_file(follow_symlinks=False):
                if allowed is None or allowed(e.name):
                    files.append(p)
                else:
                    take(p, sub)
            elif e.is_dir(follow_symlinks=False) and allowed is None:
                walk_owned_dir(p, sub, None)
            else:
                take(p, sub + ("/" if e.is_dir(follow_symlinks=False) else ""))
        dirs.append(d)

    def array_name(name: str) -> bool:
        base = _TMP_RE.match(name).group("name") if _TMP_RE.match(name) else name
        return base.endswith(".npy") and base[:-4] in KNOWN_ATTACKS

    for e in os.scandir(folder):
        p = Path(e.path)
        owned = e.name in OWNED_FILES or e.name in OWNED_DIRS or _owned_tmp(e.name, OWNED_FILES)
        if e.is_symlink():
            (files.append(p) if owned else take(p, e.name))
        elif e.is_file(follow_symlinks=False):
            (files.append(p) if owned and e.name not in OWNED_DIRS else take(p, e.name))
        elif e.is_dir(follow_symlinks=False) and e.name in OWNED_DIRS:
            walk_owned_dir(p, e.name, None if e.name in _SCRATCH_DIRS else array_name)
        else:
            take(p, e.name + ("/" if e.is_dir(follow_symlinks=False) else ""))
    return files, dirs, sorted(foreign)


def delete_run(path: str | Path, *, foreign: str = "refuse") -> None:
    """Delete a run folder (complete or unfinished), removing only what ldminv owns.

    The folder's own entries must all be ldminv's (:data:`OWNED_FILES`, :data:`OWNED_DIRS` with
    the arrays of known attacks, analyze's ``_work/``, ldminv's temporary files); otherwise, by
    default (``foreign="refuse"``), nothing is deleted and the foreign entries are named.
    ``foreign="delete"`` (an explicit "start over", e.g. ``analyze --force``) removes them too,
    still without following any link. Symbolic links inside are unlinked,
    never followed; a ``path`` that is itself a symbolic link is refused (delete the real folder,
    or remove the link yourself). The folder's lock is held while deleting, so no writer starts
    meanwhile.

    Raises:
        RunError: ``path`` is a symbolic link, is not a run folder (no ldminv run.json, and not
            the leftovers of a killed creation), a live writer holds it, or it holds files
            ldminv does not own (named).
    """
    if foreign not in ("refuse", "delete"):
        raise RunError(f"foreign: expected 'refuse' or 'delete', got {foreign!r}")
    given = Path(path).expanduser()
    if given.is_symlink():
        raise RunError(
            f"{given}: is a symbolic link (to {os.readlink(given)!r}); refusing to delete a run through a "
            "link: pass the run folder itself, or remove the link"
        )
    given = given.absolute()
    folder = Path(os.path.realpath(given.parent)) / given.name
    if not folder.is_dir():
        raise RunError(f"run folder {folder} does not exist or is not a folder; nothing deleted")
    status = run_status(folder)
    leftover = status is None and (_is_creation_leftover(folder) or _is_lock_leftover(folder))
    if status is None and not leftover:
        raise RunError(f"{folder} is not an ldminv run folder (no ldminv run.json); not deleting it")
    # "broken" (an unreadable run.json) is deleted like any run: only if every entry is ldminv's
    try:
        fd, flocked = _take_lock(folder)
    except _LockBusy as busy:
        raise RunError(
            f"run {folder} is being written by {_describe_holder(busy.info)}; stop it before deleting"
        ) from None
    try:
        files, dirs, others = _deletion_plan(folder, take_foreign=foreign == "delete")
        if others and foreign == "refuse":
            shown = ", ".join(others[:8]) + (f" and {len(others) - 8} more" if len(others) > 8 else "")
            raise RunError(
                f"run folder {folder} holds {len(others)} entr{'y' if len(others) == 1 else 'ies'} ldminv "
                f"does not own ({shown}); not deleting anything: move them out, then delete the run again"
            )
        for f in files:
            if f.name == LOCK and f.parent == folder and not f.is_symlink():
                continue  # ours, held: removed on release
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
        for d in dirs:
            os.rmdir(d)
    except OSError as exc:
        raise RunError(f"run folder {folder}: cannot delete ({exc})") from exc
    finally:
        _release_lock(folder, fd, flocked, os.getpid())
    try:
        os.rmdir(folder)
    except OSError as exc:
        raise RunError(f"run folder {folder}: removed the run's files, but not the folder ({exc})") from exc


def default_runs_root() -> Path:
    """``$LDMINV_HOME/runs``, default ``~/.cache/ldminv/runs``."""
    home = os.environ.get("LDMINV_HOME") or "~/.cache/ldminv"
    return Path(home).expanduser() / "runs"
