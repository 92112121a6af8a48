"""The two runs of the dashboard's first start: a quick preview of the demo, then the demo itself.

The demo analysis (:data:`ldminv_core.demo.DEMO_ANALYZE_DEFAULTS`: five attacks at 30 timesteps on
300 + 300 images) takes a minute or more on a small machine. The preview is a real run of its own,
on the same images and the same model, with the same seeds and batches, that needs a few seconds:

- one attack, SimA (the cheapest maskable attack: one UNet call per image and timestep);
- every tenth timestep of the demo's grid: t = 0, 100, 200 (:func:`preview_timesteps`);
- the demo's shipped decoder geometry, reused only after it is checked to apply
  (:mod:`ldminv_core.geometry.precomputed`), so masks and findings exist at once;
- no "blind" stage: the blind baseline's features are computed from the files by the first
  evaluation that asks for them (:func:`ldminv_core.data.blind_features.run_blind_features`), so the
  first number does not wait for them;
- on the CPU, the demo model's TorchScript export (:data:`ldminv_core.demo.DEMO_TRACED_DIR`,
  :mod:`ldminv_core.models.traced`) instead of the diffusers model, once every model file is
  checked to be the one it was traced from: the preview's process then never imports diffusers
  (about 5 s of a cold start on two cores). run.json "model_export" records it. Without a usable
  export (or when the decoder is needed after all) the diffusers model computes the rest.

Every number of the preview is computed on this machine from this run (its run.json records its
settings like any run's), and the dashboard labels every page of the run in
:func:`demo_preview_run_dir` as a preview until the demo's own first attack has landed. Its SimA terms at t = 0, 100 and 200 equal the
demo run's at the same timesteps (same seeds, same batches).

Run as ``python -m ldminv_core.first_start preview [OUT]`` (the preview) or ``... demo [OUT]`` (the
demo analysis with its shipped geometry, as ``analyze --demo`` computes it, without the printed
report). The dashboard's first start runs both in a separate process, so that their imports (torch,
diffusers) and their compute use a core of their own while the server draws pages (in the server's
process they would hold the interpreter lock its page scripts need). Each prints nothing on success
and the error on failure (exit status 2 for a refused input, 1 otherwise).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from ldminv_core import demo as _demo
from ldminv_core.errors import DataLoadError, LdminvError
from ldminv_core.runs import default_runs_root

__all__ = ["PREVIEW_EVERY", "preview_timesteps", "preview_defaults", "demo_preview_run_dir", "preview_config",
           "demo_config", "run_demo_preview", "run_demo", "preview_description", "main", "RUNS"]

#: The preview takes every PREVIEW_EVERY-th timestep of the demo's grid ("0:300:10": t = 0, 100, 200).
PREVIEW_EVERY = 10


def preview_timesteps() -> list[int]:
    """The preview's timesteps: every :data:`PREVIEW_EVERY`-th of the demo's grid (read from
    :data:`ldminv_core.demo.DEMO_ANALYZE_DEFAULTS` when asked)."""
    from ldminv_core.timestep_spec import parse_timesteps

    return parse_timesteps(str(_demo.DEMO_ANALYZE_DEFAULTS["timesteps"]))[::PREVIEW_EVERY]


def preview_defaults() -> dict:
    """AnalyzeConfig fields of the preview: the demo's, with one attack, every tenth timestep and no blind stage."""
    return {**_demo.DEMO_ANALYZE_DEFAULTS, "attacks": ("sima",),
            "timesteps": ",".join(map(str, preview_timesteps())), "blind_stage": False}


def demo_preview_run_dir() -> Path:
    """Run folder of the preview: ``default_runs_root() / "demo-preview"``."""
    return default_runs_root() / "demo-preview"


def _config(out: str | Path, defaults: dict, device: str):
    from ldminv_core.pipeline.config import AnalyzeConfig

    if not _demo.demo_available():
        raise DataLoadError(
            f"the demo assets are missing: expected {_demo.DEMO_MODEL_DIR}, {_demo.DEMO_MEMBERS_DIR} and "
            f"{_demo.DEMO_HELDOUT_DIR} (python scripts/train_demo.py writes them)")
    return AnalyzeConfig(model=str(_demo.DEMO_MODEL_DIR), members=str(_demo.DEMO_MEMBERS_DIR),
                         heldout=str(_demo.DEMO_HELDOUT_DIR), out=str(out), device=device, **defaults)


