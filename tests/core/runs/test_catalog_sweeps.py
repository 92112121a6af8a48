"""The run catalog lists a --lora-scale sweep's runs (OUT/scale-*), one level below the runs folder."""
from __future__ import annotations

import numpy as np

from ldminv_core.runs import list_runs
from tests.synthetic_runs import write_run


def _run(path):
    rng = np.random.default_rng(0)
    write_run(path, terms=rng.gamma(2.0, size=(8, 2, 2, 4, 4)).astype(np.float32),
              influence=rng.normal(size=(8, 2, 4, 4)).astype(np.float32), log_volume=rng.normal(size=8),
              labels=np.repeat([1, 0], 4), timesteps=[0, 10])


def test_sweep_runs_are_listed_and_deeper_folders_are_not(tmp_path):
    root = tmp_path / "runs"
    _run(root / "single")
    _run(root / "sweep" / "scale-0")
    _run(root / "sweep" / "scale-1")
    _run(root / "sweep" / "scale-1" / "nested")  # inside a run: not a run of the catalog
    _run(root / "deep" / "a" / "b")  # two levels below a non-run folder: not listed
    found = sorted(str(i.path.relative_to(root)) for i in list_runs(root))
    assert found == ["single", "sweep/scale-0", "sweep/scale-1"]
