"""Shared pytest fixtures: tiny diffusers pipeline folders and image folders on disk.

The builders live in ``tests/tiny_models.py`` (plain functions); here they are exposed as
session-scoped fixtures so that every test module can reuse one copy of each. Helpers that
several test modules share live in ``tests/support/`` (imported as ``support.<module>``). The
dashboard's background tasks of a test end with it (``support.background``), and the test process
preloads no model in the background (``LDMINV_PRELOAD_MODEL_MB=0``).

Torch runs single-threaded in the test session: these models are far too small to gain
from intra-op threads, and on a shared machine thread oversubscription slows them down by
an order of magnitude.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

# no background load of a run's model in the test process (tests/app/test_model_preload.py turns it
# on for itself): page tests build tiny models on the main thread
os.environ.setdefault("LDMINV_PRELOAD_MODEL_MB", "0")

TESTS = Path(__file__).resolve().parent
# The shared helpers (tiny_models, synthetic_runs, the support/ package) import by name from any
# test folder; test modules never import one another.
sys.path.insert(0, str(TESTS))

import tiny_models  # noqa: E402

# imported here, on the main thread, before any test: the dashboard's server imports diffusers in a
# background thread once its pages are quiet (ldminv_app.preimport), and two threads importing the
# same package's modules for the first time can meet half-initialised modules
import diffusers  # noqa: E402,F401
from diffusers import AutoencoderKL  # noqa: E402,F401

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _background_work_ends_with_the_test():
    """No dashboard background task of one test runs on into the next (support.background)."""
    yield
    from support.background import stop_background_work

    stop_background_work()


@pytest.fixture(scope="session")
def tiny_uncond_model(tmp_path_factory) -> Path:
    """Pipeline folder: vae/ (AutoencoderKL 1x16x16 -> 4x4x4, scaling 0.5), unet/ (UNet2DModel),
    scheduler/ (DDPMScheduler)."""
    return tiny_models.build_tiny_unconditional(tmp_path_factory.mktemp("tiny_uncond"))


@pytest.fixture(scope="session")
def tiny_cond_model(tmp_path_factory) -> Path:
    """Pipeline folder of a text-conditioned model: vae/ (3x16x16 -> 4x4x4), unet/
    (UNet2DConditionModel), scheduler/, text_encoder/ (CLIPTextModel), tokenizer/ (CLIPTokenizer)."""
    return tiny_models.build_tiny_conditional(tmp_path_factory.mktemp("tiny_cond"))


@pytest.fixture(scope="session")
def tiny_image_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(members, heldout) folders of 8 mixed PNG/JPEG images each (modes L/RGB/RGBA, sizes
    16x16, 20x24, 33x17), no captions."""
    root = tmp_path_factory.mktemp("tiny_images")
    tiny_models.write_image_folder(root / "members", 8, seed=1, prefix="m")
    tiny_models.write_image_folder(root / "heldout", 8, seed=2, prefix="h")
    return root / "members", root / "heldout"


@pytest.fixture(scope="session")
def tiny_caption_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """(members, heldout) folders of 8 RGB images each with captions in metadata.jsonl."""
    root = tmp_path_factory.mktemp("tiny_captioned")
    kw = dict(modes=("RGB",), captions=True)
    tiny_models.write_image_folder(root / "members", 8, seed=3, prefix="m", **kw)
    tiny_models.write_image_folder(root / "heldout", 8, seed=4, prefix="h", **kw)
    return root / "members", root / "heldout"
