"""What every section of the HTML report reads: the checked arguments, the run, the evaluation of
the attack under the protocol and its result, and the figure writer (plotly.js inlined once)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ldminv_core import masks
from ldminv_core.errors import LdminvError
from ldminv_core.evaluation import ArmResult, AttackEvaluation, Evaluation
from ldminv_core.runs import Run

from .inputs import (DEFAULT_DROP_PERCENT, as_run, check_attack, check_drop, check_manual, check_nonneg_int, check_t,
                     evaluation)
from .markup import FigureWriter

__all__ = ["ReportContext", "prepare", "collect_arms"]


@dataclass
class ReportContext:
    """One attack of one run under one protocol, as the report's sections read it.

    ``drop`` is the masked arm's drop percentage (None under ``honest`` = chosen per fold),
    ``curve_drop`` the drop of the curves (``drop``, else the default 40); ``t_index`` the index of
    the curves' timestep (None for attacks without timesteps); ``keep`` the manual (C, h, w)
    keep-mask. ``arms`` / ``roc_scores`` (filled by :func:`collect_arms`) hold every arm shown and
    its scores (N,) for the ROC curves."""

    run: Run
    attack: str
    ev: Evaluation
    res: AttackEvaluation
    drop: float | None
    curve_drop: float
    seed: int
    n_boot: int
    keep: np.ndarray | None
    include_global: bool
    t_index: int | None
    fig: FigureWriter = field(default_factory=FigureWriter)
    arms: list[ArmResult] = field(default_factory=list)
    roc_scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def maskable(self) -> bool:
        return self.run.is_maskable(self.attack)

    @property
    def honest(self) -> bool:
        return self.res.protocol.name == "honest"

    @property
    def timesteps(self) -> list[int]:
        return list(self.res.timesteps)

    @property
    def t_fig(self) -> int | None:
        """The timestep (its value) of the drop and timestep curves."""
        return self.timesteps[self.t_index] if self.maskable else None


def prepare(run: Run | str | Path, *, attack: str, t: int | None, protocol: str, folds: int | None,
            drop_percent: float | None, random_seed: int, manual_mask: np.ndarray | None, include_global: bool,
            n_boot: int) -> ReportContext:
    """Check the arguments of :func:`~ldminv_app.html_report.document.build_html_report` and
    evaluate the attack under the protocol (options as there)."""
    run = as_run(run)
    attack = check_attack(run, attack)
    t_index = check_t(run, attack, t) if t is not None or not run.is_maskable(attack) else None
    drop = None if drop_percent is None else check_drop(drop_percent)
    seed = check_nonneg_int(random_seed, "random_seed")
    n_boot = check_nonneg_int(n_boot, "n_boot")
    keep = check_manual(run, manual_mask)
    maskable = run.is_maskable(attack)
    if keep is not None and not maskable:
        raise LdminvError(f"manual_mask: attack {attack!r} cannot be masked; expected None")
    ev = evaluation(run, attack, protocol, folds, seed, n_boot)
    res = ev.result(drop)
    if maskable and t_index is None:
        t_index = ev.headline_t_index()
    return ReportContext(run=run, attack=attack, ev=ev, res=res, drop=drop,
                         curve_drop=DEFAULT_DROP_PERCENT if drop is None else drop, seed=seed, n_boot=n_boot,
                         keep=keep, include_global=include_global, t_index=t_index)


def collect_arms(ctx: ReportContext) -> None:
    """Fill ``ctx.arms`` and ``ctx.roc_scores``: baseline, masked and random, then the global
    ranking and the manual mask when asked for (maskable attacks only)."""
    ev, drop = ctx.ev, ctx.drop
    ctx.arms = [a for a in (ctx.res.baseline, ctx.res.masked, ctx.res.random) if a is not None]
    ctx.roc_scores = {"baseline": ev.scores("baseline")}
    if not ctx.maskable:
        return
    ctx.roc_scores["masked"] = ev.scores("masked", drop)
    ctx.roc_scores["random"] = ev.scores("random", drop)
    if ctx.include_global:
        gstat = ev.global_stat(ctx.curve_drop)
        ctx.arms.append(ev.custom_arm("global", gstat))
        ctx.roc_scores["global"] = ev.custom_scores(gstat)
    if ctx.keep is not None:
        mstat = masks.masked_statistic(ev.terms(), ctx.keep)
        ctx.arms.append(ev.custom_arm("manual", mstat))
        ctx.roc_scores["manual"] = ev.custom_scores(mstat)
