"""The membership-inference report of a finished run: the JSON of the method reference (sections 3
and 4) and a readable text table, both formatted from :mod:`ldminv_core.evaluation`.

:func:`build_report` evaluates every attack of the run (or the one asked for) under one protocol
with :class:`~ldminv_core.evaluation.Evaluation` and writes what it returns, nothing more:

- ``protocol``: the protocol's name and settings;
- per attack: ``best_t`` (the headline t; null under ``honest``, where each fold chooses),
  ``per_t`` (baseline AUROC, TPR@1%FPR and ASR at every t on all samples: descriptive),
  ``baseline`` / ``masked`` / ``random`` (metrics, ``auroc_ci`` and ``ci`` per metric,
  ``best_t`` per metric, ``drop_percent``; under ``honest`` also ``realised_fpr_at_1fpr`` and
  ``folds``; the random arm lists its ``seeds`` and ``per_seed`` values, its headline being
  their mean), ``quartiles`` (low to high log-volume), ``classes`` (quartile AUROCs per caption
  class) and ``findings``;
- ``findings``: every attack's findings, each with its ``attack``; every finding has ``caveat``
  (non-empty when the blind baseline separates the folders and the finding claims membership or
  a geometry effect) and ``confounded`` (``caveat`` is set);
- ``blind``: the run's blind baseline (METHOD.md section 6; it does not depend on the attack):
  ``available``, ``reason``, ``classifier``, ``folds``, ``fold_seed``, ``groups`` (one entry per
  feature group, then ``all``: ``n_features``, ``auroc``, ``auroc_ci``, ``ci`` per metric,
  ``tpr_at_1fpr``, ``realised_fpr_at_1fpr``, ``low_fpr``, ``verdict``, ``top_features`` as
  [name, standardised coefficient] pairs, ``below_chance``) and ``finding`` (``blind_baseline``);
- ``shift``: ``separable`` (the files alone separate the folders), ``separating_groups``,
  ``headline`` and ``advice`` (:func:`~ldminv_core.evaluation.shift_headline` / ``shift_advice``).

Every arm (and blind group) carries ``low_fpr``: the counts behind its TPR@1%FPR
(:meth:`~ldminv_core.evaluation.LowFprCount.as_dict` plus ``rests_on``: "1% FPR = 3 of 300
held-out images"; the exact Clopper-Pearson interval ``exact_ci``; null for the random arm, a
mean over seeds) and ``below_chance`` (its AUROC interval lies below 0.5).

PFAMI stores one score per sample: its ``best_t``, ``per_t``, ``masked`` and ``random`` are
null. NaN (an undefined metric, e.g. a quartile holding one class) is written as null.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .errors import LdminvError, UnknownNameError
from .evaluation import (
    DEFAULT_N_BOOT,
    DEFAULT_PROTOCOL,
    ArmResult,
    AttackEvaluation,
    Evaluation,
    BlindResult,
    Finding,
    LowFprCount,
    below_chance_text,
    effect_sentence,
    finding_title,
    findings_summary,
    fpr_support,
    make_protocol,
    shift_advice,
    shift_headline,
    tiny_note,
    verdict_words,
)
from .evaluation.wording import BLIND_GROUP_WORDS
from .runstore import Run

__all__ = ["build_report", "evaluate_run", "report_from_results", "format_report", "format_rate", "format_rate_ci",
           "low_fpr_cautions", "CI_LEVEL", "N_BOOT"]

CI_LEVEL = 0.95
#: Bootstrap replicates of the report's intervals: the evaluation layer's one default.
N_BOOT = DEFAULT_N_BOOT
#: FPR bound of each TPR-at-low-FPR metric.
LOW_FPR_METRICS = {"tpr_at_1fpr": 0.01, "tpr_at_01fpr": 0.001}


def format_rate(x: float | None, digits: int = 4) -> str:
    """A rate (AUROC, TPR, ASR, FPR) as every display shows it, the text report, the HTML export
    and the dashboard alike: a fraction in [0, 1] with ``digits`` decimals, "0.8105"; "–" for
    None / NaN (JSON keeps full precision)."""
    if x is None:
        return "–"
    v = float(x)
    return f"{v:.{digits}f}" if math.isfinite(v) else "–"


def format_rate_ci(ci: tuple[float | None, float | None], digits: int = 4) -> str:
    """An interval of rates as "[0.7778, 0.8400]"; "–" when a bound is undefined."""
    lo, hi = ci
    if lo is None or hi is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return "–"
    return f"[{format_rate(lo, digits)}, {format_rate(hi, digits)}]"


def low_fpr_cautions(protocol, *, n_members: int, n_heldout: int,
                     metrics_shown=tuple(LOW_FPR_METRICS)) -> dict[str, str]:
    """metric -> the caution of :func:`~ldminv_core.evaluation.fpr_support` for each TPR at a low
    FPR in ``metrics_shown`` whose negatives are too few (empty when they are enough)."""
    proto = protocol if not isinstance(protocol, str) else make_protocol(protocol)
    out = {}
    for m in metrics_shown:
        if m in LOW_FPR_METRICS:
            text = fpr_support(proto, n_members=int(n_members), n_heldout=int(n_heldout),
                               fpr=LOW_FPR_METRICS[m]).warning()
            if text:
                out[m] = text
    return out


def _num(x: Any) -> float | None:
    """float, or None for None/NaN/inf (JSON has no NaN)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _pair(ci: tuple[float, float]) -> list[float | None]:
    return [_num(ci[0]), _num(ci[1])]


