"""Attack stages computed on several worker threads (``AnalyzeConfig.workers``,
ldminv_core/pipeline/workers.py).

Oracle: a one-worker run of the same settings; the arrays must agree bit for bit. The batch loop
is also driven directly with a recording writer, to check that run.json's counter never passes a
batch whose rows are not written, even when a later batch finishes first.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ldminv_core.cli.main import main
from ldminv_core.errors import LdminvError
from ldminv_core.pipeline import rows as rows_module
from ldminv_core.pipeline import stages as stages_module
from ldminv_core.pipeline.batches import AnalysisCancelled, _Stage
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.pipeline.workers import check_workers, resolve_workers, run_batches_ordered
from ldminv_core.runs import run_status

ALL_ATTACKS = "sima,pia,loss,secmi,pfami"
BATCH = 4  # 16 images: 4 batches per stage, so two workers really overlap


def _config(model, dirs, out, **kw) -> AnalyzeConfig:
    base = dict(attacks=ALL_ATTACKS, timesteps="0:30:10", batch_size=BATCH, device="cpu")
    base.update(kw)
    return AnalyzeConfig(model=str(model), members=str(dirs[0]), heldout=str(dirs[1]), out=str(out), **base)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """The latents and every attack's array. Not the geometry: it runs one batch at a time whatever
    the workers, by paths its cost model picks by timing them on this machine (so two runs on a busy
    machine may take other paths, equal to float rounding)."""
    out = {"latents.npy": np.load(path / "latents.npy")}
    for sub in ("residuals", "scores"):
        for f in sorted((path / sub).glob("*.npy")):
            out[f"{sub}/{f.name}"] = np.load(f)
    return out


def _assert_bit_identical(a: Path, b: Path) -> None:
    xa, xb = _arrays(a), _arrays(b)
    assert sorted(xa) == sorted(xb)
    assert {k for k in xa if k.startswith(("residuals/", "scores/"))} == {
        "residuals/sima.npy", "residuals/pia.npy", "residuals/loss.npy", "residuals/secmi.npy", "scores/pfami.npy"}
    for key in xa:
        assert xa[key].dtype == xb[key].dtype, key
        assert np.array_equal(xa[key], xb[key]), f"{key} differs"


#: The process' intra-op threads during these runs. A worker gets the process' threads divided
#: among the workers (at least 1); float sums may depend on the intra-op thread count, so the
#: one-worker oracle runs at the threads each of two workers gets: here 1 in both.
THREADS = 1


@pytest.fixture(autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_worker_run(tmp_path_factory, tiny_uncond_model, tiny_image_dirs) -> Path:
    out = tmp_path_factory.mktemp("workers") / "one"
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        return run_analysis(_config(tiny_uncond_model, tiny_image_dirs, out, workers=1))
    finally:
        torch.set_num_threads(before)


def test_two_workers_give_the_one_worker_arrays_bit_for_bit(one_worker_run, tiny_uncond_model, tiny_image_dirs,
                                                            tmp_path):
    path = run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "two", workers=2))
    assert torch.get_num_threads() == THREADS
    _assert_bit_identical(one_worker_run, path)
    data = json.loads((path / "run.json").read_text())
    assert data["sessions"][-1]["workers"] == {"workers": 2, "threads_per_worker": 1, "requested": 2,
                                               "reason": "as requested"}
    one = json.loads((one_worker_run / "run.json").read_text())
    assert one["sessions"][-1]["workers"]["workers"] == 1
    assert "workers" not in data["config"]  # not a compared setting: any count resumes a run


def test_conditional_model_with_captions_two_workers_bit_for_bit(tiny_cond_model, tiny_caption_dirs, tmp_path):
    kw = dict(attacks="sima,loss,pfami", timesteps="0:20:10")
    one = run_analysis(_config(tiny_cond_model, tiny_caption_dirs, tmp_path / "one", workers=1, **kw))
    two = run_analysis(_config(tiny_cond_model, tiny_caption_dirs, tmp_path / "two", workers=2, **kw))
    for rel in ("residuals/sima.npy", "residuals/loss.npy", "scores/pfami.npy"):
        assert np.array_equal(np.load(one / rel), np.load(two / rel)), rel


def test_cancel_mid_stage_with_two_workers_resumes_bit_identically(one_worker_run, tiny_uncond_model,
                                                                   tiny_image_dirs, tmp_path):
    cfg = _config(tiny_uncond_model, tiny_image_dirs, tmp_path / "resumed", workers=2)
    seen: list[tuple[str, int, int]] = []

    def progress(stage, done, total):
        if stage == "loss" and done:  # the counter on disk is exactly what was reported
            data = json.loads((tmp_path / "resumed" / "run.json").read_text())
            assert data["progress"]["loss"] == done
        seen.append((stage, done, total))

    with pytest.raises(AnalysisCancelled, match="'loss' after 8/16"):
        run_analysis(cfg, progress=progress, should_stop=lambda: seen[-1][:2] == ("loss", 2 * BATCH))
    assert torch.get_num_threads() == THREADS
    data = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert data["progress"]["loss"] == 2 * BATCH and not data["stages"].get("loss")
    assert run_status(tmp_path / "resumed") == "unfinished"
    assert [d for s, d, _ in seen if s == "loss"] == [0, 4, 8]  # in batch order, never past a written batch
    # the rows of the recorded batches are the final ones
    partial = np.load(tmp_path / "resumed" / "residuals" / "loss.npy", mmap_mode="r")
    whole = np.load(one_worker_run / "residuals" / "loss.npy")
    assert np.array_equal(partial[:2 * BATCH], whole[:2 * BATCH])
    del partial

    seen.clear()
    run_analysis(cfg, progress=progress)
    assert seen[0] == ("loss", 2 * BATCH, 16)  # resumed from the last completed batch
    assert run_status(tmp_path / "resumed") == "complete"
    _assert_bit_identical(one_worker_run, tmp_path / "resumed")


def test_a_batch_that_finishes_early_waits_for_the_ones_before_it(one_worker_run, tiny_uncond_model,
                                                                   tiny_image_dirs, tmp_path, monkeypatch):
    """Batch 0 of SimA is held until batch 1 is computed: batch 1's rows must still be written, and the
    counter moved, only after batch 0's."""
    computed, written = [], []
    batch1_done = threading.Event()
    real_rows, real_write = rows_module._attack_rows, stages_module._write_rows

    def attack_rows(name, plan, model, z_all, captions, start, stop, *args):
        if name == "sima" and start == 0:
            assert batch1_done.wait(timeout=120), "batch 1 never ran beside batch 0"
        result = real_rows(name, plan, model, z_all, captions, start, stop, *args)
        if name == "sima":
            computed.append(start)
            if start == BATCH:
                batch1_done.set()
        return result

    def write_rows(arrays, start, stop, rows):
        if len(written) < 4:  # SimA's batches: the counter covers exactly the batches before this one
            data = json.loads((tmp_path / "held" / "run.json").read_text())
            assert data["progress"].get("sima", 0) == start
            written.append(start)
        real_write(arrays, start, stop, rows)

    monkeypatch.setattr(stages_module, "_attack_rows", attack_rows)
    monkeypatch.setattr(stages_module, "_write_rows", write_rows)
    path = run_analysis(_config(tiny_uncond_model, tiny_image_dirs, tmp_path / "held", workers=2, attacks="sima"))
    assert computed[:2] == [BATCH, 0]  # batch 1 finished first ...
    assert written == [0, BATCH, 2 * BATCH, 3 * BATCH]  # ... and was written second
    assert np.array_equal(np.load(path / "residuals" / "sima.npy"), np.load(one_worker_run / "residuals" / "sima.npy"))


