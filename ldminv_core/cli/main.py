"""The command line's entry point (:func:`main`): parse, run the subcommand, and turn a user's
mistake into one line ``error: ...`` on stderr with exit status 2 (130 when interrupted)."""
from __future__ import annotations

import sys
from typing import Sequence

from ..errors import LdminvError
from .parser import EXIT_INTERRUPTED, EXIT_USER_ERROR, build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a parse error (2, already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    try:
        if args.command == "analyze":
            from .analyze_command import run_analyze_command  # torch: not for --help

            return run_analyze_command(args)
        if args.command == "convert":
            from .convert_command import run_convert_command

            return run_convert_command(args)
        if args.command == "compare":
            from .compare_command import run_compare_command

            return run_compare_command(args)
        from .report_command import run_report_command

        return run_report_command(args)
    except LdminvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\ninterrupted; the run folder is resumable: run the same command again", file=sys.stderr)
        return EXIT_INTERRUPTED
