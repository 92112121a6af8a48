"""The batch loop of one stage (:class:`_Stage`): which batches are still to do (run.json's
counter, or with several processes the per-rank records), progress reports after every batch
and within one (:func:`_within_batch`), and cancellation (:class:`AnalysisCancelled`)."""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import LdminvError
from ldminv_core.runs import RunWriter
from .distributed import RankLedger

__all__ = ["AnalysisCancelled", "WITHIN_BATCH_REPORT_S"]

#: ``progress(stage, done, total)``: samples done of a stage (a float within a geometry batch).
ProgressFn = Callable[[str, int, int], Any]


class AnalysisCancelled(LdminvError):
    """The analysis was stopped on request (``should_stop``); the run folder is resumable."""



#: Least seconds between two progress reports from inside a batch (the geometry's decoder calls).
WITHIN_BATCH_REPORT_S = 0.25


def _within_batch(progress: ProgressFn, stage: str, *, start: int, total: int) -> Callable[[float], None]:
    """A callback for work inside one batch: ``progress(stage, start + done, total)`` with ``done``
    the batch's samples finished so far (a float, two decimals), at most every
    :data:`WITHIN_BATCH_REPORT_S` seconds."""
    last = -math.inf

    def report(done: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < WITHIN_BATCH_REPORT_S:
            return
        last = now
        progress(stage, round(start + float(done), 2), total)

    return report


class _Stage:
    """Batch loop of one stage with progress records, callbacks and cancellation.

    Without a ledger (one process, no rank records in the folder) progress is run.json's
    prefix counter. With a :class:`~ldminv_core.pipeline.distributed.RankLedger` the stage's batches not
    yet recorded by any rank (nor covered by the prefix counter) that belong to this rank are
    done, each recorded in this rank's file once its rows are flushed.
    """

    def __init__(
        self,
        writer: RunWriter | None,
        name: str,
        n: int,
        batch_size: int,
        progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
        *,
        ledger: "RankLedger | None" = None,
        prefix: int = 0,
    ) -> None:
        self.writer, self.name, self.n, self.batch_size = writer, name, n, batch_size
        self.progress, self.should_stop = progress, should_stop
        self.ledger, self.prefix = ledger, prefix

    def _cancelled(self, stop: int) -> AnalysisCancelled:
        where = self.writer.path if self.writer is not None else "the run folder"
        return AnalysisCancelled(
            f"analysis of {where} cancelled during stage {self.name!r} after "
            f"{stop}/{self.n} samples; run it again with the same settings to resume"
        )

    def batches(self, arrays: Sequence[np.memmap]) -> Iterator[tuple[int, int]]:
        """Yield (start, stop) of each batch still to do; after the caller has filled the
        batch's rows, flush ``arrays``, record progress, report it and honour should_stop."""
        if self.ledger is not None:
            yield from self._ledger_batches(arrays)
            return
        done = self._first_undone()
        if self.progress is not None:
            self.progress(self.name, done, self.n)
        for start in range(done, self.n, self.batch_size):
            stop = min(self.n, start + self.batch_size)
            yield start, stop
            for arr in arrays:
                arr.flush()
            self.writer.set_progress(self.name, stop)
            if self.progress is not None:
                self.progress(self.name, stop, self.n)
            if self.should_stop is not None and self.should_stop():
                raise self._cancelled(stop)

    def _first_undone(self) -> int:
        """The first sample of the first batch run.json's counter does not cover."""
        assert self.writer is not None
        done = self.writer.progress(self.name)
        if done % self.batch_size and done != self.n:
            done -= done % self.batch_size  # never happens with a fixed batch size; be safe
        return done

    def planned(self) -> list[tuple[int, int]]:
        """The (start, stop) of every batch :meth:`batches` will yield, in that order."""
        bs = self.batch_size
        if self.ledger is not None:
            mine = [b for b in self.missing() if self.ledger.ctx.owns(b)]
            return [(b * bs, min(self.n, (b + 1) * bs)) for b in mine]
        return [(start, min(self.n, start + bs)) for start in range(self._first_undone(), self.n, bs)]

    def missing(self) -> list[int]:
        """Batches of the stage no rank (and no prefix counter) has recorded yet."""
        assert self.ledger is not None
        nb = -(-self.n // self.batch_size)
        covered = self.ledger.done(self.name) | {b for b in range(nb) if min(self.n, (b + 1) * self.batch_size) <= self.prefix}
        return [b for b in range(nb) if b not in covered]

    def _ledger_batches(self, arrays: Sequence[np.memmap]) -> Iterator[tuple[int, int]]:
        ledger = self.ledger
        assert ledger is not None
        todo = self.missing()
        nb = -(-self.n // self.batch_size)
        mine = [b for b in todo if ledger.ctx.owns(b)]
        finished = nb - len(todo)
        world = ledger.ctx.world_size
        if self.progress is not None:
            self.progress(self.name, min(self.n, finished * self.batch_size), self.n)
        for i, b in enumerate(mine):
            start, stop = b * self.batch_size, min(self.n, (b + 1) * self.batch_size)
            t0 = time.perf_counter()
            yield start, stop
            for arr in arrays:
                arr.flush()
            ledger.record(self.name, b, time.perf_counter() - t0)
            if self.progress is not None:  # all ranks advance at about this rank's pace
                self.progress(self.name, min(self.n, (finished + (i + 1) * world) * self.batch_size), self.n)
            if self.should_stop is not None and self.should_stop():
                raise self._cancelled(stop)
