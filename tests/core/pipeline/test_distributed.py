"""``torchrun --nproc-per-node 2 -m ldminv_core analyze``: the same arrays as one process.

Real launches (``python -m torch.distributed.run``, gloo on CPU, 2 processes) of the CLI on a
tiny random pipeline. Oracle: a single-process run of the same command. Tolerance: the arrays
agree to rtol 1e-5 / atol 1e-6 (the ranks compute the same batches as one process, seeded per
sample id; only the number of torch threads differs, which may reorder float sums).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ldminv_core.pipeline.distributed import RANKS_DIR, DistContext, RankLedger
from ldminv_core.errors import RunError
from ldminv_core.runs import Run, run_status

REPO = Path(__file__).resolve().parents[3]
ARGS = ["--attacks", "sima,pia,pfami", "--timesteps", "0:30:10", "--batch-size", "2", "--device", "cpu",
        "--influence", "hutchinson", "--probes", "4"]
RTOL, ATOL = 1e-5, 1e-6


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _cmd(model, dirs, out, *, procs: int) -> list[str]:
    cli = ["-m", "ldminv_core", "analyze", "--model", str(model), "--members", str(dirs[0]),
           "--heldout", str(dirs[1]), "--out", str(out), "--threads", "1", *ARGS]
    if procs == 1:
        return [sys.executable, *cli]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc-per-node", str(procs), *cli]


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    out = {rel: np.load(path / rel) for rel in ("latents.npy", "influence.npy")}
    for sub in ("residuals", "scores"):
        for f in sorted((path / sub).glob("*.npy")):
            out[f"{sub}/{f.name}"] = np.load(f)
    out["log_volume"] = pd.read_parquet(path / "samples.parquet")["log_volume"].to_numpy()
    return out


def _assert_close_runs(a: Path, b: Path) -> None:
    xa, xb = _arrays(a), _arrays(b)
    assert sorted(xa) == sorted(xb)
    for key in xa:
        assert xa[key].shape == xb[key].shape and xa[key].dtype == xb[key].dtype, key
        np.testing.assert_allclose(xa[key], xb[key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.fixture(scope="module")
def single_run(tiny_uncond_model, tiny_image_dirs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist") / "one"
    res = _run(_cmd(tiny_uncond_model, tiny_image_dirs, out, procs=1))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.mark.distributed
@pytest.mark.slow  # torchrun starts two processes; also out of `-m "not browser and not slow"`
def test_two_processes_give_the_single_process_arrays(single_run, tiny_uncond_model, tiny_image_dirs, tmp_path):
    out = tmp_path / "two"
    res = _run(_cmd(tiny_uncond_model, tiny_image_dirs, out, procs=2))
    assert res.returncode == 0, res.stderr[-3000:]
    assert run_status(out) == "complete"
    _assert_close_runs(single_run, out)
    Run.open(out)  # the run contract's reader accepts it
    data = json.loads((out / "run.json").read_text())
    dist = data["distributed"]
    assert dist["world_size"] == 2 and [r["rank"] for r in dist["ranks"]] == [0, 1]
    n_batches = -(-len(pd.read_parquet(out / "samples.parquet")) // 2)
    for stage in ("sima", "pia", "geometry", "pfami"):
        counts = [r["batches"].get(stage, 0) for r in dist["ranks"]]
        assert sum(counts) == n_batches and min(counts) > 0, (stage, counts)  # both ranks worked
    assert not (out / "_work").exists()
    assert "run complete" in res.stdout and res.stdout.count("run complete") == 1  # rank 0 alone reports


def _start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, Path]:
    """``cmd`` started with its output in the file ``log`` (never a pipe nobody reads while the test
    waits: a full pipe would block the ranks' progress output and with it the whole run)."""
    with log.open("w") as sink:
        proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, text=True)
    return proc, log


def _pid_of_rank(out: Path, rank: int, *, timeout: float, proc: subprocess.Popen, log: Path) -> int:
    """The pid rank ``rank`` recorded with its first batch; fails at once (with torchrun's output)
    when the launcher exits first, and after ``timeout`` seconds otherwise."""
    path = out / RANKS_DIR / f"rank-{rank}-of-2.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(json.loads(path.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            if proc.poll() is not None:
                raise AssertionError(f"torchrun exited ({proc.returncode}) before {path} appeared:\n"
                                     f"{log.read_text()[-3000:]}")
            time.sleep(0.005)
    raise AssertionError(f"{path} never appeared in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.mark.distributed
@pytest.mark.slow  # torchrun starts two processes; also out of `-m "not browser and not slow"`
def test_killed_rank_leaves_the_run_incomplete_and_resumes(single_run, tiny_uncond_model, tiny_image_dirs, tmp_path):
    out = tmp_path / "killed"
    proc, log = _start(_cmd(tiny_uncond_model, tiny_image_dirs, out, procs=2), tmp_path / "torchrun.log")
    try:
        pid = _pid_of_rank(out, 1, timeout=240, proc=proc, log=log)  # rank 1 recorded its first batch
        os.kill(pid, signal.SIGSTOP)  # frozen at once: rank 0 cannot finish without it
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, log.read_text()[-2000:]
    assert run_status(out) != "complete"  # never complete while a rank is missing
    data = json.loads((out / "run.json").read_text())
    assert not all(data["stages"].get(s) for s in ("sima", "pia", "geometry", "pfami"))
    # resume with the same command: every rank continues from its own records
    res = _run(_cmd(tiny_uncond_model, tiny_image_dirs, out, procs=2))
    assert res.returncode == 0, res.stderr[-3000:]
    assert run_status(out) == "complete"
    _assert_close_runs(single_run, out)


@pytest.mark.distributed
@pytest.mark.slow  # torchrun starts two processes; also out of `-m "not browser and not slow"`
def test_single_process_resumes_a_distributed_run(single_run, tiny_uncond_model, tiny_image_dirs, tmp_path):
    """A run begun by 2 processes can be finished by one (rank records are honoured)."""
    out = tmp_path / "mixed"
    proc, log = _start(_cmd(tiny_uncond_model, tiny_image_dirs, out, procs=2), tmp_path / "torchrun.log")
    try:
        pid = _pid_of_rank(out, 1, timeout=240, proc=proc, log=log)
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_status(out) != "complete"
    res = _run(_cmd(tiny_uncond_model, tiny_image_dirs, out, procs=1))
    assert res.returncode == 0, res.stderr[-3000:]
    assert run_status(out) == "complete"
    _assert_close_runs(single_run, out)


def test_ledger_reports_missing_batches_and_checks_its_files(tmp_path):
    ctx0, ctx1 = DistContext(rank=0, world_size=2), DistContext(rank=1, world_size=2)
    a = RankLedger(tmp_path, ctx0, batch_size=4)
    b = RankLedger(tmp_path, ctx1, batch_size=4)
    assert not RankLedger.present(tmp_path)
    a.record("sima", 0, 0.1)
    b.record("sima", 1, 0.1)
    assert RankLedger.present(tmp_path)
    assert a.done("sima") == {0, 1} and a.done("pia") == set()
    assert [i for i in range(4) if ctx1.owns(i)] == [1, 3]
    with pytest.raises(RunError, match="batch_size"):
        RankLedger(tmp_path, ctx0, batch_size=8).done("sima")
    (tmp_path / RANKS_DIR / "rank-1-of-2.json").write_text("{not json")
    with pytest.raises(RunError, match="rank-1-of-2.json"):
        a.done("sima")


def test_environment_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(RunError, match="RANK=5"):
        DistContext.from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(RunError, match="RANK"):
        DistContext.from_env()
