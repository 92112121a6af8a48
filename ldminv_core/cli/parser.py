"""The command line's argument parser: ``python -m ldminv_core analyze ...`` and ``report RUN``
(:func:`build_parser`). Light: building it (and ``--help``) does not import torch."""
from __future__ import annotations

import argparse

from .compare_command import add_compare_parser
from .convert_command import add_convert_parser
from ..choices import (
    ATTACK_NAMES,
    DEFAULT_N_BOOT,
    DEFAULT_PROTOCOL,
    HUTCHINSON_RANK_PROBES,
    INFLUENCE_METHODS,
    LATENT_KINDS,
    LOG_VOLUME_KINDS,
    PRESETS,
    PROBES_AUTO,
    PROTOCOLS,
    RESIDUAL_DTYPES,
)

__all__ = ["build_parser", "EXIT_USER_ERROR", "EXIT_INTERRUPTED"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's error format: one line ``error: ...`` and exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _probes_option(text: str) -> int | str:
    """``--probes``: "auto" or a whole number (its range is checked with the other options)."""
    if text.strip().lower() == PROBES_AUTO:
        return PROBES_AUTO
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {text!r}") from None


def _workers_option(text: str) -> int | str:
    """``--workers``: "auto" or a whole number (its range is checked with the other options)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {text!r}") from None


def _lora_scale_option(text: str) -> float | tuple[float, ...]:
    """``--lora-scale``: a number, or a comma list of numbers (one run per scale)."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m ldminv_core``: subcommands ``analyze``, ``report``, ``convert`` and ``compare``."""
    parser = _Parser(
        prog="python -m ldminv_core",
        description="Audit membership leakage of latent diffusion models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_analyze(sub)
    _add_report(sub)
    add_convert_parser(sub)
    add_compare_parser(sub)
    return parser


def _add_analyze(sub: argparse._SubParsersAction) -> None:
    """The ``analyze`` subcommand: its inputs, its method options, then how it runs."""
    a = sub.add_parser(
        "analyze",
        help="analyze a model and two image folders into a run folder (resumable)",
        description="Encode both image folders, measure decoder geometry, run the attacks; "
        "writes a run folder. Re-running the same command resumes an interrupted run.",
    )
    _add_analyze_inputs(a)
    _add_analyze_method(a)
    _add_analyze_run(a)


def _add_analyze_inputs(a: argparse.ArgumentParser) -> None:
    """--model, --model-adapter, --members, --heldout, --out, --demo."""
    a.add_argument("--model", help="diffusers pipeline folder (vae/, unet/, scheduler/) or hub id; with --model-adapter, "
                   "the path handed to the adapter (e.g. its checkpoint folder), optional")
    a.add_argument(
        "--model-config", dest="model_config", metavar="DIR",
        help="with --model FILE.safetensors (a single-file checkpoint in the original layout): a diffusers pipeline "
        "folder of the same model whose configs and tokenizers convert it (once, offline, cached under "
        "$LDMINV_HOME/single-file); run.json records the file and its SHA-256",
    )
    a.add_argument(
        "--model-adapter", dest="model_adapter", metavar="FILE.py",
        help="a custom (non-diffusers) PyTorch model: a Python file defining build_adapter(model_path, *, device, "
        "dtype) that builds it with your own code and returns ldminv_core.models.custom_adapter.ModelAdapter "
        "(encode, decode, model output, schedule, prediction type); see examples/ldm_light_adapter.py. run.json "
        "records family 'custom' and the file's SHA-256",
    )
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


def _add_analyze_method(a: argparse.ArgumentParser) -> None:
    """What is computed: attacks, timesteps, geometry, device and batches, latents, LoRA, blind encoder."""
    a.add_argument(
        "--attacks",
        help=f"comma list of {','.join(ATTACK_NAMES)} (default sima); clid (CLiD) needs a text-conditioned model "
        "and a caption per image, and uses its own timesteps 485,495,505 (15 UNet calls per image)",
    )
    a.add_argument("--timesteps", help="timesteps 'start:stop:step' or '0,10,50' of sima, pia, loss and secmi "
                   "(default 0:300:10)")
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
        "--lora-scale", action="append", type=_lora_scale_option, dest="lora_scale", metavar="SCALE",
        help="weight of the LoRA adapters: once for all, or once per --lora in the same order (default 1.0); a "
        "comma list (e.g. 0,0.5,1.0, with one --lora) writes one run per scale into OUT/scale-0, OUT/scale-0.5, "
        "... on the same samples, then prints the compare command",
    )
    a.add_argument(
        "--blind-encoder", dest="blind_encoder", metavar="PATH_OR_ID",
        help="image model (transformers folder, or a hub id already in the local Hugging Face cache; nothing is "
        "downloaded) whose embeddings add the 'encoder' feature group to the blind baseline, e.g. a CLIP vision "
        "tower or DINOv2; safetensors weights only; run.json records the model",
    )


def _add_analyze_run(a: argparse.ArgumentParser) -> None:
    """How the run goes: --preset, --force, --allow-duplicates, --break-lock, --recompute-geometry, --threads,
    --workers."""
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
    a.add_argument(
        "--workers", type=_workers_option,
        help="attack batches computed at once, each on its own thread with an equal share of --threads "
        "(default auto: one per usable CPU core, at most 4; one on a GPU or under torchrun); the same batches "
        "and, at the same threads per worker, the same results bit for bit",
    )


def _add_report(sub: argparse._SubParsersAction) -> None:
    """The ``report`` subcommand."""
    r = sub.add_parser("report", help="print the report of a finished run")
    r.add_argument("run", help="run folder")
    r.add_argument("--json", action="store_true", help="print the report JSON object")
    r.add_argument("--attack", help="report only this attack")
    r.add_argument(
        "--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
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
