"""The blind baseline of one attack's evaluation (METHOD.md section 6): the files alone,
cross-fitted on the blind folds and measured with the protocol's convention and bootstrap design,
its findings, and whether the folders differ without the model (the shift caveat).
"""
from __future__ import annotations


import numpy as np
from threadpoolctl import threadpool_limits

from ldminv_core.data.blind_features import run_blind_features
from ..errors import LdminvError, UnknownNameError
from ldminv_core.runs import CACHE_DIR
from .blind import (ALL_GROUPS, BlindScores, attack_vs_blind_finding, blind_baseline_finding, cached_fitting_null,
                    cross_fitted_blind_scores, evaluate_blind, null_file_name, within_blind_strata_finding)
from .results import BlindResult, Finding
from .state import EvaluationState

__all__ = ["BlindFindings"]


class BlindFindings(EvaluationState):
    """Mixin of :class:`~.evaluator.Evaluation`: the blind baseline and its findings (memoised)."""

    def blind_folds(self) -> np.ndarray:
        """Fold id of every sample for the blind baseline, int64 (N,): the ``honest`` protocol's
        seeded stratified folds (its K and seed; the defaults under the other protocols)."""
        fp = self.protocol.blind_fold_protocol()
        return self._cached(("blind_folds",), lambda: fp.assign_folds(self.labels))

    def blind(self) -> BlindResult:
        """The run's blind baseline under this protocol (METHOD.md section 6): the files' features
        (stored by ``analyze``, or computed from the image paths of an older run), cross-fitted on
        :meth:`blind_folds`, measured per feature group and all together with this protocol's
        convention and bootstrap design, its intervals widened and bias-corrected by the
        cross-fitting's permutation null. ``available`` is False, with the reason, when the
        features cannot be had (e.g. the images of an old run are gone) or the folds do not fit."""
        def make() -> BlindResult:
            try:
                features, scores, null = self._blind_fit()
                return evaluate_blind(features, self.labels, self.blind_folds(), self.protocol, self._design(),
                                      level=self.level, seed=0, fold_seed=self._blind_fold_seed(), scores=scores,
                                      null=null)
            except LdminvError as exc:
                return BlindResult(available=False, reason=str(exc))
        # the same for every attack of the run: computed once per run, protocol and design
        key = ("blind", self.protocol.name, self.protocol.folds, self.protocol.seed, self.n_boot, self.level, self.seed)
        return self._cached(("blind",), lambda: self.run.derived(key, make))

    def _blind_fit(self) -> tuple:
        """(features, cross-fitted scores, permutation null) on :meth:`blind_folds`: they depend on
        the run and the folds only, so every protocol and attack shares them (once per opened run;
        the null is kept in the run's ``.ldminv-cache``, where ``analyze`` leaves the default folds')."""
        folds = self.blind_folds()

        def make() -> tuple:
            features = run_blind_features(self.run)
            with threadpool_limits(limits=1, user_api="blas"):
                scores = cross_fitted_blind_scores(features, self.labels, folds)
            null = cached_fitting_null(self.run.path / CACHE_DIR, features, self.labels, folds)
            return features, scores, null
        return self.run.derived(("blind_fit", null_file_name(self.labels, folds)), make)

    def _blind_fold_seed(self) -> int:
        return self.protocol.blind_fold_protocol().seed

    def shifted(self) -> bool:
        """True when the blind baseline separates the folders without the model (then every
        membership or geometry finding carries a caveat)."""
        return self.blind().separable

    def _shift_caveat(self, what: str) -> str:
        """The caveat of a finding on folders the blind baseline separates ("" when it does not)."""
        b = self.blind()
        if not b.separable:
            return ""
        g = b.group(ALL_GROUPS)
        lo, hi = g.ci["auroc"]
        by = ", ".join(b.separating_groups) or "all feature groups together"
        return (f"The files alone separate these folders without the model (blind AUROC {g.auroc:.3f}, 95% CI "
                f"[{lo:.3f}, {hi:.3f}]; separating: {by}): {what} cannot be separated from the folders' difference "
                "(distribution shift) and is not evidence of membership.")

    def blind_findings(self, blind: BlindScores | None = None, *, group: str = ALL_GROUPS) -> tuple[Finding, ...]:
        """The blind-baseline findings of METHOD.md section 6 on this attack: ``blind_baseline``,
        ``attack_vs_blind`` (paired with the attack's baseline arm as this protocol scores it) and
        ``attack_within_blind_strata``; empty when the blind baseline is unavailable.

        Args:
            blind: out-of-fold blind scores of this run's samples, cross-fitted on
                :meth:`blind_folds` (:func:`~ldminv_core.evaluation.blind.cross_fitted_blind_scores`);
                None: :meth:`blind`'s.
            group: which classifier's scores ("all" = every feature group).
        """
        null = None
        if blind is None:
            result = self.blind()
            if not result.available:
                return ()
            blind = BlindScores(scores=result.scores, folds=self.blind_folds())
            null = self._blind_fit()[2]
        if group not in blind.scores:
            raise UnknownNameError(f"group: {group!r} is not among the blind scores {tuple(blind.scores)}")
        b = np.asarray(blind.scores[group], dtype=np.float64)
        if b.shape != (self.n,):
            raise LdminvError(f"blind.scores[{group!r}]: expected shape ({self.n},) (one per sample), got {b.shape}")
        scored, _, _ = self._scored("baseline", None)
        attack_score = scored.scores["auroc"]
        design = self._design()
        ctx = self._context()
        return (
            blind_baseline_finding(b, self.labels, design, level=self.level,
                                   groups=[g for g in blind.scores if g != ALL_GROUPS], null=null),
            attack_vs_blind_finding(attack_score, b, self.labels, design, level=self.level, context=ctx,
                                    null=null),
            within_blind_strata_finding(attack_score, b, self.labels, n_boot=self.n_boot, seed=self.seed,
                                        level=self.level, context=ctx),
        )
