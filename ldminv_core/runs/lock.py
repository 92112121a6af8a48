"""The run folder's writer lock, ``run.lock``: taking it, releasing it, asking who holds it, and
recognising what a creation killed before any work leaves behind.

A writer holds an exclusive ``fcntl.flock`` on ``run.lock`` for its whole lifetime (the file also
records host, pid, the process start time and the boot id, for messages and for file systems
without flock, where the lock is an exclusive create judged by those records). The kernel drops
the lock when the process dies, so a lock left by a killed writer is never stale, and
``run_status`` says "running" only while the lock is really held.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import stat as _stat
import time
from pathlib import Path

from ..errors import RunError
from .files import now, read_json
from .layout import LOCK, OWNED_FILES, RUN_JSON, SAMPLES, _owned_tmp
from .schema import _is_run_json

try:  # POSIX; elsewhere the lock falls back to an exclusive create
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - not POSIX
    _fcntl = None  # type: ignore[assignment]

__all__ = ["LockBusy", "take_lock", "release_lock", "lock_holder", "describe_holder",
           "is_creation_leftover", "is_lock_leftover"]

#: seconds a writer retries a lock that is busy (a status probe holds it for microseconds)
_LOCK_RETRY_S = 0.25
_FLOCK_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOSYS", -1)}
# what one attempt of take_lock may return instead of a descriptor
_RETRY = -1
_NO_FLOCK = -2


# ----------------------------------------------------------------------------- the holder record


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
        "since": now(),
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
    recorded, now_ = info.get("start_time"), _proc_start_time(pid)
    if recorded is not None and now_ is not None and str(recorded) != str(now_):
        return False
    return True


def describe_holder(info: dict | None) -> str:
    """The lock's holder as a message names it ("process 123 on host 'x' since ...")."""
    if not info:
        return "another process (its run.lock records no holder yet)"
    here = info.get("host") == socket.gethostname()
    who = f"process {info['pid']}" + ("" if here else f" on host {info.get('host')!r}")
    if here and info["pid"] == os.getpid():
        who += " (this process: another RunWriter is open)"
    if info.get("since"):
        who += f" since {info['since']}"
    return who


# ----------------------------------------------------------------------------- taking and releasing


class LockBusy(Exception):
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


def _write_payload(fd: int, path: Path, *, truncate: bool) -> None:
    """Record this process as the holder in the open lock file (closes ``fd`` on failure)."""
    try:
        payload = _lock_payload()
        if truncate:
            os.ftruncate(fd, 0)
            os.pwrite(fd, payload, 0)
        else:
            os.write(fd, payload)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        raise RunError(f"{path}: cannot write the run's lock file ({exc})") from exc


def _flock_attempt(folder: Path, path: Path, deadline: float) -> int:
    """One try at an exclusive flock on the open ``run.lock``: its descriptor, :data:`_RETRY`, or
    :data:`_NO_FLOCK` where the file system has no flock. Raises LockBusy past ``deadline``."""
    fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT)
    try:
        if not _stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunError(f"{path}: expected ldminv's lock file (a regular file), found something else")
        _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        if time.monotonic() < deadline:
            time.sleep(0.01)
            return _RETRY
        raise LockBusy(_read_lock_info(folder)) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _FLOCK_UNSUPPORTED:
            raise RunError(f"{path}: cannot lock the run folder ({exc})") from exc
        return _NO_FLOCK
    except BaseException:
        os.close(fd)
        raise
    # the file may have been unlinked (a closing writer) or replaced between our open and our
    # flock: then we hold a lock on a file nobody else will look at; retry
    try:
        st = os.stat(path, follow_symlinks=False)
        same = (st.st_ino, st.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev)
    except FileNotFoundError:
        same = False
    if not same:
        os.close(fd)
        return _RETRY
    _write_payload(fd, path, truncate=True)
    return fd


def _create_attempt(folder: Path, path: Path, deadline: float) -> int:
    """One try at the lock without flock, an exclusive create: its descriptor or :data:`_RETRY`
    (a lock file of a dead process, or of a reused pid, is stale and removed). Raises LockBusy
    past ``deadline``."""
    try:
        fd = _open_lock_file(path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    except RunError:
        if not path.exists() or path.is_symlink():
            raise
        info = _read_lock_info(folder)
        if info is not None and _lock_info_alive(info):
            if time.monotonic() < deadline:
                time.sleep(0.01)
                return _RETRY
            raise LockBusy(info) from None
        if info is None and time.monotonic() < deadline:
            time.sleep(0.01)  # being written right now
            return _RETRY
        try:
            path.unlink()  # stale: its process is gone
        except FileNotFoundError:
            pass
        return _RETRY
    _write_payload(fd, path, truncate=False)
    return fd


def take_lock(folder: Path, *, wait: float = _LOCK_RETRY_S) -> tuple[int, bool]:
    """Take ``folder``'s writer lock: (fd, True) with an exclusive flock held on the open
    ``run.lock``, or (fd, False) on a file system without flock, where the lock file was made by an
    exclusive create. Writes the holder record into the file. Raises LockBusy when held (after
    retrying for ``wait`` seconds)."""
    path = folder / LOCK
    deadline = time.monotonic() + wait
    while True:
        # 1. with flock: an exclusive flock on the open run.lock
        if _fcntl is not None:
            got = _flock_attempt(folder, path, deadline)
            if got == _RETRY:
                continue
            if got != _NO_FLOCK:
                return got, True
        # 2. no flock: an exclusive create
        got = _create_attempt(folder, path, deadline)
        if got != _RETRY:
            return got, False


def release_lock(folder: Path, fd: int, flocked: bool, owner_pid: int) -> None:
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


def lock_holder(folder: Path) -> dict | None:
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
    info = lock_holder(folder)
    if info is None:
        return None
    return int(info.get("pid", 0))


# ----------------------------------------------------------------------------- leftovers of a killed creation


def is_creation_leftover(folder: Path) -> bool:
    """True when ``folder`` holds what a creation killed before samples.parquet was written leaves:
    an ldminv run.json recording no work (no stage done, no progress) with no samples.parquet,
    plus at most run.lock and ldminv's temporary files. Such a folder is re-created, not resumed."""
    rj = folder / RUN_JSON
    if rj.is_symlink() or not rj.is_file():
        return False
    if (folder / SAMPLES).exists() or (folder / SAMPLES).is_symlink():
        return False
    try:
        data = read_json(rj)
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


def is_lock_leftover(folder: Path) -> bool:
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
