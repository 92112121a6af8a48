"""Export of a run's findings: a self-contained HTML report and a CSV of per-sample scores.

:func:`build_html_report` writes one HTML file that opens offline in any browser: the run's
settings and provenance, the settings that produced the figures (attack, timestep, drop
percentage, random seed, masks), the metrics table with bootstrap intervals, ROC curves,
metrics against drop percentage and timestep, the distortion figures, the mean influence
heatmap and the report JSON of the method reference (``ldminv_core.report.build_report``).
plotly.js is inlined once, with the first figure; every later figure reuses it.

:func:`per_sample_csv` gives one row per sample with its split, caption, log-volume,
distortion quartile and baseline / masked / random-drop scores at the chosen timestep.

Pure functions (no Streamlit): the numbers come from ``ldminv_core`` (masks, metrics,
report) through ``ldminv_app.compute`` and the figures from ``ldminv_app.figures``, the same
code the dashboard pages use, so the exported numbers equal those on screen.
Conventions: labels 1 = member; scores higher = member (score = -statistic).
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
import numbers
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from sklearn.exceptions import UndefinedMetricWarning

import ldminv_core
from ldminv_core import masks, metrics
from ldminv_core.errors import LdminvError, ShapeError, UnknownNameError
from ldminv_core.report import build_report
from ldminv_core.runstore import Run

from . import compute, figures

__all__ = [
    "SECTIONS",
    "CSV_COLUMNS",
    "DEFAULT_DROP_PERCENT",
    "DEFAULT_SEED",
    "build_html_report",
    "per_sample_table",
    "per_sample_csv",
    "report_filename",
    "scores_filename",
]

DEFAULT_DROP_PERCENT = 40.0
DEFAULT_SEED = 0
#: Seed of the bootstrap intervals (the dashboard's metrics table uses the same one).
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95

#: Sections of the HTML report: element id -> heading, in document order.
SECTIONS: dict[str, str] = {
    "run-settings": "Run settings",
    "figure-settings": "Settings of the figures",
    "metrics": "Metrics",
    "roc": "ROC curves",
    "drop-sweep": "AUROC and TPR@1%FPR vs drop percentage",
    "timesteps": "Metrics vs timestep",
    "log-volume": "Log-volume: members vs held-out",
    "quartiles": "AUROC by distortion quartile",
    "influence": "Mean influence heatmap",
    "report-json": "Report JSON",
}

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
    "attack",
    "t",
    "drop_percent",
    "random_seed",
)

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


# --------------------------------------------------------------------------- scores


@dataclass
class _Scores:
    """Every score and curve the report and the CSV need, for one attack / t / drop / seed."""

    attack: str
    t_index: int | None
    t: int | None
    drop_percent: float
    seed: int
    labels: np.ndarray
    variants: dict[str, np.ndarray]  # name -> (N,) scores at t
    masked_all_t: np.ndarray | None = None  # (N, T) masked scores at every timestep
    baseline_all_t: np.ndarray | None = None  # (N, T)
    sweeps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # variant -> {metric: (K,)}


def _compute_scores(
    run: Run,
    attack: str,
    t_index: int | None,
    drop: float,
    seed: int,
    *,
    manual_mask: np.ndarray | None = None,
    include_global: bool = False,
    sweeps: bool = False,
) -> _Scores:
    labels = run.labels
    if t_index is None:
        base = np.asarray(run.stored_scores(attack), dtype=np.float64)
        return _Scores(attack, None, None, drop, seed, labels, {"baseline": base})
    terms = np.asarray(run.terms(attack))
    influence = np.asarray(run.influence, dtype=np.float32)
    baseline_all = -masks.masked_statistic(terms, None)  # (N, T)
    by_influence = masks.DropSweep.by_influence(terms, influence)
    masked_all = -by_influence.statistic(drop)  # (N, T)
    random_sweep = masks.DropSweep.random(terms, seed=seed, t_index=t_index)
    variants = {
        "baseline": baseline_all[:, t_index],
        "masked": masked_all[:, t_index],
        "random": -random_sweep.statistic(drop),
    }
    global_sweep = None
    if include_global:
        ranking = influence.mean(axis=0)
        global_sweep = masks.DropSweep.by_ranking(terms, ranking, t_index=t_index)
        variants["global"] = -global_sweep.statistic(drop)
    if manual_mask is not None:
        variants["manual"] = -masks.masked_statistic(terms[:, t_index : t_index + 1], manual_mask)[:, 0]
    out = _Scores(
        attack, t_index, run.timesteps(attack)[t_index], drop, seed, labels, variants,
        masked_all_t=masked_all, baseline_all_t=baseline_all,
    )
    if sweeps:
        out.sweeps["masked"] = compute.sweep_metrics(by_influence, labels, t_index=t_index)
        out.sweeps["random"] = compute.sweep_metrics(random_sweep, labels, t_index=None)
        if global_sweep is not None:
            out.sweeps["global"] = compute.sweep_metrics(global_sweep, labels, t_index=None)
    return out


# --------------------------------------------------------------------------- CSV


def per_sample_table(
    run: Run | str | Path,
    *,
    attack: str,
    t: int | None,
    drop_percent: float = DEFAULT_DROP_PERCENT,
    random_seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """One row per sample (run order) with its scores at timestep ``t``.

    Args:
        run: a finished :class:`~ldminv_core.runstore.Run` or its folder.
        attack: an attack of the run.
        t: a timestep of ``attack`` (its value, not its index); None for attacks without
            timesteps (PFAMI).
        drop_percent: percentage of coordinates each sample drops (its lowest influence)
            for ``masked_score``; the same count at random (seeded) for ``random_score``.
        random_seed: seed of the random drop.

    Returns:
        DataFrame of N rows with the columns :data:`CSV_COLUMNS`: ``distortion_quartile``
        1..4 (1 = lowest log-volume, the groups of the report), ``baseline_score`` =
        -sum of all terms at t, ``masked_score`` / ``random_score`` = -masked statistic (NaN
        for attacks that cannot be masked), ``rank_baseline`` 1 = most member-like (ties by
        row order), then the settings that produced the scores.
    """
    run = _as_run(run)
    attack = _check_attack(run, attack)
    t_index = _check_t(run, attack, t)
    drop = _check_drop(drop_percent)
    seed = _check_nonneg_int(random_seed, "random_seed")
    sc = _compute_scores(run, attack, t_index, drop, seed)
    n = len(run)
    nan = np.full(n, np.nan)
    samples = run.samples
    captions = samples["caption"] if "caption" in samples.columns else pd.Series([None] * n)
    base = sc.variants["baseline"]
    table = pd.DataFrame(
        {
            "sample_id": samples["sample_id"].to_numpy(),
            "path": samples["path"].astype(str).to_numpy(),
            "split": samples["split"].astype(str).to_numpy(),
            "caption": [None if c is None or (isinstance(c, float) and math.isnan(c)) else str(c) for c in captions],
            "log_volume": run.log_volume,
            "distortion_quartile": compute.quartile_index(run.log_volume) + 1,
            "baseline_score": base,
            "masked_score": sc.variants.get("masked", nan),
            "random_score": sc.variants.get("random", nan),
            "rank_baseline": _ranks(base),
            "attack": attack,
            "t": pd.array([sc.t] * n, dtype="Int64"),
            "drop_percent": drop,
            "random_seed": seed,
        },
        columns=list(CSV_COLUMNS),
    )
    return table


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every score, 1 = highest (ties by row order, as ``compute.rank_of``)."""
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
) -> str:
    """:func:`per_sample_table` as CSV text (header row, N rows, full float precision)."""
    return per_sample_table(run, attack=attack, t=t, drop_percent=drop_percent, random_seed=random_seed).to_csv(
        index=False
    )


