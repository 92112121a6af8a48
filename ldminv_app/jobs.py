"""Analyses running in the background while the dashboard stays responsive.

An :class:`AnalysisJob` runs ``ldminv_core.pipeline.run.run_analysis`` in a daemon thread and
records its progress (stage, done, total) from the ``progress`` callback. Its
:class:`JobState` is the one progress record every view formats (the sidebar and the page
alike): the stages in the order this job meets them, the current stage, its samples done (a
float inside a geometry batch), a rate averaged over the stage up to the last report, and the
time left from that rate. Cancelling sets an event that the job's ``should_stop`` callback
reports, so the analysis stops after its current batch and leaves a resumable folder. Pages
poll the job (no Streamlit call ever happens in the worker thread). No Streamlit import here:
the registry that shares jobs between reruns and sessions lives in ``ldminv_app.cache``.
"""
from __future__ import annotations

import json
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ldminv_core.errors import RunError

__all__ = ["AnalysisJob", "JobState", "resume_config", "planned_stage_order"]


def planned_stage_order(config: Any) -> list[str]:
    """The stages of an analysis of ``config`` in the order ``run_analysis`` computes them
    (``ldminv_core.runs.layout.planned_stages``)."""
    from ldminv_core.choices import SCORE_ONLY_ATTACKS  # not ldminv_core.attacks: that imports torch
    from ldminv_core.runs import planned_stages

    attacks = getattr(config, "attacks", ())
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    names = [str(a).lower() for a in attacks]
    return list(planned_stages({"attacks": {a: {"kind": "scores" if a in SCORE_ONLY_ATTACKS else "terms"}
                                            for a in names},
                                 **({"blind": {}} if getattr(config, "blind_stage", True) else {})}))


def _stages_done(out: Any) -> list[str]:
    """The stages run.json in ``out`` records as done (none when there is no readable run.json)."""
    try:
        data = json.loads((Path(out) / "run.json").read_text(encoding="utf-8"))
        stages = data.get("stages", {})
        return [str(k) for k, v in stages.items() if v] if isinstance(stages, dict) else []
    except (OSError, ValueError, TypeError, AttributeError):
        return []


@dataclass
class JobState:
    """A snapshot of a job: ``status`` is "running", "done", "cancelled" or "error".

    ``stages`` is the order this job meets the stages in: those done before it started (a
    resumed run), then those it reported, then the rest in the planned order (a reused decoder
    geometry lands before the attacks). ``done`` is a float inside a geometry batch.
    ``updated`` is when the last report came.
    """

    status: str
    stage: str
    done: float
    total: int
    stages_seen: list[str]
    result: Path | None
    error: BaseException | None
    error_details: str
    started: float
    finished: float | None
    stage_started: float = 0.0
    stage_first_done: float = 0
    threads: int | None = None
    stages: list[str] = field(default_factory=list)
    updated: float = 0.0

    @property
    def fraction(self) -> float:
        """Progress of the current stage in [0, 1]."""
        return 0.0 if self.total <= 0 else min(1.0, max(0.0, self.done / self.total))

    @property
    def rate(self) -> float | None:
        """Samples per second of the current stage: the samples moved since the stage began over
        the time to the last report (so it holds still between reports instead of sinking as the
        clock runs); None before the stage has moved."""
        moved = self.done - self.stage_first_done
        spent = self.updated - self.stage_started
        if moved <= 0 or spent <= 0 or not self.stage_started:
            return None
        return moved / spent

    @property
    def stage_eta(self) -> float | None:
        """Seconds left in the current stage at :attr:`rate`, counted down from the last report
        (None before the stage has moved)."""
        r = self.rate
        if r is None:
            return None
        since = (self.finished or time.time()) - self.updated
        return max(0.0, (self.total - self.done) / r - since)

    @property
    def stage_number(self) -> tuple[int, int] | None:
        """(k, n): the current stage is the k-th of the job's n stages (None before the first)."""
        if self.stage not in self.stages:
            return None
        return self.stages.index(self.stage) + 1, len(self.stages)


