"""The cost estimate on every model family (issue 24): it times real batches through the family's
own predictor (the denoiser is seen called on the timed batch) and the denoiser calls it counts for
each attack are the calls the analysis then makes, counted by a hook on the denoiser stage by stage
(SDXL, SD3 with T5, Flux with its guidance embedding, DiT, class-conditional UNet); its table names
the denoiser ("transformer calls" for SD3, Flux and DiT, "UNet calls" for the UNet families).
"""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from ldminv_core.models.loading import load_model
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.cost import estimate_cost
from ldminv_core.pipeline.run import run_analysis
from ldminv_app.run_folders import estimate_rows
from tests.tiny_families import build_tiny_class_unet, build_tiny_dit, build_tiny_sdxl, write_labelled_folder
from tests.tiny_models import write_image_folder
from tests.tiny_flux import build_tiny_flux
from tests.tiny_sd3 import build_tiny_sd3

# Whole analyses (every attack) on five tiny models.
pytestmark = pytest.mark.slow

ATTACKS = ("sima", "pia", "loss", "secmi", "pfami")


def _captioned(root: Path) -> tuple[Path, Path]:
    kw = dict(modes=("RGB",), captions=True, formats=("png",))
    return (write_image_folder(root / "members", 3, seed=3, prefix="m", **kw)[0].parent,
            write_image_folder(root / "heldout", 2, seed=4, prefix="h", **kw)[0].parent)


def _labelled(root: Path, classes: int) -> tuple[Path, Path]:
    return (write_labelled_folder(root / "members", 3, [0, 1, classes - 1], 1),
            write_labelled_folder(root / "heldout", 2, [classes - 1, 0], 2))


FAMILIES = {
    "sdxl": (lambda root: (build_tiny_sdxl(root / "model"), root / "model")[1], _captioned, "UNet"),
    "sd3": (lambda root: build_tiny_sd3(root, with_t5=True), _captioned, "transformer"),
    "flux": (lambda root: build_tiny_flux(root, guidance_embeds=True), _captioned, "transformer"),
    "dit": (lambda root: build_tiny_dit(root / "model"), lambda root: _labelled(root, 5), "transformer"),
    "class_unet": (lambda root: build_tiny_class_unet(root / "model"), lambda root: _labelled(root, 3), "UNet"),
}


class _CallCounter:
    """Samples passed through the denoiser, per stage (the stage the run last reported)."""

    def __init__(self, denoiser: torch.nn.Module) -> None:
        self.stage = "estimate"
        self.samples: Counter[str] = Counter()
        self.batches: list[int] = []
        self._handle = denoiser.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        self.samples[self.stage] += int(x.shape[0])
        self.batches.append(int(x.shape[0]))

    def progress(self, stage: str, done, total) -> None:
        self.stage = stage

    def close(self) -> None:
        self._handle.remove()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_estimate_times_the_family_predictor_and_counts_its_calls(name, tmp_path):
    build_model, build_data, denoiser_words = FAMILIES[name]
    model_dir = Path(build_model(tmp_path / "m"))
    members, heldout = build_data(tmp_path / "data")
    model = load_model(model_dir)
    assert model.family.name == name
    cfg = dict(model=str(model_dir), members=str(members), heldout=str(heldout), attacks=ATTACKS,
               timesteps="10,60", batch_size=5, topk=2, device="cpu", seed=1)
    counter = _CallCounter(model.unet)
    try:
        est = estimate_cost(AnalyzeConfig(out=str(tmp_path / "never"), **cfg), model=model)
        # the timing went through the denoiser, on the timed batch (warm-up call + timed call)
        assert counter.samples["estimate"] >= 2 * est.timed_batch and est.timed_batch in counter.batches
        counter.samples.clear()
        run_analysis(AnalyzeConfig(out=str(tmp_path / "run"), **cfg), model=model, progress=counter.progress,
                     geometry_plan=est.geometry_plan)
    finally:
        counter.close()
    stages = {s.stage: s for s in est.stages}
    n = 5
    for attack in ATTACKS:
        assert stages[attack].unet_calls == counter.samples[attack], attack  # the calls the run made
        assert stages[attack].unet_calls % n == 0
        assert math.isfinite(stages[attack].seconds) and stages[attack].seconds > 0
    assert sum(counter.samples[s] for s in counter.samples if s not in ATTACKS) == 0  # no other stage calls it
    label = f"{denoiser_words} calls"
    assert est.denoiser == denoiser_words and est.denoiser_calls_label == label
    assert label in str(est)
    rows = {r["stage"]: r for r in estimate_rows(est)}
    assert rows["sima"][label] == f"{2 * n:,}" and rows["pfami"][label] == f"{stages['pfami'].unet_calls:,}"
    other = "UNet calls" if denoiser_words == "transformer" else "transformer calls"
    assert other not in rows["sima"] and other not in str(est)