class _Recorder:
    """A stand-in for the run writer: its counter must never pass the rows written."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows, self.counter, self.path = rows, 0, Path("run")

    def progress(self, name: str) -> int:
        return self.counter

    def set_progress(self, name: str, value: int) -> None:
        assert (self.rows[:value] >= 0).all(), f"counter moved to {value} over unwritten rows"
        self.counter = value


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_counter_never_passes_an_unwritten_batch(workers):
    n, bs = 23, 4
    rows = np.full(n, -1.0)
    writer = _Recorder(rows)
    gate = threading.Event()
    stops: list[int] = []

    def compute(start, stop):
        if start == 0 and workers > 1:
            assert gate.wait(timeout=60)  # the first batch finishes after the second
        if start == bs:
            gate.set()
        return np.arange(start, stop, dtype=float)

    def write(start, stop, result):
        rows[start:stop] = result

    loop = _Stage(writer, "sima", n, bs, lambda s, d, t: stops.append(d), None)
    run_batches_ordered(loop, [], loop.planned(), compute, write, workers=workers, threads=1)
    assert np.array_equal(rows, np.arange(n, dtype=float))
    assert stops == [0, 4, 8, 12, 16, 20, 23] and writer.counter == n


def test_errors_and_cancellation_stop_the_workers_and_restore_threads():
    n, bs = 40, 4
    rows = np.full(n, -1.0)
    writer = _Recorder(rows)
    started: list[int] = []
    lock = threading.Lock()

    def compute(start, stop):
        with lock:
            started.append(start)
        if start == 2 * bs:
            raise LdminvError("batch 2 failed")
        return np.ones(stop - start)

    def write(start, stop, result):
        rows[start:stop] = result

    before = torch.get_num_threads()
    torch.set_num_threads(3)  # the process' setting: the workers run at 1, then it is restored
    loop = _Stage(writer, "pia", n, bs, None, None)
    with pytest.raises(LdminvError, match="batch 2 failed"):
        run_batches_ordered(loop, [], loop.planned(), compute, write, workers=2, threads=1)
    assert writer.counter == 2 * bs  # batches 0 and 1 recorded, nothing after the failed one
    assert len(started) <= 5  # at most the workers' batches in flight past the failure
    assert torch.get_num_threads() == 3

    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] == 3

    rows[:] = -1
    writer.counter = 0
    loop = _Stage(writer, "pia", n, bs, None, should_stop)
    with pytest.raises(AnalysisCancelled, match="after 12/40"):
        run_batches_ordered(loop, [], loop.planned(), lambda a, b: np.ones(b - a), write, workers=2, threads=1)
    assert writer.counter == 3 * bs and torch.get_num_threads() == 3
    torch.set_num_threads(before)


def test_planned_batches_are_the_loop_batches():
    writer = _Recorder(np.zeros(10))
    writer.counter = 4
    loop = _Stage(writer, "loss", 10, 4, None, None)
    assert loop.planned() == [(4, 8), (8, 10)]
    assert list(loop.batches([])) == [(4, 8), (8, 10)]


def test_resolve_workers_auto_and_given():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    auto = dict(distributed=False, custom_model=False)
    assert resolve_workers(None, device=cpu, cpu_threads=1, cores=2, **auto)["workers"] == 2
    got = resolve_workers(None, device=cpu, cpu_threads=16, cores=16, **auto)
    assert (got["workers"], got["threads_per_worker"], got["requested"]) == (4, 4, "auto")
    assert resolve_workers(None, device=cpu, cpu_threads=4, cores=1, **auto)["workers"] == 1
    assert resolve_workers(None, device=gpu, cpu_threads=8, cores=8, **auto)["workers"] == 1
    assert resolve_workers(None, device=cpu, cpu_threads=8, cores=8, distributed=True,
                           custom_model=False)["workers"] == 1
    assert resolve_workers(None, device=cpu, cpu_threads=8, cores=8, distributed=False,
                           custom_model=True)["workers"] == 1
    given = resolve_workers(3, device=gpu, cpu_threads=2, cores=2, **auto)
    assert (given["workers"], given["threads_per_worker"], given["reason"]) == (3, 1, "as requested")
    assert check_workers("auto") is None and check_workers(" AUTO ") is None and check_workers(2) == 2
    for bad in (0, -1, 1.5, True, "two", None):
        with pytest.raises(LdminvError, match="workers: expected"):
            check_workers(bad)


def test_bad_workers_option_is_refused_before_anything_loads(tmp_path, tiny_image_dirs, capsys):
    cfg = AnalyzeConfig(model=str(tmp_path / "nowhere"), members=str(tiny_image_dirs[0]),
                        heldout=str(tiny_image_dirs[1]), out=str(tmp_path / "out"), workers=0)
    with pytest.raises(LdminvError, match="workers: expected"):
        run_analysis(cfg)
    assert not (tmp_path / "out").exists()
    code = main(["analyze", "--demo", "--workers", "many", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "--workers" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_cli_threads_two_workers_equal_one_worker_at_two_threads(tmp_path):
    """What the command line does on a 2-core machine: one worker at 2 intra-op threads, or two at 1
    each. The demo's UNet gives the same bits at 1 and 2 threads, so the arrays agree bit for bit."""
    from ldminv_core import demo

    if not demo.demo_available():
        pytest.skip("the demo assets are not in this checkout")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        paths = {}
        for workers in (1, 2):
            cfg = AnalyzeConfig(model=str(demo.DEMO_MODEL_DIR), members=str(demo.DEMO_MEMBERS_DIR),
                                heldout=str(demo.DEMO_HELDOUT_DIR), out=str(tmp_path / f"w{workers}"),
                                attacks=ALL_ATTACKS, timesteps="0:300:100", limit=20, batch_size=20,
                                workers=workers)
            paths[workers] = run_analysis(cfg)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    _assert_bit_identical(paths[1], paths[2])
