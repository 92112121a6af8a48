"""A synthetic finished run with two attacks (SimA terms and PFAMI scores) over real image files,
for the Findings page's agreement and background-section tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ldminv_core.runs import Run
from synthetic_runs import write_run

__all__ = ["two_attack_run"]


def two_attack_run(folder: Path) -> Run:
    """100 members and 100 held-out 12x12 RGB PNGs; SimA terms (2 timesteps, latent 2x2x2) with a
    member signal, and PFAMI scores that follow the first timestep's statistic with noise."""
    rng = np.random.default_rng(11)
    labels = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    terms = rng.gamma(2.0, 1.0, size=(200, 2, 2, 2, 2)).astype(np.float32)
    terms[labels == 1] *= rng.uniform(0.3, 1.0, size=(100, 1, 1, 1, 1)).astype(np.float32)
    stat = terms.astype(np.float64).reshape(200, 2, -1).sum(axis=2)
    pfami = (-stat[:, 0] + rng.normal(0, 1.0, 200)).astype(np.float32)
    run = write_run(folder, terms=terms, influence=rng.normal(size=(200, 2, 2, 2)).astype(np.float32),
                    log_volume=rng.normal(size=200), labels=labels, timesteps=[0, 10], pfami=pfami)
    for path in run.samples["path"]:
        Image.fromarray(rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8), mode="RGB").save(path)
    return run
