"""What the stages of one process' run share (:class:`_Session`): the plan, the run folder's
writer, the model, the samples' captions and paths, the latents, the per-stage timings, the
progress callback, and with several processes the rank records; and the loop that fills one
stage's arrays batch by batch (:meth:`_Session.stage_loop`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import RunError
from ldminv_core.models.loading import LoadedModel
from ldminv_core.runs import RunWriter, load_npy
from .batches import ProgressFn, _Stage
from .distributed import DistContext, RankLedger
from .plan import _Plan
from .workers import run_batches_ordered


@dataclass
class _Session:
    """One process' work on a run folder (rank 0, or the only process).

    Attributes:
        n: samples of the run; lat: the latent shape (C, h, w).
        captions, sample_paths: per sample id (None: no caption).
        influence_method, log_volume_method: the geometry paths the settings resolve to.
        timings: run.json "timings" (seconds per stage, summed over sessions).
        z_all: the latents (n, C, h, w), memory-mapped once the encode stage is done.
        ledger: the per-rank batch records, with several processes (or a folder they worked on).
        workers: the attack stages' worker threads (:func:`~.workers.resolve_workers`: "workers",
            "threads_per_worker", "requested", "reason"), as run.json's session record keeps it.
    """

    plan: _Plan
    ctx: DistContext
    writer: RunWriter
    model: LoadedModel
    progress: ProgressFn | None
    should_stop: Callable[[], bool] | None
    influence_method: str
    log_volume_method: str
    n: int = 0
    lat: tuple[int, ...] = ()
    captions: list = field(default_factory=list)
    conditions: list = field(default_factory=list)
    sample_paths: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    z_all: np.ndarray | None = None
    ledger: RankLedger | None = None
    workers: dict = field(default_factory=lambda: {"workers": 1, "threads_per_worker": 1})

    def __post_init__(self) -> None:
        samples = self.writer.samples
        self.n = len(samples)
        self.lat = tuple(self.model.latent_shape)
        self.captions = [None if (c is None or (isinstance(c, float) and math.isnan(c))) else str(c)
                         for c in samples["caption"].tolist()]
        self.sample_paths = samples["path"].tolist()
        self.conditions = self.captions
        if getattr(self.model.predictor, "conditions_on", "caption") == "label":  # class-conditional models
            labels = samples["label"].tolist() if "label" in samples.columns else [None] * self.n
            self.conditions = [None if pd.isna(y) else int(y) for y in labels]
        self.timings = dict(self.writer.data.get("timings", {}))

    def add_time(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to run.json "timings" ``stage``."""
        self.timings[stage] = round(float(self.timings.get(stage, 0.0)) + seconds, 3)
        self.writer.update(timings=self.timings)

    def start_model_stages(self) -> None:
        """After the encode (and blind) stage: open the latents, the rank records when several
        processes work (or worked) on the folder, and let the other ranks start."""
        writer, ctx = self.writer, self.ctx
        self.z_all = load_npy(writer.path / "latents.npy", mmap_mode="r")
        if ctx.active or RankLedger.present(writer.path):
            self.ledger = RankLedger(writer.path, ctx, batch_size=self.plan.batch_size)
        if ctx.active:
            writer.update(distributed={"world_size": ctx.world_size, "backend": "gloo",
                                       "assignment": "batch b -> rank b % world_size"})
        ctx.agree()  # set-up and encode done: the other ranks start

    def stage(self, name: str, *, ledger: RankLedger | None = None, prefix: int = 0) -> _Stage:
        """The batch loop of stage ``name`` with this session's progress and cancellation."""
        return _Stage(self.writer, name, self.n, self.plan.batch_size, self.progress, self.should_stop,
                      ledger=ledger, prefix=prefix)

    def stage_loop(self, name: str, arrays: list, compute: Callable[[int, int], Any],
                   write: Callable[[int, int, Any], None], *, workers: int = 1) -> None:
        """Fill this rank's batches of ``name``: ``compute(start, stop)`` makes a batch's rows (on up
        to ``workers`` threads at once, :func:`~.workers.run_batches_ordered`), ``write(start, stop,
        rows)`` stores them, in batch order, in this thread. With a ledger, wait for every rank and
        check that every batch of the stage is on disk before the caller records it."""
        self.ctx.agree()  # the arrays exist: the other ranks open them
        stage = self.stage(name, ledger=self.ledger, prefix=self.writer.progress(name))
        run_batches_ordered(stage, arrays, stage.planned(), compute, write, workers=workers,
                            threads=int(self.workers.get("threads_per_worker", 1)))
        self.ctx.agree()  # every rank computed its batches
        if self.ledger is not None:
            missing = stage.missing()
            if missing:
                raise RunError(
                    f"stage {name!r}: batches {missing[:5]}{' ...' if len(missing) > 5 else ''} of "
                    f"{-(-self.n // self.plan.batch_size)} are not recorded by any rank in "
                    f"{self.writer.path / 'ranks'}; the stage is not marked done (run the same command again to "
                    "compute them)"
                )
            self.writer.set_progress(name, self.n)
