"""The runs on disk: where they live (:func:`default_runs_root`), what state one is in
(:func:`run_status`), the runs under a folder (:func:`list_runs`), and deleting one
(:func:`delete_run`).

Deleting removes only the files a run owns (:data:`~ldminv_core.runs.layout.OWNED_FILES`,
:data:`~ldminv_core.runs.layout.OWNED_DIRS`, ldminv's temporary files), unlinks symbolic links
instead of following them, refuses a run folder that is itself a symbolic link, and refuses
(deleting nothing) a folder holding files ldminv does not own, naming them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .._validation import check_choice
from ..errors import RunError
from .files import inside, read_json
from .layout import _SCRATCH_DIRS, _TMP_RE, KNOWN_ATTACKS, LOCK, OWNED_DIRS, OWNED_FILES, RUN_JSON, _owned_tmp
from .lock import LockBusy, describe_holder, is_creation_leftover, is_lock_leftover, lock_holder, release_lock, take_lock
from .schema import _is_int, _is_run_json

__all__ = ["RunInfo", "run_status", "list_runs", "delete_run", "default_runs_root"]


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


def default_runs_root() -> Path:
    """``$LDMINV_HOME/runs``, default ``~/.cache/ldminv/runs``."""
    home = os.environ.get("LDMINV_HOME") or "~/.cache/ldminv"
    return Path(home).expanduser() / "runs"


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
        real = inside(folder.resolve(), RUN_JSON)
        data = read_json(real)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except RunError:
        return "broken"
    if not _is_run_json(data):
        return None
    if data["status"] == "complete":
        return "complete"
    if is_creation_leftover(folder):
        return None
    return "running" if lock_holder(folder) is not None else "unfinished"


def _iter_run_dirs(root: Path) -> Iterator[Path]:
    """Run folders directly under ``root``, and one level further down inside a folder that is not
    a run itself (``analyze --lora-scale 0,0.5,1`` writes OUT/scale-0, OUT/scale-0.5, ...)."""
    if not root.is_dir():
        return
    for child in sorted(root.iterdir(), key=lambda p: p.name):
        if not child.is_dir():
            continue
        if (child / RUN_JSON).is_file():
            yield child  # a linked run too (never deleted through the link: see delete_run)
            continue
        if child.is_symlink():
            continue  # never walk into a linked folder that is not a run
        try:
            inner = sorted(child.iterdir(), key=lambda p: p.name)
        except OSError:
            continue
        yield from (g for g in inner if g.is_dir() and not g.is_symlink() and (g / RUN_JSON).is_file())


def _run_info(folder: Path, status: str) -> RunInfo:
    """The row of one run folder whose status is known (run.json re-read for its provenance)."""
    data: dict = {}
    if status != "broken":
        try:
            data = read_json(inside(folder.resolve(), RUN_JSON))
        except (RunError, OSError):
            status, data = "broken", {}

    def _str(key: str) -> str | None:
        v = data.get(key)
        return v if isinstance(v, str) else None

    def _int(key: str) -> int | None:
        v = data.get(key)
        return v if _is_int(v) else None

    return RunInfo(
        path=folder.resolve(),
        status=status,
        created=_str("created"),
        model=_str("model"),
        n_members=_int("n_members"),
        n_heldout=_int("n_heldout"),
    )


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """Run folders under ``root`` (default :func:`default_runs_root`), newest first: its children, and
    the runs inside a child folder that is not a run (a ``--lora-scale`` sweep's scale-* folders)."""
    base = Path(root).expanduser() if root is not None else default_runs_root()
    infos: list[RunInfo] = []
    for folder in _iter_run_dirs(base):
        status = run_status(folder)
        if status is None:
            continue
        infos.append(_run_info(folder, status))
    infos.sort(key=lambda r: r.created or "", reverse=True)
    return infos


# ----------------------------------------------------------------------------- deleting


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

    def walk_owned_dir(d: Path, rel: str, allowed: Callable[[str], bool] | None) -> None:
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


def _deletable_folder(path: str | Path) -> Path:
    """The run folder ``path`` names (its parent's links resolved), when it may be deleted: not
    itself a link, a folder, and an ldminv run (or the leftovers of a killed creation)."""
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
    leftover = status is None and (is_creation_leftover(folder) or is_lock_leftover(folder))
    if status is None and not leftover:
        raise RunError(f"{folder} is not an ldminv run folder (no ldminv run.json); not deleting it")
    # "broken" (an unreadable run.json) is deleted like any run: only if every entry is ldminv's
    return folder


def _remove_planned(folder: Path, *, foreign: str) -> None:
    """Remove what :func:`_deletion_plan` plans (the held lock file aside), or nothing when the
    folder holds foreign entries and ``foreign`` is "refuse"."""
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
    check_choice(foreign, "foreign", ("refuse", "delete"), error=RunError)
    # 1. a run folder, not a link
    folder = _deletable_folder(path)
    # 2. hold its lock, so that no writer starts meanwhile
    try:
        fd, flocked = take_lock(folder)
    except LockBusy as busy:
        raise RunError(
            f"run {folder} is being written by {describe_holder(busy.info)}; stop it before deleting"
        ) from None
    # 3. remove what ldminv owns (and, asked for, the rest), then the folder
    try:
        _remove_planned(folder, foreign=foreign)
    except OSError as exc:
        raise RunError(f"run folder {folder}: cannot delete ({exc})") from exc
    finally:
        release_lock(folder, fd, flocked, os.getpid())
    try:
        os.rmdir(folder)
    except OSError as exc:
        raise RunError(f"run folder {folder}: removed the run's files, but not the folder ({exc})") from exc
