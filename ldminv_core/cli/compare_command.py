"""``python -m ldminv_core compare RUN_A RUN_B [...]``: runs on the same samples side by side
(every metric and finding of each run, the difference B - A with its paired interval and a
verdict, and the images that become exposed), as a table or as JSON (``--json``).

Only formats what :func:`ldminv_core.evaluation.compare.compare_runs` returns.
"""
from __future__ import annotations

import argparse
import json
import math
from typing import Any

from .._validation import check_int, check_percent
from ..errors import LdminvError

__all__ = ["add_compare_parser", "run_compare_command", "comparison_json", "format_comparison"]

_SHOWN_IDS = 20


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """The ``compare`` subcommand."""
    from ..choices import DEFAULT_N_BOOT, DEFAULT_PROTOCOL, PROTOCOLS

    c = sub.add_parser(
        "compare", help="compare runs on the same samples (checkpoints, LoRA scales, training steps)",
        description="Every metric and finding of each run beside the first run's, the difference B - A with a "
        "paired bootstrap interval (both runs resampled on the same samples) and a verdict, and per attack the "
        "images flagged at the 1%%-FPR threshold in B and not in A. The runs must hold the same samples (ids, "
        "splits and file contents).",
    )
    c.add_argument("runs", nargs="+", metavar="RUN", help="run folders: A, then B (and more, each against A)")
    c.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                   help="evaluation protocol (standard, paper, honest); default standard")
    c.add_argument("--folds", type=int, help="cross-fitting folds of --protocol honest (default 5)")
    c.add_argument("--drop", type=float, help="percent dropped per sample (default 40; honest: chosen per fold)")
    c.add_argument("--seed", type=int, default=0, help="seed of the bootstrap, the random control and the folds")
    c.add_argument("--n-boot", type=int, default=DEFAULT_N_BOOT, dest="n_boot",
                   help=f"bootstrap replicates (default {DEFAULT_N_BOOT})")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")


