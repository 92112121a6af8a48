"""``python -m ldminv_core analyze``: the configuration from the options (and ``--demo``), the
checks before anything slow, the device and CPU threads, the cost estimate, then the run with a
progress bar per stage (:class:`_Bars`) and its report. Under torchrun / accelerate launch every
process runs this; rank 0 alone prints and finishes the run."""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path

import torch

from .. import demo
from .._validation import check_int
from ..choices import PRESETS
from ..errors import LdminvError
from ldminv_core.models.loading import idle_cpu_threads, resolve_device
from ..pipeline.config import AnalyzeConfig
from ..pipeline.cost import CostEstimate, estimate_cost
from ..pipeline.distributed import DistContext
from ..pipeline.inputs import load_config_model
from ..pipeline.plan import check_config
from ..pipeline.run import run_analysis
from ldminv_core.geometry.precomputed import PrecomputedGeometry
from ..report import build_report, format_report
from ldminv_core.runs import run_status

__all__ = ["run_analyze_command"]


def run_analyze_command(args: argparse.Namespace) -> int:
    """Run ``analyze`` with the parsed ``args``; returns the exit status (LdminvError for a user's
    mistake, which :func:`ldminv_core.cli.main.main` prints)."""
    scales = _scale_sweep(args)
    if scales is not None:  # --lora-scale 0,0.5,1.0: one run per scale on the same samples
        return _run_scale_sweep(args, scales)
    # 1. the configuration: the options, over the preset's and the demo's
    config = _config_from_args(args)
    # 2. every option, both folders, the model folder and --out, before anything slow
    out = Path(config.out).expanduser().resolve()
    if check_config(config):
        print(
            f"run {out} is already complete; it was made with these settings, so there is nothing to do "
            "(--force recomputes); "
            f"see: python -m ldminv_core report {out}"
        )
        return 0
    ctx = DistContext.from_env()  # torchrun / accelerate launch: one of several processes
    status = run_status(out)
    if status in ("unfinished", "running") and not config.force and ctx.is_main:
        print(f"resuming the unfinished run in {out}", file=sys.stderr)
    # 3. the device, the CPU threads and the model
    _quiet_libraries()
    device, threads = _device_and_threads(config, args, ctx)
    model = load_config_model(config, device=device)
    if ctx.active:
        print(f"rank {ctx.rank}/{ctx.world_size}: {device}"
              + (f", {threads} torch thread(s)" if threads is not None else ""), file=sys.stderr)
    elif threads is not None:
        print(f"running on cpu with {threads} torch thread(s)", file=sys.stderr)
    if not ctx.is_main:  # the other ranks fill their batches; rank 0 prints and finishes the run
        run_analysis(config, model=model)
        return 0
    # 4. the cost estimate (and the demo's shipped geometry, when it may apply)
    precomputed = _demo_precomputed(args, ctx)
    estimate = estimate_cost(config, model=model)
    _print_estimate(estimate)
    # 5. the run, a progress bar per stage
    bars = _Bars()
    try:
        path = run_analysis(config, progress=bars, model=model, precomputed=precomputed,
                            geometry_plan=estimate.geometry_plan)
    finally:
        bars.close()
    # 6. what became of the shipped geometry, and the report
    if precomputed is not None:
        used = json.loads((Path(path) / "run.json").read_text(encoding="utf-8")).get("geometry", {}).get("precomputed")
        if used:
            print(f"decoder geometry {'reused' if used['used'] else 'computed'}: {used['reason']}", file=sys.stderr)
    print(f"run complete: {path}")
    print(format_report(build_report(path)))
    return 0


