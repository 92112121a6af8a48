"""``python -m ldminv_core convert FILE --model-config DIR [--out OUT]``: a single-file checkpoint
(``.safetensors``, original key layout) converted once, offline, into a diffusers pipeline folder
with diffusers' ``from_single_file`` and the configs of DIR (:mod:`ldminv_core.models.single_file`).
The parser part is light (no torch); the conversion imports it when it runs."""
from __future__ import annotations

import argparse
import sys

__all__ = ["add_convert_parser", "run_convert_command"]


def add_convert_parser(sub: argparse._SubParsersAction) -> None:
    """The ``convert`` subcommand and its options."""
    c = sub.add_parser(
        "convert",
        help="convert a single-file checkpoint (.safetensors, original layout) into a diffusers folder (offline)",
        description="Convert a single-file checkpoint as shared on model hubs (v1-5-pruned-emaonly.safetensors, "
        "sd_xl_base_1.0.safetensors, sd3_medium.safetensors, flux1-dev.safetensors) into a diffusers pipeline "
        "folder with diffusers' from_single_file and the configs of --model-config; nothing is downloaded and "
        "pickled files (.ckpt, .pt, .bin) are refused. analyze --model FILE --model-config DIR does this itself "
        "(once, cached under $LDMINV_HOME/single-file).",
    )
    c.add_argument("file", help="the single-file checkpoint (.safetensors)")
    c.add_argument(
        "--model-config", dest="model_config", required=True, metavar="DIR",
        help="a diffusers pipeline folder of the same model: model_index.json, the components' config.json, "
        "scheduler/ and the tokenizers; safetensors weights only for components the file lacks (e.g. Flux's VAE "
        "and text encoders)",
    )
    c.add_argument("--out", metavar="OUT",
                   help="the diffusers folder to write (new or empty); default: the cache under $LDMINV_HOME/single-file")


def run_convert_command(args: argparse.Namespace) -> int:
    """Run ``convert``; returns the exit status (LdminvError for a user's mistake, printed by main)."""
    from ..models.single_file import convert_single_file, resolve_single_file
    from .analyze_command import _quiet_libraries

    _quiet_libraries()  # the loaders' own progress bars and notices
    if args.out:
        record = convert_single_file(args.file, model_config=args.model_config, out=args.out)
    else:
        _, record = resolve_single_file(args.file, model_config=args.model_config)
    sources = ", ".join(record["from_file"])
    extra = f"; from {record['model_config']}: {', '.join(record['from_config'])}" if record["from_config"] else ""
    print(f"{record['name']} (SHA-256 {record['sha256'][:12]}...): {record['family']} family, "
          f"{record['pipeline_class']}; from the file: {sources}{extra}", file=sys.stderr)
    print(f"converted: {record['converted']}")
    print(f"analyze it with: python -m ldminv_core analyze --model {record['converted']} --members ... --heldout ... "
          "--out ...")
    return 0
