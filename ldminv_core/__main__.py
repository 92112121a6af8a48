"""Command line: ``python -m ldminv_core analyze ...`` and ``python -m ldminv_core report RUN``.

analyze   run (or resume) a membership-leakage analysis into a run folder, printing the cost
          estimate first and a progress bar per stage; ``--demo`` analyzes the bundled demo (reusing
          its shipped decoder geometry when it applies; ``--recompute-geometry`` computes it);
          ``--demo shift`` analyzes the shift demo: two folders of images the demo model never saw,
          footwear as "members" and clothes as "held-out" (pure distribution shift, no member at
          all; :func:`ldminv_core.demo.build_shift_demo_data` builds them under $LDMINV_HOME).
report    print the report of a finished run under an evaluation protocol (``--protocol
          standard|paper|honest``) as a table, or as the JSON object of the method reference
          (``--json``).

User errors print one line ``error: ...`` on stderr and exit with status 2. Every option and
both image folders are checked before the model is loaded. ``analyze`` into a folder that holds a
complete run made with other settings exits with status 2 naming them (``--force`` recomputes);
with the same settings it prints a note and exits 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Sequence

from .errors import LdminvError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one line ``error: ...`` and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _probes_option(text: str) -> int | str:
    """``--probes``: "auto" or a whole number (its range is checked with the other options)."""
    from .choices import PROBES_AUTO

    if text.strip().lower() == PROBES_AUTO:
        return PROBES_AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    from .choices import (  # light: --help does not import torch
        DEFAULT_N_BOOT,
        HUTCHINSON_RANK_PROBES,
        INFLUENCE_METHODS,
        LATENT_KINDS,
        LOG_VOLUME_KINDS,
        PRESETS,
        RESIDUAL_DTYPES,
    )

    parser = _Parser(
        prog="python -m ldminv_core",
        description="Audit membership leakage of latent diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    a = sub.add_parser(
        "analyze",
        help="analyze a model and two image folders into a run folder (resumable)",
        description="Encode both image folders, measure decoder geometry, run the attacks; "
        "writes a run folder. Re-running the same command resumes an interrupted run.",
    )
    a.add_argument("--model", help="diffusers pipeline folder (vae/, unet/, scheduler/) or hub id")
    a.add_argument("--members", help="folder of member (training) images")
    a.add_argument("--heldout", help="folder of held-out images")
    a.add_argument("--out", help="run folder to write (default for --demo: the runs folder's demo, for --demo shift: "
                   "demo-shift)")
    a.add_argument(
        "--demo", nargs="?", const="membership", choices=("membership", "shift"), metavar="membership|shift",
        help="analyze the bundled demo: 'membership' (the default when --demo stands alone: the model's training "
        "images against images it never saw) or 'shift' (pure distribution shift: held-out footwear images as "
        "'members' against held-out clothes, no member at all; the folders are built under $LDMINV_HOME/"
        "demo-shift-data, the run goes to the runs folder's demo-shift; the decoder geometry is computed; about as "
        "long as the demo). The shift demo's report states that the files alone separate the folders",
    )
    a.add_argument("--attacks", help="comma list of sima,pia,loss,secmi,pfami (default sima)")
    a.add_argument("--timesteps", help="timesteps 'start:stop:step' or '0,10,50' (default 0:300:10)")
    a.add_argument("--topk", type=int, help="k of the decoder log-volume (default 50)")
    a.add_argument("--influence", choices=INFLUENCE_METHODS, help="per-coordinate influence path (default auto)")
    a.add_argument(
        "--probes", type=_probes_option, metavar="auto|N",
        help=f"Hutchinson probes per sample, used only where the influence is estimated rather than exact: auto "
        f"(default) takes {HUTCHINSON_RANK_PROBES}, the count measured to keep the median rank correlation with the "
        "exact influence >= 0.98; a number is used as given. run.json geometry records the request, the count "
        "used and why",
    )
    a.add_argument("--device", help="auto | cpu | cuda | cuda:i (default auto)")
    a.add_argument("--batch-size", type=int, dest="batch_size", help="samples per batch (default 32)")
    a.add_argument("--seed", type=int, help="seed of noise and probes (default 0)")
    a.add_argument("--limit", type=int, help="use only the first N images of each folder")
    a.add_argument(
        "--residual-dtype", choices=RESIDUAL_DTYPES, dest="residual_dtype",
        help="dtype of residuals/*.npy (default float32; float16 halves the disk)",
    )
    a.add_argument(
        "--latent", choices=LATENT_KINDS,
        help="analysed latent: the encoder mean (default) or one posterior sample per image, seeded per sample id "
        "(the paper's Stable Diffusion code)",
    )
    a.add_argument(
        "--log-volume", choices=LOG_VOLUME_KINDS, dest="log_volume",
        help="per-sample log-volume: topk (sum of the top-k log singular values, default) or logdet "
        "(0.5 log det(J^T J): exact when the Jacobian is built anyway, else stochastic Lanczos quadrature)",
    )
    a.add_argument(
        "--lora", action="append", metavar="PATH",
        help="LoRA adapter (folder with pytorch_lora_weights.safetensors, or a .safetensors file) applied to the "
        "UNet and text encoder; repeat for several; run.json records each file's SHA-256",
    )
    a.add_argument(
        "--lora-scale", action="append", type=float, dest="lora_scale", metavar="SCALE",
        help="weight of the LoRA adapters: once for all, or once per --lora in the same order (default 1.0)",
    )
    a.add_argument(
        "--blind-encoder", dest="blind_encoder", metavar="PATH_OR_ID",
        help="image model (transformers folder, or a hub id already in the local Hugging Face cache; nothing is "
        "downloaded) whose embeddings add the 'encoder' feature group to the blind baseline, e.g. a CLIP vision "
        "tower or DINOv2; safetensors weights only; run.json records the model",
    )
    preset_help = "; ".join(
        f"{name}: " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())
        for name, values in PRESETS.items()
    )
    a.add_argument(
        "--preset", choices=tuple(PRESETS),
        help=f"named settings, overridden by explicit options ({preset_help}); recorded in run.json",
    )
    a.add_argument("--force", action="store_true", help="delete an existing run in --out and recompute")
    a.add_argument(
        "--allow-duplicates", action="store_true", dest="allow_duplicates",
        help="analyze even when the folders share images (or one holds an image twice), compared by pixels "
        "after decoding; refused without it. The run records a warning",
    )
    a.add_argument(
        "--break-lock", action="store_true", dest="break_lock",
        help="take over a run folder whose lock is held (only when its writer is known to be gone, e.g. crashed on "
        "another host); a live writer would keep writing",
    )
    a.add_argument("--recompute-geometry", action="store_true",
                   help="with --demo: compute the decoder geometry instead of reusing the shipped, verified one "
                   "(assets/demo/precomputed)")
    a.add_argument(
        "--threads", type=int,
        help="CPU threads for torch (default: the idle cores, i.e. cores minus the 1-minute load "
        "average, at least 1; threads fighting other processes for cores slow torch down badly)",
    )

    r = sub.add_parser("report", help="print the report of a finished run")
    r.add_argument("run", help="run folder")
    r.add_argument("--json", action="store_true", help="print the report JSON object")
    r.add_argument("--attack", help="report only this attack")
    r.add_argument(
        "--protocol", choices=("standard", "paper", "honest"), default="standard",
        help="evaluation protocol: standard (members positive, one best t: optimistic), paper (the paper's "
        "code conventions: held-out positive TPR at FPR < 1%%, each metric at its own best t), honest "
        "(K-fold cross-fitted t, drop and threshold; realised TPR and FPR). Default standard",
    )
    r.add_argument("--folds", type=int, help="cross-fitting folds of --protocol honest (default 5)")
    r.add_argument(
        "--drop", type=float,
        help="percent of coordinates dropped per sample (default 40; honest: chosen on the other folds)",
    )
    r.add_argument("--seed", type=int, default=0, help="seed of the random-drop control, bootstrap and folds")
    r.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT, dest="n_boot",
                   help=f"bootstrap replicates of every interval (default {DEFAULT_N_BOOT}, as the dashboard and export)")
    return parser


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
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _analyze(args: argparse.Namespace) -> int:
    from .analyze import AnalyzeConfig, check_config, estimate_cost, load_config_model, run_analysis
    from .loading import resolve_device
    from .report import build_report, format_report
    from .runstore import run_status

    options = {f.name: getattr(args, f.name) for f in fields(AnalyzeConfig) if getattr(args, f.name, None) is not None}
    options.pop("force", None)
    options.pop("allow_duplicates", None)
    options.pop("break_lock", None)
    if args.preset:
        from .choices import PRESETS

        options = {**PRESETS[args.preset], **options}
    if args.demo:
        from . import demo

        if options.get("model") or options.get("members") or options.get("heldout"):
            raise LdminvError("--demo: analyzes the bundled demo; do not also give --model/--members/--heldout")
        if not demo.demo_available():
            raise LdminvError(
                f"--demo: the demo assets are missing under {demo.DEMO_DIR} (expected model/, members/, "
                "heldout/); create them with: python scripts/train_demo.py"
            )
        if args.demo == "shift":  # two folders of non-members, built from the demo's held-out images
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
        options = merged
    else:
        missing = [f"--{k}" for k in ("model", "members", "heldout", "out") if not options.get(k)]
        if missing:
            raise LdminvError(f"analyze: {', '.join(missing)} required (or --demo)")
    config = AnalyzeConfig(
        **options, force=bool(args.force), allow_duplicates=bool(getattr(args, "allow_duplicates", False)),
        break_lock=bool(getattr(args, "break_lock", False))
    )
    if args.threads is not None and args.threads < 1:
        raise LdminvError(f"--threads: expected an integer >= 1, got {args.threads}")
    # every option, both folders, the model folder and --out, before anything slow
    out = Path(config.out).expanduser().resolve()
    if check_config(config):
        print(
            f"run {out} is already complete; it was made with these settings, so there is nothing to do "
            "(--force recomputes); "
            f"see: python -m ldminv_core report {out}"
        )
        return 0
    from .distributed import DistContext

    ctx = DistContext.from_env()  # torchrun / accelerate launch: one of several processes
    say = (lambda *a, **k: print(*a, **k)) if ctx.is_main else (lambda *a, **k: None)
    status = run_status(out)
    if status in ("unfinished", "running") and not config.force:
        say(f"resuming the unfinished run in {out}", file=sys.stderr)

    _quiet_libraries()
    import torch

    device = resolve_device(config.device)
    if ctx.active and device.type == "cuda" and config.device in ("auto", "cuda"):
        device = torch.device(f"cuda:{ctx.local_rank % torch.cuda.device_count()}")
    threads = None
    if device.type == "cpu":
        from .loading import idle_cpu_threads

        local_procs = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world_size)))
        threads = args.threads if args.threads is not None else max(1, idle_cpu_threads() // local_procs)
        torch.set_num_threads(threads)
    model = load_config_model(config, device=device)
    if ctx.active:
        print(f"rank {ctx.rank}/{ctx.world_size}: {device}"
              + (f", {threads} torch thread(s)" if threads is not None else ""), file=sys.stderr)
    elif threads is not None:
        print(f"running on cpu with {threads} torch thread(s)", file=sys.stderr)
    if not ctx.is_main:  # the other ranks fill their batches; rank 0 prints and finishes the run
        run_analysis(config, model=model)
        return 0
    precomputed = None
    if args.demo and not args.recompute_geometry and not ctx.active:
        from . import demo

        precomputed = demo.demo_precomputed()
        if precomputed is not None and args.demo == "shift":
            print(f"decoder geometry: {precomputed.folder} holds the membership demo's images, not these; it is "
                  "checked, and the geometry is computed", file=sys.stderr)
        elif precomputed is not None:
            print(f"decoder geometry: reusing {precomputed.folder} if it applies to this machine's latents "
                  "(--recompute-geometry computes it)", file=sys.stderr)
    estimate = estimate_cost(config, model=model)
    for split, skipped in estimate.skipped.items():
        if skipped:
            shown = "; ".join(f"{name}: {why}" for name, why in skipped[:3])
            more = f" (+{len(skipped) - 3} more)" if len(skipped) > 3 else ""
            print(f"{split}: skipped {len(skipped)} file(s): {shown}{more}", file=sys.stderr)
    for text in estimate.warnings:
        print(f"warning: {text}", file=sys.stderr)
    print("cost estimate (full run):", file=sys.stderr)
    print(estimate, file=sys.stderr, flush=True)
    bars = _Bars()
    try:
        path = run_analysis(config, progress=bars, model=model, precomputed=precomputed,
                            geometry_plan=estimate.geometry_plan)
    finally:
        bars.close()
    if precomputed is not None:
        used = json.loads((Path(path) / "run.json").read_text(encoding="utf-8")).get("geometry", {}).get("precomputed")
        if used:
            print(f"decoder geometry {'reused' if used['used'] else 'computed'}: {used['reason']}", file=sys.stderr)
    print(f"run complete: {path}")
    print(format_report(build_report(path)))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import build_report, format_report

    if args.folds is not None and args.protocol != "honest":
        raise LdminvError(f"--folds: only used by --protocol honest (got --protocol {args.protocol})")
    if args.seed < 0:
        raise LdminvError(f"--seed: expected an integer >= 0, got {args.seed}")
    if args.n_boot < 1:
        raise LdminvError(f"--n-boot: expected an integer >= 1, got {args.n_boot}")
    if args.folds is not None and args.folds < 2:
        raise LdminvError(f"--folds: expected an integer >= 2, got {args.folds}")
    if args.drop is not None and not (0 <= args.drop < 100):
        raise LdminvError(f"--drop: expected a percentage in [0, 100), got {args.drop}")
    report = build_report(
        args.run, attack=args.attack, protocol=args.protocol, folds=args.folds, drop=args.drop, seed=args.seed,
        n_boot=args.n_boot,
    )
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(format_report(report))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a parse error (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    try:
        if args.command == "analyze":
            return _analyze(args)
        return _report(args)
    except LdminvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted; the run folder is resumable: run the same command again", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
