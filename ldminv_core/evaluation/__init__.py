"""The evaluation layer: the only code that turns a run's arrays into reported numbers.

- :mod:`.protocols`: the ``standard``, ``paper`` and ``honest`` protocols (METHOD.md section 4)
  as objects owning their rules (t choice, drop rule, quartile rule, ROC convention, scoring),
  and their ROC conventions;
- :mod:`.resampling`: the stratified (paired) bootstrap designs and the verdict rule;
- :mod:`.results`: the typed results (arms, quartiles, findings, curves);
- :mod:`.evaluator`: :class:`Evaluation`, one attack of a run under one protocol, with
  memoised parts, a thread-free facade over :mod:`.source` (the statistics), :mod:`.scoring`
  (t choice, folds, the protocol's scoring), :mod:`.measure` (metrics, bootstrap, arms),
  :mod:`.quartiles`, :mod:`.findings`, :mod:`.blind_findings` and :mod:`.curves`;
- :mod:`.folds`: the seeded stratified folds of ``honest`` and of the blind baseline;
- :mod:`.tables`: descriptive per-coordinate and per-subset tables of the dashboard;
- :mod:`.blind`: the blind baseline (METHOD.md section 6): a cross-fitted classifier of the files
  alone, its findings, and whether the folders differ without the model;
- :mod:`.low_fpr`: the counts behind a TPR at 1% FPR and their exact (Clopper-Pearson) interval;
- :mod:`.agreement`: which samples the attacks flag at 1% FPR, their Jaccard overlap and Spearman
  correlation per split, and the who-flags-whom table (METHOD.md section 7);
- :mod:`.exposure`: the exposure list for model owners: the members most at risk (rank among the
  members, the attacks flagging them at 1% FPR, log-volume), most exposed first;
- :mod:`.wording`: how the findings are said (titles, verdicts with tiny effects named, a summary
  line), shared by every surface.

The CLI report, the HTML export and the dashboard pages only format what this layer returns.
"""
from __future__ import annotations

from .evaluator import DEFAULT_DROP, DEFAULT_RANDOM_SEEDS, DROP_PERCENTS, Evaluation, quartile_index
from .protocols import (
    DEFAULT_FOLDS,
    DEFAULT_PROTOCOL,
    HONEST_DROPS,
    PROTOCOLS,
    REPORTED_METRICS,
    HonestProtocol,
    PaperProtocol,
    Protocol,
    StandardProtocol,
    convention_metrics,
    FprSupport,
    convention_roc,
    fpr_support,
    make_protocol,
)
from .tables import dimension_table, quartile_edges, rank_of, subset_metrics
from .resampling import DEFAULT_N_BOOT, combine_strata, percentile_interval, resample_index, verdict
from .results import (
    VERDICT_TEXT,
    ArmResult,
    AttackEvaluation,
    BlindGroupResult,
    BlindResult,
    ClassQuartiles,
    DropCurves,
    Finding,
    FoldChoice,
    QuartileResult,
)
from .blind import CLASSIFIER as BLIND_CLASSIFIER
from .agreement import Agreement, FlaggedSample, JaccardResult, PairAgreement, SpearmanResult, agreement
from .exposure import ExposureEntry, ExposureList, exposure_list
from .low_fpr import LowFprCount, clopper_pearson, low_fpr_count, threshold_at_1fpr
from .wording import (
    BLIND_GROUP_WORDS,
    CONFOUNDED_WORDS,
    below_chance_text,
    shift_advice,
    shift_headline,
    FINDING_SHORT_TITLES,
    FINDING_TITLES,
    PRACTICAL_AUROC,
    effect_sentence,
    finding_title,
    findings_summary,
    is_tiny,
    tiny_note,
    verdict_words,
)

__all__ = [
    "Evaluation",
    "ExposureEntry",
    "ExposureList",
    "exposure_list",
    "Agreement",
    "FlaggedSample",
    "JaccardResult",
    "PairAgreement",
    "SpearmanResult",
    "agreement",
    "BLIND_CLASSIFIER",
    "BLIND_GROUP_WORDS",
    "CONFOUNDED_WORDS",
    "BlindGroupResult",
    "BlindResult",
    "LowFprCount",
    "clopper_pearson",
    "low_fpr_count",
    "threshold_at_1fpr",
    "below_chance_text",
    "shift_advice",
    "shift_headline",
    "FprSupport",
    "fpr_support",
    "DEFAULT_DROP",
    "DEFAULT_RANDOM_SEEDS",
    "DROP_PERCENTS",
    "quartile_index",
    "DEFAULT_FOLDS",
    "DEFAULT_PROTOCOL",
    "HONEST_DROPS",
    "PROTOCOLS",
    "REPORTED_METRICS",
    "Protocol",
    "StandardProtocol",
    "PaperProtocol",
    "HonestProtocol",
    "convention_metrics",
    "convention_roc",
    "make_protocol",
    "DEFAULT_N_BOOT",
    "combine_strata",
    "percentile_interval",
    "resample_index",
    "verdict",
    "VERDICT_TEXT",
    "ArmResult",
    "AttackEvaluation",
    "ClassQuartiles",
    "DropCurves",
    "Finding",
    "FoldChoice",
    "QuartileResult",
    "dimension_table",
    "quartile_edges",
    "rank_of",
    "subset_metrics",
    "FINDING_TITLES",
    "FINDING_SHORT_TITLES",
    "PRACTICAL_AUROC",
    "effect_sentence",
    "finding_title",
    "findings_summary",
    "is_tiny",
    "tiny_note",
    "verdict_words",
]
