"""Evaluation protocols as objects: how a run's scores become reported numbers (METHOD.md section 4).

Three protocols, ``standard`` being the default, each a :class:`~.base.Protocol` subclass that
owns its rules (how t is chosen and scores produced, the drop rule, the quartile rule, the ROC
convention, how TPR at 1% FPR is read):

- :mod:`.standard`: members positive, TPR at FPR <= 1%, one t for everything (optimistic);
- :mod:`.paper`: the paper's code conventions (held-out positive, strict FPR < 1%, each metric
  at its own best t, percentile-threshold drop rule, percentile quartiles);
- :mod:`.honest`: seeded stratified K-fold cross-fitting with calibrated out-of-fold scores and
  transferred thresholds;
- :mod:`.base`: the base class, the constants and :func:`make_protocol`;
- :mod:`.conventions`: the ROC conventions' metrics, resampled metrics, curves and FPR support.
"""
from __future__ import annotations

from .base import (DEFAULT_DROP, DEFAULT_FOLDS, DEFAULT_PROTOCOL, HONEST_DROPS, PROTOCOLS, REPORTED_METRICS,
                   ArmScoring, Protocol, ScoredArm, first_max, make_protocol)
from .conventions import (FprSupport, _resampled_curve_metrics, convention_metrics, convention_metrics_resampled,
                          convention_roc, fpr_support)
from .standard import StandardProtocol
from .paper import PaperProtocol
from .honest import HonestProtocol

__all__ = [
    "PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "DEFAULT_FOLDS",
    "DEFAULT_DROP",
    "HONEST_DROPS",
    "REPORTED_METRICS",
    "Protocol",
    "StandardProtocol",
    "PaperProtocol",
    "HonestProtocol",
    "ScoredArm",
    "make_protocol",
    "convention_metrics",
    "convention_metrics_resampled",
    "convention_roc",
    "fpr_support",
    "FprSupport",
]
