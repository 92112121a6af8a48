"""``python -m ldminv_core report RUN``: the report of a finished run under an evaluation protocol,
as a table or as the JSON object of the method reference (``--json``)."""
from __future__ import annotations

import argparse
import json

from .._validation import check_int, check_percent
from ..errors import LdminvError
from ..report import build_report, format_report

__all__ = ["run_report_command"]


def run_report_command(args: argparse.Namespace) -> int:
    """Print the report of ``args.run``; returns the exit status (LdminvError for a bad option)."""
    if args.folds is not None and args.protocol != "honest":
        raise LdminvError(f"--folds: only used by --protocol honest (got --protocol {args.protocol})")
    check_int(args.seed, "--seed", minimum=0)
    check_int(args.n_boot, "--n-boot", minimum=1)
    if args.folds is not None:
        check_int(args.folds, "--folds", minimum=2)
    if args.drop is not None:
        check_percent(args.drop, "--drop")
    report = build_report(
        args.run, attack=args.attack, protocol=args.protocol, folds=args.folds, drop=args.drop, seed=args.seed,
        n_boot=args.n_boot,
    )
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(format_report(report))
    return 0