def _scale_sweep(args: argparse.Namespace) -> tuple[float, ...] | None:
    """The scales of ``--lora-scale 0,0.5,1.0`` (a comma list with one ``--lora``), or None for a
    single run. LdminvError: a list beside other --lora-scale values, not exactly one --lora, no
    --out, or a scale given twice."""
    given = list(getattr(args, "lora_scale", None) or [])
    lists = [v for v in given if isinstance(v, tuple)]
    if not lists:
        return None
    if len(given) != 1:
        raise LdminvError(f"--lora-scale: a comma list of scales ({','.join(f'{v:g}' for v in lists[0])}) writes "
                          f"one run per scale and must be the only --lora-scale; got {len(given)} --lora-scale options")
    n_lora = len(getattr(args, "lora", None) or [])
    if n_lora != 1:
        raise LdminvError(f"--lora-scale {','.join(f'{v:g}' for v in lists[0])}: expected exactly one --lora "
                          f"adapter to scale, got {n_lora}")
    if not getattr(args, "out", None):
        raise LdminvError("--lora-scale with a comma list: --out required (the runs go to OUT/scale-<s>)")
    scales = lists[0]
    if len({f"{v:g}" for v in scales}) != len(scales):
        raise LdminvError(f"--lora-scale: expected distinct scales, got {','.join(f'{v:g}' for v in scales)}")
    return scales


def _run_scale_sweep(args: argparse.Namespace, scales: tuple[float, ...]) -> int:
    """One ``analyze`` per scale into OUT/scale-<s> (same folders, so the same samples), then the
    compare command of the runs."""
    out = Path(args.out).expanduser()
    paths = []
    for s in scales:
        sub = argparse.Namespace(**vars(args))
        sub.lora_scale = [float(s)]
        sub.out = str(out / f"scale-{s:g}")
        print(f"LoRA scale {s:g}: {sub.out}", file=sys.stderr)
        status = run_analyze_command(sub)
        if status:
            return status
        paths.append(sub.out)
    if DistContext.from_env().is_main:
        print("compare the scales on the same samples with:")
        print("python -m ldminv_core compare " + " ".join(paths))
    return 0


def _config_from_args(args: argparse.Namespace) -> AnalyzeConfig:
    """The :class:`AnalyzeConfig` of the options given (explicit options over ``--preset``, and
    with ``--demo`` over the demo's defaults and folders). LdminvError: --demo with folders, the
    demo's assets missing, a required option missing, --threads below 1."""
    options = {f.name: getattr(args, f.name) for f in fields(AnalyzeConfig) if getattr(args, f.name, None) is not None}
    options.pop("force", None)
    options.pop("allow_duplicates", None)
    options.pop("break_lock", None)
    if args.preset:
        options = {**PRESETS[args.preset], **options}
    if args.demo:
        if options.get("model_adapter"):
            raise LdminvError("--demo: analyzes the bundled demo; do not also give --model-adapter")
        options = _demo_options(args.demo, options)
    else:
        required = ("members", "heldout", "out") if options.get("model_adapter") else ("model", "members", "heldout", "out")
        missing = [f"--{k}" for k in required if not options.get(k)]
        if missing:
            raise LdminvError(f"analyze: {', '.join(missing)} required (or --demo)")
        options.setdefault("model", None)  # with --model-adapter, --model is optional
    config = AnalyzeConfig(
        **options, force=bool(args.force), allow_duplicates=bool(getattr(args, "allow_duplicates", False)),
        break_lock=bool(getattr(args, "break_lock", False))
    )
    if args.threads is not None:
        check_int(args.threads, "--threads", minimum=1)
    return config


