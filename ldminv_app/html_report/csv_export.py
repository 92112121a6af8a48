"""The CSV files of the export: one row per sample with its scores at one timestep
(:func:`per_sample_table` / :func:`per_sample_csv`), the Dimensions page's table
(:func:`dimension_csv`) and the exposure list of the members most at risk
(:func:`exposure_table` / :func:`exposure_csv`). Conventions: labels 1 = member; scores higher = member (score =
-statistic)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ldminv_core.evaluation.exposure import ExposureList
from ldminv_core.runs import Run

from .inputs import (DEFAULT_DROP_PERCENT, DEFAULT_SEED, as_run, check_attack, check_drop, check_nonneg_int, check_t,
                     evaluation)

__all__ = ["CSV_COLUMNS", "EXPOSURE_COLUMNS", "per_sample_table", "per_sample_csv", "dimension_csv",
           "exposure_table", "exposure_csv"]


#: Columns of :func:`per_sample_table` / :func:`per_sample_csv`, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "sample_id",
    "path",
    "split",
    "caption",
    "log_volume",
    "distortion_quartile",
    "baseline_score",
    "masked_score",
    "random_score",
    "rank_baseline",
    "fold",
    "attack",
    "protocol",
    "t",
    "drop_percent",
    "random_seed",
)


def per_sample_table(
    run: Run | str | Path,
    *,
    attack: str,
    t: int | None,
    drop_percent: float = DEFAULT_DROP_PERCENT,
    random_seed: int = DEFAULT_SEED,
    protocol: str = "standard",
    folds: int | None = None,
) -> pd.DataFrame:
    """One row per sample (run order) with its scores at timestep ``t``.

    Args:
        run: a finished :class:`~ldminv_core.runs.Run` or its folder.
        attack: an attack of the run.
        t: a timestep of ``attack`` (its value, not its index); None for attacks without
            timesteps (PFAMI).
        drop_percent: percentage of coordinates each sample drops (its lowest influence)
            for ``masked_score`` (by the protocol's drop rule); the protocol's count at random
            (seeded) for ``random_score``.
        random_seed: seed of the random drop.
        protocol: the evaluation protocol (drop rule, quartile rule, folds).
        folds: cross-fitting folds of ``honest``.

    Returns:
        DataFrame of N rows with the columns :data:`CSV_COLUMNS`: ``distortion_quartile``
        1..4 (1 = lowest log-volume, the protocol's groups), ``baseline_score`` = -sum of all
        terms at t, ``masked_score`` / ``random_score`` = -masked statistic (NaN for attacks
        that cannot be masked), ``rank_baseline`` 1 = most member-like (ties by row order),
        ``fold`` (the honest protocol's fold, else 0), then the settings that produced the
        scores.
    """
    run = as_run(run)
    attack = check_attack(run, attack)
    t_index = check_t(run, attack, t)
    drop = check_drop(drop_percent)
    seed = check_nonneg_int(random_seed, "random_seed")
    ev = evaluation(run, attack, protocol, folds, seed, 0)
    n = len(run)
    nan = np.full(n, np.nan)
    samples = run.samples
    captions = samples["caption"] if "caption" in samples.columns else pd.Series([None] * n)
    ti = 0 if t_index is None else t_index
    base = -ev.baseline_stat()[:, ti]
    masked = -ev.masked_stat(drop)[:, ti] if ev.maskable else nan
    rand = -ev.random_stat(drop, seed)[:, ti] if ev.maskable else nan
    return pd.DataFrame(
        {
            "sample_id": samples["sample_id"].to_numpy(),
            "path": samples["path"].astype(str).to_numpy(),
            "split": samples["split"].astype(str).to_numpy(),
            "caption": [None if c is None or (isinstance(c, float) and math.isnan(c)) else str(c) for c in captions],
            "log_volume": run.log_volume,
            "distortion_quartile": ev.quartile_groups() + 1,
            "baseline_score": base,
            "masked_score": masked,
            "random_score": rand,
            "rank_baseline": _ranks(base),
            "fold": ev.folds(),
            "attack": attack,
            "protocol": ev.protocol.name,
            "t": pd.array([None if t_index is None else run.timesteps(attack)[t_index]] * n, dtype="Int64"),
            "drop_percent": drop,
            "random_seed": seed,
        },
        columns=list(CSV_COLUMNS),
    )


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every score, 1 = highest (ties by row order, as ``evaluation.rank_of``)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranks = np.empty(order.shape[0], dtype=np.int64)
    ranks[order] = np.arange(1, order.shape[0] + 1)
    return ranks


def per_sample_csv(
    run: Run | str | Path,
    *,
    attack: str,
    t: int | None,
    drop_percent: float = DEFAULT_DROP_PERCENT,
    random_seed: int = DEFAULT_SEED,
    protocol: str = "standard",
    folds: int | None = None,
) -> str:
    """:func:`per_sample_table` as CSV text (header row, N rows, full float precision)."""
    return per_sample_table(run, attack=attack, t=t, drop_percent=drop_percent, random_seed=random_seed,
                            protocol=protocol, folds=folds).to_csv(index=False)


def dimension_csv(table: pd.DataFrame, *, attack: str, t: int) -> str:
    """The Dimensions page's table (``ldminv_core.evaluation.dimension_table``: one row per latent
    coordinate, sorted by mean influence) as CSV text, with ``attack`` (machine name) and ``t``
    columns naming what produced it."""
    out = table.copy()
    out["attack"] = attack
    out["t"] = int(t)
    return out.to_csv(index=False)


#: Columns of :func:`exposure_table` / :func:`exposure_csv`, in order.
EXPOSURE_COLUMNS: tuple[str, ...] = (
    "member_rank", "sample_id", "path", "caption", "score", "flagged_by", "n_attacks_flagging", "log_volume",
    "log_volume_note", "attack", "arm", "protocol", "t", "drop_percent",
)


def exposure_table(exposure: ExposureList) -> pd.DataFrame:
    """The exposure list (``ldminv_core.evaluation.exposure.exposure_list``) as one row per
    member, most exposed first: ``member_rank`` 1 = the most member-like score among the members,
    ``flagged_by`` the attacks flagging it at the 1%-FPR threshold joined by ``;`` (empty: none),
    ``log_volume`` NaN with ``log_volume_note`` saying why when the run has no geometry, then the
    settings that produced it (``t`` empty: chosen per fold, or no timesteps; ``drop_percent``
    empty: the baseline, or chosen per fold)."""
    e = exposure.entries
    n = len(e)
    return pd.DataFrame(
        {
            "member_rank": np.array([x.rank for x in e], dtype=np.int64),
            "sample_id": np.array([x.sample_id for x in e], dtype=np.int64),
            "path": [x.path for x in e],
            "caption": [x.caption for x in e],
            "score": np.array([x.score for x in e], dtype=np.float64),
            "flagged_by": [";".join(x.flagged_by) for x in e],
            "n_attacks_flagging": np.array([x.n_flagged for x in e], dtype=np.int64),
            "log_volume": np.array([x.log_volume for x in e], dtype=np.float64),
            "log_volume_note": [exposure.log_volume_reason or ""] * n,
            "attack": [exposure.attack] * n,
            "arm": [exposure.arm] * n,
            "protocol": [exposure.protocol] * n,
            "t": pd.array([exposure.t] * n, dtype="Int64"),
            "drop_percent": pd.array([exposure.drop_percent] * n, dtype="Float64"),
        },
        columns=list(EXPOSURE_COLUMNS),
    )


def exposure_csv(exposure: ExposureList) -> str:
    """:func:`exposure_table` as CSV text (header row, one row per member, full float precision)."""
    return exposure_table(exposure).to_csv(index=False)