@dataclass
class AnalysisJob:
    """One analysis in a background thread.

    Args:
        label: what the job computes, for display (e.g. the output folder).
        config: the ``AnalyzeConfig`` (kept so the job can be resumed with the same settings).
        target: the function to run, called as ``target(config, progress=..., should_stop=...)``
            (``ldminv_core.pipeline.run.run_analysis``).
        cancelled_exc: the exception type ``target`` raises when ``should_stop`` returned True.
        set_threads: on CPU, set this process's torch threads to the idle cores before ``target``
            runs (an analysis in this process); False for a target that starts a process of its own
            (:mod:`ldminv_app.subprocess_job`), which must not import torch here.
    """

    label: str
    config: Any
    target: Callable[..., Any]
    cancelled_exc: type[BaseException] | tuple[type[BaseException], ...] = ()
    set_threads: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _status: str = "pending"
    _stage: str = "starting"
    _done: float = 0
    _total: int = 0
    _stages: list[str] = field(default_factory=list)
    _result: Path | None = None
    _error: BaseException | None = None
    _details: str = ""
    _started: float = 0.0
    _finished: float | None = None
    _stage_started: float = 0.0
    _stage_first_done: float = 0
    _threads: int | None = None
    _updated: float = 0.0
    _planned: list[str] = field(default_factory=list)
    _done_before: list[str] = field(default_factory=list)

    def start(self) -> "AnalysisJob":
        """Start the worker thread (once); returns self."""
        try:
            planned = planned_stage_order(self.config)
        except Exception:  # noqa: BLE001 - a config that cannot be planned fails in the worker
            planned = []
        before = _stages_done(getattr(self.config, "out", None)) if planned else []
        with self._lock:
            if self._thread is not None:
                return self
            self._planned = planned
            self._done_before = [s for s in planned if s in before]
            self._status = "running"
            self._started = time.time()
            self._thread = threading.Thread(target=self._work, name=f"ldminv-analysis:{self.label}", daemon=True)
        self._thread.start()
        return self

    def _progress(self, stage: str, done: float, total: int) -> None:
        now = time.time()
        with self._lock:
            if str(stage) != self._stage:
                self._stage_started, self._stage_first_done = now, float(done)
            self._stage = str(stage)
            self._done = float(done)
            self._total = int(total)
            self._updated = now
            if not self._stages or self._stages[-1] != self._stage:
                self._stages.append(self._stage)

    def _order(self) -> list[str]:
        """The job's stage order (see :class:`JobState`); the lock is held by the caller."""
        order = list(self._done_before)
        order += [s for s in self._stages if s not in order and s in self._planned]
        return order + [s for s in self._planned if s not in order]

    def _set_threads(self) -> None:
        """On CPU, use the idle cores only: intra-op threads competing with other processes
        (or with this server) spin in barriers and can make torch many times slower."""
        try:
            from ldminv_core.models.loading import idle_cpu_threads, resolve_device

            if resolve_device(getattr(self.config, "device", "auto")).type == "cpu":
                import torch

                threads = idle_cpu_threads()
                torch.set_num_threads(threads)
                with self._lock:
                    self._threads = threads
        except Exception:  # noqa: BLE001 - a thread setting must never stop the analysis
            pass

    def _work(self) -> None:
        if self.set_threads:
            self._set_threads()
        try:
            result = self.target(self.config, progress=self._progress, should_stop=self._stop.is_set)
        except BaseException as exc:  # noqa: BLE001 - reported to the page, never re-raised here
            cancelled = bool(self.cancelled_exc) and isinstance(exc, self.cancelled_exc)
            with self._lock:
                self._status = "cancelled" if cancelled else "error"
                self._error = exc
                self._details = "".join(traceback.format_exception(exc))
                self._finished = time.time()
            return
        with self._lock:
            self._status = "done"
            self._result = Path(result) if result is not None else None
            self._finished = time.time()

    def cancel(self) -> None:
        """Ask the analysis to stop after its current batch."""
        self._stop.set()

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        with self._lock:
            return self._status in ("pending", "running")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends or ``timeout`` seconds pass; True when it has ended."""
        thread = self._thread
        if thread is None:
            return False
        thread.join(timeout)
        return not thread.is_alive()

    def state(self) -> JobState:
        """A consistent snapshot of the job."""
        with self._lock:
            return JobState(
                status=self._status,
                stage=self._stage,
                done=self._done,
                total=self._total,
                stages_seen=list(self._stages),
                result=self._result,
                error=self._error,
                error_details=self._details,
                started=self._started,
                finished=self._finished,
                stage_started=self._stage_started,
                stage_first_done=self._stage_first_done,
                threads=self._threads,
                stages=self._order(),
                updated=self._updated,
            )


def resume_config(run_dir: str | Path, *, device: str = "auto"):
    """The ``AnalyzeConfig`` that resumes the unfinished run in ``run_dir``.

    Built from the settings stored in its run.json ("config"), so a run interrupted in an
    earlier session (or by a restart) can be finished with exactly its own settings.

    Raises:
        RunError: ``run_dir`` has no readable run.json with stored settings.
    """
    from ldminv_core.pipeline.config import AnalyzeConfig

    path = Path(run_dir) / "run.json"
    try:
        stored = json.loads(path.read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, AttributeError) as exc:
        raise RunError(f"{path}: cannot read the run's settings ({exc})") from exc
    if not isinstance(stored, dict):
        raise RunError(f"{path}: expected the analysis settings under 'config', found none")
    names = {f.name for f in fields(AnalyzeConfig)} - {"out", "device", "force", "break_lock"}
    kwargs = {k: v for k, v in stored.items() if k in names}
    missing = [k for k in ("model", "members", "heldout") if not isinstance(kwargs.get(k), str)]
    if missing:
        raise RunError(f"{path}: 'config' lacks the analysis settings {', '.join(missing)} (expected paths as strings); "
                       "this run cannot be resumed, only opened or deleted")
    if isinstance(kwargs.get("attacks"), list):
        kwargs["attacks"] = tuple(kwargs["attacks"])
    lora = kwargs.pop("lora", None)
    if lora:  # stored as [{"path": ..., "scale": ...}]
        if not all(isinstance(a, dict) and "path" in a for a in lora):
            raise RunError(f"{path}: 'config' lora is not a list of {{path, scale}} records: {lora!r}")
        kwargs["lora"] = tuple(str(a["path"]) for a in lora)
        kwargs["lora_scale"] = tuple(float(a.get("scale", 1.0)) for a in lora)
    try:
        return AnalyzeConfig(out=str(Path(run_dir)), device=device, **kwargs)
    except TypeError as exc:
        raise RunError(f"{path}: 'config' is not a set of analysis settings ({exc})") from exc