def preview_config(out: str | Path | None = None, *, device: str = "auto"):
    """The :class:`~ldminv_core.pipeline.config.AnalyzeConfig` of the preview into ``out``
    (default :func:`demo_preview_run_dir`).

    Raises:
        DataLoadError: the demo assets are missing from this checkout.
    """
    return _config(demo_preview_run_dir() if out is None else out, preview_defaults(), device)


def demo_config(out: str | Path | None = None, *, device: str = "auto"):
    """The AnalyzeConfig of the demo run into ``out`` (default :func:`ldminv_core.demo.demo_run_dir`):
    :data:`ldminv_core.demo.DEMO_ANALYZE_DEFAULTS`, as ``analyze --demo``.

    Raises:
        DataLoadError: the demo assets are missing from this checkout.
    """
    return _config(_demo.demo_run_dir() if out is None else out, dict(_demo.DEMO_ANALYZE_DEFAULTS), device)


def preview_description() -> str:
    """What the preview is, in one sentence, for the banner of every page that shows it."""
    from ldminv_core.timestep_spec import parse_timesteps

    shown = preview_timesteps()
    full = parse_timesteps(str(_demo.DEMO_ANALYZE_DEFAULTS["timesteps"]))
    limit = _demo.DEMO_ANALYZE_DEFAULTS.get("limit")
    return (f"SimA at t = {', '.join(map(str, shown))} only ({len(shown)} of the {len(full)} timesteps the demo "
            f"analyses), on the demo's {limit} + {limit} images, computed on this machine with the demo's "
            "checked decoder geometry")


def run_demo_preview(out: str | Path | None = None, *,
                     progress: Callable[[str, float, int], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> Path:
    """Analyse the preview into ``out`` (default :func:`demo_preview_run_dir`; resumed when
    unfinished); returns the run folder. ``progress`` and ``should_stop`` as for
    :func:`ldminv_core.pipeline.run.run_analysis`."""
    from ldminv_core.models.traced import TracedExportError
    from ldminv_core.pipeline.run import run_analysis

    config = preview_config(out)
    precomputed = _demo.demo_precomputed()
    model = _traced_demo_model(config.device)
    if model is not None:
        try:
            return Path(run_analysis(config, progress=progress, should_stop=should_stop, precomputed=precomputed,
                                     model=model))
        except TracedExportError as exc:  # the decoder was needed: the diffusers model resumes the run
            print(f"note: {exc}; resuming with the diffusers model", file=sys.stderr)
    return Path(run_analysis(config, progress=progress, should_stop=should_stop, precomputed=precomputed))


def _traced_demo_model(device: str):
    """The demo model from its TorchScript export when it applies here (CPU, unchanged model
    files), else None (the reason goes to stderr: the process log)."""
    import torch

    from ldminv_core.models.loading import resolve_device
    from ldminv_core.models.traced import TracedExportError, load_traced

    dev = resolve_device(device)
    if dev.type != "cpu" or not _demo.DEMO_TRACED_DIR.is_dir():
        return None
    try:
        return load_traced(_demo.DEMO_MODEL_DIR, _demo.DEMO_TRACED_DIR, device=torch.device("cpu"))
    except TracedExportError as exc:
        print(f"note: the demo's TorchScript export is not used: {exc}", file=sys.stderr)
        return None


def run_demo(out: str | Path | None = None, *, progress: Callable[[str, float, int], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> Path:
    """Analyse the demo into ``out`` (default :func:`ldminv_core.demo.demo_run_dir`; resumed when
    unfinished) with its shipped geometry where it applies; returns the run folder."""
    from ldminv_core.pipeline.run import run_analysis

    config = demo_config(out)
    return Path(run_analysis(config, progress=progress, should_stop=should_stop, precomputed=_demo.demo_precomputed()))


#: What ``python -m ldminv_core.first_start RUN [OUT]`` can run.
RUNS: dict[str, Callable[..., Path]] = {"preview": run_demo_preview, "demo": run_demo}


def main(argv: list[str] | None = None) -> int:
    """``python -m ldminv_core.first_start {preview,demo} [OUT]``: that run into OUT (default its
    own folder under ``$LDMINV_HOME/runs``). Exit status 0; 2 for a refused input or usage; 1 for
    any other error."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in RUNS or len(args) > 2:
        print(f"usage: python -m ldminv_core.first_start {{{','.join(RUNS)}}} [OUT]", file=sys.stderr)
        return 2
    try:
        RUNS[args[0]](args[1] if len(args) > 1 else None)
    except LdminvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
