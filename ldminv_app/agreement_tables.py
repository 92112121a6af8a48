"""The agreement between a run's attacks as tables (pure pandas, no streamlit): the pairs (Jaccard
of the flagged sets per subset, Spearman of the scores per split, each with its interval) and
who flags whom (one row per sample, the samples flagged by most attacks first). The dashboard's
view (:mod:`ldminv_app.agreement_view`) and the HTML export's section
(:mod:`ldminv_app.html_report.sections.agreement`) show these frames; every number is the
:class:`~ldminv_core.evaluation.Agreement`'s, written with :mod:`ldminv_core.formatting`."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import Agreement
from ldminv_core.formatting import format_rate, format_rate_ci

__all__ = ["pair_table", "who_flags_table", "counts_table", "flag_words"]

_SUBSETS = {"all": "Jaccard (all)", "member": "Jaccard (members)", "heldout": "Jaccard (held-out)"}
_SPLITS = {"member": "Spearman (members)", "heldout": "Spearman (held-out)"}


def _cell(value: float, ci: tuple[float, float]) -> str:
    text = format_rate(value, 3)
    return "n/a" if text == format_rate(float("nan")) else f"{text} {format_rate_ci(ci, 3)}"


def flag_words(ag: Agreement) -> str:
    """What "flags" means under the agreement's protocol, in one line."""
    who = "members" if ag.positive_class == "member" else "held-out images"
    return (f"An attack flags the samples it calls {who} at the {ag.protocol.name} protocol's 1%-FPR threshold. "
            f"Intervals ({ag.level:.0%}, {ag.n_boot} replicates): {ag.interval_method}.")


def counts_table(ag: Agreement) -> pd.DataFrame:
    """One row per attack: the arm scored and its flagged members, held-out images and total."""
    return pd.DataFrame([{"attack": attack_label(a), "arm": ag.arms[a], "flagged members": c["member"],
                          "flagged held-out": c["heldout"], "flagged (all)": c["all"]}
                         for a, c in ag.counts.items()])


def _reasons(pair) -> str:
    """Why a pair's numbers are undefined, once: the "all" subset's reason covers the splits'."""
    jac = [pair.jaccard["all"].reason] if pair.jaccard["all"].reason else [
        pair.jaccard[k].reason for k in ("member", "heldout") if pair.jaccard[k].reason]
    return "; ".join(dict.fromkeys([*jac, *(s.reason for s in pair.spearman.values() if s.reason)]))


def pair_table(ag: Agreement) -> pd.DataFrame:
    """One row per pair of attacks: Jaccard per subset and Spearman per split ("n/a": undefined,
    the reason in the last column)."""
    rows = []
    for p in ag.pairs:
        row = {"attack A": attack_label(p.a), "attack B": attack_label(p.b)}
        row.update({label: _cell(p.jaccard[k].value, p.jaccard[k].ci) for k, label in _SUBSETS.items()})
        row.update({label: _cell(p.spearman[k].rho, p.spearman[k].ci) for k, label in _SPLITS.items()})
        row["n/a because"] = _reasons(p)
        rows.append(row)
    columns = ["attack A", "attack B", *_SUBSETS.values(), *_SPLITS.values(), "n/a because"]
    return pd.DataFrame(rows, columns=columns)


def who_flags_table(ag: Agreement, *, minimum: int = 1, limit: int | None = None) -> pd.DataFrame:
    """One row per sample flagged by at least ``minimum`` attacks (most flags first, at most
    ``limit`` rows): sample id, file name, split, how many attacks flag it, then one column per
    attack ("✓" when it flags the sample). Column "path" holds the full file path (for thumbnails)."""
    samples = ag.flagged_samples(minimum=minimum)
    if limit is not None:
        samples = samples[:limit]
    rows = [{"sample id": s.sample_id, "file": Path(s.file).name, "split": s.split, "flagged by": s.n_flagged,
             **{attack_label(a): ("✓" if a in s.flagged_by else "") for a in ag.attacks}, "path": s.file}
            for s in samples]
    columns = ["sample id", "file", "split", "flagged by", *(attack_label(a) for a in ag.attacks), "path"]
    return pd.DataFrame(rows, columns=columns)
