"""The report as readable text: :func:`format_report` turns the report JSON object of
:func:`~ldminv_core.report.build_report` into the tables the command line prints (``python -m
ldminv_core report RUN``). Nothing is computed here; every number is the JSON's, written with
:mod:`ldminv_core.formatting`.
"""
from __future__ import annotations

from typing import Any

from ..evaluation.wording import (
    below_chance_text,
    effect_sentence,
    finding_title,
    findings_summary,
    tiny_note,
    verdict_words,
)
from .agreement_text import agreement_lines
from ..formatting import format_count, format_percent, format_rate, format_rate_ci

__all__ = ["format_report"]


def _pct(x: float | None) -> str:
    """A rate of the table: "-" when the JSON has none (None), "–" when undefined (NaN)."""
    return format_rate(x, none="-")


def _t_of(arm: dict, protocol: str) -> str:
    if protocol == "honest":
        ts = [f["t"] for f in arm.get("folds", [])]
        return "-" if not ts or all(t is None for t in ts) else "folds " + "/".join(str(t) for t in ts)
    bt = arm.get("best_t") or {}
    values = [v for v in bt.values()]
    if not values or all(v is None for v in values):
        return "-"
    if len(set(values)) == 1:
        return str(values[0])
    return "/".join(str(bt[m]) for m in ("auroc", "tpr_at_1fpr", "asr"))


def _drop_of(arm: dict, protocol: str) -> str:
    if arm.get("drop_percent") is not None:
        return format_percent(arm["drop_percent"])
    drops = [f["drop_percent"] for f in arm.get("folds", []) if f.get("drop_percent") is not None]
    return "folds " + "/".join(f"{d:g}" for d in drops) if drops else "-"


