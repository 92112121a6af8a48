"""The small finished run that the export, findings-wording and browser tests share, and the
plain-numpy oracle of the masked statistic those tests check the dashboard's numbers against.

The run is computed with the real analysis pipeline on a tiny random diffusers model: SimA at
``TIMESTEPS`` and PFAMI, ``N_PER_SPLIT`` member and held-out PNG images, latents 4x4x4.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.runs import run_status
from tiny_models import tiny_scheduler, tiny_unet, tiny_vae, write_image_folder

N_PER_SPLIT = 10
TIMESTEPS = (0, 10, 20)


def build_fixture_run(base: Path) -> Path:
    """A finished run (SimA at TIMESTEPS + PFAMI, N_PER_SPLIT members and held-out PNGs, latents
    4x4x4) under ``base``; reused when ``base`` already holds it (the browser test shares it)."""
    base = Path(base)
    run_dir = base / "home" / "runs" / "export-fixture"
    if run_status(run_dir) == "complete":
        return run_dir
    model = base / "model"
    tiny_vae(image_channels=1, seed=0).save_pretrained(model / "vae")
    tiny_unet(seed=1).save_pretrained(model / "unet")
    tiny_scheduler().save_pretrained(model / "scheduler")
    write_image_folder(base / "members", N_PER_SPLIT, seed=11, prefix="m", formats=("png",), captions=True)
    write_image_folder(base / "heldout", N_PER_SPLIT, seed=12, prefix="h", formats=("png",), captions=True)
    config = AnalyzeConfig(
        model=str(model),
        members=str(base / "members"),
        heldout=str(base / "heldout"),
        out=str(run_dir),
        attacks=("sima", "pfami"),
        timesteps=",".join(map(str, TIMESTEPS)),
        topk=4,
        device="cpu",
        batch_size=32,
    )
    return run_analysis(config)


def masked_scores(terms_t: np.ndarray, influence: np.ndarray, drop: float) -> np.ndarray:
    """-statistic after dropping each sample's round(d * p / 100) lowest-influence coordinates
    (ties: lower flat index first), computed sample by sample with plain numpy.

    ``terms_t`` and ``influence``: (n, *latent_shape); returns (n,)."""
    n = terms_t.shape[0]
    flat_t = terms_t.reshape(n, -1)
    flat_i = influence.reshape(n, -1)
    k = int(round(flat_t.shape[1] * drop / 100))
    out = np.empty(n)
    for i in range(n):
        dropped = np.argsort(flat_i[i], kind="stable")[:k]
        keep = np.ones(flat_t.shape[1], dtype=bool)
        keep[dropped] = False
        out[i] = -flat_t[i][keep].sum()
    return out
