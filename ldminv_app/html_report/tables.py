"""The tables the HTML report and the dashboard's pages share, as DataFrames of display text:
:func:`arms_table` (the metrics of every arm), :func:`folds_table` (the honest protocol's choices
per fold), :func:`blind_table` (the blind baseline per feature group) and
:func:`random_seed_table` (the random control per seed). Numbers are written with
:mod:`ldminv_core.formatting`."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ldminv_core.evaluation import REPORTED_METRICS, ArmResult, BlindResult, LowFprCount
from ldminv_core.evaluation.wording import BLIND_GROUP_WORDS
from ldminv_core.formatting import format_count, format_rate, format_rate_ci

from .markup import CI_LEVEL, METRIC_LABELS

__all__ = ["count_text", "arms_table", "folds_table", "blind_table", "random_seed_table"]


def count_text(count: LowFprCount | None) -> str:
    """"4 of 60 members" flagged at the TPR@1%FPR threshold ("–" without a count)."""
    if count is None:
        return "–"
    pos = "held-out images" if count.positive_class == "heldout" else "members"
    return format_count(count.true_positives, count.n_positives, unit=pos)


def arms_table(arms: Sequence[ArmResult], *, honest: bool, counts: bool = False) -> pd.DataFrame:
    """One row per arm (the report's and the Masks & ROC page's metrics table): the t and drop that
    produced it, each metric with its interval (4 decimals), the realised FPR under ``honest``.

    With ``counts`` (the HTML report), also the exact Clopper-Pearson interval of every TPR@1%FPR
    and the count it is made of ("4 of 60 members"; "–" for the random arm, a mean over seeds), and
    an AUROC whose interval lies below 0.5 reads "0.3690 (below chance)"."""
    rows = []
    for arm in arms:
        row: dict[str, Any] = {"variant": arm.arm, "t": arm.t_text, "drop": arm.drop_text or "–"}
        for m in REPORTED_METRICS:
            row[METRIC_LABELS[m]] = format_rate(arm.value(m))
            row[f"{METRIC_LABELS[m]} {int(CI_LEVEL * 100)}% CI"] = format_rate_ci(arm.ci[m])
            if counts and m == "auroc" and arm.below_chance:
                row[METRIC_LABELS[m]] += " (below chance)"
            if counts and m == "tpr_at_1fpr":
                lf = arm.low_fpr
                exact = "–" if lf is None else format_rate_ci(lf.exact_ci)
                row[f"{METRIC_LABELS[m]} exact {int(CI_LEVEL * 100)}% CI"] = exact
                row[f"{METRIC_LABELS[m]} flagged"] = count_text(lf)
        if honest:
            row["realised FPR"] = format_rate(arm.realised_fpr_at_1fpr)
        rows.append(row)
    return pd.DataFrame(rows)


def folds_table(arms: Sequence[ArmResult]) -> pd.DataFrame:
    """One row per (arm, fold) of the honest protocol: t, drop, transferred threshold, size."""
    rows = []
    for arm in arms:
        for f in arm.folds:
            rows.append({"variant": arm.arm, "fold": f.fold, "t": "–" if f.t is None else f.t,
                         "drop %": "–" if f.drop_percent is None else f"{f.drop_percent:g}",
                         "threshold (score ≥)": "+∞ (none)" if f.threshold is None else f"{f.threshold:.6g}",
                         "samples": len(f.sample_ids)})
    return pd.DataFrame(rows)


def blind_table(blind: BlindResult, *, honest: bool) -> pd.DataFrame:
    """One row per feature group of the blind baseline, then "all": what the group reads, its
    columns, the blind AUROC (named "below chance" when its interval lies below 0.5) with its
    interval, TPR@1%FPR with the bootstrap and the exact Clopper-Pearson intervals and the count it
    is made of, the realised FPR under ``honest``, the verdict of AUROC - 0.5 and the features that
    weigh most (standardised coefficients: positive = member-like). Empty when unavailable."""
    level = int(CI_LEVEL * 100)
    rows = []
    for g in blind.groups:
        lf = g.low_fpr
        row: dict[str, Any] = {
            "feature group": g.group,
            "what it reads": BLIND_GROUP_WORDS.get(g.group, g.group),
            "features": g.n_features,
            "blind AUROC": format_rate(g.auroc) + (" (below chance)" if g.below_chance else ""),
            f"AUROC {level}% CI": format_rate_ci(g.ci["auroc"]),
            "TPR@1%FPR": format_rate(g.tpr_at_1fpr),
            f"TPR@1%FPR {level}% CI": format_rate_ci(g.ci["tpr_at_1fpr"]),
            f"TPR@1%FPR exact {level}% CI": "–" if lf is None else format_rate_ci(lf.exact_ci),
            "TPR@1%FPR flagged": count_text(lf),
        }
        if honest:
            row["realised FPR"] = format_rate(g.realised_fpr_at_1fpr)
        row["verdict"] = g.verdict
        row["strongest features"] = ", ".join(f"{name} ({coef:+.2f})" for name, coef in g.top_features[:3]) or "–"
        rows.append(row)
    return pd.DataFrame(rows)


def random_seed_table(arm: ArmResult) -> pd.DataFrame:
    """The random control's metrics per seed (the metrics table reports their mean): one row per
    seed, each metric to 4 decimals, from the evaluation layer's ``per_seed`` values."""
    rows = [{"seed": seed, **{METRIC_LABELS[m]: format_rate(arm.per_seed[m][i]) for m in REPORTED_METRICS}}
            for i, seed in enumerate(arm.seeds)]
    rows.append({"seed": "mean", **{METRIC_LABELS[m]: format_rate(arm.value(m)) for m in REPORTED_METRICS}})
    return pd.DataFrame(rows)
