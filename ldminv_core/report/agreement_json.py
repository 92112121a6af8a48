"""The ``agreement`` entry of the report JSON (METHOD.md section 7): an
:class:`~ldminv_core.evaluation.Agreement` written as JSON (NaN -> null), nothing computed.

``{"protocol", "positive_class", "arms", "n_boot", "ci_level", "intervals", "attacks",
"counts": {attack: {"all", "member", "heldout"}}, "pairs": [{"a", "b", "jaccard": {subset:
{"value", "ci", "n_a", "n_b", "n_both", "n_either", "reason"}}, "spearman": {split: {"rho", "ci",
"n", "reason"}}}], "samples": [{"sample_id", "file", "split", "flagged_by"}] (flagged by at least
one attack, most flags first), "n_unflagged", "warnings"}``.
"""
from __future__ import annotations

import math
from typing import Any

from ..evaluation.agreement import Agreement

__all__ = ["agreement_json"]


def _num(x: Any) -> float | None:
    v = float(x)
    return v if math.isfinite(v) else None


def agreement_json(ag: Agreement) -> dict:
    """The report JSON's ``agreement`` object of ``ag`` (see the module docstring)."""
    flagged = ag.flagged_samples(minimum=1)
    return {
        "protocol": ag.protocol.name,
        "positive_class": ag.positive_class,
        "arms": dict(ag.arms),
        "n_boot": ag.n_boot,
        "ci_level": ag.level,
        "intervals": ag.interval_method,
        "attacks": list(ag.attacks),
        "counts": {a: dict(c) for a, c in ag.counts.items()},
        "pairs": [
            {"a": p.a, "b": p.b,
             "jaccard": {k: {"value": _num(j.value), "ci": [_num(j.ci[0]), _num(j.ci[1])], "n_a": j.n_a,
                             "n_b": j.n_b, "n_both": j.n_both, "n_either": j.n_either, "reason": j.reason}
                         for k, j in p.jaccard.items()},
             "spearman": {k: {"rho": _num(s.rho), "ci": [_num(s.ci[0]), _num(s.ci[1])], "n": s.n,
                              "reason": s.reason}
                          for k, s in p.spearman.items()}}
            for p in ag.pairs
        ],
        "samples": [{"sample_id": s.sample_id, "file": s.file, "split": s.split, "flagged_by": list(s.flagged_by)}
                    for s in flagged],
        "n_unflagged": len(ag.samples) - len(flagged),
        "warnings": list(ag.warnings),
    }