def _grid(header: tuple[str, ...], rows: list[tuple[str, ...]], left: int) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(v.ljust(w) if i < left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
    return [fmt(header), "  ".join("-" * w for w in widths), *[fmt(r) for r in rows]]


def _t_key(protocol: str) -> str:
    """What the t (and drop) column of the readable table means under ``protocol``."""
    if protocol == "honest":
        return ("Key: t \"folds a/b/...\" = the timestep each fold chose on the other folds (fold 1, 2, ...); "
                "drop \"folds a/b/...\" likewise; realised FPR = the FPR of the transferred 1% thresholds.")
    if protocol == "paper":
        return ("Key: t = the timestep of the row's metrics; \"a/b/c\" = each metric at its own best t: "
                "a for AUROC, b for TPR@1%FPR, c for ASR (the paper's code convention).")
    return "Key: t = the timestep of every metric of the row (the best baseline AUROC on these samples: optimistic)."


def _ci_ok(ci: Any) -> bool:
    return ci is not None and len(ci) == 2 and None not in ci


def _below_chance(entry: dict) -> str | None:
    """:func:`~ldminv_core.evaluation.below_chance_text` of an arm / group / quartile entry."""
    ci = entry.get("auroc_ci")
    return below_chance_text(entry.get("auroc"), ci) if _ci_ok(ci) else None


def _auroc_cell(entry: dict) -> str:
    """An AUROC as the table shows it: never a plain number when its interval lies below 0.5."""
    return _pct(entry.get("auroc")) + (" (below chance)" if _below_chance(entry) else "")


def _tpr_cells(entry: dict) -> tuple[str, str, str, str]:
    """(TPR@1%FPR, its bootstrap CI, the exact Clopper-Pearson CI of its count, "k/n" flagged)."""
    boot = (entry.get("ci") or {}).get("tpr_at_1fpr")
    lf = entry.get("low_fpr")
    exact = format_rate_ci(lf["exact_ci"]) if lf and _ci_ok(lf.get("exact_ci")) else "-"
    flagged = format_count(lf["true_positives"], lf["n_positives"], compact=True) if lf else "-"
    return (_pct(entry.get("tpr_at_1fpr")), format_rate_ci(boot) if _ci_ok(boot) else "-", exact, flagged)


def _tpr_key(entries: list[dict]) -> str | None:
    """What the TPR@1%FPR columns rest on, in one line (None when no entry has counts)."""
    counts = [e["low_fpr"] for e in entries if e.get("low_fpr")]
    if not counts:
        return None
    rests = list(dict.fromkeys(c["rests_on"] for c in counts))
    pos = "held-out images" if counts[0]["positive_class"] == "heldout" else "members"
    fixed = {bool(c["threshold_fixed"]) for c in counts}
    when = ("at thresholds transferred from the other folds" if fixed == {True} else
            "at the threshold chosen on these samples (the exact interval is conditional on that choice)"
            if fixed == {False} else "at each row's threshold")
    return (f"TPR@1%FPR rests on {'; '.join(rests)}. flagged = {pos} flagged {when}, k/n; beside the bootstrap "
            "95% CI, the exact 95% CI is the Clopper-Pearson interval of k/n"
            + ("; the random arm is a mean over seeds (no single count)." if any(not e.get("low_fpr") for e in entries)
               else "."))


def _shift_lines(report: dict, level: int) -> list[str]:
    """The shift check block: the blind baseline's headline, its table per feature group, what the
    TPR rests on, below-chance AUROCs named, and what to do when the folders are separable."""
    blind = report.get("blind")
    shift = report.get("shift")
    if blind is None or shift is None:
        return []
    if not blind.get("available"):
        return [f"Shift check (membership or distribution shift?): {shift['headline']}", ""]
    lines = [f"Shift check (membership or distribution shift?): blind baseline = {blind['classifier']} on "
             f"{blind['folds']} folds (seed {blind['fold_seed']}); it sees the files only, never the model"
             + (f"; {blind['encoder_text']}" if blind.get("encoder_text") else "") + "."
             + (f" AUROC intervals: {blind['intervals']}." if blind.get("intervals") else ""),
             shift["headline"]]
    honest = report["protocol"]["name"] == "honest"
    header = ("group", "features", "blind AUROC", f"{level}% CI", "TPR@1%FPR", "TPR CI (bootstrap)", "exact CI",
              "flagged", *(("realised FPR",) if honest else ()), "verdict")
    rows = []
    for g in blind["groups"]:
        ci = g.get("auroc_ci")
        row = (g["group"], str(g["n_features"]), _auroc_cell(g), format_rate_ci(ci) if _ci_ok(ci) else "-",
               *_tpr_cells(g), *((_pct(g.get("realised_fpr_at_1fpr")),) if honest else ()), g["verdict"])
        rows.append(row)
    lines += ["  " + line for line in _grid(header, rows, left=1)]
    lines += [f"  blind {g['group']} AUROC {format_rate(g['auroc'])}: {text}"
              for g in blind["groups"] if (text := _below_chance(g))]
    key = _tpr_key(blind["groups"])
    if key:
        lines.append("  " + key)
    if shift.get("advice"):
        lines.append(f"What to do: {shift['advice']}")
    return [*lines, ""]


def _statement_text(f: dict) -> str:
    """A finding's statement without its caveat (printed on its own line)."""
    statement, caveat = f["statement"], f.get("caveat") or ""
    if caveat and statement.endswith(caveat):
        statement = statement[: -len(caveat)].rstrip()
    return statement


def _header_lines(report: dict, level: int) -> list[str]:
    """The run, its sizes and the protocol in four lines, then a blank one."""
    proto = report["protocol"]
    lat = "x".join(map(str, report["latent_shape"]))
    return [
        f"run {report.get('run', '')}",
        f"{report['n_members']} members, {report['n_heldout']} held-out, latents {lat}; "
        "AUROC, ASR, TPR and FPR as fractions in [0, 1] (0.5 = chance AUROC)",
        f"protocol {proto['name']}: {proto['description']}",
        f"TPR@1%FPR = {proto['tpr_at_1fpr']}; intervals: {level}% CI, {report['n_boot']} stratified bootstrap "
        "replicates",
        "",
    ]


def _arm_row(attack: str, key: str, arm: dict, name: str) -> tuple[str, ...]:
    """One row of the metrics table: attack (on the baseline row), arm, t, drop and the metrics."""
    ci = arm.get("auroc_ci") or [None, None]
    ci_text = "-" if None in ci else format_rate_ci(ci)
    label = key if key != "random" else f"random ({len(arm.get('seeds', []))} seeds)"
    row = (attack if key == "baseline" else "", label, _t_of(arm, name),
           "" if key == "baseline" else _drop_of(arm, name),
           _auroc_cell(arm), ci_text, _pct(arm["asr"]), *_tpr_cells(arm))
    if name == "honest":
        row = (*row, _pct(arm.get("realised_fpr_at_1fpr")))
    return row


def _metrics_lines(report: dict, level: int) -> list[str]:
    """The metrics of every arm of every attack, below-chance AUROCs named, the key to the t
    column, what the TPR@1%FPR rests on and the caution on all samples."""
    name = report["protocol"]["name"]
    header = ("attack", "arm", "t", "drop", "AUROC", f"{level}% CI", "ASR", "TPR@1%FPR", "TPR CI (bootstrap)",
              "exact CI", "flagged", *(("realised FPR",) if name == "honest" else ()))
    rows: list[tuple[str, ...]] = []
    shown: list[dict] = []
    below: list[str] = []
    for attack, a in report["attacks"].items():
        for key in ("baseline", "masked", "random"):
            arm = a.get(key)
            if arm is None:
                continue
            shown.append(arm)
            rows.append(_arm_row(attack, key, arm, name))
            if text := _below_chance(arm):
                below.append(f"{attack} {key} AUROC {format_rate(arm['auroc'])}: {text}")
    lines = []
    if (report.get("shift") or {}).get("separable"):
        lines.append("Shifted folders: the attacks below separate two folders that differ without the model; their "
                     "AUROCs and TPRs are not evidence of membership (see the shift check above).")
    lines += _grid(header, rows, left=4)
    lines += below
    lines.append(_t_key(name))
    key = _tpr_key(shown)
    if key:
        lines.append(key)
    lines += [f"Caution (TPR@1%FPR): {c['text']}" for c in report.get("cautions", []) if c["scope"] == "all samples"]
    return lines


def _quartile_lines(report: dict) -> list[str]:
    """The baseline AUROC per log-volume quartile, below-chance ones named, the quartiles' caution."""
    lines = ["", "Baseline AUROC (fraction) by decoder log-volume quartile (Q1 = least distorted):"]
    qrows = [(attack, *[_auroc_cell(q) for q in a["quartiles"]]) for attack, a in report["attacks"].items()]
    lines += _grid(("attack", "Q1", "Q2", "Q3", "Q4"), qrows, left=1)
    lines += [f"{attack} Q{q['q']} AUROC {format_rate(q['auroc'])}: {text}"
              for attack, a in report["attacks"].items() for q in a["quartiles"] if (text := _below_chance(q))]
    lines += [f"Caution (TPR@1%FPR of {c['scope']}, in the JSON): {c['text']}"
              for c in report.get("cautions", []) if c["scope"] != "all samples"]
    return lines


def _findings_lines(report: dict, level: int) -> list[str]:
    """One summary line per attack, then one line per finding (its caveat on the next line) and
    what "tiny" means when an effect is tiny."""
    name = report["protocol"]["name"]
    lines = ["", f"Findings ({level}% paired bootstrap intervals, {report['n_boot']} replicates):"]
    for attack in report["attacks"]:
        mine = [f for f in report["findings"] if f.get("attack") == attack]
        if mine:
            lines.append(f"[{attack}] {findings_summary(mine, context=f'the {name} protocol')}")
    for f in report["findings"]:
        verdict = verdict_words(f["verdict"], f["estimate"], metric=f.get("metric", "auroc"),
                                confounded=bool(f.get("confounded")))
        lines.append(f"- [{f['attack']}] {finding_title(f['id'])} ({f['id']}): {verdict}. {_statement_text(f)}")
        if f.get("caveat"):
            lines.append(f"    Caveat: {f['caveat']}")
    if any(effect_sentence(f) for f in report["findings"]):
        lines.append(tiny_note())
    return lines


def format_report(report: dict) -> str:
    """A readable text table of :func:`~ldminv_core.report.build_report`'s dict.

    1. the run and the protocol in one line each;
    2. the shift check (the blind baseline's verdict, a table per feature group, what to do when
       the files alone separate the folders);
    3. the metrics of every arm with the t and drop that produced them (and a key to the t
       column), every TPR@1%FPR with its bootstrap and exact Clopper-Pearson intervals, the count
       it rests on and how many held-out images the 1% is;
    4. the quartiles;
    5. one line per finding (its title, verdict with a tiny or confounded effect named, statement,
       and its caveat on the next line), each attack's findings summarised in one line;
    6. the attacks' agreement, when the report has it (:mod:`.agreement_text`).

    An AUROC whose interval lies below 0.5 is named as below chance. Rates are fractions in
    [0, 1], as in the JSON. Returns the lines joined by newlines (no trailing newline)."""
    level = int(100 * report["ci_level"])
    lines = _header_lines(report, level)          # 1.
    lines += _shift_lines(report, level)          # 2.
    lines += _metrics_lines(report, level)        # 3.
    lines += _quartile_lines(report)              # 4.
    lines += _findings_lines(report, level)       # 5.
    lines += agreement_lines(report)              # 6.
    return "\n".join(lines)
