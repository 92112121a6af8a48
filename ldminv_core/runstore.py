"""Moved to ldminv_core.runs; this module only re-exports it for one release.

The run folder is now the package :mod:`ldminv_core.runs` (layout, schema, files, lock, writer,
reader, catalog); the unmasked scores of a run are :func:`ldminv_core.evaluation.run_scores.run_scores`.
"""
from __future__ import annotations

from .runs import (  # noqa: F401
    ATTACK_KINDS,
    CACHE_DIR,
    INFLUENCE,
    KNOWN_ATTACKS,
    LATENTS,
    LOCK,
    OWNED_DIRS,
    OWNED_FILES,
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    RUN_JSON,
    SAMPLE_COLUMNS,
    SAMPLES,
    SPLITS,
    Run,
    RunInfo,
    RunWriter,
    StageNotReadyError,
    default_runs_root,
    delete_run,
    list_runs,
    load_npy,
    load_npz,
    planned_stages,
    run_status,
)
from .runs.catalog import _deletion_plan, _iter_run_dirs  # noqa: F401
from .runs.files import _NPY_LOCK, _kind  # noqa: F401
from .runs.files import atomic_write_bytes as _atomic_write_bytes  # noqa: F401
from .runs.files import inside as _inside  # noqa: F401
from .runs.files import jsonable as _jsonable  # noqa: F401
from .runs.files import now as _now  # noqa: F401
from .runs.files import npy_header as _npy_header  # noqa: F401
from .runs.files import read_json as _read_json  # noqa: F401
from .runs.files import write_json as _write_json  # noqa: F401
from .runs.files import write_parquet as _write_parquet  # noqa: F401
from .runs.layout import _SCRATCH_DIRS, _TMP_RE, _owned_tmp  # noqa: F401
from .runs.lock import (  # noqa: F401
    _FLOCK_UNSUPPORTED,
    _LOCK_RETRY_S,
    _boot_id,
    _fcntl,
    _lock_info_alive,
    _lock_owner,
    _lock_payload,
    _open_lock_file,
    _open_lock_for_reading,
    _pid_alive,
    _proc_start_time,
    _read_lock_info,
)
from .runs.lock import LockBusy as _LockBusy  # noqa: F401
from .runs.lock import describe_holder as _describe_holder  # noqa: F401
from .runs.lock import is_creation_leftover as _is_creation_leftover  # noqa: F401
from .runs.lock import is_lock_leftover as _is_lock_leftover  # noqa: F401
from .runs.lock import lock_holder as _lock_holder  # noqa: F401
from .runs.lock import release_lock as _release_lock  # noqa: F401
from .runs.lock import take_lock as _take_lock  # noqa: F401
from .runs.reader import _scan_nonfinite_rows as _nonfinite_rows  # noqa: F401
from .runs.schema import _is_int, _is_run_json, _type_name  # noqa: F401
from .runs.schema import check_log_volume as _check_log_volume  # noqa: F401
from .runs.schema import check_samples as _check_samples  # noqa: F401
from .runs.schema import first_ids as _first_ids  # noqa: F401
from .runs.schema import validate_run_json as _validate_run_json  # noqa: F401
from .runs.writer import _OPEN_WRITERS  # noqa: F401

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