# --------------------------------------------------------------------------- file names


def _safe_name(run: Run | str | Path) -> str:
    name = Path(run.path if isinstance(run, Run) else run).name or "run"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def report_filename(run: Run | str | Path) -> str:
    """``ldminv-report-<run folder name>.html``."""
    return f"ldminv-report-{_safe_name(run)}.html"


def scores_filename(run: Run | str | Path) -> str:
    """``ldminv-scores-<run folder name>.csv``."""
    return f"ldminv-scores-{_safe_name(run)}.csv"


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
            config={"displaylogo": False, "responsive": True},
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
            rows.append((f"attack {name}", f"one score per sample (not maskable); timesteps "
                                           f"{_timesteps_text(spec.get('timesteps', []))}"))
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
    per_channel = ", ".join(f"c{i}: {int(keep[i].sum())}" for i in range(c))
    text = f"keeps {int(keep.sum())} of {keep.size} coordinates ({per_channel})"
    if 0 < keep.sum() <= 32:
        coords = [f"({ch}, {r}, {col})" for ch, r, col in zip(*np.nonzero(keep))]
        text += "; kept (channel, row, col): " + " ".join(coords)
    return text


def _metrics_table(table: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=pd.Index(table.index, name="variant"))
    for m, label in _METRIC_LABELS.items():
        out[label] = [_fmt(v) for v in table[m]]
        out[f"{label} {int(CI_LEVEL * 100)}% CI"] = [
            "–" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.4f}, {hi:.4f}]"
            for lo, hi in zip(table[f"{m}_lo"], table[f"{m}_hi"])
        ]
    return out.reset_index()


