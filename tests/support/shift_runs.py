"""The runs of the distribution-shift check (METHOD.md section 6): tiny random-model analyses
whose held-out images are brighter files than the members (``SHIFT_BRIGHTNESS`` grey levels,
a shift no model is needed to see) or drawn alike. Shared by the shift page and browser tests.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.run import run_analysis
from tiny_models import TINY_RESOLUTION

N_PER_FOLDER = 20
#: Grey levels added to every held-out pixel of the shifted run: the files differ, the model is not needed.
SHIFT_BRIGHTNESS = 20


def write_images(folder: Path, n: int, *, seed: int, brightness: float = 0.0) -> None:
    """``n`` smooth random grey PNG images (a 4x4 grid upsampled to 16x16), ``brightness`` added."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, size=(4, 4)).astype(np.uint8), mode="L")
        smooth = np.asarray(coarse.resize((TINY_RESOLUTION, TINY_RESOLUTION), Image.Resampling.BILINEAR), np.float64)
        pixels = np.clip(smooth * 0.6 + 50 + brightness, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"img_{i:03d}.png")


def analyze(base: Path, model: Path, *, brightness: float) -> Path:
    """A finished run (SimA at t = 0, 10, 20 and PFAMI) of ``model`` under ``base``/run on
    N_PER_FOLDER member and held-out images, the held-out ones ``brightness`` grey levels brighter."""
    write_images(base / "members", N_PER_FOLDER, seed=1)
    write_images(base / "heldout", N_PER_FOLDER, seed=2, brightness=brightness)
    return Path(run_analysis(AnalyzeConfig(
        model=str(model), members=str(base / "members"), heldout=str(base / "heldout"), out=str(base / "run"),
        attacks=("sima", "pfami"), timesteps="0,10,20", topk=4, device="cpu", batch_size=16,
    )))
