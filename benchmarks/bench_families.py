"""Family benchmark: seconds per image of every attack and of the decoder geometry, per model family.

For each family a tiny random pipeline folder is built from configs (the test suite's builders in
``tests/tiny_*.py``; nothing downloads), two small image folders are written (captions for text
families, a ``label`` column for class-conditional ones), and ``analyze`` runs end to end with every
attack. The numbers are the run's own per-stage wall times (run.json ``timings``) divided by the
images analysed, next to the geometry engine the run recorded (run.json ``geometry.plan.engine``) and the
denoiser class, so one table answers "what does this family cost, and how was its geometry taken".

Tiny models measure the per-family overhead of ldminv's conditioning and conversions, not the
cost of a real checkpoint: compare rows, not absolute seconds.

Usage (from the repository root): ``nice -n 5 python benchmarks/bench_families.py [--images 8]``;
writes ``benchmarks/families.json`` and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

__all__ = ["FAMILY_BUILDERS", "run_families", "format_table"]

_TIMESTEPS = "0:100:50"


def _sd(folder: Path) -> Path:
    from tests.tiny_models import build_tiny_conditional

    return build_tiny_conditional(folder)


def _sdxl(folder: Path) -> Path:
    from tests.tiny_families import build_tiny_sdxl

    build_tiny_sdxl(folder)  # returns the pipeline it saved
    return folder


def _sd3(folder: Path, *, with_t5: bool) -> Path:
    from tests.tiny_sd3 import build_tiny_sd3

    return build_tiny_sd3(folder, with_t5=with_t5)


def _flux(folder: Path, *, guidance_embeds: bool) -> Path:
    from tests.tiny_flux import build_tiny_flux

    return build_tiny_flux(folder, guidance_embeds=guidance_embeds)


def _dit(folder: Path) -> Path:
    from tests.tiny_families import build_tiny_dit

    return build_tiny_dit(folder)


def _class_unet(folder: Path) -> Path:
    from tests.tiny_families import build_tiny_class_unet

    return build_tiny_class_unet(folder)


def _unconditional(folder: Path) -> Path:
    from tests.tiny_models import build_tiny_unconditional

    return build_tiny_unconditional(folder, image_channels=3)


def _ldm_light(folder: Path) -> Path:
    """The shipped ldm_light example adapter over the tests' stand-in of the paper's classes
    (``tests/core/models/test_custom_adapter.py``); returns the checkpoint folder and sets
    LDM_LIGHT_REPO. The row's model is ``examples/ldm_light_adapter.py``."""
    from tests.core.models.test_custom_adapter import write_ldm_light

    repo, out = write_ldm_light(folder)
    os.environ["LDM_LIGHT_REPO"] = str(repo)
    return out


_EXAMPLE_ADAPTER = Path(__file__).resolve().parents[1] / "examples" / "ldm_light_adapter.py"

#: (row name, folder builder, what the images carry: "captions", "labels:<n classes>" or None).
FAMILY_BUILDERS: tuple[tuple[str, Callable[[Path], Path], str | None], ...] = (
    ("sd", _sd, "captions"),
    ("sdxl", _sdxl, "captions"),
    ("sd3 (with T5)", lambda f: _sd3(f, with_t5=True), "captions"),
    ("sd3 (no T5)", lambda f: _sd3(f, with_t5=False), "captions"),
    ("flux (dev, guidance)", lambda f: _flux(f, guidance_embeds=True), "captions"),
    ("flux (schnell)", lambda f: _flux(f, guidance_embeds=False), "captions"),
    ("dit", _dit, "labels:5"),
    ("class_unet", _class_unet, "labels:3"),
    ("unconditional", _unconditional, None),
    ("custom (ldm_light adapter)", _ldm_light, None),
)


def _images(root: Path, n: int, carry: str | None) -> tuple[Path, Path]:
    """Members and held-out folders of ``n`` images each (captions or labels as ``carry`` says)."""
    from tests.tiny_families import write_labelled_folder
    from tests.tiny_models import write_image_folder

    dirs = (root / "members", root / "heldout")
    for k, folder in enumerate(dirs):
        if carry is not None and carry.startswith("labels:"):
            classes = int(carry.split(":")[1])
            write_labelled_folder(folder, n, [i % classes for i in range(n)], seed=10 + k)
        else:
            write_image_folder(folder, n, seed=10 + k, prefix=f"s{k}", formats=("png",),
                               captions=carry == "captions")
    return dirs