def _demo_options(which: str, options: dict) -> dict:
    """``options`` over the defaults of demo ``which`` ("membership" or "shift"), with its model
    and folders (the shift demo's folders are built first) and its run folder unless --out."""
    if options.get("model") or options.get("members") or options.get("heldout"):
        raise LdminvError("--demo: analyzes the bundled demo; do not also give --model/--members/--heldout")
    if not demo.demo_available():
        raise LdminvError(
            f"--demo: the demo assets are missing under {demo.DEMO_DIR} (expected model/, members/, "
            "heldout/); create them with: python scripts/train_demo.py"
        )
    if which == "shift":  # two folders of non-members, built from the demo's held-out images
        members_dir, heldout_dir = demo.build_shift_demo_data()
        print(f"shift demo: 'members' = held-out footwear images ({members_dir}), 'held-out' = held-out "
              f"clothes images ({heldout_dir}); the model was trained on neither: no membership signal exists",
              file=sys.stderr)
        merged = dict(demo.SHIFT_DEMO_ANALYZE_DEFAULTS)
        default_out = demo.shift_demo_run_dir()
    else:
        members_dir, heldout_dir = demo.DEMO_MEMBERS_DIR, demo.DEMO_HELDOUT_DIR
        merged = dict(demo.DEMO_ANALYZE_DEFAULTS)
        default_out = demo.demo_run_dir()
    merged.update(options)
    merged.update(model=str(demo.DEMO_MODEL_DIR), members=str(members_dir), heldout=str(heldout_dir))
    merged.setdefault("out", str(default_out))
    return merged


def _device_and_threads(config: AnalyzeConfig, args: argparse.Namespace,
                        ctx: DistContext) -> tuple[torch.device, int | None]:
    """This process' device (cuda:LOCAL_RANK under a launcher on GPUs) and, on CPU, the torch
    threads set (--threads, else the idle cores shared by this machine's processes)."""
    device = resolve_device(config.device)
    if ctx.active and device.type == "cuda" and config.device in ("auto", "cuda"):
        device = torch.device(f"cuda:{ctx.local_rank % torch.cuda.device_count()}")
    threads = None
    if device.type == "cpu":
        local_procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)))
        threads = args.threads if args.threads is not None else max(1, idle_cpu_threads() // local_procs)
        torch.set_num_threads(threads)
    return device, threads


def _demo_precomputed(args: argparse.Namespace, ctx: DistContext) -> PrecomputedGeometry | None:
    """The demo's shipped decoder geometry (with --demo in one process, unless
    --recompute-geometry), saying whether it may apply."""
    if not args.demo or args.recompute_geometry or ctx.active:
        return None
    precomputed = demo.demo_precomputed()
    if precomputed is not None and args.demo == "shift":
        print(f"decoder geometry: {precomputed.folder} holds the membership demo's images, not these; it is "
              "checked, and the geometry is computed", file=sys.stderr)
    elif precomputed is not None:
        print(f"decoder geometry: reusing {precomputed.folder} if it applies to this machine's latents "
              "(--recompute-geometry computes it)", file=sys.stderr)
    return precomputed


def _print_estimate(estimate: CostEstimate) -> None:
    """The skipped files, the warnings and the cost table, on stderr."""
    for split, skipped in estimate.skipped.items():
        if skipped:
            shown = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
            more = f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else ""
            print(f"{split}: skipped {len(skipped)} file(s): {shown}{more}", file=sys.stderr)
    for text in estimate.warnings:
        print(f"warning: {text}", file=sys.stderr)
    print("cost estimate (full run):", file=sys.stderr)
    print(estimate, file=sys.stderr, flush=True)


def _quiet_libraries() -> None:
    """Silence the loaders' own progress bars and info logs (ours are enough)."""
    try:
        import diffusers.utils.logging as dlog

        dlog.disable_progress_bar()
        dlog.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    try:
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
        tlog.set_verbosity_error()
    except Exception:  # noqa: BLE001
        pass


class _Bars:
    """tqdm progress bars, one per stage, fed by run_analysis' progress callback (whole samples
    after each batch; inside a geometry batch, fractions of samples, shown to one decimal)."""

    def __init__(self) -> None:
        self.stage: str | None = None
        self.bar = None

    def __call__(self, stage: str, done: float, total: int) -> None:
        from tqdm.auto import tqdm

        shown = int(done) if float(done).is_integer() else round(float(done), 1)
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, initial=shown, desc=f"{stage:>8}", unit="img", file=sys.stderr)
            return
        if shown != self.bar.n:
            self.bar.n = shown  # set, not added: no drift from summing fractions
            self.bar.refresh()

    def close(self) -> None:
        """Close the current stage's bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
