"""Finished run folders written from synthetic arrays (no model): the evaluation layer's tests
control every term, influence, log-volume, label and caption exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ldminv_core.runs import Run, RunWriter


def write_run(
    folder: Path,
    *,
    terms: np.ndarray,
    influence: np.ndarray,
    log_volume: np.ndarray,
    labels: np.ndarray,
    timesteps: list[int],
    captions: list[str] | None = None,
    pfami: np.ndarray | None = None,
) -> Run:
    """A complete run at ``folder``: attack "sima" with ``terms`` (N, T, C, h, w), optional
    "pfami" scores (N,), ``influence`` (N, C, h, w), samples with ``labels`` (1 = member)."""
    n = terms.shape[0]
    samples = pd.DataFrame({
        "sample_id": np.arange(n),
        "path": [str(folder / f"img_{i}.png") for i in range(n)],
        "split": np.where(np.asarray(labels) == 1, "member", "heldout"),
        "caption": captions if captions is not None else [""] * n,
        "log_volume": np.asarray(log_volume, dtype=np.float64),
    })
    attacks = {"sima": {"kind": "terms", "timesteps": [int(t) for t in timesteps], "p": 4, "dtype": str(terms.dtype)}}
    if pfami is not None:
        attacks["pfami"] = {"kind": "scores"}
    writer = RunWriter(folder, settings={"synthetic": True}, samples=samples)
    writer.update(latent_shape=list(terms.shape[2:]), attacks=attacks)
    writer.write_array("latents.npy", np.zeros((n, *terms.shape[2:]), dtype=np.float32))
    writer.write_array("influence.npy", np.asarray(influence, dtype=np.float32))
    writer.write_array("residuals/sima.npy", terms)
    if pfami is not None:
        writer.write_array("scores/pfami.npy", np.asarray(pfami, dtype=np.float32))
    writer.finish()
    return Run.open(folder)