def _low_fpr(count: LowFprCount | None) -> dict | None:
    """The counts behind a TPR@1%FPR (``LowFprCount.as_dict``, NaN -> None) plus ``rests_on``."""
    if count is None:
        return None
    out = count.as_dict()
    out["exact_ci"] = _pair(count.exact_ci)
    out["rests_on"] = count.rests_on()
    return out


def _arm(arm: ArmResult | None, protocol: str) -> dict | None:
    if arm is None:
        return None
    out: dict[str, Any] = {
        "auroc": _num(arm.auroc),
        "tpr_at_1fpr": _num(arm.tpr_at_1fpr),
        "asr": _num(arm.asr),
        "auroc_ci": _pair(arm.ci["auroc"]),
        "ci": {m: _pair(v) for m, v in arm.ci.items()},
        "best_t": dict(arm.best_t),
        "low_fpr": _low_fpr(arm.low_fpr),
        "below_chance": arm.below_chance,
    }
    if arm.arm != "baseline":
        out["drop_percent"] = _num(arm.drop_percent)
    if protocol == "honest":
        out["realised_fpr_at_1fpr"] = _num(arm.realised_fpr_at_1fpr)
        out["folds"] = [
            {
                "fold": f.fold,
                "t": f.t,
                "drop_percent": _num(f.drop_percent),
                "threshold": _num(f.threshold),
                **({"thresholds_by_seed": [_num(v) for v in f.thresholds_by_seed]} if f.thresholds_by_seed else {}),
                "sample_ids": list(f.sample_ids),
            }
            for f in arm.folds
        ]
    if arm.seeds:
        out["seeds"] = list(arm.seeds)
        out["per_seed"] = {m: [_num(v) for v in vals] for m, vals in arm.per_seed.items()}
    return out


def _finding(f: Finding, attack: str | None = None) -> dict:
    out: dict[str, Any] = {} if attack is None else {"attack": attack}
    out.update(
        id=f.id, metric=f.metric, estimate=_num(f.estimate), ci=_pair(f.ci), verdict=f.verdict,
        statement=f.statement,
        details={k: (_num(v) if isinstance(v, float) else v) for k, v in f.details.items()},
        secondary=[{"metric": s["metric"], "estimate": _num(s["estimate"]), "ci": _pair(s["ci"]),
                    "verdict": s["verdict"]} for s in f.secondary],
        caveat=f.caveat,
        confounded=f.confounded,
    )
    return out


