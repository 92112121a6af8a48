"""Bad run folders: crafted or damaged run.json, arrays, log-volumes, locks and deletions.

Every case asserts the exact error class and that the message names the culprit (the file, and
the key / column / sample ids). Run folders are written with ``tests/synthetic_runs.write_run``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ldminv_core.runs import layout as run_layout
from ldminv_core.runs import lock as run_lock
from ldminv_core.errors import NonFiniteError, NonFiniteRunError, RunError
from ldminv_core.runs import Run, RunWriter, delete_run, list_runs, run_status

from synthetic_runs import write_run

N = 8
LAT = (2, 2, 2)
TIMESTEPS = [0, 10]


def _make(folder: Path, *, dtype=np.float32, log_volume=None) -> Path:
    rng = np.random.default_rng(0)
    write_run(
        folder,
        terms=rng.random((N, len(TIMESTEPS), *LAT)).astype(dtype),
        influence=rng.normal(size=(N, *LAT)).astype(np.float32),
        log_volume=np.linspace(-1, 1, N) if log_volume is None else log_volume,
        labels=np.array([1, 0] * (N // 2)),
        timesteps=TIMESTEPS,
        pfami=rng.normal(size=N).astype(np.float32),
    )
    return folder


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return _make(tmp_path / "run")


def _edit_json(folder: Path, edit) -> None:
    path = folder / "run.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _open_error(folder: Path, cls=RunError) -> str:
    with pytest.raises(cls) as err:
        Run.open(folder)
    assert type(err.value) is cls, type(err.value)
    return str(err.value)


def _set_samples(folder: Path, **columns) -> None:
    samples = pd.read_parquet(folder / "samples.parquet")
    for k, v in columns.items():
        samples[k] = v
    samples.to_parquet(folder / "samples.parquet", index=False)


def test_known_attacks_match_the_attacks_module():
    from ldminv_core.attacks import ATTACKS
    from ldminv_core.choices import ATTACK_NAMES

    assert run_layout.KNOWN_ATTACKS == tuple(ATTACKS) == ATTACK_NAMES
    assert run_layout.KNOWN_ATTACKS is ATTACK_NAMES  # one definition, not a copy


# ----------------------------------------------------------------------------- run.json fields


def _rename_attack(new: str):
    def edit(d):
        d["attacks"] = {new: d["attacks"]["sima"], "pfami": d["attacks"]["pfami"]}
        d["stages"] = {**d.get("stages", {}), new: True}
    return edit


BAD_RUN_JSON = [
    ("traversal attack name", _rename_attack("../../outside"), "'../../outside'"),
    ("absolute attack name", _rename_attack("/etc/passwd"), "'/etc/passwd'"),
    ("unknown attack name", _rename_attack("sima2"), "'sima2'"),
    ("attacks a list", lambda d: d.update(attacks=["sima", "pfami"]), "key 'attacks'"),
    ("attacks empty", lambda d: d.update(attacks={}), "key 'attacks'"),
    ("attack spec a string", lambda d: d["attacks"].update(sima="terms"), "key 'attacks.sima'"),
    ("unknown kind", lambda d: d["attacks"]["sima"].update(kind="bogus"), "key 'attacks.sima.kind'"),
    ("timesteps strings", lambda d: d["attacks"]["sima"].update(timesteps=["0", "10"]), "key 'attacks.sima.timesteps'"),
    ("timesteps booleans", lambda d: d["attacks"]["sima"].update(timesteps=[True, False]), "key 'attacks.sima.timesteps'"),
    ("timesteps empty", lambda d: d["attacks"]["sima"].update(timesteps=[]), "key 'attacks.sima.timesteps'"),
    ("timesteps a number", lambda d: d["attacks"]["sima"].update(timesteps=10), "key 'attacks.sima.timesteps'"),
    ("pfami timesteps floats", lambda d: d["attacks"]["pfami"].update(timesteps=[0.5]), "key 'attacks.pfami.timesteps'"),
    ("dtype not a string", lambda d: d["attacks"]["sima"].update(dtype=32), "key 'attacks.sima.dtype'"),
    ("latent_shape two ints", lambda d: d.update(latent_shape=[2, 2]), "key 'latent_shape'"),
    ("latent_shape zero", lambda d: d.update(latent_shape=[2, 0, 2]), "key 'latent_shape'"),
    ("latent_shape negative", lambda d: d.update(latent_shape=[2, -2, 2]), "key 'latent_shape'"),
    ("latent_shape strings", lambda d: d.update(latent_shape=["2", "2", "2"]), "key 'latent_shape'"),
    ("latent_shape missing", lambda d: d.pop("latent_shape"), "key 'latent_shape' is missing"),
    ("attacks missing", lambda d: d.pop("attacks"), "key 'attacks' is missing"),
    ("stages a list", lambda d: d.update(stages=["encode"]), "key 'stages'"),
    ("stage value a string", lambda d: d["stages"].update(encode="yes"), "key 'stages.encode'"),
    ("status a number", lambda d: d.update(status=1), "key 'status'"),
]


@pytest.mark.parametrize("edit,culprit", [c[1:] for c in BAD_RUN_JSON], ids=[c[0] for c in BAD_RUN_JSON])
def test_bad_run_json_field_is_named(run_dir, edit, culprit):
    _edit_json(run_dir, edit)
    msg = _open_error(run_dir)
    assert "run.json" in msg and culprit in msg, msg


def test_traversal_attack_name_never_reads_outside(tmp_path, run_dir):
    # the file the crafted name points at exists: it must still not be read
    outside = tmp_path / "outside.npy"
    np.save(outside, np.zeros((N, 2, *LAT), np.float32))
    _edit_json(run_dir, _rename_attack("../../outside"))
    msg = _open_error(run_dir)
    assert "unknown attack name '../../outside'" in msg
    from ldminv_core.report import build_report

    with pytest.raises(RunError, match="outside"):
        build_report(run_dir)


def test_run_json_not_json(run_dir):
    (run_dir / "run.json").write_text("{not json")
    msg = _open_error(run_dir)
    assert "run.json" in msg and "cannot read run settings" in msg


def test_run_json_an_array(run_dir):
    (run_dir / "run.json").write_text("[1, 2]")
    msg = _open_error(run_dir)
    assert "run.json" in msg and "expected a JSON object, got list" in msg


# ----------------------------------------------------------------------------- arrays


def test_missing_latents(run_dir):
    (run_dir / "latents.npy").unlink()
    assert "latents.npy: file is missing" in _open_error(run_dir)


def test_missing_samples_parquet(run_dir):
    (run_dir / "samples.parquet").unlink()
    assert "samples.parquet: file is missing" in _open_error(run_dir)


def test_influence_of_wrong_shape(run_dir):
    np.save(run_dir / "influence.npy", np.zeros((N, 2, 2), np.float32))
    msg = _open_error(run_dir)
    assert "influence.npy" in msg and "(8, 2, 2)" in msg and "(8, 2, 2, 2)" in msg


def test_pfami_scores_of_wrong_shape(run_dir):
    np.save(run_dir / "scores" / "pfami.npy", np.zeros((N - 1,), np.float32))
    msg = _open_error(run_dir)
    assert "pfami.npy" in msg and "(7,)" in msg and "(8,)" in msg


def test_residuals_of_integer_dtype(run_dir):
    np.save(run_dir / "residuals" / "sima.npy", np.zeros((N, 2, *LAT), np.int32))
    msg = _open_error(run_dir)
    assert "sima.npy" in msg and "dtype int32" in msg


def test_residuals_dtype_disagrees_with_run_json(run_dir):
    np.save(run_dir / "residuals" / "sima.npy", np.zeros((N, 2, *LAT), np.float16))
    msg = _open_error(run_dir)
    assert "sima.npy" in msg and "float16" in msg and "'attacks.sima.dtype'" in msg


def test_latents_not_an_npy_file(run_dir):
    (run_dir / "latents.npy").write_bytes(b"garbage, not numpy")
    msg = _open_error(run_dir)
    assert "latents.npy" in msg and "not a readable .npy array" in msg


def test_truncated_influence(run_dir):
    raw = (run_dir / "influence.npy").read_bytes()
    (run_dir / "influence.npy").write_bytes(raw[: len(raw) - 16])
    msg = _open_error(run_dir)
    assert "influence.npy" in msg and "not a readable .npy array" in msg


def test_array_path_is_a_folder(run_dir):
    (run_dir / "residuals" / "sima.npy").unlink()
    (run_dir / "residuals" / "sima.npy").mkdir()
    msg = _open_error(run_dir)
    assert "sima.npy" in msg and "expected a regular file, found a folder" in msg


def test_array_path_is_a_fifo(run_dir):
    (run_dir / "latents.npy").unlink()
    os.mkfifo(run_dir / "latents.npy")
    msg = _open_error(run_dir)  # must not hang reading the pipe
    assert "latents.npy" in msg and "named pipe" in msg


def test_symlinked_array_pointing_outside(tmp_path, run_dir):
    outside = tmp_path / "secret.npy"
    np.save(outside, np.zeros((N, *LAT), np.float32))
    (run_dir / "latents.npy").unlink()
    (run_dir / "latents.npy").symlink_to(outside)
    msg = _open_error(run_dir)
    assert "latents.npy (a symbolic link)" in msg and "outside the run folder" in msg and str(outside) in msg


def test_symlinked_residuals_folder_pointing_outside(tmp_path, run_dir):
    shutil.move(run_dir / "residuals", tmp_path / "elsewhere")
    (run_dir / "residuals").symlink_to(tmp_path / "elsewhere")
    msg = _open_error(run_dir)
    assert "residuals/sima.npy" in msg and "outside the run folder" in msg


def test_symlinked_run_json_pointing_outside(tmp_path, run_dir):
    shutil.move(run_dir / "run.json", tmp_path / "run.json")
    (run_dir / "run.json").symlink_to(tmp_path / "run.json")
    msg = _open_error(run_dir)
    assert "run.json (a symbolic link)" in msg and "outside the run folder" in msg
    assert run_status(run_dir) == "broken"


def test_symlinked_samples_pointing_outside(tmp_path, run_dir):
    shutil.move(run_dir / "samples.parquet", tmp_path / "s.parquet")
    (run_dir / "samples.parquet").symlink_to(tmp_path / "s.parquet")
    msg = _open_error(run_dir)
    assert "samples.parquet (a symbolic link)" in msg and "outside the run folder" in msg


def test_symlink_inside_the_folder_is_fine(run_dir):
    shutil.move(run_dir / "latents.npy", run_dir / "_work_latents.npy")
    (run_dir / "latents.npy").symlink_to("_work_latents.npy")
    assert Run.open(run_dir).latents.shape == (N, *LAT)


# ----------------------------------------------------------------------------- log-volume


def test_all_nan_log_volume(run_dir):
    _set_samples(run_dir, log_volume=np.full(N, np.nan))
    msg = _open_error(run_dir, NonFiniteRunError)
    assert "samples.parquet" in msg and "column 'log_volume'" in msg
    assert "all 8 values are NaN: the geometry stage wrote no log-volume" in msg


def test_partly_nonfinite_log_volume_names_samples(run_dir):
    lv = np.linspace(-1, 1, N)
    lv[1], lv[5] = np.nan, np.inf
    _set_samples(run_dir, log_volume=lv)
    msg = _open_error(run_dir, NonFiniteRunError)
    assert "samples.parquet" in msg and "'log_volume'" in msg and "2 of 8" in msg and "sample ids 1, 5" in msg
    assert "img_1.png" in msg


def test_log_volume_of_strings(run_dir):
    _set_samples(run_dir, log_volume=["big"] * N)
    msg = _open_error(run_dir)
    assert "samples.parquet" in msg and "column 'log_volume'" in msg and "expected numbers" in msg


def test_nan_log_volume_before_geometry_is_fine(run_dir):
    _set_samples(run_dir, log_volume=np.full(N, np.nan))
    _edit_json(run_dir, lambda d: d.update(status="running", stages={"encode": True, "sima": True}))
    run = Run.open(run_dir, partial=True)
    assert run.partial and not run.has_geometry


# ----------------------------------------------------------------------------- NaN in arrays


def test_nan_in_residuals_is_named_with_sample_ids(run_dir):
    terms = np.load(run_dir / "residuals" / "sima.npy")
    terms[3, 1, 0, 0, 0] = np.nan
    terms[6, 0, 1, 1, 1] = np.inf
    np.save(run_dir / "residuals" / "sima.npy", terms)
    run = Run.open(run_dir)  # lazy: opening does not scan
    report = run.nonfinite_report()
    key = str(run_dir.resolve() / "residuals" / "sima.npy")
    assert report == {key: {"count": 2, "sample_ids": [3, 6], "paths": [str(run_dir / "img_3.png"), str(run_dir / "img_6.png")]}}
    for call in (lambda: run.check_finite("sima"), lambda: run.terms("sima", validate=True), lambda: run.check_finite()):
        with pytest.raises(NonFiniteRunError) as err:
            call()
        msg = str(err.value)
        assert "residuals/sima.npy" in msg and "2 of 8 samples" in msg and "sample ids 3, 6" in msg
    assert isinstance(err.value, NonFiniteError) and isinstance(err.value, RunError)
    run.check_finite("pfami")  # the other attack is clean
    from ldminv_core.report import build_report

    with pytest.raises(NonFiniteRunError, match=r"residuals/sima.npy: 2 of 8 samples .* sample ids 3, 6"):
        build_report(run_dir, n_boot=10)


def test_inf_in_influence_is_named(run_dir):
    infl = np.load(run_dir / "influence.npy")
    infl[7, 0, 0, 0] = -np.inf
    np.save(run_dir / "influence.npy", infl)
    run = Run.open(run_dir)
    with pytest.raises(NonFiniteRunError) as err:
        run.check_finite("sima")
    assert "influence.npy" in str(err.value) and "sample ids 7" in str(err.value)


def test_nan_in_pfami_scores_is_named(run_dir):
    np.save(run_dir / "scores" / "pfami.npy", np.array([0, 1, np.nan, 2, 3, 4, 5, 6], np.float32))
    run = Run.open(run_dir)
    with pytest.raises(NonFiniteRunError) as err:
        run.stored_scores("pfami", validate=True)
    assert "scores/pfami.npy" in str(err.value) and "sample ids 2" in str(err.value)
    assert list(run.nonfinite_report(latents=False)) == [str(run_dir.resolve() / "scores" / "pfami.npy")]


def test_nan_in_latents_is_reported(run_dir):
    lat = np.load(run_dir / "latents.npy")
    lat[0] = np.nan
    np.save(run_dir / "latents.npy", lat)
    run = Run.open(run_dir)
    run.check_finite()  # the evaluation does not read latents
    with pytest.raises(NonFiniteRunError, match=r"latents.npy: 1 of 8 samples .* sample ids 0"):
        run.check_finite(latents=True)


def test_large_run_opens_fast(tmp_path):
    # 5000 x 16384 (4x64x64) with one timestep: sparse files, never scanned by open
    n, lat = 5000, (4, 64, 64)
    folder = tmp_path / "big"
    samples = pd.DataFrame({"sample_id": np.arange(n), "path": [f"/d/{i}.png" for i in range(n)],
                            "split": ["member", "heldout"] * (n // 2), "caption": [""] * n,
                            "log_volume": np.linspace(0, 1, n)})
    w = RunWriter(folder, settings={}, samples=samples)
    w.update(latent_shape=list(lat), attacks={"sima": {"kind": "terms", "timesteps": [0], "dtype": "float16"}})
    for rel, shape, dt in (("latents.npy", (n, *lat), np.float32), ("influence.npy", (n, *lat), np.float32),
                           ("residuals/sima.npy", (n, 1, *lat), np.float16)):
        del_ = w.open_array(rel, shape, dt)
        del del_
    w.finish()
    Run.open(folder)  # warm the imports
    t0 = time.perf_counter()
    run = Run.open(folder)
    assert time.perf_counter() - t0 < 0.5
    assert run.terms("sima").shape == (n, 1, *lat)


# ----------------------------------------------------------------------------- locks


def _unfinished(folder: Path) -> Path:
    samples = pd.DataFrame({"sample_id": np.arange(4), "path": [f"/d/{i}.png" for i in range(4)],
                            "split": ["member", "member", "heldout", "heldout"], "caption": [""] * 4,
                            "log_volume": np.full(4, np.nan)})
    RunWriter(folder, settings={"a": 1}, samples=samples).close()
    return folder


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder: Path, **info) -> None:
    base = {"pid": os.getpid(), "host": socket.gethostname(), "start_time": run_lock._proc_start_time(os.getpid()),
            "boot_id": run_lock._boot_id(), "since": "2020-01-01T00:00:00+00:00"}
    (folder / "run.lock").write_text(json.dumps({**base, **info}))


def test_stale_lock_of_a_dead_process(tmp_path):
    folder = _unfinished(tmp_path / "r")
    _write_lock(folder, pid=_dead_pid())
    assert run_status(folder) == "unfinished"
    w = RunWriter(folder, settings={"a": 1})
    assert w.resumed and run_status(folder) == "running"
    w.close()
    assert run_status(folder) == "unfinished" and not (folder / "run.lock").exists()


def test_lock_with_a_reused_pid(tmp_path):
    folder = _unfinished(tmp_path / "r")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # a live unrelated process whose pid the lock records, with another start time
        _write_lock(folder, pid=live.pid, start_time="1")
        info = json.loads((folder / "run.lock").read_text())
        assert not run_lock._lock_info_alive(info)
        assert run_lock._lock_info_alive({**info, "start_time": run_lock._proc_start_time(live.pid)})
        assert run_status(folder) == "unfinished"
        RunWriter(folder, settings={"a": 1}).close()
    finally:
        live.kill()
        live.wait()


def test_lock_fallback_without_flock(tmp_path, monkeypatch):
    folder = _unfinished(tmp_path / "r")
    monkeypatch.setattr(run_lock, "_fcntl", None)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _write_lock(folder, pid=live.pid, start_time="1")  # reused pid: stale
        assert run_status(folder) == "unfinished"
        w = RunWriter(folder, settings={"a": 1})
        assert run_status(folder) == "running"
        w.close()
        _write_lock(folder, pid=live.pid, start_time=run_lock._proc_start_time(live.pid))  # really live
        assert run_status(folder) == "running"
        with pytest.raises(RunError) as err:
            RunWriter(folder, settings={"a": 1})
        assert f"process {live.pid}" in str(err.value) and "--break-lock" in str(err.value)
        RunWriter(folder, settings={"a": 1}, force_unlock=True).close()
    finally:
        live.kill()
        live.wait()


def test_lock_file_is_a_symlink(tmp_path):
    folder = _unfinished(tmp_path / "r")
    victim = tmp_path / "victim.txt"
    victim.write_text("do not truncate")
    (folder / "run.lock").symlink_to(victim)
    with pytest.raises(RunError) as err:
        RunWriter(folder, settings={"a": 1})
    assert "run.lock" in str(err.value) and "symbolic link" in str(err.value)
    assert victim.read_text() == "do not truncate"


_HOLD = """
import sys, time
sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
from ldminv_core.runs import RunWriter
w = RunWriter({folder!r}, settings={{"a": 1}})
print("held", flush=True)
time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    code = _HOLD.format(tests=str(Path(__file__).resolve().parents[2]), root=str(Path(__file__).resolve().parents[3]), folder=str(folder))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_held_by_another_process_and_force_unlock(tmp_path):
    folder = _unfinished(tmp_path / "r")
    proc = _holder(folder)
    try:
        assert run_status(folder) == "running"
        with pytest.raises(RunError) as err:
            RunWriter(folder, settings={"a": 1})
        assert f"being written by process {proc.pid}" in str(err.value) and "run.lock" in str(err.value)
        with pytest.raises(RunError, match=f"being written by process {proc.pid}"):
            delete_run(folder)
        w = RunWriter(folder, settings={"a": 1}, force_unlock=True)
        assert w.resumed
        w.close()
    finally:
        proc.kill()
        proc.wait()
    assert run_status(folder) == "unfinished"  # a killed holder leaves no stale lock


