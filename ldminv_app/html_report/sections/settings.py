"""The settings sections of the HTML report: the run's settings and provenance
(:func:`run_rows`), and the settings that produced the numbers (:func:`figure_rows`: protocol,
attack, t, drop percentage, random seeds, masks, bootstrap)."""
from __future__ import annotations

from typing import Any

import numpy as np

import ldminv_core
from ldminv_core import masks
from ldminv_core.choices import attack_label
from ldminv_core.formatting import format_percent, timesteps_text
from ldminv_core.runs import Run

from ... import figures
from ..context import ReportContext
from ..markup import CI_LEVEL

__all__ = ["run_rows", "manual_text", "figure_rows"]


def run_rows(run: Run) -> list[tuple[str, Any]]:
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
            rows.append((f"attack {name}",
                         f"timesteps {timesteps_text(spec.get('timesteps', []))}; p = {spec.get('p')}"))
        else:
            ts = spec.get("timesteps") or []
            rows.append((f"attack {name}", "one score per sample (not maskable)"
                         + (f"; timesteps {timesteps_text(ts)}" if ts else "")))
    rows += [
        ("device / dtype", f"{s.get('device', '?')} / {s.get('dtype', '?')}"),
        ("created", s.get("created")),
        ("finished", s.get("finished")),
    ]
    for pkg in ("ldminv", "torch", "diffusers", "transformers", "numpy", "python"):
        if pkg in versions:
            rows.append((f"{pkg} version", versions[pkg]))
    return rows


def manual_text(keep: np.ndarray) -> str:
    c = keep.shape[0]
    per_channel = ", ".join(f"ch {i}: {int(keep[i].sum())}" for i in range(c))
    text = f"keeps {int(keep.sum())} of {keep.size} coordinates ({per_channel})"
    if 0 < keep.sum() <= 32:
        coords = [figures.coord_label(ch, r, col) for ch, r, col in zip(*np.nonzero(keep))]
        text += "; kept (channel, row y, column x): " + ", ".join(coords)
    return text


def _mask_rows(ctx: ReportContext) -> list[tuple[str, Any]]:
    """t, drop percentage, random seeds and the extra masks of a maskable attack."""
    res, drop, d = ctx.res, ctx.drop, int(np.prod(ctx.run.latent_shape))
    rule = ("np.percentile threshold" if res.protocol.name == "paper"
            else f"{masks.drop_count(d, ctx.curve_drop)} of {d} coordinates dropped")
    return [
        ("timestep t", f"{res.baseline.t_text} (metrics); t = {ctx.t_fig} (drop curves)"),
        ("drop percentage", (f"{format_percent(drop, sep=' ')} per sample, lowest influence first ({rule})"
                             if drop is not None
                             else f"chosen on the other folds: {res.masked.drop_text}" if res.masked else "–")),
        ("random seed", f"{ctx.seed} (random control: seeds {', '.join(map(str, ctx.ev.seeds))}, reported as their "
                        "mean)"),
        ("global ranking mask", "included (mean influence over samples)" if ctx.include_global else "not included"),
        ("manual mask", manual_text(ctx.keep) if ctx.keep is not None else "not included"),
    ]


def figure_rows(ctx: ReportContext, *, generated: str) -> list[tuple[str, Any]]:
    """(setting, value) rows of the settings that produced the numbers (``ctx.arms`` collected);
    ``generated``: when the report was made (ISO 8601, UTC)."""
    res = ctx.res
    rows: list[tuple[str, Any]] = [
        ("protocol", f"{res.protocol.name}: {res.protocol.description}"),
        ("attack", f"{attack_label(ctx.attack)} ({ctx.attack})"),
    ]
    if ctx.maskable:
        rows += _mask_rows(ctx)
    else:
        rows += [("timestep t", "none (one score per sample)"), ("masks", "not applicable")]
    rows += [
        ("variants", ", ".join(a.arm for a in ctx.arms)),
        ("bootstrap", f"{ctx.n_boot} stratified replicates, {int(CI_LEVEL * 100)}% intervals, seed {ctx.seed}"
         if ctx.n_boot else "none"),
        ("score convention", "score = −statistic, higher = member; statistic = Σ mask_i · term_i(t)"),
        ("report generated", f"{generated} by ldminv {ldminv_core.__version__}"),
    ]
    return rows