def _blind(blind: BlindResult | None) -> dict:
    """The report JSON's ``blind`` entry of a :class:`~ldminv_core.evaluation.BlindResult`."""
    if blind is None:
        return {"available": False, "reason": "the blind baseline was not evaluated", "classifier": "",
                "folds": 0, "fold_seed": 0, "groups": [], "finding": None}
    return {
        "available": blind.available,
        "reason": blind.reason,
        "classifier": blind.classifier,
        "encoder": blind.encoder,
        "encoder_text": blind.encoder_text,
        "intervals": blind.interval_text,
        "folds": blind.folds,
        "fold_seed": blind.fold_seed,
        "groups": [
            {"group": g.group, "words": BLIND_GROUP_WORDS.get(g.group, g.group), "n_features": g.n_features,
             "auroc": _num(g.auroc), "auroc_ci": _pair(g.ci["auroc"]), "ci": {m: _pair(v) for m, v in g.ci.items()},
             "tpr_at_1fpr": _num(g.tpr_at_1fpr), "realised_fpr_at_1fpr": _num(g.realised_fpr_at_1fpr),
             "low_fpr": _low_fpr(g.low_fpr), "verdict": g.verdict,
             "top_features": [[name, _num(coef)] for name, coef in g.top_features],
             "below_chance": g.below_chance}
            for g in blind.groups
        ],
        "finding": None if blind.finding is None else _finding(blind.finding),
    }


def _shift(blind: BlindResult | None) -> dict:
    """The report JSON's ``shift`` entry: the blind baseline's verdict and what to do, in words."""
    if blind is None:
        return {"separable": False, "separating_groups": [],
                "headline": "Blind baseline unavailable: it was not evaluated.", "advice": ""}
    return {"separable": blind.separable, "separating_groups": list(blind.separating_groups),
            "headline": shift_headline(blind), "advice": shift_advice(blind)}


def _attack(res: AttackEvaluation) -> dict:
    name = res.protocol.name
    return {
        "best_t": res.best_t,
        "per_t": ({"t": list(res.per_t["t"]), **{m: [_num(v) for v in res.per_t[m]]
                                                 for m in ("auroc", "tpr_at_1fpr", "asr")}}
                  if res.maskable else None),
        "baseline": _arm(res.baseline, name),
        "masked": _arm(res.masked, name),
        "random": _arm(res.random, name),
        "shifted": res.shifted,
        "quartiles": [
            {"q": q.q, "auroc": _num(q.auroc), "tpr_at_1fpr": _num(q.tpr_at_1fpr), "asr": _num(q.asr),
             "auroc_ci": _pair(q.auroc_ci), "best_t": dict(q.best_t), "n": q.n, "n_members": q.n_members,
             "log_volume_min": _num(q.log_volume_min), "log_volume_max": _num(q.log_volume_max),
             "below_chance": below_chance_text(q.auroc, q.auroc_ci) is not None}
            for q in res.quartiles
        ],
        "classes": [{"label": c.label, "n": c.n, "n_members": c.n_members,
                     "quartile_auroc": [_num(v) for v in c.aurocs], "difference": _num(c.difference)}
                    for c in res.classes],
        "findings": [_finding(f) for f in res.findings],
    }


def evaluate_run(
    run: Run | str | Path,
    *,
    attack: str | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    folds: int | None = None,
    drop: float | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
    validate: bool = True,
) -> tuple[Run, dict[str, AttackEvaluation]]:
    """(run, {attack: AttackEvaluation}) for every attack of the run (or ``attack``); options as
    :func:`build_report`. ``validate`` (default): first scan the evaluated attacks' terms /
    scores and the influence for NaN / infinite values (``Run.check_finite``), raising
    NonFiniteRunError naming the file and the first sample ids."""
    if not isinstance(run, Run):
        run = Run.open(run)
    proto = make_protocol(protocol, folds=folds, seed=seed)
    if drop is not None and (isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0 <= float(drop) < 100):
        raise LdminvError(f"drop: expected a percentage in [0, 100), got {drop!r}")
    names = run.attacks
    if attack is not None:
        if attack not in names:
            raise UnknownNameError(f"attack: {attack!r} is not in run {run.path}; it holds {names}")
        names = [attack]
    if validate:
        for name in names:
            run.check_finite(name)
    results = {
        name: Evaluation(run, name, proto, n_boot=n_boot, level=CI_LEVEL, seed=seed).result(drop)
        for name in names
    }
    return run, results


