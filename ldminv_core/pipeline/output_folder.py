"""The checks of an analysis' output folder (``--out``) before anything loads: a folder (or a
place to create one), writable, not on a kernel interface file system (/proc, /sys, cgroups),
and a real write probe (:func:`_check_out`)."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from ..errors import RunError

__all__ = ["PSEUDO_FILESYSTEMS"]

#: File systems that hold no ordinary files (kernel interfaces): a run folder there is refused
#: before anything is created (a folder made in a cgroup file system would even create a cgroup).
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore",
    "bpf", "configfs", "fusectl", "mqueue", "hugetlbfs", "autofs", "binfmt_misc", "efivarfs", "selinuxfs",
    "rpc_pipefs", "nsfs",
})
_OUT_EXPECTED = "a folder where a run can be written (created if missing)"


def _unescape_mount_field(text: str) -> str:
    """A /proc/mounts field with its octal escapes (space = \\040, ...) decoded."""

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _filesystem_type(path: Path) -> str | None:
    """The type of the file system ``path`` (an absolute path) would live on, from the longest
    mount point above it in /proc/self/mounts; None where that table cannot be read."""
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    best, best_type = -1, None
    for line in lines:
        fields_ = line.split()
        if len(fields_) < 3:
            continue
        point = _unescape_mount_field(fields_[1])
        inside = path == Path(point) or Path(point) in path.parents
        if inside and len(point) >= best:  # later entries shadow earlier ones on the same point
            best, best_type = len(point), fields_[2]
    return best_type


PROBE_PREFIX = ".ldminv-write-test-"
"""Name prefix of :func:`_probe_write`'s test file: another process checking the same ``--out``
(the other ranks of a torchrun launch) may see it for a moment and must not count it as content."""


def is_probe_file(name: str) -> bool:
    """True for the name of a write probe's test file (:data:`PROBE_PREFIX`)."""
    return name.startswith(PROBE_PREFIX)


def _probe_write(folder: Path) -> None:
    """Create ``folder`` (with its missing parents), write and delete a small file in it, then
    remove again the folders this call created. OSError when any step fails."""

    created = []
    for p in [folder, *folder.parents]:
        if p.exists() or p.is_symlink():
            break
        created.append(p)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
        try:
            os.write(fd, b"ldminv")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    finally:
        for p in created:  # deepest first; a folder someone else filled meanwhile stays
            try:
                p.rmdir()
            except OSError:
                break


def _check_out(out: Path) -> None:
    """RunError naming ``out`` (``--out``) unless a run folder can be created and written there:
    the path and its nearest existing parent are folders, not on a pseudo file system (/proc,
    /sys, ...), and a probe actually creates the missing folders, writes a file and deletes both
    again (so read-only mounts, full disks and permissions are all caught before anything loads)."""
    where = f"out (--out): expected {_OUT_EXPECTED}, got {out}"
    # 1. what is on the path: a writable folder, or a writable folder to create it in
    try:
        if out.is_symlink() and not out.exists():
            raise RunError(f"{where}: a symbolic link to {os.readlink(out)}, which does not exist")
        if out.exists():
            if not out.is_dir():
                raise RunError(f"{where}: it is a file (or not a folder)")
            if not os.access(out, os.W_OK | os.X_OK):
                raise RunError(f"{where}: the folder is not writable (permission denied)")
        else:
            parent = out.parent
            while not (parent.exists() or parent.is_symlink()) and parent != parent.parent:
                parent = parent.parent
            if not parent.is_dir():
                raise RunError(f"{where}: cannot create it because {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise RunError(f"{where}: cannot create it because {parent} is not writable (permission denied)")
    except OSError as exc:  # e.g. a parent folder that may not be listed
        raise RunError(f"{where}: it cannot be examined ({exc.strerror or exc})") from exc
    # 2. where it would live: not a kernel interface (/proc, /sys, cgroups, ...)
    fs = _filesystem_type(out)
    if fs in PSEUDO_FILESYSTEMS:
        raise RunError(f"{where}: it is on a '{fs}' file system (a kernel interface, not storage); choose a folder "
                       "on a disk")
    # 3. a real write: read-only mounts, full disks and refusing file systems answer here
    try:
        _probe_write(out)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        culprit = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        raise RunError(f"{where}: creating it and writing a test file there failed: {reason}{culprit}") from exc
