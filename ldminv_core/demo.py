"""Paths and analysis defaults of the bundled demo (``assets/demo``).

The demo is a small latent diffusion model trained on Fashion-MNIST by
``scripts/train_demo.py``: ``assets/demo/model`` (a diffusers pipeline folder with vae/,
unet/, scheduler/), ``assets/demo/members`` (its training images) and
``assets/demo/heldout`` (images it never saw), 32x32 grayscale PNGs with captions in
``metadata.jsonl``. ``python -m ldminv_core analyze --demo`` analyzes it into
:func:`demo_run_dir` with :data:`DEMO_ANALYZE_DEFAULTS`. ``assets/demo/precomputed`` holds
its decoder geometry (``scripts/make_demo_geometry.py``), which the dashboard's first start
reuses after checking it applies (:mod:`ldminv_core.precomputed`).
"""
from __future__ import annotations

from pathlib import Path

from .runstore import default_runs_root

__all__ = [
    "DEMO_DIR",
    "DEMO_MODEL_DIR",
    "DEMO_MEMBERS_DIR",
    "DEMO_HELDOUT_DIR",
    "DEMO_ANALYZE_DEFAULTS",
    "demo_run_dir",
    "demo_available",
    "demo_precomputed",
    "DEMO_PRECOMPUTED_DIR",
]

DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"
DEMO_MODEL_DIR = DEMO_DIR / "model"
DEMO_MEMBERS_DIR = DEMO_DIR / "members"
DEMO_HELDOUT_DIR = DEMO_DIR / "heldout"
DEMO_PRECOMPUTED_DIR = DEMO_DIR / "precomputed"

#: AnalyzeConfig fields used by ``analyze --demo`` (options given on the command line win).
#: The demo analyzes the first 300 members and 300 held-out images: about 2 minutes on a
#: 2-core machine with the shipped decoder geometry, about 5 when it is recomputed (256
#: decoder JVPs per image, ``--recompute-geometry``); ``analyze --demo --limit 1000`` takes all
#: of them.
DEMO_ANALYZE_DEFAULTS: dict = {
    "attacks": ("sima", "pia", "loss", "secmi", "pfami"),
    "timesteps": "0:300:10",
    "topk": 50,
    "influence": "auto",
    "probes": "auto",  # unused: the demo's influence is exact (d = 256)
    "batch_size": 100,  # larger UNet batches: SimA, the first result, about 20% sooner
    "seed": 0,
    "limit": 300,
    "residual_dtype": "float32",
}


def demo_run_dir() -> Path:
    """Default run folder of the demo analysis: ``default_runs_root() / "demo"``."""
    return default_runs_root() / "demo"


def demo_available() -> bool:
    """True when the demo model and both image folders exist."""
    return (DEMO_MODEL_DIR / "unet").is_dir() and DEMO_MEMBERS_DIR.is_dir() and DEMO_HELDOUT_DIR.is_dir()


def demo_precomputed():
    """The demo's shipped geometry (:class:`ldminv_core.precomputed.PrecomputedGeometry`), or
    None when this checkout has none or it cannot be read."""
    from .errors import RunError
    from .precomputed import load_precomputed

    if not (DEMO_PRECOMPUTED_DIR / "geometry.npz").is_file():
        return None
    try:
        return load_precomputed(DEMO_PRECOMPUTED_DIR)
    except RunError:
        return None
