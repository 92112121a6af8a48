"""Write the demo's precomputed decoder geometry, ``assets/demo/precomputed``.

The dashboard's first start analyzes the bundled demo; its decoder geometry (256 decoder JVPs
per image, about 3 minutes for 600 images on 2 cores) is the slow part, and it is the same on
every machine for the same VAE and images. This script computes it once with the demo's own
settings (``ldminv_core.demo.DEMO_ANALYZE_DEFAULTS``) through ``run_analysis`` and saves
influence, log-volume and the latents they came from. ``run_analysis(...,
precomputed=...)`` reuses it only after checking the VAE files, the settings, the samples
and this machine's latents (see ``ldminv_core/precomputed.py``); tests/core/test_demo_assets.py
recomputes a subset and compares.

    python scripts/make_demo_geometry.py                    # compute (about 3-6 minutes)
    python scripts/make_demo_geometry.py --from RUN_FOLDER  # take it from a complete demo run
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ldminv_core import demo  # noqa: E402
from ldminv_core.pipeline.config import AnalyzeConfig
from ldminv_core.pipeline.record import _versions
from ldminv_core.pipeline.run import run_analysis
from ldminv_core.geometry.precomputed import save_precomputed, vae_digest
from ldminv_core.runs import Run

OUT = demo.DEMO_DIR / "precomputed"


def _from_run(folder: Path) -> Path:
    run = Run.open(folder)
    geo = run.settings["geometry"]
    settings = {"topk": geo["topk"], "influence": geo["influence"], "probes": geo["probes"],
                "log_volume_method": geo["log_volume_method"], "seed": run.settings["seeds"]["seed"]}
    want = demo.DEMO_ANALYZE_DEFAULTS
    if (run.settings.get("limit"), geo["topk"], run.settings.get("config", {}).get("probes"), settings["seed"]) != (
            want["limit"], want["topk"], want["probes"], want["seed"]):
        raise SystemExit(f"{folder}: not analyzed with the demo's settings {want}")
    if Path(run.settings["model"]).resolve() != demo.DEMO_MODEL_DIR.resolve():
        raise SystemExit(f"{folder}: model {run.settings['model']} is not {demo.DEMO_MODEL_DIR}")
    provenance = {
        "made_by": "scripts/make_demo_geometry.py",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "from_run_created": run.settings.get("created"),
        "geometry_seconds": run.settings.get("timings", {}).get("geometry"),
        "sessions": run.settings.get("sessions"),
        "versions": run.settings.get("versions") or _versions(),
    }
    return save_precomputed(OUT, samples=run.samples, latents=np.asarray(run.latents),
                            influence=np.asarray(run.influence), log_volume=run.log_volume,
                            settings=settings, vae_sha256=vae_digest(demo.DEMO_MODEL_DIR),
                            provenance=provenance)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="source", type=Path, help="a complete demo run folder to take it from")
    args = ap.parse_args()
    if args.source is not None:
        out = _from_run(args.source)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = AnalyzeConfig(model=str(demo.DEMO_MODEL_DIR), members=str(demo.DEMO_MEMBERS_DIR),
                                heldout=str(demo.DEMO_HELDOUT_DIR), out=str(Path(tmp) / "run"),
                                **{**demo.DEMO_ANALYZE_DEFAULTS, "attacks": ("sima",)})
            out = _from_run(run_analysis(cfg))
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
