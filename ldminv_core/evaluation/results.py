"""Typed results of the evaluation layer: arms, quartiles, findings, curves, one attack's whole
evaluation. Plain frozen dataclasses (floats may be NaN where a metric is undefined); the report,
the HTML export and the dashboard only format them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .low_fpr import LowFprCount
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocols import Protocol

__all__ = [
    "FoldChoice",
    "ArmResult",
    "QuartileResult",
    "ClassQuartiles",
    "Finding",
    "DropCurves",
    "AttackEvaluation",
    "BlindGroupResult",
    "BlindResult",
    "VERDICT_TEXT",
]

#: The verdict of a finding, in words.
VERDICT_TEXT = {
    "supported": "supported: the 95% interval lies above 0",
    "contradicted": "contradicted: the 95% interval lies below 0",
    "inconclusive": "inconclusive: the 95% interval contains 0",
    "undefined": "undefined: the data do not define this difference",
}


@dataclass(frozen=True)
class FoldChoice:
    """The choices the ``honest`` protocol made for one fold, on the other folds only.

    ``t`` (None for attacks without timesteps), ``drop_percent`` (None for the baseline),
    ``threshold``: a sample of this fold is called a member when its score (-statistic) is
    ``>= threshold``; None means +inf (no sample is called a member). For the random arm
    ``thresholds_by_seed`` holds one threshold per control seed. ``sample_ids``: the fold's own
    samples (the ``sample_id`` column of samples.parquet).
    """

    fold: int
    t: int | None
    drop_percent: float | None
    threshold: float | None
    sample_ids: tuple[int, ...]
    thresholds_by_seed: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class ArmResult:
    """Metrics of one arm (``baseline``, ``masked`` or ``random``) under a protocol.

    Attributes:
        arm: the arm's name.
        auroc, tpr_at_1fpr, asr: the headline metrics (for ``random``: the mean over seeds).
        ci: metric -> (lo, hi) bootstrap interval (NaN bounds without replicates).
        best_t: metric -> the timestep it is reported at (``paper``: each metric its own;
            ``standard``: one t; ``honest``: None, see ``folds``; None without timesteps).
        drop_percent: percentage of coordinates dropped (None for the baseline; for ``honest``
            without a fixed drop: None, see ``folds``).
        realised_fpr_at_1fpr: ``honest``: the FPR realised by the transferred thresholds.
        folds: ``honest``: the choices of every fold.
        seeds: ``random``: the control's seeds; ``per_seed``: metric -> value per seed.
        low_fpr: the counts behind ``tpr_at_1fpr`` and its exact interval (None for the random
            arm, a mean over seeds).
    """

    arm: str
    auroc: float
    tpr_at_1fpr: float
    asr: float
    ci: dict[str, tuple[float, float]]
    best_t: dict[str, int | None]
    drop_percent: float | None = None
    realised_fpr_at_1fpr: float | None = None
    folds: tuple[FoldChoice, ...] = ()
    seeds: tuple[int, ...] = ()
    per_seed: dict[str, tuple[float, ...]] = field(default_factory=dict)
    low_fpr: LowFprCount | None = None

    @property
    def below_chance(self) -> bool:
        """True when the AUROC's whole interval lies below 0.5: held-out images look more
        member-like than members (distribution shift, or the folders swapped)."""
        return bool(np.isfinite(self.ci["auroc"][1]) and self.ci["auroc"][1] < 0.5)

    def value(self, metric: str) -> float:
        """The headline value of ``metric`` ("auroc", "tpr_at_1fpr" or "asr")."""
        return float(getattr(self, metric))

    @property
    def t_text(self) -> str:
        """Where the arm's numbers come from, in words: "t = 60", "t: AUROC 60, TPR 80, ASR 60",
        "t per fold: 60, 60, 70, 60, 60" or "no timestep"."""
        if self.folds:
            ts = [f.t for f in self.folds]
            if all(t is None for t in ts):
                return "no timestep"
            return "t per fold: " + ", ".join(str(t) for t in ts)
        values = list(self.best_t.values())
        if not values or all(v is None for v in values):
            return "no timestep"
        if len(set(values)) == 1:
            return f"t = {values[0]}"
        short = {"auroc": "AUROC", "tpr_at_1fpr": "TPR", "asr": "ASR"}
        return "t: " + ", ".join(f"{short.get(k, k)} {v}" for k, v in self.best_t.items())

    @property
    def drop_text(self) -> str:
        """The drop percentage in words ("40 %", "per fold: 40, 35, ..."); "" for the baseline and for
        an arm with no drop percentage (a manual or global mask: its name says what it keeps)."""
        if self.arm == "baseline":
            return ""
        if self.drop_percent is not None:
            return f"{self.drop_percent:g} %"
        drops = [f"{f.drop_percent:g}" for f in self.folds if f.drop_percent is not None]
        return "per fold: " + ", ".join(drops) if drops else ""


@dataclass(frozen=True)
class QuartileResult:
    """Baseline metrics in one log-volume quartile (q = 1 lowest .. 4 highest)."""

    q: int
    n: int
    n_members: int
    log_volume_min: float
    log_volume_max: float
    auroc: float
    tpr_at_1fpr: float
    asr: float
    auroc_ci: tuple[float, float]
    best_t: dict[str, int | None]


@dataclass(frozen=True)
class ClassQuartiles:
    """The quartile AUROCs within one class (caption) of the data."""

    label: str
    n: int
    n_members: int
    aurocs: tuple[float, float, float, float]

    @property
    def difference(self) -> float:
        """AUROC(Q4) - AUROC(Q1) within the class (NaN when either is undefined)."""
        return float(self.aurocs[3] - self.aurocs[0])


@dataclass(frozen=True)
class Finding:
    """A claim of the paper stated on the user's run.

    Attributes:
        id: "distortion_quartiles", "distortion_quartiles_within_class", "masking_vs_baseline",
            "masking_vs_random", or the blind-baseline findings "blind_baseline", "attack_vs_blind",
            "attack_within_blind_strata" (:mod:`.blind`).
        metric: the metric of ``estimate`` ("auroc").
        estimate: the difference (e.g. AUROC(Q4) - AUROC(Q1)).
        ci: its 95% paired bootstrap interval.
        verdict: "supported", "contradicted", "inconclusive" or "undefined".
        statement: one sentence computed from the data, naming protocol, t and drop.
        details: the numbers the difference is made of.
        secondary: the same difference for other metrics: [{"metric", "estimate", "ci", "verdict"}].
        caveat: non-empty when the finding claims membership or a geometry effect on folders the
            blind baseline separates without the model: what it cannot be told apart from.
    """

    id: str
    metric: str
    estimate: float
    ci: tuple[float, float]
    verdict: str
    statement: str
    details: dict = field(default_factory=dict)
    secondary: tuple[dict, ...] = ()
    caveat: str = ""

    @property
    def confounded(self) -> bool:
        """True when the blind baseline separates the folders and this finding cannot be told
        apart from that difference (see ``caveat``)."""
        return bool(self.caveat)


@dataclass(frozen=True)
class DropCurves:
    """Metrics against the drop percentage at one timestep (for the charts).

    ``percents`` (K,); ``masked`` / ``random_mean`` / ``random_lo`` / ``random_hi``: metric ->
    (K,) (the random band is the spread over the control's seeds); ``masked_lo`` / ``masked_hi``:
    metric -> (K,) bootstrap band of the masked arm; ``baseline``: metric -> value and
    ``baseline_ci``: metric -> (lo, hi), from ``n_boot`` replicates. Computed on every sample, under the protocol's ROC
    convention (for ``honest`` this is descriptive: nothing is cross-fitted here).
    """

    t: int | None
    percents: tuple[float, ...]
    masked: dict[str, np.ndarray]
    masked_lo: dict[str, np.ndarray]
    masked_hi: dict[str, np.ndarray]
    random_mean: dict[str, np.ndarray]
    random_lo: dict[str, np.ndarray]
    random_hi: dict[str, np.ndarray]
    baseline: dict[str, float]
    baseline_ci: dict[str, tuple[float, float]]
    seeds: tuple[int, ...]
    #: bootstrap replicates behind the bands (0: no bands)
    n_boot: int = 0


@dataclass(frozen=True)
class AttackEvaluation:
    """Everything reported for one attack of a run under one protocol.

    ``best_t``: the headline t (``standard``: the best baseline AUROC; ``paper``: the baseline's
    AUROC-best t; ``honest``: None, the folds choose); ``per_t``: metric -> (T,) baseline
    metrics at every t on all samples (descriptive; ``"t"`` holds the timesteps); ``masked`` and
    ``random`` are None for attacks that are not maskable; ``classes`` is empty when the data
    carry no class labels (captions).
    """

    attack: str
    protocol: Protocol
    maskable: bool
    timesteps: tuple[int, ...]
    best_t: int | None
    per_t: dict[str, list]
    baseline: ArmResult
    masked: ArmResult | None
    random: ArmResult | None
    quartiles: tuple[QuartileResult, ...]
    findings: tuple[Finding, ...]
    classes: tuple[ClassQuartiles, ...]
    n_boot: int
    level: float
    blind: "BlindResult | None" = None

    @property
    def shifted(self) -> bool:
        """True when the blind baseline separates the two folders without the model."""
        return bool(self.blind is not None and self.blind.separable)

    def finding(self, finding_id: str) -> Finding | None:
        """The finding with this id, or None."""
        return next((f for f in self.findings if f.id == finding_id), None)


@dataclass(frozen=True)
class BlindGroupResult:
    """The blind baseline of one feature group (or ``"all"`` of them) under a protocol.

    Attributes:
        group: "meta", "pixels", "caption", "encoder" or "all".
        n_features: columns of the group (captions: plus their TF-IDF words, fitted within folds).
        auroc, tpr_at_1fpr: metrics of the out-of-fold scores (members positive; ``paper``: its
            convention); ``honest`` TPR: pooled decisions at thresholds transferred between folds.
        ci: metric -> bootstrap interval (the protocol's design).
        realised_fpr_at_1fpr: ``honest``: the FPR those thresholds realised.
        low_fpr: the counts behind ``tpr_at_1fpr`` and their exact interval.
        verdict: of AUROC - 0.5 ("supported" = this group alone separates the folders).
        top_features: the features that weigh most in the group's classifier fitted on every
            sample (descriptive): (name, standardised coefficient), largest magnitude first; a
            positive coefficient means higher values look like members.
    """

    group: str
    n_features: int
    auroc: float
    tpr_at_1fpr: float
    ci: dict[str, tuple[float, float]]
    low_fpr: LowFprCount | None
    verdict: str
    top_features: tuple[tuple[str, float], ...] = ()
    realised_fpr_at_1fpr: float | None = None

    @property
    def below_chance(self) -> bool:
        return bool(np.isfinite(self.ci["auroc"][1]) and self.ci["auroc"][1] < 0.5)


@dataclass(frozen=True)
class BlindResult:
    """The blind baseline of a run (METHOD.md section 6): a classifier of the files alone,
    cross-fitted on the ``honest`` folds, per feature group and all together.

    Attributes:
        available: False when the features could not be had (``reason`` says why).
        reason: why the blind baseline is unavailable ("" when available).
        classifier: the classifier in words.
        folds, fold_seed: the cross-fitting folds.
        groups: one :class:`BlindGroupResult` per feature group, then ``"all"``.
        finding: ``blind_baseline`` on ``"all"`` (blind AUROC - 0.5).
        scores: feature group -> (N,) out-of-fold member probabilities.
    """

    available: bool
    reason: str = ""
    classifier: str = ""
    folds: int = 0
    fold_seed: int = 0
    groups: tuple[BlindGroupResult, ...] = ()
    finding: Finding | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    #: which image model made the ``encoder`` group (name, path, class, output, dim, ...), or None
    encoder: dict | None = None
    #: the cross-fitting's own variance of the AUROC, added to every blind AUROC interval and to
    #: the blind findings' (0 without intervals), and the permutation spread it came from
    fitting_variance: float = 0.0
    fitting_sd: float = float("nan")
    fitting_permutations: int = 0
    #: mean out-of-fold AUROC under permuted labels - 0.5: the intervals are extended by minus this
    fitting_bias: float = 0.0

    @property
    def interval_text(self) -> str:
        """How the blind AUROC intervals are made, in words."""
        if not self.fitting_permutations:
            return "no intervals"
        return (f"bootstrap of the out-of-fold scores, widened by the cross-fitting's own variance and extended by "
                f"its bias under no signal (the classifier refitted on {self.fitting_permutations} label permutations "
                f"within folds: AUROC {0.5 + self.fitting_bias:.3f} on average, spread {self.fitting_sd:.3f}, "
                f"{np.sqrt(self.fitting_variance):.3f} beyond a fixed score's)")

    @property
    def encoder_text(self) -> str:
        """"encoder group: embeddings of <name> (<class>, <dim> dimensions)", or "" without one."""
        if not self.encoder:
            return ""
        e = self.encoder
        name = e.get("name") or e.get("path") or "an image model"
        bits = [str(b) for b in (e.get("class"), f"{e['dim']} dimensions" if e.get("dim") else None,
                                 e.get("output")) if b]
        return f"encoder group: embeddings of {name}" + (f" ({', '.join(bits)})" if bits else "")

    def group(self, name: str) -> BlindGroupResult | None:
        return next((g for g in self.groups if g.group == name), None)

    @property
    def separable(self) -> bool:
        """True when the files alone separate the folders: ``blind_baseline`` supported."""
        return bool(self.available and self.finding is not None and self.finding.verdict == "supported")

    @property
    def separating_groups(self) -> tuple[str, ...]:
        """The single feature groups whose AUROC interval lies above 0.5, highest AUROC first."""
        hits = [g for g in self.groups if g.group != "all" and g.verdict == "supported"]
        return tuple(g.group for g in sorted(hits, key=lambda g: -g.auroc))
