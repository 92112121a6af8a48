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
  says what "tiny" means;
- shift (METHOD.md section 6): :func:`verdict_words` with ``confounded`` (a membership or geometry
  finding on folders the files alone separate), :func:`below_chance_text` (an AUROC whose interval
  lies below 0.5, never shown as a plain number), :func:`shift_headline` and :func:`shift_advice`
  (the blind baseline's verdict and what to do, for the Findings page, the report and the export);
- :func:`low_fpr_cautions`: the caution of each TPR at a low FPR whose negatives are too few (the
  report, the export and the Masks & ROC page).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .protocols import Protocol, fpr_support, make_protocol

__all__ = [
    "PRACTICAL_AUROC",
    "FINDING_TITLES",
    "FINDING_SHORT_TITLES",
    "finding_title",
    "metric_title",
    "is_tiny",
    "verdict_words",
    "effect_sentence",
    "tiny_note",
    "findings_summary",
    "CONFOUNDED_WORDS",
    "below_chance_text",
    "shift_headline",
    "shift_advice",
    "BLIND_GROUP_WORDS",
    "LOW_FPR_METRICS",
    "low_fpr_cautions",
]

#: FPR bound of each TPR-at-low-FPR metric.
LOW_FPR_METRICS: dict[str, float] = {"tpr_at_1fpr": 0.01, "tpr_at_01fpr": 0.001}

#: What the verdict of a membership or geometry finding becomes on folders the blind baseline
#: separates: the statistic's verdict stands, but it is not evidence of membership.
CONFOUNDED_WORDS = "not separable from the folders' difference"

#: Each blind feature group in words.
BLIND_GROUP_WORDS: dict[str, str] = {
    "meta": "file format and metadata (format, size, bytes per pixel, JPEG quality, EXIF)",
    "pixels": "pixel statistics (colour, histograms, thumbnail, sharpness)",
    "caption": "captions (length and words)",
    "encoder": "embeddings of a pretrained image model",
    "all": "all feature groups together",
}

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


def metric_title(metric: str) -> str:
    """A metric's name for a reader ("auroc" -> "AUROC", "tpr_at_1fpr" -> "TPR@1%FPR"), else itself."""
    return _METRIC_WORDS.get(metric, metric)


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


def verdict_words(verdict: str, estimate: float | None, *, metric: str = "auroc", confounded: bool = False) -> str:
    """The verdict as every surface prints it: "supported", "contradicted", "inconclusive",
    "undefined"; a supported or contradicted AUROC difference smaller than
    :data:`PRACTICAL_AUROC` in magnitude reads "supported but tiny (+0.0015 AUROC)". With
    ``confounded`` (the finding's ``caveat`` is set: the blind baseline separates the folders), a
    supported or contradicted verdict reads "supported on these folders, not separable from the
    folders' difference"."""
    words = verdict
    if verdict in ("supported", "contradicted") and is_tiny(estimate, metric=metric):
        words = f"{verdict} but tiny ({float(estimate):+.4f} {_METRIC_WORDS.get(metric, metric)})"
    if confounded and verdict in ("supported", "contradicted"):
        words = f"{words} on these folders, {CONFOUNDED_WORDS}"
    return words


def below_chance_text(auroc: float | None, ci: Any) -> str | None:
    """For an AUROC whose whole interval lies below 0.5, what it means (None otherwise): "below
    chance (95% CI [0.290, 0.449]): held-out images look more member-like than members, a sign of
    distribution shift or of swapped folders, not a weak attack"."""
    if auroc is None or ci is None:
        return None
    lo, hi = (float(ci[0]), float(ci[1]))
    if not (math.isfinite(hi) and hi < 0.5):
        return None
    return (f"below chance (95% CI [{lo:.3f}, {hi:.3f}]): held-out images look more member-like than members, a sign "
            "of distribution shift or of swapped folders, not a weak attack")


def _blind_field(blind: Any, name: str, default: Any = None) -> Any:
    if isinstance(blind, Mapping):
        return blind.get(name, default)
    return getattr(blind, name, default)


def _groups(blind: Any) -> list:
    return list(_blind_field(blind, "groups", ()) or ())


def shift_headline(blind: Any) -> str:
    """The blind baseline's verdict in one sentence (a :class:`~.results.BlindResult` or the report
    JSON's ``blind`` entry): separable (shift), not separable, or unavailable (with the reason)."""
    if not _blind_field(blind, "available", False):
        return f"Blind baseline unavailable: {_blind_field(blind, 'reason', '') or 'no features'}."
    all_group = next((g for g in _groups(blind) if _field(g, "group") == "all"), None)
    if all_group is None:
        return "Blind baseline: no result."
    auroc = float(_field(all_group, "auroc"))
    lo, hi = (float(v) for v in _field(all_group, "ci")["auroc"])
    v = _field(all_group, "verdict")
    tail = f"blind AUROC {auroc:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]"
    if v == "supported":
        return ("Distribution shift: the files alone, without the model, tell members from held-out images "
                f"({tail}). An attack's AUROC on these folders is not evidence of membership.")
    if v == "contradicted":
        return (f"The files alone separate the folders the wrong way round ({tail}): held-out images look more "
                "member-like than members without the model; check that the folders are not swapped.")
    if v == "undefined":
        return f"Blind baseline undefined on this run ({tail})."
    return (f"No shift detected: the files alone do not tell members from held-out images ({tail}): no difference "
            "in format, pixel statistics or captions was detected that could stand in for membership.")


#: What to change in the held-out set when a feature group separates the folders.
_GROUP_FIX: dict[str, str] = {
    "meta": "re-save both folders the same way (one format, one JPEG quality, EXIF stripped) at one resolution",
    "pixels": "draw the held-out images from the members' own source and collection (same cameras or generator, "
              "same processing, same period), so that colour, contrast and sharpness match",
    "caption": "caption both folders the same way (the same captioner or writers, the same length and style)",
    "encoder": "match the image content: the same subjects and scenes in both folders",
}


def shift_advice(blind: Any) -> str:
    """What to do when the blind baseline separates the folders: which feature groups separate
    them (their strongest features), what to change for each, and the check to repeat; "" otherwise."""
    if not _blind_field(blind, "available", False):
        return ""
    groups = _groups(blind)
    hits = sorted((g for g in groups if _field(g, "group") != "all" and _field(g, "verdict") == "supported"),
                  key=lambda g: -float(_field(g, "auroc")))
    all_group = next((g for g in groups if _field(g, "group") == "all"), None)
    if all_group is None or _field(all_group, "verdict") != "supported":
        return ""
    parts, fixes = [], []
    for g in hits:
        name = _field(g, "group")
        top = [str(t[0]).split(":", 1)[-1] for t in (_field(g, "top_features") or ())[:3]]
        feats = f" (strongest: {', '.join(top)})" if top else ""
        parts.append(f"{name}: {BLIND_GROUP_WORDS.get(name, name)}, AUROC {float(_field(g, 'auroc')):.3f}{feats}")
        if name in _GROUP_FIX:
            fixes.append(_GROUP_FIX[name])
    which = ("Separating: " + "; ".join(parts) + ". ") if parts else \
        "No single feature group separates the folders; only all of them together. "
    if not fixes:
        fixes = [_GROUP_FIX["pixels"], _GROUP_FIX["meta"]]
    return (which + "Build a held-out set that matches the members in what separates them: " + "; ".join(fixes)
            + ". Then analyze again and check that the blind AUROC interval contains 0.5 before reading any "
            "attack's AUROC as membership; meanwhile only attack_within_blind_strata speaks to membership.")

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


def findings_summary(findings: Iterable[Any], *, context: str = "") -> str:  # noqa: C901
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
    confounded = sum(1 for f in items if (f.get("caveat") if isinstance(f, Mapping) else getattr(f, "caveat", "")))
    more = (f"; {confounded} of them on folders the files alone separate (not evidence of membership)"
            if confounded else "")
    return ", ".join([first, *rest]) + tail + more + "."


def low_fpr_cautions(protocol: Protocol | str, *, n_members: int, n_heldout: int,
                     metrics_shown: Iterable[str] = tuple(LOW_FPR_METRICS)) -> dict[str, str]:
    """metric -> the caution of :func:`~ldminv_core.evaluation.fpr_support` for each TPR at a low
    FPR (:data:`LOW_FPR_METRICS`) in ``metrics_shown`` whose negatives are too few (empty when they
    are enough), in the order of ``metrics_shown``; other metrics are skipped.

    Args:
        protocol: a :class:`~ldminv_core.evaluation.Protocol` or its name.
        n_members / n_heldout: the samples the rates are measured on.
        metrics_shown: the metrics on display (default: both low-FPR metrics).
    """
    proto = make_protocol(protocol) if isinstance(protocol, str) else protocol
    out = {}
    for m in metrics_shown:
        if m in LOW_FPR_METRICS:
            text = fpr_support(proto, n_members=int(n_members), n_heldout=int(n_heldout),
                               fpr=LOW_FPR_METRICS[m]).warning()
            if text:
                out[m] = text
    return out