def report_from_results(run: Run, results: dict[str, AttackEvaluation], *, drop: float | None = None) -> dict:
    """The report JSON object of evaluations already computed (``{attack: AttackEvaluation}``, all
    under one protocol): what :func:`build_report` returns, without computing anything again."""
    if not results:
        raise LdminvError(f"results: expected at least one attack evaluation of run {run.path}")
    first = next(iter(results.values()))
    proto = first.protocol
    drop_percent = None if (drop is None and proto.name == "honest") else (40.0 if drop is None else float(drop))
    # TPR@1%FPR is reported for every arm (TPR@0.1%FPR is not in the report): one caution when
    # the run's negatives are too few for it; quartiles hold a quarter of them
    cautions = [{"metric": m, "scope": "all samples", "text": text}
                for m, text in low_fpr_cautions(proto, n_members=run.n_members, n_heldout=run.n_heldout,
                                                metrics_shown=("tpr_at_1fpr",)).items()]
    quartiles = [q for q in first.quartiles if q.n > 0]
    if quartiles:  # the quartile with the fewest negatives
        q = min(quartiles, key=lambda q: q.n_members if proto.positive_class == "heldout" else q.n - q.n_members)
        cautions += [{"metric": m, "scope": "each log-volume quartile", "text": text}
                     for m, text in low_fpr_cautions(proto, n_members=q.n_members, n_heldout=q.n - q.n_members,
                                                     metrics_shown=("tpr_at_1fpr",)).items()]
    return {
        "run": str(run.path),
        "n_members": run.n_members,
        "n_heldout": run.n_heldout,
        "latent_shape": list(run.latent_shape),
        "drop_percent": drop_percent,
        "protocol": proto.settings(),
        "n_boot": int(first.n_boot),
        "ci_level": first.level,
        "findings": [_finding(f, name) for name, res in results.items() for f in res.findings],
        "attacks": {name: _attack(res) for name, res in results.items()},
        "cautions": cautions,
        # the blind baseline sees the files only: one per run (every attack's evaluation holds the same)
        "blind": _blind(first.blind),
        "shift": _shift(first.blind),
    }


def build_report(
    run: Run | str | Path,
    *,
    attack: str | None = None,
    protocol: str = DEFAULT_PROTOCOL,
    folds: int | None = None,
    drop: float | None = None,
    seed: int = 0,
    n_boot: int = N_BOOT,
) -> dict:
    """The report JSON object of a finished run under one protocol.

    Args:
        run: a :class:`~ldminv_core.runstore.Run` or the path of a run folder.
        attack: report only this attack (default: every attack of the run).
        protocol: "standard" (default), "paper" or "honest" (METHOD.md section 4).
        folds: cross-fitting folds of ``honest`` (default 5).
        drop: percentage of coordinates dropped per sample for ``masked`` / ``random``; None =
            the protocol's default (40; under ``honest`` chosen on the other folds).
        seed: seed of the random-drop control (its first seed), the bootstrap and the folds.
        n_boot: bootstrap replicates of every interval.

    Returns:
        ``{"run", "n_members", "n_heldout", "latent_shape", "drop_percent", "protocol",
        "n_boot", "ci_level", "findings", "attacks": {name: {...}}, "cautions", "blind", "shift"}``
        as described in the module
        docstring; JSON-serialisable (NaN -> None).

    Raises:
        RunError: the folder is not a finished run. NonFiniteRunError (a RunError and a
        NonFiniteError): an evaluated array holds NaN / infinite values (file and sample ids
        named). UnknownNameError: ``attack`` or ``protocol`` unknown. LdminvError: bad
        ``drop``, ``folds``, ``seed`` or ``n_boot``.
    """
    run, results = evaluate_run(run, attack=attack, protocol=protocol, folds=folds, drop=drop, seed=seed,
                                n_boot=n_boot)
    return report_from_results(run, results, drop=drop)


def _pct(x: float | None) -> str:
    return "-" if x is None else format_rate(x)


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
        return f"{arm['drop_percent']:g}%"
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
    flagged = f"{lf['true_positives']}/{lf['n_positives']}" if lf else "-"
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