def _num(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _pair(ci: tuple[float, float]) -> list[float | None]:
    return [_num(ci[0]), _num(ci[1])]


def comparison_json(cmp: Any) -> dict:
    """The JSON object of one :class:`~ldminv_core.evaluation.compare.RunComparison` (NaN -> null)."""
    paths = cmp.paths
    return {
        "run_a": str(cmp.run_a), "run_b": str(cmp.run_b), "protocol": cmp.protocol.settings(),
        "n_boot": cmp.n_boot, "ci_level": cmp.level, "seed": cmp.seed, "drop_percent": cmp.drop,
        "attacks": list(cmp.attacks),
        "metrics": [{"attack": m.attack, "arm": m.arm, "metric": m.metric, "a": _num(m.a), "b": _num(m.b),
                     "ci_a": _pair(m.ci_a), "ci_b": _pair(m.ci_b), "difference": _num(m.difference),
                     "ci": _pair(m.ci), "verdict": m.verdict} for m in cmp.metrics],
        "findings": [{"attack": f.attack, "id": f.id, "a": _num(f.a), "b": _num(f.b), "ci_a": _pair(f.ci_a),
                      "ci_b": _pair(f.ci_b), "verdict_a": f.verdict_a, "verdict_b": f.verdict_b,
                      "difference": _num(f.difference), "ci": _pair(f.ci), "verdict": f.verdict, "note": f.note}
                     for f in cmp.findings],
        "exposure": [{"attack": e.attack, "flagged_a": int(e.flagged_a.sum()), "flagged_b": int(e.flagged_b.sum()),
                      "newly_exposed": [{"sample_id": int(i), "path": paths[int(i)],
                                         "split": "member" if cmp.labels[int(i)] else "heldout"}
                                        for i in e.newly_exposed],
                      "no_longer_exposed": [{"sample_id": int(i), "path": paths[int(i)],
                                             "split": "member" if cmp.labels[int(i)] else "heldout"}
                                            for i in e.no_longer_exposed]}
                     for e in cmp.exposure],
    }


def _v(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def _ci(ci: tuple[float, float], sign: str = "") -> str:
    if not all(math.isfinite(c) for c in ci):
        return "[n/a]"
    return f"[{ci[0]:{sign}.3f}, {ci[1]:{sign}.3f}]"


def _grid(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in (header, *rows)]


def format_comparison(cmp: Any) -> str:
    """The comparison as text: metrics, findings, exposure changes."""
    level = f"{100 * cmp.level:g}%"
    lines = [f"A: {cmp.run_a}", f"B: {cmp.run_b}",
             f"protocol {cmp.protocol.name}; {cmp.n_boot} paired bootstrap replicates (both runs on the same "
             f"resampled samples); {level} intervals; verdict of B - A: rises / falls / inconclusive (the {level} "
             "paired interval contains 0)", "", "Metrics"]
    rows = [(m.attack, m.arm, m.metric, _v(m.a), _ci(m.ci_a), _v(m.b), _ci(m.ci_b),
             "n/a" if not math.isfinite(m.difference) else f"{m.difference:+.3f}", _ci(m.ci, "+"), m.verdict)
            for m in cmp.metrics]
    lines += _grid(("attack", "arm", "metric", "A", "A CI", "B", "B CI", "B - A", f"paired {level} CI", "verdict"),
                   rows)
    lines += ["", "Findings"]
    rows = [(f.attack, f.id, _v(f.a), f.verdict_a, _v(f.b), f.verdict_b,
             "n/a" if not math.isfinite(f.difference) else f"{f.difference:+.3f}", _ci(f.ci, "+"), f.verdict)
            for f in cmp.findings]
    lines += _grid(("attack", "finding", "A", "A verdict", "B", "B verdict", "B - A", f"paired {level} CI",
                    "verdict"), rows)
    notes = sorted({f"{f.id}: {f.note}" for f in cmp.findings if f.note})
    lines += [f"  note: {n}" for n in notes]
    lines += ["", "Exposure (baseline arm, flagged at the 1%-FPR threshold)"]
    for e in cmp.exposure:
        new = ", ".join(str(int(i)) for i in e.newly_exposed[:_SHOWN_IDS])
        gone = ", ".join(str(int(i)) for i in e.no_longer_exposed[:_SHOWN_IDS])
        more_new = ", ..." if e.newly_exposed.size > _SHOWN_IDS else ""
        more_gone = ", ..." if e.no_longer_exposed.size > _SHOWN_IDS else ""
        lines.append(f"  {e.attack}: flagged {int(e.flagged_a.sum())} in A, {int(e.flagged_b.sum())} in B; "
                     f"newly exposed {e.newly_exposed.size} (sample ids {new or '-'}{more_new}); "
                     f"no longer exposed {e.no_longer_exposed.size} ({gone or '-'}{more_gone})")
    return "\n".join(lines)


def run_compare_command(args: argparse.Namespace) -> int:
    """Print the comparison of ``args.runs``; returns the exit status."""
    from ..evaluation import make_protocol
    from ..evaluation.compare import compare_runs

    if len(args.runs) < 2:
        raise LdminvError(f"RUN: expected at least two run folders to compare, got {len(args.runs)}")
    if args.folds is not None and args.protocol != "honest":
        raise LdminvError(f"--folds: only used by --protocol honest (got --protocol {args.protocol})")
    check_int(args.seed, "--seed", minimum=0)
    check_int(args.n_boot, "--n-boot", minimum=1)
    if args.folds is not None:
        check_int(args.folds, "--folds", minimum=2)
    if args.drop is not None:
        check_percent(args.drop, "--drop")
    proto = make_protocol(args.protocol, folds=args.folds, seed=args.seed)
    results = compare_runs(args.runs, protocol=proto, drop=args.drop, seed=args.seed, n_boot=args.n_boot)
    if args.json:
        out: Any = [comparison_json(c) for c in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2, allow_nan=False))
    else:
        print("\n\n".join(format_comparison(c) for c in results))
    return 0
