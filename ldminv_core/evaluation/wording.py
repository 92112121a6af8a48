"""Words for the findings of the evaluation layer, shared by every surface that formats them (the
text report, the HTML export, the dashboard), so that all of them say the same thing.

Nothing here computes a number: the estimates, intervals and verdicts are the evaluation layer's
(:class:`~ldminv_core.evaluation.Finding`, or the ``findings`` entries of the report JSON). What
this module adds is how they are said:

- :data:`FINDING_TITLES`: each finding's question in words (the id stays a secondary label);
- :func:`verdict_words`: the verdict, with the size of the effect in words when a supported or
  contradicted AUROC difference is smaller than :data:`PRACTICAL_AUROC` ("supported but tiny
  (+0.0015 AUROC)"): an interval can exclude 0 and still hold only differences nobody would act on;
- :func:`findings_summary`: one line counting the verdicts of a run's findings; :func:`tiny_note`
  says what "tiny" means.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "PRACTICAL_AUROC",
    "FINDING_TITLES",
    "FINDING_SHORT_TITLES",
    "finding_title",
    "is_tiny",
    "verdict_words",
    "effect_sentence",
    "tiny_note",
    "findings_summary",
]

#: Smallest AUROC difference called practically relevant: one point of AUROC (0.01). A finding
#: whose interval excludes 0 but whose estimate is smaller than this in magnitude is "tiny".
PRACTICAL_AUROC = 0.01

#: Each finding's question (the human title of the dashboard's cards and the export's table).
FINDING_TITLES: dict[str, str] = {
    "distortion_quartiles": "Are the most distorted samples memorized more?",
    "distortion_quartiles_within_class": "Within each class, are distorted samples memorized more?",
    "masking_vs_baseline": "Does dropping low-influence coordinates beat the unmasked statistic?",
    "masking_vs_random": "Does dropping low-influence coordinates beat dropping random ones?",
    "blind_baseline": "Can the files alone, without the model, tell the two folders apart?",
    "attack_vs_blind": "Does the attack separate the folders better than the files alone?",
    "attack_within_blind_strata": "Among images the files cannot tell apart, does the attack still find members?",
}

#: Short titles for compact tables (one row per attack and finding).
FINDING_SHORT_TITLES: dict[str, str] = {
    "distortion_quartiles": "Distortion quartiles (Q4 − Q1)",
    "distortion_quartiles_within_class": "Distortion quartiles within class",
    "masking_vs_baseline": "Masking vs unmasked",
    "masking_vs_random": "Masking vs random masks",
    "blind_baseline": "Blind baseline (files only)",
    "attack_vs_blind": "Attack vs blind baseline",
    "attack_within_blind_strata": "Attack within blind strata",
}

_METRIC_WORDS = {"auroc": "AUROC", "tpr_at_1fpr": "TPR@1%FPR", "asr": "ASR"}
_VERDICT_ORDER = ("supported", "contradicted", "inconclusive", "undefined")


def _field(finding: Any, name: str) -> Any:
    """``finding.name`` of a :class:`Finding`, or ``finding[name]`` of a report-JSON entry."""
    return finding[name] if isinstance(finding, Mapping) else getattr(finding, name)


def finding_title(finding_id: str, *, short: bool = False) -> str:
    """The human title of a finding id (the id itself when it is unknown)."""
    return (FINDING_SHORT_TITLES if short else FINDING_TITLES).get(finding_id, finding_id)


def is_tiny(estimate: float | None, *, metric: str = "auroc", threshold: float = PRACTICAL_AUROC) -> bool:
    """True for a finite AUROC difference smaller than ``threshold`` in magnitude (other metrics
    have no practical threshold here: False)."""
    if metric != "auroc" or estimate is None:
        return False
    v = float(estimate)
    return math.isfinite(v) and abs(v) < threshold


def verdict_words(verdict: str, estimate: float | None, *, metric: str = "auroc") -> str:
    """The verdict as every surface prints it: "supported", "contradicted", "inconclusive",
    "undefined"; a supported or contradicted AUROC difference smaller than
    :data:`PRACTICAL_AUROC` in magnitude reads "supported but tiny (+0.0015 AUROC)"."""
    if verdict in ("supported", "contradicted") and is_tiny(estimate, metric=metric):
        return f"{verdict} but tiny ({float(estimate):+.4f} {_METRIC_WORDS.get(metric, metric)})"
    return verdict


def effect_sentence(finding: Any) -> str | None:
    """One sentence on the size of a supported or contradicted effect that is tiny (a
    :class:`Finding` or a report-JSON finding), or None when there is nothing to say:
    "Statistically supported but tiny: +0.0015 AUROC, below the 0.01 AUROC (one point) that counts
    as a practically relevant difference."."""
    verdict, estimate, metric = _field(finding, "verdict"), _field(finding, "estimate"), _field(finding, "metric")
    if verdict not in ("supported", "contradicted") or not is_tiny(estimate, metric=metric):
        return None
    return (f"Statistically {verdict} but tiny: {float(estimate):+.4f} {_METRIC_WORDS.get(metric, metric)}, below the "
            f"{PRACTICAL_AUROC:g} AUROC (one point) that counts as a practically relevant difference.")


def tiny_note() -> str:
    """What "but tiny" means, for a key beside findings that use it."""
    return (f"\u201cbut tiny\u201d: the interval excludes 0, yet the AUROC difference is smaller than "
            f"{PRACTICAL_AUROC:g} (one point of AUROC), too small to matter in practice.")


def findings_summary(findings: Iterable[Any], *, context: str = "") -> str:
    """One line counting the verdicts of ``findings`` (:class:`Finding` objects or report-JSON
    entries): "3 of 4 findings supported (1 of them tiny), 1 inconclusive" plus
    ", under <context>" when given; "No findings" for none."""
    items = list(findings)
    tail = f", under {context}" if context else ""
    if not items:
        return f"No findings{tail}."
    counts = {v: 0 for v in _VERDICT_ORDER}
    tiny = {v: 0 for v in _VERDICT_ORDER}
    for f in items:
        v = _field(f, "verdict")
        counts[v] = counts.get(v, 0) + 1
        if v in ("supported", "contradicted") and is_tiny(_field(f, "estimate"), metric=_field(f, "metric")):
            tiny[v] = tiny.get(v, 0) + 1

    def tiny_note(v: str) -> str:
        if not tiny.get(v):
            return ""
        if tiny[v] == counts[v]:
            return " (tiny)" if counts[v] == 1 else " (all tiny)"
        return f" ({tiny[v]} of them tiny)"

    n = len(items)
    first = f"{counts['supported']} of {n} finding{'s' if n != 1 else ''} supported{tiny_note('supported')}"
    rest = [f"{counts[v]} {v}{tiny_note(v)}" for v in _VERDICT_ORDER[1:] if counts.get(v)]
    rest += [f"{c} {v}" for v, c in counts.items() if v not in _VERDICT_ORDER and c]
    return ", ".join([first, *rest]) + tail + "."
