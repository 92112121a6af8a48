"""Comparison of runs on the same samples (METHOD.md section 7): checkpoints, LoRA scales or
training steps of one model, audited on the same member / held-out images.

:func:`compare_runs` evaluates every attack the runs share under one protocol (the same
:class:`~.evaluator.Evaluation` the report uses, so every number is the report's) and puts run
B (each later run) beside run A (the first):

- every arm's metric (AUROC, TPR@1%FPR, ASR of the baseline, masked and random arms at the
  protocol's t and drop) with each run's own interval, the difference B - A and its *paired*
  interval: both runs are evaluated on the same bootstrap design (the same resampled sample
  indices, stratified by split and, under ``honest``, fold; checked equal), so the replicate
  differences are differences on the same resampled samples;
- every finding of both runs, and the difference of their estimates with a paired interval where
  both runs' replicates of the finding share one design (the masking findings always; the
  distortion quartiles when both runs have the same quartiles, i.e. the same VAE);
- per sample, which images become exposed: flagged at the 1%-FPR threshold of the baseline arm
  in B and not in A (and which stop being exposed). A sample is flagged when it is called a
  member by the threshold that calls at most 1% of the held-out images members (``honest``: its
  fold's transferred threshold).

Verdict of a difference: "rises" (the paired interval lies above 0), "falls" (below 0),
"inconclusive" (it contains 0), "undefined" (no interval).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LdminvError
from ..runs import Run
from .compare_samples import SampleMismatchError, check_same_samples
from .evaluator import Evaluation
from .low_fpr import threshold_at_1fpr
from .protocols import REPORTED_METRICS, Protocol, make_protocol
from .resampling import DEFAULT_N_BOOT, percentile_interval, verdict

__all__ = ["MetricComparison", "FindingComparison", "ExposureChange", "RunComparison", "compare_runs",
           "change_verdict", "flagged_at_1fpr", "SampleMismatchError", "CHANGE_WORDS"]

#: A difference's verdict in words (``{level}``: the interval's level, e.g. 95).
CHANGE_WORDS = {
    "rises": "rises: the {level}% paired interval of B - A lies above 0",
    "falls": "falls: the {level}% paired interval of B - A lies below 0",
    "inconclusive": "inconclusive: the {level}% paired interval of B - A contains 0",
    "undefined": "undefined: no paired interval",
}


def change_verdict(ci: tuple[float, float]) -> str:
    """"rises" / "falls" / "inconclusive" / "undefined" of a paired interval of B - A."""
    return {"supported": "rises", "contradicted": "falls"}.get(verdict(ci), verdict(ci))


@dataclass(frozen=True)
class MetricComparison:
    """One metric of one arm of one attack in run A and run B.

    ``a``, ``b``: the values (the report's); ``ci_a``, ``ci_b``: each run's own interval;
    ``difference`` = b - a; ``ci``: its paired interval; ``verdict``: :data:`CHANGE_WORDS` key.
    """

    attack: str
    arm: str
    metric: str
    a: float
    b: float
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    difference: float
    ci: tuple[float, float]
    verdict: str


@dataclass(frozen=True)
class FindingComparison:
    """One finding of one attack in run A and run B: each run's estimate, interval and verdict,
    and the difference of the estimates (B - A) with its paired interval (NaN bounds and
    ``note`` saying why when the two runs' replicates do not share a design)."""

    attack: str
    id: str
    a: float
    b: float
    ci_a: tuple[float, float]
    ci_b: tuple[float, float]
    verdict_a: str
    verdict_b: str
    difference: float
    ci: tuple[float, float]
    verdict: str
    note: str = ""


@dataclass(frozen=True)
class ExposureChange:
    """Per sample, the baseline arm's 1%-FPR flags of one attack in A and B.

    ``flagged_a``, ``flagged_b``: bool (N,); ``newly_exposed`` / ``no_longer_exposed``: the
    sample ids flagged in B and not in A / in A and not in B (int64 (M,), ascending)."""

    attack: str
    flagged_a: np.ndarray
    flagged_b: np.ndarray
    newly_exposed: np.ndarray
    no_longer_exposed: np.ndarray


@dataclass(frozen=True)
class RunComparison:
    """Run B (``run_b``) against run A (``run_a``) under one protocol (see the module docstring).

    ``samples``: the common samples table (sample_id, path, split, caption); ``labels`` (N,) 1 =
    member; ``attacks``: the attacks both runs hold; ``drop``: the drop asked for (None = the
    protocol's default)."""

    run_a: Path
    run_b: Path
    protocol: Protocol
    n_boot: int
    level: float
    seed: int
    drop: float | None
    attacks: tuple[str, ...]
    metrics: tuple[MetricComparison, ...]
    findings: tuple[FindingComparison, ...]
    exposure: tuple[ExposureChange, ...]
    labels: np.ndarray
    paths: tuple[str, ...]

    def verdict_text(self, v: str) -> str:
        """A difference's verdict in words, naming the level."""
        return CHANGE_WORDS[v].format(level=f"{100 * self.level:g}")


def flagged_at_1fpr(ev: Evaluation) -> np.ndarray:
    """bool (N,): the samples the baseline arm calls members at the threshold that calls at most
    1% of the held-out images members (members positive), at the protocol's t; under a protocol
    that transfers thresholds between folds, each fold's transferred threshold (its decisions)."""
    scored, _, _ = ev._scored("baseline", None)
    if scored.decisions is not None:
        return np.asarray(scored.decisions, dtype=bool).copy()
    s = np.asarray(scored.scores["tpr_at_1fpr"], dtype=np.float64)
    return s >= threshold_at_1fpr(s, ev.labels)


def _arm_replicates(ev: Evaluation, arm: str, drop: float | None) -> tuple[dict, dict | None]:
    """(point metric -> value, replicate metric -> (B,) or None) of an arm as the arms and the
    masking findings measure it (the random control: the mean over its seeds)."""
    p = ev._drop_arg(drop) if arm != "baseline" else None
    seeds = ev.seeds if arm == "random" else (None,)
    values = [ev._arm_values(arm, p, s)[:2] for s in seeds]
    point = {m: float(np.nanmean([v[0][m][0] for v in values])) for m in REPORTED_METRICS}
    if values[0][1] is None:
        return point, None
    reps = {m: np.mean(np.stack([v[1][m] for v in values]), axis=0) for m in REPORTED_METRICS}
    return point, reps


def _compare_metrics(ev_a: Evaluation, ev_b: Evaluation, drop: float | None) -> list[MetricComparison]:
    arms_a, arms_b = ev_a.arms(drop), ev_b.arms(drop)
    out = []
    for arm in arms_a:
        if arm not in arms_b:
            continue
        _, reps_a = _arm_replicates(ev_a, arm, drop)
        _, reps_b = _arm_replicates(ev_b, arm, drop)
        for m in REPORTED_METRICS:
            a, b = arms_a[arm].value(m), arms_b[arm].value(m)
            ci = (percentile_interval(reps_b[m] - reps_a[m], level=ev_a.level)
                  if reps_a is not None and reps_b is not None else (float("nan"), float("nan")))
            diff = b - a
            out.append(MetricComparison(
                attack=ev_a.attack, arm=arm, metric=m, a=a, b=b, ci_a=arms_a[arm].ci[m], ci_b=arms_b[arm].ci[m],
                difference=diff, ci=ci, verdict=change_verdict(ci) if np.isfinite(diff) else "undefined"))
    return out


def _finding_replicates(ev: Evaluation, fid: str, drop: float | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(replicates (B,) of a finding's estimate, the design they were drawn on), or (None, None)
    when the finding's replicates are not reachable here."""
    if fid in ("masking_vs_baseline", "masking_vs_random"):
        other = fid.removeprefix("masking_vs_")
        reps_m = _arm_replicates(ev, "masked", drop)[1]
        reps_o = _arm_replicates(ev, other, drop)[1]
        if reps_m is None or reps_o is None:
            return None, None
        return reps_m["auroc"] - reps_o["auroc"], ev._design()
    if fid == "distortion_quartiles":
        design = ev._design("quartile")
        if design is None:
            return None, None
        return ev._quartile_measure(3, True)["auroc"] - ev._quartile_measure(0, True)["auroc"], design
    return None, None


def _compare_findings(ev_a: Evaluation, ev_b: Evaluation, drop: float | None) -> list[FindingComparison]:
    by_b = {f.id: f for f in ev_b.findings(drop)}
    out = []
    for fa in ev_a.findings(drop):
        fb = by_b.get(fa.id)
        if fb is None:
            continue
        reps_a, design_a = _finding_replicates(ev_a, fa.id, drop)
        reps_b, design_b = _finding_replicates(ev_b, fa.id, drop)
        nan = (float("nan"), float("nan"))
        note = ""
        if reps_a is None or reps_b is None:
            ci, note = nan, "no paired replicates for this finding: each run's own interval is shown"
        elif not np.array_equal(design_a, design_b):
            ci, note = nan, ("the runs' designs differ (e.g. different log-volume quartiles, another VAE): "
                             "not paired")
        else:
            ci = percentile_interval(reps_b - reps_a, level=ev_a.level)
        diff = float(fb.estimate - fa.estimate)
        out.append(FindingComparison(
            attack=ev_a.attack, id=fa.id, a=fa.estimate, b=fb.estimate, ci_a=fa.ci, ci_b=fb.ci,
            verdict_a=fa.verdict, verdict_b=fb.verdict, difference=diff, ci=ci,
            verdict=change_verdict(ci) if np.isfinite(diff) else "undefined", note=note))
    return out


def _exposure(ev_a: Evaluation, ev_b: Evaluation) -> ExposureChange:
    fa, fb = flagged_at_1fpr(ev_a), flagged_at_1fpr(ev_b)
    ids = ev_a.sample_ids
    return ExposureChange(attack=ev_a.attack, flagged_a=fa, flagged_b=fb,
                          newly_exposed=ids[fb & ~fa], no_longer_exposed=ids[fa & ~fb])


def compare_runs(
    runs: Sequence[Run | str | Path],
    *,
    protocol: Protocol | str = "standard",
    drop: float | None = None,
    seed: int = 0,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = 0.95,
) -> tuple[RunComparison, ...]:
    """Every later run against the first, on the same samples (see the module docstring).

    Args:
        runs: two or more finished runs (or their folders) on the same samples.
        protocol: a protocol or its name ("standard", "paper", "honest").
        drop: the masked / random arms' drop % (None: the protocol's default).
        seed, n_boot, level: of the bootstrap designs (the same for every run: paired).

    Returns:
        one :class:`RunComparison` per later run (B = runs[i], A = runs[0]).

    Raises:
        SampleMismatchError: the runs do not hold the same samples (the difference named).
        LdminvError: fewer than two runs, no attack in common, or bad options.
    """
    opened = [r if isinstance(r, Run) else Run.open(r) for r in runs]
    check_same_samples(opened)
    proto = protocol if isinstance(protocol, Protocol) else make_protocol(protocol, seed=seed)
    first = opened[0]
    evals_a: dict[str, Evaluation] = {}
    out = []
    for other in opened[1:]:
        shared = tuple(a for a in first.attacks if a in other.attacks)
        if not shared:
            raise LdminvError(f"runs: {first.path} holds attacks {first.attacks} and {other.path} holds "
                              f"{other.attacks}: no attack in common to compare")
        metrics, findings, exposure = [], [], []
        for attack in shared:
            ev_a = evals_a.setdefault(attack, Evaluation(first, attack, proto, n_boot=n_boot, level=level, seed=seed))
            ev_b = Evaluation(other, attack, proto, n_boot=n_boot, level=level, seed=seed)
            da, db = ev_a._design(), ev_b._design()
            if (da is None) != (db is None) or (da is not None and not np.array_equal(da, db)):
                raise LdminvError(f"runs {first.path} and {other.path}: the bootstrap designs differ (folds or "
                                  "labels), so the intervals cannot be paired")
            metrics += _compare_metrics(ev_a, ev_b, drop)
            findings += _compare_findings(ev_a, ev_b, drop)
            exposure.append(_exposure(ev_a, ev_b))
        out.append(RunComparison(
            run_a=first.path, run_b=other.path, protocol=proto, n_boot=int(n_boot), level=float(level),
            seed=int(seed), drop=drop, attacks=shared, metrics=tuple(metrics), findings=tuple(findings),
            exposure=tuple(exposure), labels=np.asarray(first.labels).astype(np.int8),
            paths=tuple(str(p) for p in first.samples["path"].tolist())))
    return tuple(out)
