"""The findings of METHOD.md section 4 on one attack: distortion quartiles (also within class),
masking against the baseline and against the random control, each with its paired bootstrap
interval and verdict, and the shift caveat when the files alone separate the folders.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from .resampling import percentile_interval, verdict
from .results import VERDICT_TEXT, ArmResult, Finding
from .state import EvaluationState

__all__ = ["Findings"]


class Findings(EvaluationState):
    """Mixin of :class:`~.evaluator.Evaluation`: the findings (memoised)."""

    def _context(self, arms: dict[str, ArmResult] | None = None) -> str:
        base = arms["baseline"] if arms else self.baseline()  # the baseline arm of every drop
        return f"{self.attack_label}, {self.protocol.name} protocol, {base.t_text}"

    def _finding(self, fid: str, est: np.ndarray, reps: np.ndarray | None, details: dict,
                 describe: Callable[[float, tuple[float, float], str], str],
                 secondary: tuple[dict, ...] = ()) -> Finding:
        estimate = float(est)
        ci = percentile_interval(reps, level=self.level) if reps is not None else (float("nan"), float("nan"))
        v = verdict(ci) if np.isfinite(estimate) else "undefined"
        return Finding(id=fid, metric="auroc", estimate=estimate, ci=ci, verdict=v,
                       statement=describe(estimate, ci, v), details=details, secondary=secondary)

    def _quartile_finding(self) -> Finding:
        design = self._design("quartile")
        vals, reps = {}, {}
        for q in (0, 3):
            vals[q] = self._quartile_measure(q, False)["auroc"][0]
            reps[q] = self._quartile_measure(q, True)["auroc"] if design is not None else None
        est = vals[3] - vals[0]
        rep = None if design is None else reps[3] - reps[0]
        ctx = self.protocol.quartile_context(self, self._context())

        shifted = self.shifted()

        def describe(e: float, ci: tuple[float, float], v: str) -> str:
            if v == "undefined":
                return (f"Distortion quartiles ({ctx}): the AUROC of the least or most distorted quartile is "
                        "undefined on this run (a quartile holds one class, or log-volume is missing).")
            meaning = {
                "supported": "the most distorted samples are easier to identify as members on this run, "
                             "as the paper reports" if not shifted else
                             "the most distorted samples are easier to tell apart on this run",
                "contradicted": "the least distorted samples are easier to identify on this run, the opposite "
                                "of the paper's claim" if not shifted else
                                "the least distorted samples are easier to tell apart on this run",
                "inconclusive": "this run neither supports nor contradicts the claim that distorted samples "
                                "are memorized more",
            }[v]
            return (f"AUROC in the most distorted quartile (Q4) is {vals[3]:.3f} against {vals[0]:.3f} in the "
                    f"least distorted (Q1) ({ctx}): difference {e:+.3f}, 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]; "
                    f"{VERDICT_TEXT[v].split(':')[0]}: {meaning}.")
        return self._finding("distortion_quartiles", est, rep, {"q1_auroc": float(vals[0]), "q4_auroc": float(vals[3])},
                             describe)

    def _class_finding(self) -> Finding | None:
        cls, cq, names = self._classes()
        if not names:
            return None
        scored, _, _ = self._scored("baseline", None)
        design = self._design("class", "class_quartile")

        def pooled(index: np.ndarray | None) -> np.ndarray:
            b = 1 if index is None else index.shape[0]
            num, den = np.zeros(b), np.zeros(b)
            for c in range(len(names)):
                rows = cls == c
                d = (self._measure(scored, rows & (cq == 3), index)["auroc"]
                     - self._measure(scored, rows & (cq == 0), index)["auroc"])
                ok = np.isfinite(d)
                num += np.where(ok, d * rows.sum(), 0.0)
                den += np.where(ok, rows.sum(), 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

        est = pooled(None)[0]
        rep = pooled(design) if design is not None else None
        ctx = self._context()
        n_classes = len(names)

        def describe(e: float, ci: tuple[float, float], v: str) -> str:
            if v == "undefined":
                return f"Within-class distortion quartiles ({ctx}): undefined on this run."
            meaning = {
                "supported": "within a class, more distorted samples are easier to identify",
                "contradicted": "within a class, less distorted samples are easier to identify",
                "inconclusive": "within a class, distortion shows no clear relation to membership",
            }[v]
            return (f"Within each of {n_classes} classes (captions), AUROC(Q4) - AUROC(Q1) averages {e:+.3f} "
                    f"(size-weighted; 95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]; {ctx}); {v}: {meaning}. "
                    "Quartiles are formed within each class, so class differences in distortion cannot drive it.")
        return self._finding("distortion_quartiles_within_class", est, rep, {"classes": n_classes}, describe)

    def _masking_finding(self, other: str, drop: float | None) -> Finding:
        arms = self.arms(drop)
        p = self._drop_arg(drop)
        seeds = self.seeds if other == "random" else (None,)
        masked_point, masked_rep = self._arm_values("masked", p, None)[:2]
        others = [self._arm_values(other, p if other == "random" else None, s) for s in seeds]
        other_points = [o[0] for o in others]
        other_reps = [o[1] for o in others] if masked_rep is not None else None
        results = {}
        for m in ("auroc", "tpr_at_1fpr"):
            est = masked_point[m][0] - np.mean([o[m][0] for o in other_points])
            rep = None
            if masked_rep is not None and other_reps is not None:
                rep = masked_rep[m] - np.mean(np.stack([o[m] for o in other_reps]), axis=0)
            ci = percentile_interval(rep, level=self.level) if rep is not None else (float("nan"), float("nan"))
            results[m] = (float(est), ci, verdict(ci) if np.isfinite(est) else "undefined")
        ma, oa = arms["masked"], arms[other]
        ctx = f"{self._context(arms)}, drop {ma.drop_text}"
        what = "the unmasked baseline" if other == "baseline" else f"dropping the same number of random coordinates (mean of {len(self.seeds)} seeds)"
        e_t, ci_t, v_t = results["tpr_at_1fpr"]

        def describe(e: float, ci: tuple[float, float], v: str) -> str:
            return (f"Masked AUROC {ma.auroc:.3f} against {oa.auroc:.3f} for {what} ({ctx}): difference "
                    f"{e:+.4f}, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}], {v}; TPR@1%FPR difference {e_t:+.4f} "
                    f"[{ci_t[0]:+.4f}, {ci_t[1]:+.4f}], {v_t}.")
        e, ci, _ = results["auroc"]
        fid = f"masking_vs_{other}"
        return Finding(
            id=fid, metric="auroc", estimate=e, ci=ci, verdict=results["auroc"][2], statement=describe(*results["auroc"]),
            details={"masked_auroc": ma.auroc, f"{other}_auroc": oa.auroc,
                     "masked_tpr_at_1fpr": ma.tpr_at_1fpr, f"{other}_tpr_at_1fpr": oa.tpr_at_1fpr},
            secondary=({"metric": "tpr_at_1fpr", "estimate": e_t, "ci": ci_t, "verdict": v_t},),
        )

    def findings(self, drop: float | None = None) -> tuple[Finding, ...]:
        """The findings of METHOD.md section 4 on this run (masking ones only for maskable attacks)."""
        p = self._drop_arg(drop)

        def make() -> tuple[Finding, ...]:
            out = [self._quartile_finding()]
            within = self._class_finding()
            if within is not None:
                out.append(within)
            if self.maskable:
                out.append(self._masking_finding("baseline", p))
                out.append(self._masking_finding("random", p))
            if self.shifted():  # a membership or geometry claim on folders the files alone separate
                what = {"distortion_quartiles": "this difference between distortion quartiles",
                        "distortion_quartiles_within_class": "this within-class difference",
                        "masking_vs_baseline": "this masking effect",
                        "masking_vs_random": "this masking effect"}
                out = [replace(f, caveat=(c := self._shift_caveat(what.get(f.id, "this finding"))),
                               statement=f"{f.statement} {c}") for f in out]
            blind = self._cached(("blind_findings",), lambda: self.blind_findings())
            return (*blind, *out)
        return self._cached(("findings", p), make)
