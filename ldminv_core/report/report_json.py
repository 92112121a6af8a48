"""The membership-inference report of a finished run as the JSON object of the method reference
(sections 3 and 4), written from :mod:`ldminv_core.evaluation` (the readable text is
:mod:`ldminv_core.report.report_text`).

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
  ``headline`` and ``advice`` (:func:`~ldminv_core.evaluation.shift_headline` / ``shift_advice``);
- ``agreement`` (reports of two or more attacks; METHOD.md section 7): which samples each attack
  flags at the protocol's 1%-FPR operating point (``counts`` per split), per pair the Jaccard index
  per subset (all, member, heldout) and the Spearman correlation per split, each with its bootstrap
  interval and, when undefined (null), the ``reason``; ``samples``: the who-flags-whom rows of the
  samples flagged by at least one attack, most flags first (:mod:`ldminv_core.report.agreement_json`).

Every arm (and blind group) carries ``low_fpr``: the counts behind its TPR@1%FPR
(:meth:`~ldminv_core.evaluation.LowFprCount.as_dict` plus ``rests_on``: "1% FPR = 3 of 300
held-out images"; the exact Clopper-Pearson interval ``exact_ci``; null for the random arm, a
mean over seeds) and ``below_chance`` (its AUROC interval lies below 0.5).

PFAMI stores one score per sample: its ``best_t``, ``per_t``, ``masked`` and ``random`` are
null. NaN (an undefined metric, e.g. a quartile holding one class) is written as null.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from .._validation import check_percent
from ..errors import LdminvError, UnknownNameError
from ..evaluation import (
    DEFAULT_N_BOOT,
    DEFAULT_PROTOCOL,
    ArmResult,
    AttackEvaluation,
    Evaluation,
    BlindResult,
    Finding,
    LowFprCount,
    below_chance_text,
    make_protocol,
    shift_advice,
    shift_headline,
)
from ..evaluation import agreement as agreement_of
from ..evaluation.agreement import Agreement
from ..evaluation.wording import BLIND_GROUP_WORDS, LOW_FPR_METRICS, low_fpr_cautions
from ldminv_core.runs import Run
from .agreement_json import agreement_json

__all__ = ["build_report", "evaluate_run", "report_from_results", "CI_LEVEL", "N_BOOT", "LOW_FPR_METRICS"]

CI_LEVEL = 0.95
#: Bootstrap replicates of the report's intervals: the evaluation layer's one default.
N_BOOT = DEFAULT_N_BOOT


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
    if drop is not None:
        check_percent(drop, "drop")
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


def report_from_results(run: Run, results: dict[str, AttackEvaluation], *, drop: float | None = None,
                        agreement: Agreement | None = None) -> dict:
    """The report JSON object of evaluations already computed (``{attack: AttackEvaluation}``, all
    under one protocol): what :func:`build_report` returns, without computing anything again;
    ``agreement`` (computed under the same protocol) adds the ``agreement`` entry."""
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
    out = {
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
    if agreement is not None:
        out["agreement"] = agreement_json(agreement)
    return out


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
        run: a :class:`~ldminv_core.runs.Run` or the path of a run folder.
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
        (and ``"agreement"`` when two or more attacks are reported)
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
    agreement = None
    if len(results) > 1:  # the attacks' agreement (METHOD.md section 7), under the same protocol and design
        with warnings.catch_warnings():  # its degenerate cases are in its "warnings" entry
            warnings.simplefilter("ignore", RuntimeWarning)
            agreement = agreement_of(run, next(iter(results.values())).protocol, attacks=list(results),
                                     n_boot=n_boot, level=CI_LEVEL, seed=seed)
    return report_from_results(run, results, drop=drop, agreement=agreement)