def format_report(report: dict) -> str:
    """A readable text table of :func:`build_report`'s dict: the protocol in one line, the shift
    check (the blind baseline's verdict, a table per feature group, what to do when the files alone
    separate the folders), the metrics of every arm with the t and drop that produced them (and a
    key to the t column), every TPR@1%FPR with its bootstrap and exact Clopper-Pearson intervals,
    the count it rests on and how many held-out images the 1% is, quartiles, and one line per
    finding (its title, verdict with a tiny or confounded effect named, statement, and its caveat
    on the next line), each attack's findings summarised in one line. An AUROC whose interval lies
    below 0.5 is named as below chance. Rates are fractions in [0, 1], as in the JSON."""
    proto = report["protocol"]
    name = proto["name"]
    lat = "x".join(map(str, report["latent_shape"]))
    n_boot = report["n_boot"]
    level = int(100 * report["ci_level"])
    lines = [
        f"run {report.get('run', '')}",
        f"{report['n_members']} members, {report['n_heldout']} held-out, latents {lat}; "
        "AUROC, ASR, TPR and FPR as fractions in [0, 1] (0.5 = chance AUROC)",
        f"protocol {name}: {proto['description']}",
        f"TPR@1%FPR = {proto['tpr_at_1fpr']}; intervals: {level}% CI, {n_boot} stratified bootstrap replicates",
        "",
    ]
    lines += _shift_lines(report, level)
    honest = name == "honest"
    header = ("attack", "arm", "t", "drop", "AUROC", f"{level}% CI", "ASR", "TPR@1%FPR", "TPR CI (bootstrap)",
              "exact CI", "flagged", *(("realised FPR",) if honest else ()))
    rows: list[tuple[str, ...]] = []
    shown: list[dict] = []
    below: list[str] = []
    for attack, a in report["attacks"].items():
        for key in ("baseline", "masked", "random"):
            arm = a.get(key)
            if arm is None:
                continue
            shown.append(arm)
            ci = arm.get("auroc_ci") or [None, None]
            ci_text = "-" if None in ci else format_rate_ci(ci)
            label = key if key != "random" else f"random ({len(arm.get('seeds', []))} seeds)"
            row = (attack if key == "baseline" else "", label, _t_of(arm, name),
                   "" if key == "baseline" else _drop_of(arm, name),
                   _auroc_cell(arm), ci_text, _pct(arm["asr"]), *_tpr_cells(arm))
            if honest:
                row = (*row, _pct(arm.get("realised_fpr_at_1fpr")))
            rows.append(row)
            if text := _below_chance(arm):
                below.append(f"{attack} {key} AUROC {format_rate(arm['auroc'])}: {text}")
    if (report.get("shift") or {}).get("separable"):
        lines.append("Shifted folders: the attacks below separate two folders that differ without the model; their "
                     "AUROCs and TPRs are not evidence of membership (see the shift check above).")
    lines += _grid(header, rows, left=4)
    lines += below
    lines.append(_t_key(name))
    key = _tpr_key(shown)
    if key:
        lines.append(key)
    for c in report.get("cautions", []):
        if c["scope"] == "all samples":
            lines.append(f"Caution (TPR@1%FPR): {c['text']}")
    lines += ["", "Baseline AUROC (fraction) by decoder log-volume quartile (Q1 = least distorted):"]
    qrows = [(attack, *[_auroc_cell(q) for q in a["quartiles"]]) for attack, a in report["attacks"].items()]
    lines += _grid(("attack", "Q1", "Q2", "Q3", "Q4"), qrows, left=1)
    lines += [f"{attack} Q{q['q']} AUROC {format_rate(q['auroc'])}: {text}"
              for attack, a in report["attacks"].items() for q in a["quartiles"] if (text := _below_chance(q))]
    for c in report.get("cautions", []):
        if c["scope"] != "all samples":
            lines.append(f"Caution (TPR@1%FPR of {c['scope']}, in the JSON): {c['text']}")
    lines += ["", f"Findings ({level}% paired bootstrap intervals, {n_boot} replicates):"]
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
    return "\n".join(lines)