def _one(name: str, build: Callable[[Path], Path], carry: str | None, *, n: int, root: Path) -> dict[str, Any]:
    """Analyze one family's tiny folder with every attack; per-image seconds from run.json."""
    from ldminv_core.choices import ATTACK_NAMES
    from ldminv_core.pipeline.config import AnalyzeConfig
    from ldminv_core.pipeline.run import run_analysis

    model = build(root / "model")
    members, heldout = _images(root, n, carry)
    t0 = time.perf_counter()
    adapter = str(_EXAMPLE_ADAPTER) if name.startswith("custom") else None
    attacks = ATTACK_NAMES if carry == "captions" else tuple(a for a in ATTACK_NAMES if a != "clid")
    out = run_analysis(AnalyzeConfig(model=str(model), members=str(members), heldout=str(heldout),
                                     out=str(root / "run"), attacks=attacks, timesteps=_TIMESTEPS,
                                     device="cpu", batch_size=n, topk=8, probes=4, model_adapter=adapter))
    wall = time.perf_counter() - t0
    data = json.loads((out / "run.json").read_text())
    images = 2 * n
    per_image = {stage: round(float(s) / images, 5) for stage, s in data.get("timings", {}).items()}
    return {"family": name, "recorded_family": data.get("family"), "images": images,
            "lora_loader": _lora_loader(data.get("family")),
            "denoiser": data.get("model_class"),
            "geometry_engine": ((data.get("geometry") or {}).get("plan") or {}).get("engine"),
            "seconds_per_image": per_image, "wall_s": round(wall, 2)}


def _lora_loader(family: str | None) -> str:
    """How a LoRA file is loaded for ``family`` (models.lora_plan's table), in words."""
    from ldminv_core.models.lora_plan import LORA_LOADERS, NO_LORA_LOADER

    if family in LORA_LOADERS:
        mixin, denoiser, encoders = LORA_LOADERS[family]
        return f"{mixin} -> {denoiser}" + (f" + {', '.join(encoders)}" if encoders else "")
    return "none: " + NO_LORA_LOADER.get(family or "", "no LoRA loader")[:60]


def run_families(*, images: int = 8, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Time every family (or those named in ``only``); returns a JSON-ready dict."""
    rows = []
    for name, build, carry in FAMILY_BUILDERS:
        if only and name.split(" ")[0] not in only:
            continue
        with tempfile.TemporaryDirectory(prefix="ldminv-bench-family-") as tmp:
            try:
                rows.append(_one(name, build, carry, n=images, root=Path(tmp)))
            except Exception as exc:  # a family that fails is reported, not hidden
                rows.append({"family": name, "error": f"{type(exc).__name__}: {exc}"})
        print(json.dumps(rows[-1]), flush=True)
    return {"rows": rows, "timesteps": _TIMESTEPS, "images_per_family": 2 * images}


def format_table(result: dict[str, Any]) -> str:
    """The result as a markdown table: seconds per image per stage, geometry engine."""
    stages = ["encode", "geometry", "sima", "pia", "loss", "secmi", "pfami", "clid"]
    lines = ["| family | recorded | geometry engine | " + " | ".join(f"{s} s/img" for s in stages) + " | LoRA loader |",
             "|---|---|---|" + "---|" * len(stages) + "---|"]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['family']} | error: {row['error'][:80]} |")
            continue
        cells = [f"{row['seconds_per_image'][s]:.4f}" if s in row["seconds_per_image"] else "n/a" for s in stages]
        lines.append(f"| {row['family']} | {row['recorded_family']} | {row['geometry_engine']} | "
                     + " | ".join(cells) + f" | {row['lora_loader']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="images per split (default 8)")
    parser.add_argument("--only", nargs="*", default=(), help="family names to run (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).with_name("families.json")))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    result = run_families(images=args.images, only=tuple(args.only))
    result["machine"] = common.machine_info()
    result["load_average"] = {"start": load_start, "end": os.getloadavg()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(format_table(result))
    print(f"load average start {load_start}, end {result['load_average']['end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
