"""Shared pytest fixtures: tiny diffusers pipeline folders and image folders on disk.

The builders live in ``tests/tiny_models.py`` (plain functions); here they are exposed as
session-scoped fixtures so that every test module can reuse one copy of each. Helpers that
several test modules share live in ``tests/support/`` (imported as ``support.<module>``).

Torch runs single-threaded in the test session: these models are far too small to gain
from intra-op threads, and on a shared machine thread oversubscription slows them down by
an order of magnitude.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
# The shared helpers (tiny_models, synthetic_runs, the support/ package) import by name from any
# test folder; test modules never import one another.
sys.path.insert(0, str(TESTS))

import tiny_models  # noqa: E402

torch.set_num_threads(1)


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
