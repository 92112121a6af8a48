"""An analysis in a separate Python process, reported like one in a background thread.

The first start's preview and demo run this way (``python -m ldminv_core.first_start preview OUT``). In the
server's own process its import of torch and diffusers (several seconds of Python) and its UNet
loop would hold the interpreter lock the page scripts need, so the page that waits for it would
be drawn no sooner than the analysis ends; in a process of its own it uses the second core.

:func:`run_module` is an :class:`~ldminv_app.jobs.AnalysisJob` target: it starts the process, reads
the stage counters the run writer moves in run.json after every batch and calls ``progress`` with
them (so the bar is the same as for an in-process analysis), ends the process when ``should_stop``
says so (the run stays resumable, as after a killed ``analyze``) and turns a failure into an error
that quotes the process's last output lines. No Streamlit import here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from ldminv_core.errors import LdminvError

__all__ = ["AnalysisProcessError", "ProcessCancelled", "run_module"]

#: Seconds between two reads of run.json.
POLL_S = 0.1
#: Lines of the process's output quoted in an error.
TAIL_LINES = 12


class AnalysisProcessError(LdminvError):
    """The analysis process ended with an error (its last output lines are in the message)."""


class ProcessCancelled(Exception):
    """The analysis process was ended on request (``should_stop``); its run folder stays resumable."""


def _report(out: Path, progress: Callable[[str, float, int], None], seen: dict) -> None:
    """Call ``progress`` for the first unfinished stage of run.json in ``out`` when its counter moved."""
    try:
        data = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not written yet, or mid-replace
    stages, counters = data.get("stages") or {}, data.get("progress") or {}
    total = int(data.get("n_members") or 0) + int(data.get("n_heldout") or 0)
    if not isinstance(stages, dict) or not total:
        return
    pending = [name for name, done in stages.items() if not done]
    stage = pending[0] if pending else next(reversed(stages), None)
    if stage is None:
        return
    done = int(counters.get(stage, 0)) if isinstance(counters, dict) else 0
    if seen.get(stage) != done:
        seen[stage] = done
        progress(str(stage), float(done), total)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-TAIL_LINES:])


def run_module(module: str, out: str | Path, *, args: tuple[str, ...] = (), progress: Callable[[str, float, int], None] | None = None,
               should_stop: Callable[[], bool] | None = None, log: str | Path | None = None,
               niceness: int = 0) -> Path:
    """Run ``python -m <module> <args...> <out>`` with this interpreter and wait for it; returns ``out``.

    Args:
        module: a module whose ``main`` analyses into the folder it is given last.
        out: the run folder the process writes.
        args: arguments before ``out``.
        progress: called as ``progress(stage, done, total)`` whenever a stage counter moves.
        should_stop: polled; True ends the process (raises :class:`ProcessCancelled`).
        log: where the process's output goes (default ``<out>.log`` beside the run folder).
        niceness: added to the process's nice value (Linux / macOS; ignored elsewhere): background
            work that should yield the CPU to the pages being drawn.

    Raises:
        AnalysisProcessError: the process exited with a non-zero status (the message quotes its
            last lines of output and names the log file).
        ProcessCancelled: ``should_stop`` returned True.
    """
    out = Path(out)
    log_path = Path(log) if log is not None else out.with_name(out.name + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    seen: dict = {}
    # 1. start the process (its output to the log file: a pipe nobody reads could fill up and block it)
    with open(log_path, "w", encoding="utf-8") as sink:
        command = [sys.executable, "-m", module, *args, str(out)]
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=(lambda: os.nice(niceness)) if niceness and os.name == "posix" else None)
        try:
            # 2. follow its run.json until it exits, or end it on request
            while proc.poll() is None:
                if should_stop is not None and should_stop():
                    proc.terminate()
                    proc.wait(30)
                    raise ProcessCancelled(f"the analysis into {out} was stopped")
                if progress is not None:
                    _report(out, progress, seen)
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:  # an error in this thread: never leave the process behind
                proc.kill()
                proc.wait()
    # 3. its result
    if progress is not None:
        _report(out, progress, seen)
    if proc.returncode != 0:
        raise AnalysisProcessError(
            f"the analysis process `{' '.join(command[1:])}` exited with status {proc.returncode} "
            f"(full output: {log_path}):\n{_tail(log_path)}")
    return out