def _leftover_samples(folder: Path) -> pd.DataFrame:
    return pd.DataFrame({"sample_id": np.arange(2), "path": ["/d/a.png", "/d/b.png"], "split": ["member", "heldout"],
                         "caption": ["", ""], "log_volume": [np.nan, np.nan]})


def test_folder_with_only_lock_and_samples_is_recreated(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write_lock(folder, pid=_dead_pid())
    _leftover_samples(folder).to_parquet(folder / "samples.parquet")
    (folder / ".run.json.abc123.tmp").write_text("{")
    assert run_status(folder) is None
    w = RunWriter(folder, settings={"b": 2}, samples=_leftover_samples(folder))
    assert not w.resumed and not (folder / ".run.json.abc123.tmp").exists()
    w.close()
    assert run_status(folder) == "unfinished"


def test_folder_with_only_a_lock_is_recreated(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write_lock(folder, pid=_dead_pid())
    RunWriter(folder, settings={}, samples=_leftover_samples(folder)).close()
    assert run_status(folder) == "unfinished"


def test_lock_leftover_can_be_deleted(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write_lock(folder, pid=_dead_pid())
    _leftover_samples(folder).to_parquet(folder / "samples.parquet")
    delete_run(folder)
    assert not folder.exists()


def test_run_json_without_samples_and_no_work_is_recreated(tmp_path):
    folder = _unfinished(tmp_path / "r")
    (folder / "samples.parquet").unlink()
    assert run_status(folder) is None
    w = RunWriter(folder, settings={"other": True}, samples=_leftover_samples(folder))  # other settings: fine
    assert not w.resumed and w.data["config"] == {"other": True}
    w.close()


def test_run_json_without_samples_but_work_done(tmp_path):
    folder = _unfinished(tmp_path / "r")
    _edit_json(folder, lambda d: d.update(stages={"encode": True}))
    (folder / "samples.parquet").unlink()
    assert run_status(folder) == "unfinished"
    with pytest.raises(RunError) as err:
        RunWriter(folder, settings={"a": 1})
    assert "samples.parquet: file is missing" in str(err.value) and "encode" in str(err.value)
    assert not (folder / "run.lock").exists()
    delete_run(folder)
    assert not folder.exists()


def test_lock_leftover_with_a_foreign_file_is_refused(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    _write_lock(folder, pid=_dead_pid())
    (folder / "thesis.tex").write_text("x")
    with pytest.raises(RunError) as err:
        RunWriter(folder, settings={}, samples=_leftover_samples(folder))
    assert "not empty" in str(err.value) and "thesis.tex" in str(err.value)
    with pytest.raises(RunError, match="not an ldminv run folder"):
        delete_run(folder)
    assert (folder / "thesis.tex").read_text() == "x"


def _resume_at_once(folder: str, barrier, results, release) -> None:
    try:
        barrier.wait(timeout=20)
        w = RunWriter(folder, settings={"a": 1})
    except RunError as exc:
        results.put(("refused", os.getpid(), str(exc)))
        return
    results.put(("proceeded", os.getpid(), ""))
    release.wait(timeout=20)
    w.close()


@pytest.mark.slow
def test_two_writers_resuming_at_the_same_instant(tmp_path):
    ctx = mp.get_context("fork")
    folder = _unfinished(tmp_path / "r")
    for trial in range(10):
        barrier, results, release = ctx.Barrier(2), ctx.Queue(), ctx.Event()
        procs = [ctx.Process(target=_resume_at_once, args=(str(folder), barrier, results, release)) for _ in range(2)]
        for p in procs:
            p.start()
        got = sorted([results.get(timeout=30), results.get(timeout=30)])
        release.set()
        for p in procs:
            p.join(timeout=30)
        kinds = [g[0] for g in got]
        assert kinds == ["proceeded", "refused"], (trial, got)
        winner = got[0][1]
        assert f"being written by process {winner}" in got[1][2], (trial, got)
        assert run_status(folder) == "unfinished"


def test_in_process_second_writer_is_refused(tmp_path):
    folder = _unfinished(tmp_path / "r")
    w = RunWriter(folder, settings={"a": 1})
    with pytest.raises(RunError, match="this process: another RunWriter is open"):
        RunWriter(folder, settings={"a": 1})
    w.close()
    RunWriter(folder, settings={"a": 1}).close()


# ----------------------------------------------------------------------------- deleting


def test_delete_refuses_a_symlinked_run_folder(tmp_path, run_dir):
    link = tmp_path / "link"
    link.symlink_to(run_dir)
    with pytest.raises(RunError) as err:
        delete_run(link)
    assert str(link) in str(err.value) and "symbolic link" in str(err.value)
    assert Run.open(run_dir).latents.shape == (N, *LAT) and link.is_symlink()


def test_delete_refuses_foreign_files_and_names_them(run_dir):
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "residuals" / "extra.bin").write_bytes(b"x")
    (run_dir / "photos").mkdir()
    with pytest.raises(RunError) as err:
        delete_run(run_dir)
    msg = str(err.value)
    assert "notes.txt" in msg and "residuals/extra.bin" in msg and "photos/" in msg and "not deleting anything" in msg
    assert Run.open(run_dir).latents.shape == (N, *LAT)
    delete_run(run_dir, foreign="delete")
    assert not run_dir.exists()


def test_delete_names_a_bad_foreign_option(run_dir):
    with pytest.raises(RunError, match=r"^foreign: expected one of \('refuse', 'delete'\), got 'maybe' \(str\)$"):
        delete_run(run_dir, foreign="maybe")
    assert Run.open(run_dir).latents.shape == (N, *LAT)


def test_delete_unlinks_symlinks_never_following_them(tmp_path, run_dir):
    outside_file = tmp_path / "keep.npy"
    np.save(outside_file, np.ones(3))
    outside_dir = tmp_path / "keep_dir"
    outside_dir.mkdir()
    (outside_dir / "precious.txt").write_text("keep")
    (run_dir / "latents.npy").unlink()
    (run_dir / "latents.npy").symlink_to(outside_file)
    (run_dir / "_work").mkdir()
    (run_dir / "_work" / "log_volume.npy").write_bytes(b"x")
    (run_dir / "_work" / "escape").symlink_to(outside_dir)
    (run_dir / "umap.npy").write_bytes(b"x")
    (run_dir / "umap.json").write_text("{}")
    (run_dir / ".umap.npy.a1b2c3.tmp").write_bytes(b"x")
    (run_dir / "residuals" / ".sima.npy.zz9.tmp").write_bytes(b"x")
    delete_run(run_dir)
    assert not run_dir.exists()
    assert np.load(outside_file).tolist() == [1, 1, 1] and (outside_dir / "precious.txt").read_text() == "keep"


def test_delete_refuses_a_foreign_symlink(tmp_path, run_dir):
    (run_dir / "home").symlink_to(tmp_path)
    with pytest.raises(RunError, match=r"1 entry ldminv does not own \(home\)"):
        delete_run(run_dir)
    assert (run_dir / "run.json").is_file()
    delete_run(run_dir, foreign="delete")
    assert not run_dir.exists() and tmp_path.is_dir()


def test_delete_refuses_a_non_run_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(RunError, match="not an ldminv run folder"):
        delete_run(folder)
    with pytest.raises(RunError, match="does not exist"):
        delete_run(tmp_path / "nothing")


def test_list_runs_ignores_bad_field_types(tmp_path):
    folder = _make(tmp_path / "a")
    _edit_json(folder, lambda d: d.update(created=["x"], model=3, n_members="many"))
    (info,) = list_runs(tmp_path)
    assert (info.created, info.model, info.n_members) == (None, None, None)
