"""Splitting one analysis across processes (``torchrun`` / ``accelerate launch``).

A launcher starts N copies of ``python -m ldminv_core analyze ...`` and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT``) in each; torchrun and
accelerate both do. :class:`DistContext` reads them. The processes talk over a gloo process
group (small control messages only: no tensors cross processes), so the same code runs on CPU
and on GPUs; each rank computes on its own device (``cuda:LOCAL_RANK`` when there are GPUs).

The samples are cut into the same batches as a single-process run (``batch_size``), and batch
``b`` belongs to rank ``b % WORLD_SIZE``. Every random draw is seeded per sample id, so each
batch holds the same numbers whichever process computes it. Each rank writes its rows of the
run's memory-mapped arrays and records every finished batch in its own file
``_work/ranks/rank-R-of-N.json`` (atomic writes), so a killed rank resumes where it stopped.
Rank 0 alone holds the run folder's lock and writes run.json / samples.parquet; it marks a stage
done only when the rank files show every batch of it finished, and the run complete only after
the last stage.
"""
from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..errors import RunError

__all__ = ["DistContext", "RankLedger", "RANKS_DIR", "DIST_TIMEOUT_S"]

#: Folder (inside the run folder) of the per-rank batch records; removed when the run finishes.
RANKS_DIR = "_work/ranks"
#: Seconds a rank waits for the others at a stage boundary (``LDMINV_DIST_TIMEOUT_S`` overrides):
#: the slowest rank's share of a stage must finish within it.
DIST_TIMEOUT_S = float(os.environ.get("LDMINV_DIST_TIMEOUT_S", 7 * 24 * 3600))

_RANK_FILE = re.compile(r"^rank-(\d+)-of-(\d+)\.json$")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise RunError(f"environment variable {name}: expected an integer, got {raw!r}") from None


@dataclass
class DistContext:
    """This process' place among the launched processes.

    Attributes:
        rank, world_size, local_rank: from the launcher's environment (0, 1, 0 when none).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    _group: Any = field(default=None, repr=False)
    #: True once a collective reported a failure (the other ranks know; do not wait for them again).
    broken: bool = False

    @classmethod
    def from_env(cls) -> "DistContext":
        """The context the launcher set up (single process when WORLD_SIZE is unset or 1)."""
        world = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        local = _env_int("LOCAL_RANK", rank)
        if world < 1 or not (0 <= rank < world):
            raise RunError(f"environment: RANK={rank} and WORLD_SIZE={world} do not describe a process of a group")
        return cls(rank=rank, world_size=world, local_rank=local)

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self) -> None:
        """Join the gloo process group (no-op for a single process)."""
        if not self.active or self._group is not None:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=self.rank, world_size=self.world_size,
                                    timeout=timedelta(seconds=DIST_TIMEOUT_S))
        self._group = dist.group.WORLD

    def stop(self) -> None:
        if self._group is not None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._group = None

    def owns(self, batch_index: int) -> bool:
        """True when batch ``batch_index`` is this rank's (round robin over the ranks)."""
        return batch_index % self.world_size == self.rank

    def agree(self, error: BaseException | None = None) -> None:
        """Collective: every rank reports whether it succeeded; raises on every rank when one
        failed (RunError naming it on the others, the original error on the failing one)."""
        if not self.active:
            if error is not None:
                raise error
            return
        import torch.distributed as dist

        mine = None if error is None else f"{type(error).__name__}: {error}"
        everyone: list = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        if error is not None:
            self.broken = True
            raise error
        failed = [(r, msg) for r, msg in enumerate(everyone) if msg is not None]
        if failed:
            self.broken = True
            shown = "; ".join(f"rank {r}: {msg}" for r, msg in failed[:3])
            raise RunError(f"the distributed analysis stopped because another process failed ({shown})")

    def gather(self, obj: Any) -> list:
        """Collective: every rank's ``obj`` (a JSON-able value), in rank order."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


class RankLedger:
    """The finished batches of every stage, as recorded by every rank of every session.

    ``RankLedger(run_folder, ctx, batch_size=b)`` reads all ``rank-*-of-*.json`` files (the
    batch size is a run setting, so every file uses the same batches); :meth:`record` adds a
    finished batch to this rank's own file.
    """

    def __init__(self, folder: str | Path, ctx: DistContext, *, batch_size: int) -> None:
        self.folder = Path(folder) / RANKS_DIR
        self.ctx = ctx
        self.batch_size = int(batch_size)
        self.own_path = self.folder / f"rank-{ctx.rank}-of-{ctx.world_size}.json"
        self._own = self._read(self.own_path) if self.own_path.is_file() else self._fresh()

    def _fresh(self) -> dict:
        return {"rank": self.ctx.rank, "world_size": self.ctx.world_size, "batch_size": self.batch_size,
                "host": socket.gethostname(), "pid": os.getpid(), "done": {}, "seconds": {}}

    def _read(self, path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RunError(f"{path}: cannot be read as a rank record ({exc}); delete it to recompute its batches") from exc
        if not isinstance(data, dict) or not isinstance(data.get("done"), dict):
            raise RunError(f"{path}: not a rank record (no 'done' object); delete it to recompute its batches")
        if data.get("batch_size") != self.batch_size:
            raise RunError(f"{path}: recorded with batch_size {data.get('batch_size')!r}, this run uses {self.batch_size}")
        return data

    @staticmethod
    def present(folder: str | Path) -> bool:
        """True when the run folder holds rank records (a distributed session worked on it)."""
        d = Path(folder) / RANKS_DIR
        return d.is_dir() and any(_RANK_FILE.match(p.name) for p in d.iterdir())

    def done(self, stage: str) -> set[int]:
        """Indices of the batches of ``stage`` finished by any rank of any session."""
        out = {int(b) for b in self._own["done"].get(stage, [])}
        if self.folder.is_dir():
            for p in self.folder.iterdir():
                if _RANK_FILE.match(p.name) and p != self.own_path:
                    out |= {int(b) for b in self._read(p)["done"].get(stage, [])}
        return out

    def record(self, stage: str, batch_index: int, seconds: float) -> None:
        """Add a finished batch (its arrays already flushed) to this rank's file, atomically."""
        self._own["pid"] = os.getpid()
        done = self._own["done"].setdefault(stage, [])
        if batch_index not in done:
            done.append(int(batch_index))
        self._own["seconds"][stage] = round(float(self._own["seconds"].get(stage, 0.0)) + seconds, 4)
        self._own["peak_rss_mb"] = round(_peak_rss_mb(), 1)
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.own_path.with_name(f".{self.own_path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._own), encoding="utf-8")
        os.replace(tmp, self.own_path)

    def summary(self) -> dict:
        """This rank's record (host, pid, batches, samples and seconds per stage) for run.json."""
        own = self._own
        samples = {k: len(v) * self.batch_size for k, v in own["done"].items()}
        return {"rank": self.ctx.rank, "host": own["host"], "pid": own["pid"],
                "batches": {k: len(v) for k, v in own["done"].items()}, "samples_at_most": samples,
                "seconds": dict(own["seconds"]), "peak_rss_mb": own.get("peak_rss_mb")}


def _peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
