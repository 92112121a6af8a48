"""Computing the batches of one attack stage on several worker threads (:func:`run_batches_ordered`)
and choosing how many (:func:`resolve_workers`).

On a CPU a small denoiser keeps one core busy at one intra-op thread far better than two cores at
two intra-op threads (the demo's UNet, batches of 100 8x8 latents: about 1250 samples/s at one
thread, 1450 at two, 2500 from two threads each at one intra-op thread). So a stage's batches are
computed by ``workers`` threads at once, each with ``threads`` intra-op threads, while the thread
that called :func:`~ldminv_core.pipeline.run.run_analysis` writes the rows:

- the batches are exactly those of a one-worker run (same samples per batch, same kernels), so the
  arrays are bit-identical to a one-worker run at the same intra-op threads per batch. Each worker
  gets the process' threads divided among the workers (at least 1); whether the thread count
  itself changes the last float digits depends on the model and the batch shapes (the demo's UNet
  at batches of 20 or 100: the same bits at 1 and 2 threads; at batches of 5: not), as it does
  without workers;
- rows are written, flushed and recorded (run.json's counter, or a rank's record) in batch order
  only, by the calling thread, through the stage's own loop (:meth:`~.batches._Stage.batches`): a
  batch computed early waits for the ones before it, so the counter never passes a batch whose rows
  are not on disk, and a killed run resumes from its last recorded batch;
- progress callbacks and ``should_stop`` run in the calling thread after each recorded batch, as
  with one worker; on cancellation, an error or an interrupt, batches not yet started are dropped
  and the running ones are waited for (nothing keeps computing after the stage returns);
- the process' intra-op thread count (``torch.get_num_threads()``) is restored afterwards, so a
  dashboard that runs analyses in a background thread keeps its settings.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .._validation import describe
from ..cores import usable_cores
from ..errors import LdminvError

__all__ = ["WORKERS_AUTO", "MAX_AUTO_WORKERS", "check_workers", "resolve_workers", "run_batches_ordered"]

#: ``AnalyzeConfig.workers`` value that lets :func:`resolve_workers` choose.
WORKERS_AUTO = "auto"
#: Most workers "auto" picks (more batches in flight cost memory and rarely pay on a CPU).
MAX_AUTO_WORKERS = 4


def check_workers(value: Any) -> int | None:
    """None for "auto", else the worker count (an integer >= 1); LdminvError otherwise."""
    if isinstance(value, str) and value.strip().lower() == WORKERS_AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise LdminvError(f"workers: expected 'auto' or an integer >= 1 (batches computed at once), got "
                          f"{describe(value)}")
    return int(value)


def resolve_workers(requested: int | None, *, device: torch.device, distributed: bool, custom_model: bool,
                    cpu_threads: int | None = None, cores: int | None = None) -> dict:
    """The worker threads and intra-op threads per worker of an analysis, with the reason.

    Args:
        requested: a count (used as given) or None ("auto").
        device: the model's device. "auto" uses one worker on an accelerator (one device queue).
        distributed: several processes share the machine (torchrun / accelerate): "auto" uses one.
        custom_model: the model comes from a user's adapter file, whose code may not be safe to call
            from two threads at once: "auto" uses one.
        cpu_threads: the intra-op threads the process has (default ``torch.get_num_threads()``).
        cores: usable cores (default :func:`usable_cores`).

    Returns:
        ``{"workers": w, "threads_per_worker": t, "requested": "auto" | w, "reason": text}``, what
        run.json's session record keeps.
    """
    threads = max(1, int(cpu_threads if cpu_threads is not None else torch.get_num_threads()))
    cores = max(1, int(cores if cores is not None else usable_cores()))
    if requested is not None:
        workers, reason = requested, "as requested"
    elif device.type != "cpu":
        workers, reason = 1, f"auto: one worker on {device.type} (the device runs one batch at a time)"
    elif distributed:
        workers, reason = 1, "auto: one worker per process under a launcher (the processes share the cores)"
    elif custom_model:
        workers, reason = 1, "auto: one worker for a model adapter's own code (not known to be thread-safe)"
    else:
        workers = max(1, min(MAX_AUTO_WORKERS, cores))
        reason = f"auto: {cores} usable core(s), at most {MAX_AUTO_WORKERS} workers"
    per_worker = max(1, threads // workers)  # the process' threads, shared out
    return {"workers": int(workers), "threads_per_worker": int(per_worker),
            "requested": WORKERS_AUTO if requested is None else int(requested), "reason": reason}


def run_batches_ordered(loop, arrays: Sequence[np.ndarray], plan: Sequence[tuple[int, int]],
                        compute: Callable[[int, int], Any], write: Callable[[int, int, Any], None], *,
                        workers: int, threads: int) -> None:
    """Fill a stage's batches: ``compute(start, stop)`` on ``workers`` threads, ``write(start, stop,
    result)`` in batch order in this thread, inside ``loop.batches(arrays)`` (which flushes, records,
    reports and honours should_stop after each written batch).

    ``plan`` is the list of (start, stop) the loop will yield, in order; with one worker (or one
    batch) everything runs in this thread exactly as before.
    """
    if workers <= 1 or len(plan) <= 1:
        for start, stop in loop.batches(arrays):
            write(start, stop, compute(start, stop))
        return
    saved = torch.get_num_threads()

    def task(start: int, stop: int) -> Any:
        torch.set_num_threads(threads)  # per thread (OpenMP); the process' value is restored below
        return compute(start, stop)

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ldminv-batch")
    pending: dict[tuple[int, int], Future] = {}
    upcoming = iter(plan)

    def submit_next() -> None:
        nxt = next(upcoming, None)
        if nxt is not None:
            pending[nxt] = pool.submit(task, *nxt)

    try:
        for _ in range(workers):
            submit_next()
        for start, stop in loop.batches(arrays):
            future = pending.pop((start, stop), None)
            if future is None:  # the loop and the plan disagree: compute it here (never expected)
                result = compute(start, stop)
            else:
                result = future.result()
                submit_next()  # keep every worker busy while this thread writes
            write(start, stop, result)
    finally:
        for future in pending.values():
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(saved)
