"""The agreement section of the text report: the ``agreement`` entry of the report JSON
(:mod:`.agreement_json`) as two tables, the pairs (Jaccard of the flagged sets per subset,
Spearman of the scores per split, each with its interval) and who flags whom (the samples flagged
by most attacks first). Nothing is computed here; numbers are written with
:mod:`ldminv_core.formatting`."""
from __future__ import annotations

from pathlib import Path

from ..formatting import format_rate, format_rate_ci

__all__ = ["agreement_lines", "WHO_FLAGS_ROWS"]

#: Rows of the who-flags-whom table the text report prints (the JSON holds them all).
WHO_FLAGS_ROWS = 20


def _grid(header: tuple[str, ...], rows: list[tuple[str, ...]], right: frozenset[int]) -> list[str]:
    """Aligned rows under a header and a rule; the columns ``right`` right-aligned."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
    return [line.rstrip() for line in (fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows))]


def _cell(value: float | None, ci: list) -> str:
    return "n/a" if value is None else f"{format_rate(value, 3)} {format_rate_ci(ci, 3)}"


def agreement_lines(report: dict) -> list[str]:
    """The lines of the agreement section ([] when the report has no ``agreement`` entry)."""
    ag = report.get("agreement")
    if not ag:
        return []
    pos = "members" if ag["positive_class"] == "member" else "held-out images"
    level = int(round(100 * ag["ci_level"]))
    lines = [f"Agreement between attacks (protocol {ag['protocol']}, flags = samples called {pos} at the 1%-FPR "
             f"threshold; {level}% intervals: {ag['intervals']}; n/a = undefined, reason below)"]
    counts = ", ".join(f"{a} {c['member']}+{c['heldout']}" for a, c in ag["counts"].items())
    lines.append(f"  flagged (members + held-out): {counts}")
    header = ("a", "b", "Jaccard all", "Jaccard members", "Jaccard held-out", "Spearman members",
              "Spearman held-out")
    rows = [(p["a"], p["b"], *(_cell(p["jaccard"][k]["value"], p["jaccard"][k]["ci"])
                               for k in ("all", "member", "heldout")),
             *(_cell(p["spearman"][k]["rho"], p["spearman"][k]["ci"]) for k in ("member", "heldout")))
            for p in ag["pairs"]]
    lines += ["  " + line for line in _grid(header, rows, frozenset(range(2, 7)))]
    if any(j["value"] is None for p in ag["pairs"] for j in p["jaccard"].values()):
        lines.append("  Jaccard n/a: one of the two attacks flags no sample of that subset (the counts above)")
    lines += [f"  {p['a']} vs {p['b']}: {s['reason']}" for p in ag["pairs"] for s in p["spearman"].values()
              if s["reason"]]
    shown = ag["samples"][:WHO_FLAGS_ROWS]
    lines.append(f"  Who flags whom ({len(ag['samples'])} samples flagged by at least one attack, "
                 f"{ag['n_unflagged']} by none; most flags first"
                 + (f", first {len(shown)} shown" if len(shown) < len(ag["samples"]) else "") + "):")
    if shown:
        rows = [(str(s["sample_id"]), Path(s["file"]).name, s["split"], str(len(s["flagged_by"])),
                 ", ".join(s["flagged_by"])) for s in shown]
        lines += ["    " + line for line in _grid(("id", "file", "split", "n", "attacks"), rows, frozenset({0, 3}))]
    return [*lines, ""]