def _roc_figures(sc: _Scores, fig: _FigureWriter) -> str:
    curves, aurocs = {}, {}
    for name, s in sc.variants.items():
        c = metrics.roc(s, sc.labels)
        curves[name] = (c.fpr, c.tpr)
        aurocs[name] = metrics.auroc(s, sc.labels)
    t_text = "" if sc.t is None else f", t = {sc.t}"
    return _row(
        fig(figures.roc_curves(curves, aurocs=aurocs, title=f"ROC{t_text}")),
        fig(figures.roc_curves(curves, aurocs=aurocs, log_scale=True, title=f"ROC (log-log){t_text}")),
    )


def _not_maskable(attack: str) -> str:
    return (f'<p class="note">{_esc(attack)} gives one score per sample: it has no timestep axis and no '
            "per-coordinate terms, so it cannot be masked.</p>")


# --------------------------------------------------------------------------- HTML report


def build_html_report(
    run: Run | str | Path,
    *,
    attack: str,
    t: int | None,
    drop_percent: float = DEFAULT_DROP_PERCENT,
    random_seed: int = DEFAULT_SEED,
    manual_mask: np.ndarray | None = None,
    include_global: bool = False,
    n_boot: int = 1000,
    title: str | None = None,
) -> str:
    """A self-contained HTML report of one attack of a run (works offline).

    Args:
        run: a finished :class:`~ldminv_core.runstore.Run` or its folder.
        attack: an attack of the run.
        t: a timestep of ``attack`` (its value); None for attacks without timesteps (PFAMI).
        drop_percent: per-sample drop percentage of the masked variant (and count of the
            random-drop control), in [0, 100).
        random_seed: seed of the random-drop control.
        manual_mask: optional bool (C, h, w) keep-mask (e.g. picked on the Dimensions page),
            added as the "manual" variant.
        include_global: add the "global" variant (one mean-influence ranking for all samples).
        n_boot: stratified bootstrap replicates of the 95% intervals (0 = none).
        title: heading of the report (default: the run folder's name).

    Returns:
        The HTML document as a string; the sections are :data:`SECTIONS` (element ids) and the
        tables carry the ids ``run-settings-table``, ``figure-settings-table``,
        ``metrics-table``, ``quartile-table`` (and ``timestep-table`` for maskable attacks).

    Raises:
        RunError (run folder), UnknownNameError (attack, t), ShapeError (manual_mask),
        LdminvError (drop_percent, random_seed, n_boot).
    """
    run = _as_run(run)
    attack = _check_attack(run, attack)
    t_index = _check_t(run, attack, t)
    drop = _check_drop(drop_percent)
    seed = _check_nonneg_int(random_seed, "random_seed")
    n_boot = _check_nonneg_int(n_boot, "n_boot")
    keep = _check_manual(run, manual_mask)
    if keep is not None and t_index is None:
        raise LdminvError(f"manual_mask: attack {attack!r} cannot be masked; expected None")
    include_global = bool(include_global) and t_index is not None

    sc = _compute_scores(run, attack, t_index, drop, seed, manual_mask=keep, include_global=include_global,
                         sweeps=True)
    labels = run.labels
    c, h, w = run.latent_shape
    d = c * h * w
    name = Path(run.path).name
    fig = _FigureWriter()
    parts: list[str] = []
    maskable = t_index is not None
    timesteps = run.timesteps(attack) if maskable else []
    best_index = None
    if maskable:
        base_t = compute.per_timestep_metrics(sc.baseline_all_t, labels)
        best_index = metrics.best_t_index(base_t["auroc"]) if np.isfinite(base_t["auroc"]).any() else 0

    # ---- run settings
    parts.append(_section("run-settings", _kv_table(_run_rows(run), table_id="run-settings-table")))

    # ---- settings of the figures
    generated = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    fig_rows: list[tuple[str, Any]] = [("attack", attack)]
    if maskable:
        best_note = " (the best baseline AUROC)" if t_index == best_index else f" (best baseline AUROC at t = {timesteps[best_index]})"
        fig_rows += [
            ("timestep t", f"{sc.t}{best_note}"),
            ("drop percentage", f"{drop:g} % per sample, lowest influence first "
                                f"({masks.drop_count(d, drop)} of {d} coordinates dropped)"),
            ("random seed", f"{seed} (random-drop control: the same count dropped uniformly at random)"),
            ("global ranking mask", "included (mean influence over samples)" if include_global else "not included"),
            ("manual mask", _manual_text(keep) if keep is not None else "not included"),
        ]
    else:
        fig_rows += [("timestep t", "none (one score per sample)"), ("masks", "not applicable")]
    fig_rows += [
        ("variants", ", ".join(sc.variants)),
        ("bootstrap", f"{n_boot} stratified replicates, {int(CI_LEVEL * 100)}% intervals, seed {BOOTSTRAP_SEED}"
         if n_boot else "none"),
        ("score convention", "score = −statistic, higher = member; statistic = Σ mask_i · term_i(t)"),
        ("report generated", f"{generated} by ldminv {ldminv_core.__version__}"),
    ]
    parts.append(_section("figure-settings", _kv_table(fig_rows, table_id="figure-settings-table")))

    # ---- metrics table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        table = compute.variant_metrics(sc.variants, labels, n_boot=n_boot, level=CI_LEVEL, seed=BOOTSTRAP_SEED)
    t_text = f" at t = {sc.t}" if maskable else ""
    parts.append(_section(
        "metrics",
        f'<p class="note">{_esc(attack)}{t_text}; {run.n_members} members, {run.n_heldout} held-out. '
        "TPR@1%FPR = the largest TPR among ROC points with FPR ≤ 1%; ASR = max over thresholds of "
        "(TPR + 1 − FPR) / 2. With few held-out samples the low-FPR metrics rest on a handful of images: "
        "read them with their intervals.</p>"
        + _table(_metrics_table(table), table_id="metrics-table"),
    ))

    # ---- ROC
    parts.append(_section("roc", _roc_figures(sc, fig)))

    # ---- drop sweep
    if maskable:
        percents = compute.DROP_PERCENTS
        sweep_body = _row(
            fig(figures.metric_vs_drop(percents, {k: v["auroc"] for k, v in sc.sweeps.items()}, ylabel="AUROC",
                                       current=drop, title=f"AUROC vs drop percentage, t = {sc.t}")),
            fig(figures.metric_vs_drop(percents, {k: v["tpr_at_1fpr"] for k, v in sc.sweeps.items()},
                                       ylabel="TPR@1%FPR", current=drop,
                                       title=f"TPR@1%FPR vs drop percentage, t = {sc.t}")),
        )
        sweep_df = pd.DataFrame({"drop %": list(percents)})
        for k, v in sc.sweeps.items():
            sweep_df[f"AUROC ({k})"] = [_fmt(x) for x in v["auroc"]]
            sweep_df[f"TPR@1%FPR ({k})"] = [_fmt(x) for x in v["tpr_at_1fpr"]]
        sweep_body += "<details><summary>Values</summary>" + _table(sweep_df, table_id="drop-table") + "</details>"
    else:
        sweep_body = _not_maskable(attack)
    parts.append(_section("drop-sweep", sweep_body))

    # ---- timesteps
    if maskable:
        masked_t = compute.per_timestep_metrics(sc.masked_all_t, labels)
        body = _row(
            fig(figures.metric_vs_timestep(timesteps, {"baseline": base_t["auroc"], "masked": masked_t["auroc"]},
                                           ylabel="AUROC", selected_t=sc.t, title=f"AUROC vs timestep (drop {drop:g} %)")),
            fig(figures.metric_vs_timestep(timesteps, {"baseline": base_t["tpr_at_1fpr"],
                                                       "masked": masked_t["tpr_at_1fpr"]},
                                           ylabel="TPR@1%FPR", selected_t=sc.t,
                                           title=f"TPR@1%FPR vs timestep (drop {drop:g} %)")),
        )
        t_df = pd.DataFrame({"t": timesteps})
        for label, src in (("baseline", base_t), ("masked", masked_t)):
            for m in ("auroc", "tpr_at_1fpr", "asr"):
                t_df[f"{_METRIC_LABELS[m]} ({label})"] = [_fmt(x) for x in src[m]]
        body += (f'<p class="note">Best baseline AUROC {_fmt(base_t["auroc"][best_index])} at t = '
                 f"{timesteps[best_index]}; choosing t on the evaluation set itself (as the paper does) is "
                 "optimistic.</p>")
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
    quart = compute.quartile_index(lv)
    edges = compute.quartile_edges(lv, quart)
    counts = np.bincount(quart, minlength=4)
    q_base = compute.quartile_aurocs(sc.variants["baseline"], labels, quart)
    q_df = pd.DataFrame({
        "quartile": [f"Q{i + 1}" for i in range(4)],
        "n": counts,
        "members": [int(labels[quart == i].sum()) for i in range(4)],
        "log-volume range": [
            f"{_fmt(lv[quart == i].min(), 3)} .. {_fmt(lv[quart == i].max(), 3)}" if counts[i] else "–"
            for i in range(4)
        ],
        "AUROC (baseline)": [_fmt(v) for v in q_base],
    })
    if maskable:
        q_df[f"AUROC (masked {drop:g} %)"] = [_fmt(v) for v in compute.quartile_aurocs(sc.variants["masked"], labels, quart)]
    q_body = fig(figures.quartile_auroc_bars(q_base, edges=edges, counts=counts,
                                             title=f"{attack} baseline AUROC by distortion quartile{t_text}"))
    if maskable and len(timesteps) > 1:
        q_all = compute.quartile_aurocs(sc.baseline_all_t, labels, quart)
        q_body = _row(q_body, fig(figures.quartile_auroc_vs_timestep(timesteps, q_all, selected_t=sc.t)))
    q_body += _table(q_df, table_id="quartile-table")
    q_body += '<p class="note">Q1 = least distorted (lowest log-volume), Q4 = most distorted.</p>'
    parts.append(_section("quartiles", q_body))

    # ---- mean influence heatmap
    mean_inf = np.asarray(run.influence, dtype=np.float64).mean(axis=0)
    parts.append(_section(
        "influence",
        fig(figures.channel_heatmaps(mean_inf, title="Mean influence over samples, ½·log G_ii, per latent channel"))
        + '<p class="note">Influence of coordinate i = ½·log‖∂D/∂z_i‖²: how much the image moves when z_i moves. '
        "The masked variant drops each sample's own lowest-influence coordinates.</p>",
    ))

    # ---- report JSON
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        report = build_report(run, attack=attack, drop=drop, seed=seed)
    parts.append(_section(
        "report-json",
        '<p class="note">The report of <code>python -m ldminv_core report RUN --json</code> for this attack, '
        f"drop {drop:g} %, seed {seed}; its baseline / masked / random metrics are at best_t (chosen on the "
        "evaluation set), which may differ from the timestep of the figures above.</p>"
        f'<pre id="report-json-text">{_esc(json.dumps(report, indent=2))}</pre>',
    ))

    heading = title or f"Membership-leakage report: {name}"
    toc = "".join(f'<li><a href="#{sid}">{_esc(text)}</a></li>' for sid, text in SECTIONS.items())
    lead = (f"{_esc(attack)}" + (f", t = {sc.t}, drop {drop:g} %" if maskable else "")
            + f" · {run.n_members} members / {run.n_heldout} held-out · generated {_esc(generated)}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_esc(heading)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(heading)}</h1>\n<p class=\"lead\">{lead}</p>\n<nav><ol>{toc}</ol></nav>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )
