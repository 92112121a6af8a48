"""Export of a run's findings: a self-contained HTML report and a CSV of per-sample scores.

:func:`build_html_report` writes one HTML file that opens offline in any browser. It opens with
the shift check (METHOD.md section 6: can the files alone, without the model, tell the folders
apart? The blind baseline per feature group, its chart, and what to do when they can), then the
findings under the chosen protocol (each under its title, with a one-line summary; a finding on
folders the files alone separate says so in its verdict and caveat), then the
run's settings and provenance, the settings that produced the numbers (protocol, attack, t, drop
percentage, random seeds, masks), the metrics of every arm with bootstrap intervals and the t / drop
that produced them (the folds' choices under ``honest``), ROC curves, metrics against drop
percentage and timestep (every TPR@1%FPR with the exact Clopper-Pearson interval of its count and
the number of held-out images its 1% rests on; an AUROC whose interval lies below 0.5 named as
below chance; the blind baseline's ROC dashed beside the attack's), the distortion figures, the
mean influence heatmap and a link that saves
the report JSON of the method reference (embedded as a ``data:`` URL, not printed in the page).
plotly.js is inlined once, with the first figure; every later figure reuses it.

:func:`per_sample_csv` gives one row per sample with its split, caption, log-volume, distortion
quartile, fold and baseline / masked / random-drop scores at the chosen timestep.

Pure functions (no Streamlit): every number comes from :class:`ldminv_core.evaluation.Evaluation`
(the report JSON from the same evaluation through ``report.report_from_results``) and the figures
from ``ldminv_app.figures``, the code the dashboard pages use, so the exported numbers equal those
on screen and in ``report --json``. Conventions: labels 1 = member; scores higher = member
(score = -statistic).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import numbers
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

import ldminv_core
from ldminv_core import masks
from ldminv_core.choices import ATTACK_LABELS, attack_label  # noqa: F401 - re-exported
from ldminv_core.errors import LdminvError, ShapeError, UnknownNameError
from ldminv_core.evaluation import (
    DEFAULT_N_BOOT,
    REPORTED_METRICS,
    ArmResult,
    AttackEvaluation,
    BlindResult,
    Evaluation,
    below_chance_text,
    convention_roc,
    effect_sentence,
    finding_title,
    findings_summary,
    fpr_support,
    make_protocol,
    shift_advice,
    shift_headline,
    tiny_note,
    verdict_words,
)
from ldminv_core.evaluation.wording import BLIND_GROUP_WORDS
from ldminv_core.report import report_from_results
from ldminv_core.runstore import Run

from . import figures

__all__ = [
    "SECTIONS",
    "CSV_COLUMNS",
    "DEFAULT_DROP_PERCENT",
    "DEFAULT_SEED",
    "build_html_report",
    "arms_table",
    "blind_table",
    "random_seed_table",
    "folds_table",
    "per_sample_table",
    "per_sample_csv",
    "report_filename",
    "report_json_filename",
    "scores_filename",
    "dimensions_filename",
    "dimension_csv",
    "attack_label",
    "low_fpr_cautions",
]

DEFAULT_DROP_PERCENT = 40.0
DEFAULT_SEED = 0
#: Seed of the bootstrap intervals (the dashboard's metrics table uses the same one).
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95

#: Sections of the HTML report: element id -> heading, in document order.
SECTIONS: dict[str, str] = {
    "shift": "Shift check: membership or distribution shift?",
    "findings": "Findings",
    "run-settings": "Run settings",
    "figure-settings": "Settings",
    "metrics": "Metrics",
    "roc": "ROC curves",
    "drop-sweep": "AUROC and TPR@1%FPR vs drop percentage",
    "timesteps": "Metrics vs timestep",
    "log-volume": "Log-volume: members vs held-out",
    "quartiles": "AUROC by distortion quartile",
    "influence": "Mean influence heatmap",
    "report-json": "Report JSON",
}

#: The ROC curve of the random control is drawn for one seed (the first); its legend says so.
RANDOM_CURVE_LABEL = "random, seed {seed}"
#: Legend of the blind baseline's ROC curve (all feature groups, out-of-fold scores), drawn dashed.
BLIND_CURVE_LABEL = "blind baseline (files only, no model)"

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

#: FPR bounds of the low-FPR metrics that get a caution when the negatives are too few.
_LOW_FPRS = {"tpr_at_1fpr": 0.01, "tpr_at_01fpr": 0.001}


def low_fpr_cautions(protocol, *, n_members: int, n_heldout: int,
                     metrics_shown: Sequence[str] = REPORTED_METRICS) -> dict[str, str]:
    """metric -> the caution of ``ldminv_core.evaluation.fpr_support`` for each TPR-at-low-FPR
    metric in ``metrics_shown`` whose negatives are too few (empty when all are backed)."""
    out = {}
    for m in metrics_shown:
        if m in _LOW_FPRS:
            text = fpr_support(protocol, n_members=int(n_members), n_heldout=int(n_heldout), fpr=_LOW_FPRS[m]).warning()
            if text:
                out[m] = text
    return out


_METRIC_LABELS = {"auroc": "AUROC", "tpr_at_1fpr": "TPR@1%FPR", "tpr_at_01fpr": "TPR@0.1%FPR", "asr": "ASR"}


# --------------------------------------------------------------------------- inputs


def _as_run(run: Run | str | Path) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, (str, Path)):
        return Run.open(run)
    raise LdminvError(f"run: expected a Run or the path of a run folder, got {type(run).__name__}")


def _check_attack(run: Run, attack: Any) -> str:
    if not isinstance(attack, str) or attack not in run.attacks:
        raise UnknownNameError(f"attack: expected one of {run.attacks} (the attacks of run {run.path}), got {attack!r}")
    return attack


def _check_t(run: Run, attack: str, t: Any) -> int | None:
    """Index of timestep ``t`` in the attack's timesteps (None for attacks without one)."""
    if not run.is_maskable(attack):
        if t is not None:
            raise LdminvError(
                f"t: attack {attack!r} gives one score per sample and has no timestep; expected None, got {t!r}"
            )
        return None
    timesteps = run.timesteps(attack)
    if isinstance(t, bool) or not isinstance(t, numbers.Integral) or int(t) not in timesteps:
        raise UnknownNameError(f"t: expected one of the timesteps of {attack!r} in this run {timesteps}, got {t!r}")
    return timesteps.index(int(t))


def _check_drop(drop_percent: Any) -> float:
    if isinstance(drop_percent, bool) or not isinstance(drop_percent, numbers.Real) or not (
        math.isfinite(float(drop_percent)) and 0.0 <= float(drop_percent) < 100.0
    ):
        raise LdminvError(f"drop_percent: expected a percentage in [0, 100), got {drop_percent!r}")
    return float(drop_percent)


def _check_nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise LdminvError(f"{name}: expected an integer >= 0, got {value!r}")
    return int(value)


def _check_manual(run: Run, manual_mask: Any) -> np.ndarray | None:
    if manual_mask is None:
        return None
    keep = np.asarray(manual_mask)
    if keep.dtype != bool:
        raise LdminvError(f"manual_mask: expected a boolean keep-mask, got dtype {keep.dtype}")
    if keep.shape != tuple(run.latent_shape):
        raise ShapeError(f"manual_mask: expected shape {tuple(run.latent_shape)} (the run's latent shape), got {keep.shape}")
    return keep


# --------------------------------------------------------------------------- evaluation


def _evaluation(run: Run, attack: str, protocol: str, folds: int | None, seed: int, n_boot: int) -> Evaluation:
    return Evaluation(run, attack, make_protocol(protocol, folds=folds, seed=seed), n_boot=n_boot, level=CI_LEVEL,
                      seed=seed)


# --------------------------------------------------------------------------- CSV


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
        run: a finished :class:`~ldminv_core.runstore.Run` or its folder.
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
    run = _as_run(run)
    attack = _check_attack(run, attack)
    t_index = _check_t(run, attack, t)
    drop = _check_drop(drop_percent)
    seed = _check_nonneg_int(random_seed, "random_seed")
    ev = _evaluation(run, attack, protocol, folds, seed, 0)
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


# --------------------------------------------------------------------------- file names


def _safe_name(run: Run | str | Path) -> str:
    # duck-typed: a Run opened before a module reload is not an instance of the reloaded class
    name = Path(run if isinstance(run, (str, Path)) else run.path).name or "run"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _attack_suffix(attack: str | None) -> str:
    return "" if attack is None else "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", attack_label(attack))


def report_filename(run: Run | str | Path, attack: str | None = None) -> str:
    """``ldminv-report-<run folder name>[-<attack, as displayed: SimA, PIA, …>].html``."""
    return f"ldminv-report-{_safe_name(run)}{_attack_suffix(attack)}.html"


def report_json_filename(run: Run | str | Path, attack: str | None = None) -> str:
    """``ldminv-report-<run folder name>[-<attack>].json`` (the report JSON the HTML report embeds)."""
    return f"ldminv-report-{_safe_name(run)}{_attack_suffix(attack)}.json"


def scores_filename(run: Run | str | Path, attack: str | None = None) -> str:
    """``ldminv-scores-<run folder name>[-<attack>].csv``."""
    return f"ldminv-scores-{_safe_name(run)}{_attack_suffix(attack)}.csv"


def dimensions_filename(run: Run | str | Path, attack: str | None = None, t: int | None = None) -> str:
    """``ldminv-dimensions-<run folder name>[-<attack>][-t<t>].csv`` (the Dimensions page's table)."""
    return f"ldminv-dimensions-{_safe_name(run)}{_attack_suffix(attack)}{'' if t is None else f'-t{int(t)}'}.csv"


# --------------------------------------------------------------------------- HTML pieces

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem 2rem 4rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; }
h2 { font-size: 1.3rem; margin-top: 2.4rem; border-bottom: 1px solid #ddd; padding-bottom: .25rem; }
.lead { color: #555; margin-top: 0; }
nav ol { columns: 2; color: #444; }
table.ldminv { border-collapse: collapse; font-size: .9rem; margin: .6rem 0 1rem; }
table.ldminv th, table.ldminv td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left;
                                   vertical-align: top; }
table.ldminv th { background: #f5f5f5; }
table.ldminv td.num, table.ldminv td:not(:first-child) { font-variant-numeric: tabular-nums; }
.row { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 1rem; }
@media (max-width: 900px) { .row { grid-template-columns: minmax(0, 1fr); } }
.figure { margin: .5rem 0; }
.note { color: #666; font-size: .9rem; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .8rem; overflow-x: auto; font-size: .8rem; }
details > summary { cursor: pointer; color: #335; margin: .4rem 0; }
.finding-title { font-weight: 600; }
#findings-table td:nth-child(2), #findings-table td:nth-child(3), #findings-table td:nth-child(4) { white-space: nowrap; }
.finding-id { display: block; color: #888; font-size: .75rem; font-family: monospace; }
.summary { font-size: 1.05rem; margin: .6rem 0; }
#findings-table tr.confounded td:nth-child(4) { white-space: normal; min-width: 11rem; }
.caveat { display: block; margin-top: .3rem; color: #8a4b00; }
.shift-box { border-left: 4px solid #bbb; padding: .2rem .9rem; background: #fafafa; }
.shift-box.shifted { border-left-color: #D55E00; background: #fff6ef; }
a.download { display: inline-block; padding: .35rem .8rem; border: 1px solid #0072B2; border-radius: .3rem;
             color: #0072B2; text-decoration: none; }
"""


class _FigureWriter:
    """Turns plotly figures into HTML divs; plotly.js is inlined with the first one only."""

    def __init__(self) -> None:
        self._count = 0

    def __call__(self, fig: go.Figure) -> str:
        height = fig.layout.height or 420
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=self._count == 0,
            default_width="100%",
            default_height=f"{int(height)}px",
            config={**figures.PLOTLY_CONFIG, "responsive": True},  # the toolbar's PNG download works offline
        )
        self._count += 1
        return f'<div class="figure">{div}</div>'


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    v = float(value)
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}"


def _table(df: pd.DataFrame, *, table_id: str, index: bool = False) -> str:
    return df.to_html(index=index, table_id=table_id, classes="ldminv", border=0, escape=True, na_rep="–")


def _kv_table(rows: Sequence[tuple[str, Any]], *, table_id: str) -> str:
    df = pd.DataFrame([(k, "–" if v is None else str(v)) for k, v in rows], columns=["setting", "value"])
    return _table(df, table_id=table_id)


def _section(sid: str, body: str) -> str:
    return f'<section id="{sid}">\n<h2>{_esc(SECTIONS[sid])}</h2>\n{body}\n</section>'


def _row(*parts: str) -> str:
    return '<div class="row">' + "".join(parts) + "</div>"


def _timesteps_text(ts: Sequence[int]) -> str:
    ts = [int(t) for t in ts]
    if not ts:
        return "none"
    if len(ts) >= 4:
        steps = np.diff(ts)
        if (steps == steps[0]).all():
            return f"{ts[0]}, {ts[1]}, …, {ts[-1]} (every {steps[0]}; {len(ts)} timesteps)"
    return ", ".join(map(str, ts)) + f" ({len(ts)} timestep{'s' if len(ts) != 1 else ''})"


def _run_rows(run: Run) -> list[tuple[str, Any]]:
    s = run.settings
    c, h, w = run.latent_shape
    geo = s.get("geometry", {}) or {}
    versions = s.get("versions", {}) or {}
    rows: list[tuple[str, Any]] = [
        ("run folder", run.path),
        ("model", s.get("model")),
        ("model class", s.get("model_class")),
        ("text-conditioned", s.get("is_conditional")),
        ("members folder", s.get("members")),
        ("held-out folder", s.get("heldout")),
        ("members / held-out", f"{run.n_members} / {run.n_heldout}"),
        ("image shape", "×".join(map(str, s["image_shape"])) if s.get("image_shape") else None),
        ("latent shape", f"{c}×{h}×{w} (d = {c * h * w})"),
        ("VAE scaling factor", s.get("scaling_factor")),
        ("log-volume top-k", geo.get("topk")),
        ("log-volume method", geo.get("log_volume_method")),
        ("influence", geo.get("influence")),
        ("Hutchinson probes", geo.get("probes") if geo.get("influence") == "hutchinson" else None),
        ("seed", (s.get("seeds") or {}).get("seed")),
    ]
    for name, spec in (s.get("attacks") or {}).items():
        if spec.get("kind", "terms") == "terms":
            rows.append((f"attack {name}", f"timesteps {_timesteps_text(spec.get('timesteps', []))}; p = {spec.get('p')}"))
        else:
            ts = spec.get("timesteps") or []
            rows.append((f"attack {name}", "one score per sample (not maskable)"
                         + (f"; timesteps {_timesteps_text(ts)}" if ts else "")))
    rows += [
        ("device / dtype", f"{s.get('device', '?')} / {s.get('dtype', '?')}"),
        ("created", s.get("created")),
        ("finished", s.get("finished")),
    ]
    for pkg in ("ldminv", "torch", "diffusers", "transformers", "numpy", "python"):
        if pkg in versions:
            rows.append((f"{pkg} version", versions[pkg]))
    return rows


def _manual_text(keep: np.ndarray) -> str:
    c = keep.shape[0]
    per_channel = ", ".join(f"ch {i}: {int(keep[i].sum())}" for i in range(c))
    text = f"keeps {int(keep.sum())} of {keep.size} coordinates ({per_channel})"
    if 0 < keep.sum() <= 32:
        coords = [figures.coord_label(ch, r, col) for ch, r, col in zip(*np.nonzero(keep))]
        text += "; kept (channel, row y, column x): " + ", ".join(coords)
    return text


def _ci_text(ci: tuple[float, float]) -> str:
    lo, hi = ci
    return "–" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.4f}, {hi:.4f}]"


def _count_text(count) -> str:
    """"4 of 60 members" flagged at the TPR@1%FPR threshold ("–" without a count)."""
    if count is None:
        return "–"
    pos = "held-out images" if count.positive_class == "heldout" else "members"
    return f"{count.true_positives} of {count.n_positives} {pos}"


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
            row[_METRIC_LABELS[m]] = _fmt(arm.value(m))
            row[f"{_METRIC_LABELS[m]} {int(CI_LEVEL * 100)}% CI"] = _ci_text(arm.ci[m])
            if counts and m == "auroc" and arm.below_chance:
                row[_METRIC_LABELS[m]] += " (below chance)"
            if counts and m == "tpr_at_1fpr":
                lf = arm.low_fpr
                exact = "–" if lf is None else _ci_text(lf.exact_ci)
                row[f"{_METRIC_LABELS[m]} exact {int(CI_LEVEL * 100)}% CI"] = exact
                row[f"{_METRIC_LABELS[m]} flagged"] = _count_text(lf)
        if honest:
            row["realised FPR"] = _fmt(arm.realised_fpr_at_1fpr)
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
            "blind AUROC": _fmt(g.auroc) + (" (below chance)" if g.below_chance else ""),
            f"AUROC {level}% CI": _ci_text(g.ci["auroc"]),
            "TPR@1%FPR": _fmt(g.tpr_at_1fpr),
            f"TPR@1%FPR {level}% CI": _ci_text(g.ci["tpr_at_1fpr"]),
            f"TPR@1%FPR exact {level}% CI": "–" if lf is None else _ci_text(lf.exact_ci),
            "TPR@1%FPR flagged": _count_text(lf),
        }
        if honest:
            row["realised FPR"] = _fmt(g.realised_fpr_at_1fpr)
        row["verdict"] = g.verdict
        row["strongest features"] = ", ".join(f"{name} ({coef:+.2f})" for name, coef in g.top_features[:3]) or "–"
        rows.append(row)
    return pd.DataFrame(rows)


def _blind_bars(blind: BlindResult, *, title: str) -> go.Figure:
    """Bars of the blind AUROC per feature group (and all together) with their intervals; a group
    whose interval lies above 0.5 in orange (it separates the folders), below 0.5 in blue."""
    groups = list(blind.groups)
    vals = np.array([g.auroc for g in groups], dtype=np.float64)
    lo = np.array([g.ci["auroc"][0] for g in groups], dtype=np.float64)
    hi = np.array([g.ci["auroc"][1] for g in groups], dtype=np.float64)
    colors = ["#D55E00" if g.verdict == "supported" else "#0072B2" if g.verdict == "contradicted" else "#999999"
              for g in groups]
    fig = go.Figure(go.Bar(
        x=[g.group for g in groups], y=vals, marker_color=colors,
        error_y=dict(type="data", symmetric=False, array=hi - vals, arrayminus=vals - lo),
        text=[f"{v:.3f}" for v in vals], textposition="inside", insidetextanchor="start",
        hovertext=[f"{g.group}: AUROC {g.auroc:.4f} {_ci_text(g.ci['auroc'])}, {g.verdict}" for g in groups],
        hoverinfo="text",
    ))
    fig.add_hline(y=0.5, line_dash="dot", line_color="#888888", annotation_text="chance",
                  annotation_position="bottom right")
    fig.update_layout(template=figures.TEMPLATE, title=title, height=340, showlegend=False,
                      xaxis_title="feature group", yaxis_title="blind AUROC (files only)", yaxis_range=[0, 1.05],
                      margin=dict(l=50, r=20, t=60, b=45))
    return fig


def _shift_body(res: AttackEvaluation, fig: _FigureWriter) -> str:
    """The shift check: the blind baseline's verdict in words, its table and chart per feature
    group, what its TPR@1%FPR rests on, and what to do when the files alone separate the folders."""
    blind = res.blind
    if blind is None or not blind.available:
        text = shift_headline(blind) if blind is not None else "Blind baseline unavailable: it was not evaluated."
        return (f'<div class="shift-box" id="shift-box"><p class="summary" id="shift-headline"><b>{_esc(text)}</b>'
                "</p></div>")
    honest = res.protocol.name == "honest"
    klass = "shift-box shifted" if blind.separable else "shift-box"
    out = [f'<div class="{klass}" id="shift-box"><p class="summary" id="shift-headline">'
           f"<b>{_esc(shift_headline(blind))}</b></p>"]
    advice = shift_advice(blind)
    if advice:
        out.append(f'<p id="shift-advice"><b>What to do:</b> {_esc(advice)}</p>')
    out.append("</div>")
    out.append(f'<p class="note">Blind baseline: {_esc(blind.classifier)} on {blind.folds} folds (seed '
               f"{blind.fold_seed}, the honest protocol's); it sees the image files and captions only, never the "
               f"model{_esc('; ' + blind.encoder_text if blind.encoder_text else '')}. Measured under the "
               f"{_esc(res.protocol.name)} protocol; AUROC intervals: {_esc(blind.interval_text)}; other intervals: "
               f"{_esc(_boot_text(res.n_boot))}.</p>")
    out.append(_table(blind_table(blind, honest=honest), table_id="blind-table"))
    notes = [f"{g.group}: AUROC {_fmt(g.auroc)} is {text}" for g in blind.groups
             if (text := below_chance_text(g.auroc, g.ci["auroc"]))]
    lf = blind.group("all").low_fpr if blind.group("all") is not None else None
    if lf is not None:
        notes.append(f"TPR@1%FPR: {lf.rests_on()}; beside the bootstrap interval, the exact interval is the "
                     "Clopper-Pearson interval of the flagged count.")
    out += [f'<p class="note" id="blind-notes">{"<br>".join(_esc(n) for n in notes)}</p>'] if notes else []
    out.append(fig(_blind_bars(blind, title=f"Blind AUROC per feature group ({res.protocol.name})")))
    return "\n".join(out)


def _findings_table(res: AttackEvaluation) -> str:
    """The findings as a table: each under its title (the id beneath, small), its estimate, interval,
    verdict (a tiny effect named as such) and the statement of the evaluation layer."""
    level = int(CI_LEVEL * 100)
    head = (f"<tr><th>finding</th><th>estimate</th><th>{level}% CI</th><th>verdict</th>"
            "<th>statement</th></tr>")
    rows = []
    for f in res.findings:
        est = f"{f.estimate:+.4f}" if math.isfinite(f.estimate) else "–"
        statement = f.statement
        if f.caveat and statement.endswith(f.caveat):  # the caveat gets its own line in the cell
            statement = statement[: -len(f.caveat)].rstrip()
        caveat = f'<span class="caveat">⚠ {_esc(f.caveat)}</span>' if f.caveat else ""
        klass = ' class="confounded"' if f.confounded else ""
        rows.append(
            f'<tr data-finding="{_esc(f.id)}"{klass}>'
            f'<td><span class="finding-title">{_esc(finding_title(f.id))}</span>'
            f'<span class="finding-id">{_esc(f.id)}</span></td><td>{est}</td><td>{_esc(_ci_text(f.ci))}</td>'
            f"<td>{_esc(verdict_words(f.verdict, f.estimate, metric=f.metric, confounded=f.confounded))}</td>"
            f"<td>{_esc(statement)}{caveat}</td></tr>"
        )
    return ('<table class="ldminv" id="findings-table">\n<thead>' + head + "</thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody>\n</table>")


def _findings_body(res: AttackEvaluation, ev: Evaluation, fig: _FigureWriter, drop: float | None) -> str:
    proto = res.protocol
    context = f"the {proto.name} protocol, {attack_label(res.attack)} ({res.baseline.t_text})"
    out = [f'<p class="summary" id="findings-summary"><b>{_esc(findings_summary(res.findings, context=context))}</b></p>',
           f'<p class="lead" id="protocol-line">Protocol <b>{_esc(proto.name)}</b>: {_esc(proto.description)}. '
           f"TPR@1%FPR = {_esc(proto.tpr_rule)}. Intervals: {_esc(_boot_text(res.n_boot, paired=True))}.</p>",
           _findings_table(res)]
    if any(effect_sentence(f) for f in res.findings):
        out.append(f'<p class="note" id="tiny-note">{_esc(tiny_note())}</p>')
    charts = [fig(figures.quartile_auroc_bars(
        np.array([q.auroc for q in res.quartiles]), ci=[q.auroc_ci for q in res.quartiles],
        edges=np.array([res.quartiles[0].log_volume_min] + [q.log_volume_max for q in res.quartiles]),
        counts=np.array([q.n for q in res.quartiles]),
        title=f"{attack_label(res.attack)} baseline AUROC by distortion quartile ({proto.name})",
    ))]
    if res.maskable:
        curves = ev.drop_curves(ev.headline_t_index())
        charts.append(fig(figures.drop_curves_with_bands(
            curves.percents, masked=curves.masked["auroc"],
            masked_band=(curves.masked_lo["auroc"], curves.masked_hi["auroc"]),
            random_mean=curves.random_mean["auroc"], random_band=(curves.random_lo["auroc"], curves.random_hi["auroc"]),
            baseline=curves.baseline["auroc"], baseline_ci=curves.baseline_ci["auroc"], n_seeds=len(curves.seeds),
            n_boot=curves.n_boot,
            current=drop, title=f"AUROC vs drop %, t = {curves.t} (all samples, {proto.name})",
        )))
    out.append(_row(*charts))
    if res.classes:
        cdf = pd.DataFrame([{"class": c.label, "n": c.n, "members": c.n_members,
                             **{f"Q{i + 1}": _fmt(v, 3) for i, v in enumerate(c.aurocs)},
                             "Q4 − Q1": _fmt(c.difference, 3)} for c in res.classes])
        out.append("<details><summary>Quartile AUROC within each class</summary>"
                   + _table(cdf, table_id="class-table") + "</details>")
    return "\n".join(out)


def _boot_text(n_boot: int, *, paired: bool = False) -> str:
    """How the intervals were made, in words: "95% CI, 1000 stratified bootstrap replicates"."""
    if not n_boot:
        return "none (no bootstrap replicates)"
    return (f"{int(CI_LEVEL * 100)}% CI, {n_boot} {'paired ' if paired else ''}stratified bootstrap replicates")


def random_seed_table(arm: ArmResult) -> pd.DataFrame:
    """The random control's metrics per seed (the metrics table reports their mean): one row per
    seed, each metric to 4 decimals, from the evaluation layer's ``per_seed`` values."""
    rows = [{"seed": seed, **{_METRIC_LABELS[m]: _fmt(arm.per_seed[m][i]) for m in REPORTED_METRICS}}
            for i, seed in enumerate(arm.seeds)]
    rows.append({"seed": "mean", **{_METRIC_LABELS[m]: _fmt(arm.value(m)) for m in REPORTED_METRICS}})
    return pd.DataFrame(rows)


def _roc_figures(curves_scores: dict[str, np.ndarray], arms: dict[str, ArmResult], run: Run, protocol,
                 fig: _FigureWriter, note: str, blind: BlindResult | None = None) -> str:
    """ROC curves of the arms under the protocol's convention (``paper``: held-out positive). Each
    legend's AUROC is the evaluation layer's number of that arm; the random control is drawn for
    its first seed, labelled so, with that seed's AUROC (the metrics table's random row is the mean
    over seeds; the per-seed table lists each). With an available ``blind`` baseline, its curve (all
    feature groups, out-of-fold scores) is drawn dashed, with its AUROC."""
    labels = run.labels
    curves, aurocs, names = {}, {}, {}
    blind_all = blind.group("all") if blind is not None and blind.available else None
    for name, s in curves_scores.items():
        c = convention_roc(s, labels, protocol)
        curves[name] = (c.fpr, c.tpr)
        arm = arms[name]
        if name == "random":
            aurocs[name] = arm.per_seed["auroc"][0]
            names[name] = RANDOM_CURVE_LABEL.format(seed=arm.seeds[0])
        else:
            aurocs[name] = arm.auroc
    if blind_all is not None and "all" in blind.scores:
        c = convention_roc(blind.scores["all"], labels, protocol)
        curves["blind"] = (c.fpr, c.tpr)
        aurocs["blind"] = blind_all.auroc
        names["blind"] = BLIND_CURVE_LABEL
    if protocol.positive_class == "heldout":
        axes = dict(xlabel="false-positive rate (members)", ylabel="true-positive rate (held-out)")
        n_neg, n_pos = run.n_members, run.n_heldout
    else:
        axes = dict(xlabel="false-positive rate (held-out)", ylabel="true-positive rate (members)")
        n_neg, n_pos = run.n_heldout, run.n_members
    def dashed(f: go.Figure) -> go.Figure:
        if "blind" in curves:
            f.update_traces(line_dash="dash", selector=lambda t: str(t.name).startswith(BLIND_CURVE_LABEL))
        return f

    body = _row(
        fig(dashed(figures.roc_curves(curves, aurocs=aurocs, labels=names, title=f"ROC ({note})", **axes))),
        fig(dashed(figures.roc_curves(curves, aurocs=aurocs, labels=names, log_scale=True, n_negatives=n_neg,
                                      n_positives=n_pos, title=f"ROC, log-log ({note})", **axes))),
    )
    text = (f"The log-log axes start at the smallest rates the data resolve: FPR 1/{n_neg}, TPR 1/{n_pos}.")
    if "blind" in curves:
        lo, hi = blind_all.ci["auroc"]
        text = (f"Dashed: the blind baseline (all feature groups; out-of-fold scores of a classifier that sees the "
                f"files only, never the model), AUROC {_fmt(blind_all.auroc)} {_ci_text((lo, hi))}: where the "
                "attack's curve runs close to it, the files alone explain the attack's separation. " + text)
    if "random" in arms and "random" in curves:
        rand = arms["random"]
        text = (f"The random curve is seed {rand.seeds[0]} alone (AUROC {_fmt(rand.per_seed['auroc'][0])}); the "
                f"metrics table's random row is the mean over seeds {', '.join(map(str, rand.seeds))} "
                f"(AUROC {_fmt(rand.auroc)}), each seed listed below the table. " + text)
    return body + f'<p class="note" id="roc-note">{_esc(text)}</p>'


def _arm_notes(arms: Sequence[ArmResult]) -> str:
    """Under the metrics table: what every TPR@1%FPR rests on (how many held-out images the 1% is,
    the count behind the rate, the exact interval) and each below-chance AUROC in words."""
    notes = []
    rests = list(dict.fromkeys(a.low_fpr.rests_on() for a in arms if a.low_fpr is not None))
    if rests:
        fixed = {a.low_fpr.threshold_fixed for a in arms if a.low_fpr is not None}
        when = ("at the thresholds transferred from the other folds" if fixed == {True} else
                "at the threshold chosen on these samples (the exact interval is conditional on that choice)")
        pos = {"held-out images" if a.low_fpr.positive_class == "heldout" else "members"
               for a in arms if a.low_fpr is not None}.pop()
        notes.append(f"TPR@1%FPR rests on {'; '.join(rests)}. “flagged” counts the {pos} flagged {when}; "
                     "the exact interval is the Clopper-Pearson interval of that count, beside the bootstrap one"
                     + ("; the random row is a mean over seeds (no single count)."
                        if any(a.low_fpr is None for a in arms) else "."))
    notes += [f"{a.arm}: AUROC {_fmt(a.auroc)} is {text}" for a in arms
              if (text := below_chance_text(a.auroc, a.ci["auroc"]))]
    return (f'<p class="note" id="metrics-low-fpr">{"<br>".join(_esc(n) for n in notes)}</p>' if notes else "")


def _cautions_html(cautions: dict[str, str], *, element_id: str) -> str:
    """The low-FPR cautions as one note (nothing when there is none)."""
    if not cautions:
        return ""
    items = "<br>".join(f"<b>{_esc(_METRIC_LABELS.get(m, m))}</b>: {_esc(text)}" for m, text in cautions.items())
    return f'<p class="note caution" id="{element_id}">{items}</p>'


def _not_maskable(attack: str) -> str:
    return (f'<p class="note">{_esc(attack_label(attack))} gives one score per sample: it has no timestep axis and no '
            "per-coordinate terms, so it cannot be masked.</p>")


# --------------------------------------------------------------------------- HTML report


def build_html_report(
    run: Run | str | Path,
    *,
    attack: str,
    t: int | None = None,
    protocol: str = "standard",
    folds: int | None = None,
    drop_percent: float | None = DEFAULT_DROP_PERCENT,
    random_seed: int = DEFAULT_SEED,
    manual_mask: np.ndarray | None = None,
    include_global: bool = False,
    n_boot: int = DEFAULT_N_BOOT,
    title: str | None = None,
) -> str:
    """A self-contained HTML report of one attack of a run under one protocol (works offline).

    It opens with the shift check (the blind baseline per feature group: can the files alone tell
    the folders apart, and what to do when they can) and the findings (the same
    :class:`~ldminv_core.evaluation.Evaluation` numbers as the dashboard's Findings page and
    ``report --json``; a finding on folders the files alone separate carries its caveat), then
    the metrics of every arm with the t and drop that produced them (every TPR@1%FPR with its exact
    interval and count), ROC curves (the blind baseline's dashed), curves against drop percentage
    and timestep, the distortion figures and a link saving the report JSON (a ``data:`` URL).

    Args:
        run: a finished :class:`~ldminv_core.runstore.Run` or its folder.
        attack: an attack of the run.
        t: timestep (its value) of the drop-percentage curves; None = the protocol's headline t.
        protocol: "standard", "paper" or "honest"; ``folds``: the honest protocol's folds.
        drop_percent: per-sample drop percentage of the masked arm (and count of the random
            control), in [0, 100); None under ``honest`` = chosen on the other folds.
        random_seed: first seed of the random control, seed of the bootstrap and the folds.
        manual_mask: optional bool (C, h, w) keep-mask, added as the "manual" arm.
        include_global: add the "global" arm (one mean-influence ranking for all samples).
        n_boot: stratified bootstrap replicates of the 95% intervals (0 = none; default: the
            evaluation layer's ``DEFAULT_N_BOOT``, as the CLI report and the dashboard).
        title: heading of the report (default: the run folder's name).

    Returns:
        The HTML document as a string; the sections are :data:`SECTIONS` (element ids) and the
        tables carry the ids ``blind-table`` (when the blind baseline is available),
        ``findings-table``, ``run-settings-table``, ``figure-settings-table``, ``metrics-table``,
        ``quartile-table`` (``folds-table`` under honest, ``timestep-table`` and
        ``random-seeds-table`` for maskable attacks); the findings table's rows carry
        ``data-finding`` (the id) and, when the finding is confounded by the folders' difference,
        ``class="confounded"``; the shift headline is ``#shift-headline``, the advice
        ``#shift-advice``; the JSON link is ``a#report-json-link``.

    Raises:
        RunError (run folder), UnknownNameError (attack, t, protocol), ShapeError (manual_mask),
        LdminvError (drop_percent, random_seed, n_boot, folds).
    """
    run = _as_run(run)
    attack = _check_attack(run, attack)
    t_index = _check_t(run, attack, t) if t is not None or not run.is_maskable(attack) else None
    drop = None if drop_percent is None else _check_drop(drop_percent)
    seed = _check_nonneg_int(random_seed, "random_seed")
    n_boot = _check_nonneg_int(n_boot, "n_boot")
    keep = _check_manual(run, manual_mask)
    maskable = run.is_maskable(attack)
    if keep is not None and not maskable:
        raise LdminvError(f"manual_mask: attack {attack!r} cannot be masked; expected None")
    ev = _evaluation(run, attack, protocol, folds, seed, n_boot)
    res = ev.result(drop)
    honest = res.protocol.name == "honest"
    if maskable and t_index is None:
        t_index = ev.headline_t_index()
    labels = run.labels
    c, h, w = run.latent_shape
    d = c * h * w
    name = Path(run.path).name
    fig = _FigureWriter()
    parts: list[str] = []
    timesteps = list(res.timesteps)
    t_fig = timesteps[t_index] if maskable else None
    curve_drop = DEFAULT_DROP_PERCENT if drop is None else drop

    # ---- shift check, then the findings
    parts.append(_section("shift", _shift_body(res, fig)))
    parts.append(_section("findings", _findings_body(res, ev, fig, curve_drop)))

    # ---- run settings
    parts.append(_section("run-settings", _kv_table(_run_rows(run), table_id="run-settings-table")))

    # ---- settings
    arms: list[ArmResult] = [a for a in (res.baseline, res.masked, res.random) if a is not None]
    roc_scores = {"baseline": ev.scores("baseline")}
    if maskable:
        roc_scores["masked"] = ev.scores("masked", drop)
        roc_scores["random"] = ev.scores("random", drop)
        if include_global:
            gstat = ev.global_stat(curve_drop)
            arms.append(ev.custom_arm("global", gstat))
            roc_scores["global"] = ev.custom_scores(gstat)
        if keep is not None:
            mstat = masks.masked_statistic(ev.terms(), keep)
            arms.append(ev.custom_arm("manual", mstat))
            roc_scores["manual"] = ev.custom_scores(mstat)
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fig_rows: list[tuple[str, Any]] = [
        ("protocol", f"{res.protocol.name}: {res.protocol.description}"),
        ("attack", f"{attack_label(attack)} ({attack})"),
    ]
    if maskable:
        rule = "np.percentile threshold" if res.protocol.name == "paper" else f"{masks.drop_count(d, curve_drop)} of {d} coordinates dropped"
        fig_rows += [
            ("timestep t", f"{res.baseline.t_text} (metrics); t = {t_fig} (drop curves)"),
            ("drop percentage", (f"{drop:g} % per sample, lowest influence first ({rule})" if drop is not None
                                 else f"chosen on the other folds: {res.masked.drop_text}" if res.masked else "–")),
            ("random seed", f"{seed} (random control: seeds {', '.join(map(str, ev.seeds))}, reported as their mean)"),
            ("global ranking mask", "included (mean influence over samples)" if include_global else "not included"),
            ("manual mask", _manual_text(keep) if keep is not None else "not included"),
        ]
    else:
        fig_rows += [("timestep t", "none (one score per sample)"), ("masks", "not applicable")]
    fig_rows += [
        ("variants", ", ".join(a.arm for a in arms)),
        ("bootstrap", f"{n_boot} stratified replicates, {int(CI_LEVEL * 100)}% intervals, seed {seed}"
         if n_boot else "none"),
        ("score convention", "score = −statistic, higher = member; statistic = Σ mask_i · term_i(t)"),
        ("report generated", f"{generated} by ldminv {ldminv_core.__version__}"),
    ]
    parts.append(_section("figure-settings", _kv_table(fig_rows, table_id="figure-settings-table")))

    # ---- metrics
    metrics_body = (
        f'<p class="note">{_esc(attack_label(attack))}, protocol {_esc(res.protocol.name)}; {run.n_members} members, '
        f"{run.n_heldout} held-out. TPR@1%FPR = {_esc(res.protocol.tpr_rule)}; ASR = max over thresholds of "
        "(TPR + 1 − FPR) / 2. With few held-out samples the low-FPR metrics rest on a handful of images: "
        f"read them with their intervals. Intervals: {_esc(_boot_text(n_boot))}.</p>"
        + ('<p class="note" id="metrics-shifted"><b>Shifted folders:</b> these arms separate two folders that differ '
           "without the model; their AUROCs and TPRs are not evidence of membership (see the shift check).</p>"
           if res.shifted else "")
        + _table(arms_table(arms, honest=honest, counts=True), table_id="metrics-table")
        + _arm_notes(arms)
        + _cautions_html(low_fpr_cautions(res.protocol, n_members=run.n_members, n_heldout=run.n_heldout),
                         element_id="metrics-fpr-caution")
    )
    if res.random is not None:
        metrics_body += (f'<p class="note">The random control per seed (its row above is the mean over the '
                         f"{len(res.random.seeds)} seeds):</p>"
                         + _table(random_seed_table(res.random), table_id="random-seeds-table"))
    if honest:
        metrics_body += ("<p class=\"note\">The choices of every fold, made on the other folds only:</p>"
                         + _table(folds_table(arms), table_id="folds-table"))
    parts.append(_section("metrics", metrics_body))

    # ---- ROC
    if res.protocol.name == "paper" and maskable:  # each metric has its own t: the curves are at the AUROC's
        roc_note = "AUROC's t: " + ", ".join(f"{a.arm} {a.best_t['auroc']}" for a in arms)
    else:
        roc_note = res.baseline.t_text + (", pooled calibrated out-of-fold scores" if honest else "")
    parts.append(_section("roc", _roc_figures(roc_scores, {a.arm: a for a in arms}, run, res.protocol, fig,
                                              roc_note, blind=res.blind)))

    # ---- drop sweep
    if maskable:
        curves = ev.drop_curves(t_index)
        series_a = {"masked": curves.masked["auroc"], "random": curves.random_mean["auroc"]}
        series_t = {"masked": curves.masked["tpr_at_1fpr"], "random": curves.random_mean["tpr_at_1fpr"]}
        sweep_body = _row(
            fig(figures.metric_vs_drop(curves.percents, series_a, ylabel="AUROC", current=curve_drop,
                                       title=f"AUROC vs drop percentage, t = {t_fig} ({res.protocol.name})")),
            fig(figures.metric_vs_drop(curves.percents, series_t, ylabel="TPR@1%FPR", current=curve_drop,
                                       title=f"TPR@1%FPR vs drop percentage, t = {t_fig} ({res.protocol.name})")),
        )
        sweep_df = pd.DataFrame({"drop %": [f"{p:g}" for p in curves.percents]})
        for m in ("auroc", "tpr_at_1fpr"):
            sweep_df[f"{_METRIC_LABELS[m]} (masked)"] = [_fmt(x) for x in curves.masked[m]]
            sweep_df[f"{_METRIC_LABELS[m]} (random, mean)"] = [_fmt(x) for x in curves.random_mean[m]]
            sweep_df[f"{_METRIC_LABELS[m]} (random, min–max)"] = [
                f"{_fmt(lo)} – {_fmt(hi)}" for lo, hi in zip(curves.random_lo[m], curves.random_hi[m])]
        sweep_body += ('<p class="note">On every sample at one t (descriptive, nothing chosen on held-out folds); '
                       f"random = mean and range over seeds {', '.join(map(str, curves.seeds))}.</p>")
        sweep_body += "<details><summary>Values</summary>" + _table(sweep_df, table_id="drop-table") + "</details>"
    else:
        sweep_body = _not_maskable(attack)
    parts.append(_section("drop-sweep", sweep_body))

    # ---- timesteps
    if maskable:
        base_t = ev.per_t()
        masked_t = ev.masked_per_t(curve_drop)
        body = _row(
            fig(figures.metric_vs_timestep(timesteps, {"baseline": base_t["auroc"], "masked": masked_t["auroc"]},
                                           ylabel="AUROC", selected_t=t_fig,
                                           title=f"AUROC vs timestep (drop {curve_drop:g} %, {res.protocol.name})")),
            fig(figures.metric_vs_timestep(timesteps, {"baseline": base_t["tpr_at_1fpr"],
                                                       "masked": masked_t["tpr_at_1fpr"]},
                                           ylabel="TPR@1%FPR", selected_t=t_fig,
                                           title=f"TPR@1%FPR vs timestep (drop {curve_drop:g} %, {res.protocol.name})")),
        )
        t_df = pd.DataFrame({"t": timesteps})
        for label, src in (("baseline", base_t), ("masked", masked_t)):
            for m in REPORTED_METRICS:
                t_df[f"{_METRIC_LABELS[m]} ({label})"] = [_fmt(x) for x in src[m]]
        hi = ev.headline_t_index()
        body += (f'<p class="note">Best baseline AUROC {_fmt(base_t["auroc"][hi])} at t = {timesteps[hi]} on all '
                 "samples; choosing t on the evaluation set itself is optimistic (the honest protocol chooses it "
                 "on the other folds).</p>")
        body += "<details><summary>Values</summary>" + _table(t_df, table_id="timestep-table") + "</details>"
    else:
        body = _not_maskable(attack)
    parts.append(_section("timesteps", body))

    # ---- log-volume distribution
    lv = run.log_volume
    gap = lv[labels == 1].mean() - lv[labels == 0].mean() if run.n_members and run.n_heldout else float("nan")
    parts.append(_section(
        "log-volume",
        fig(figures.log_volume_distribution(lv, labels))
        + f'<p class="note">Log-volume = sum of the top-{_esc((run.settings.get("geometry") or {}).get("topk", "k"))} '
        f"log singular values of the decoder Jacobian. Mean log-volume, members − held-out: {_fmt(gap)}.</p>",
    ))

    # ---- quartiles
    q_cautions = [low_fpr_cautions(res.protocol, n_members=q.n_members, n_heldout=q.n - q.n_members,
                                   metrics_shown=("tpr_at_1fpr",)).get("tpr_at_1fpr") for q in res.quartiles]
    q_df = pd.DataFrame({
        "quartile": [f"Q{q.q}" for q in res.quartiles],
        "n": [q.n for q in res.quartiles],
        "members": [q.n_members for q in res.quartiles],
        "log-volume range": [f"{_fmt(q.log_volume_min, 3)} .. {_fmt(q.log_volume_max, 3)}" if q.n else "–"
                             for q in res.quartiles],
        "AUROC (baseline)": [_fmt(q.auroc) + (" (below chance)" if below_chance_text(q.auroc, q.auroc_ci) else "")
                             for q in res.quartiles],
        "AUROC 95% CI": [_ci_text(q.auroc_ci) for q in res.quartiles],
        "TPR@1%FPR": [_fmt(q.tpr_at_1fpr) + (" ⚠" if q_cautions[i] else "") for i, q in enumerate(res.quartiles)],
        "ASR": [_fmt(q.asr) for q in res.quartiles],
        "t": [ArmResult("q", 0, 0, 0, {}, q.best_t).t_text if not honest else res.baseline.t_text
              for q in res.quartiles],
    })
    q_body = ""
    if maskable and len(timesteps) > 1:
        q_body = fig(figures.quartile_auroc_vs_timestep(timesteps, ev.quartile_per_t(), selected_t=t_fig))
    q_body += _table(q_df, table_id="quartile-table")
    warned = [(f"Q{q.q}", text) for q, text in zip(res.quartiles, q_cautions) if text]
    if warned:
        q_body += _cautions_html({f"⚠ {name} TPR@1%FPR": text for name, text in warned},
                                 element_id="quartile-fpr-caution")
    q_body += (f'<p class="note">Q1 = least distorted (lowest log-volume), Q4 = most distorted; groups: '
               f"{_esc(res.protocol.settings()['quartiles'])}.</p>")
    parts.append(_section("quartiles", q_body))

    # ---- mean influence heatmap
    mean_inf = np.asarray(run.influence, dtype=np.float64).mean(axis=0)
    parts.append(_section(
        "influence",
        fig(figures.channel_heatmaps(mean_inf, title="Mean influence over samples, ½·log G_ii, per latent channel"))
        + '<p class="note">Influence of coordinate i = ½·log‖∂D/∂z_i‖²: how much the image moves when z_i moves. '
        "The masked variant drops each sample's own lowest-influence coordinates.</p>",
    ))

    # ---- report JSON: a link that saves it (embedded as a data: URL), not a dump in the page
    report = report_from_results(run, {attack: res}, drop=drop)
    payload = base64.b64encode(json.dumps(report, indent=2).encode("utf-8")).decode("ascii")
    json_name = report_json_filename(run, attack)
    parts.append(_section(
        "report-json",
        f'<p><a class="download" id="report-json-link" download="{_esc(json_name)}" '
        f'href="data:application/json;base64,{payload}">Save {_esc(json_name)}</a></p>'
        '<p class="note">The report of <code>python -m ldminv_core report RUN --json</code> for this attack '
        f"(protocol {_esc(res.protocol.name)}, drop {'chosen per fold' if drop is None else f'{drop:g} %'}, "
        f"seed {seed}, {n_boot} bootstrap replicates), embedded in this file: the link saves it.</p>",
    ))

    heading = title or f"Membership-leakage report: {name}"
    toc = "".join(f'<li><a href="#{sid}">{_esc(text)}</a></li>' for sid, text in SECTIONS.items())
    lead = (f"{_esc(attack_label(attack))} · protocol {_esc(res.protocol.name)} · {_esc(res.baseline.t_text)}"
            + (f" · drop {_esc(res.masked.drop_text)}" if res.masked is not None else "")
            + f" · {run.n_members} members / {run.n_heldout} held-out · generated {_esc(generated)}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_esc(heading)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(heading)}</h1>\n<p class=\"lead\">{lead}</p>\n<nav><ol>{toc}</ol></nav>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
