"""The Findings page's neighbours, computed in the background: the sections the sidebar's next
attack or protocol switch will ask for.

The Findings page draws the selected attack's headline at once and its heavier sections (the
findings with the shift check, every attack's verdicts, the agreement, the exposure list) from
:mod:`ldminv_app.lazy`'s store. A section that is not in the store yet is computed after the switch
and the page reruns when it lands: measured on the demo, an attack switch was idle after 1.66 s,
0.92 s of it waiting for the new attack's sections. After each Findings run, :func:`warm_neighbours`
queues on the low-priority warm-up thread (:mod:`ldminv_app.warm`) the sections of

1. the selected attack under every other protocol (its findings, and the section of the tab open
   below them: every attack's verdicts, the agreement or the exposure list), then
2. every other attack under the session's protocol (its findings, and its exposure list when that
   tab is open; 0.3-0.5 s each),
3. under ``honest``, the selected attack at the fold counts one step away (its findings job computes
   the evaluation's result, which the headline of a fold change reads),

into the same store (:meth:`ldminv_app.lazy.Results.fill`), so that the switch draws them in its
first run. Every job is the page's own (:func:`ldminv_app.findings_view.findings_job`, ...), over
the same cached evaluations, so the numbers are the page's.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from . import agreement_view, cache, exposure_view, findings_view, lazy, state, warm

if TYPE_CHECKING:
    from ldminv_core.runs import Run

__all__ = ["neighbour_jobs", "warm_neighbours"]


def neighbour_folds(folds: int) -> list[int]:
    """The fold counts one step of the sidebar's folds control away from ``folds`` (up first)."""
    low, high = state.FOLDS_RANGE
    return [k for k in (folds + 1, folds - 1) if low <= k <= high]


def _tab_jobs(run: Run, attack: str, evaluations: dict, tab: str) -> list[tuple[Hashable, Callable[[], Any]]]:
    """The section job of the open tab below the findings (``evaluations``: attack -> Evaluation)."""
    if tab == findings_view.EVERY_ATTACK_TAB:
        return [findings_view.every_attack_job(run, evaluations=evaluations)]
    if tab == findings_view.AGREEMENT_TAB and len(run.attacks) > 1:
        return [agreement_view.job(run, evaluations=evaluations)]
    if tab == findings_view.EXPOSURE_TAB:
        return [exposure_view.job(run, attack, evaluations=evaluations)]
    return []


def neighbour_jobs(run: Run, attack: str, *, protocol: str, folds: int,
                   tab: str = findings_view.EVERY_ATTACK_TAB) -> list[tuple[Hashable, Callable[[], Any]]]:
    """The (key, callable) section jobs of the Findings page's neighbours: ``attack`` under the other
    protocols, then the other attacks under ``protocol`` (``folds``: honest's), then, under
    ``honest``, ``attack`` at the fold counts one step away (an honest evaluation per count). Each
    neighbour's findings, and the section of the open tab below them (``tab``, its label): the
    other tabs are computed when opened."""
    # 1. the cached evaluations (created here, nothing computed): attack -> protocol -> Evaluation
    by_attack = {a: cache.protocol_evaluations(run, a, folds=folds) for a in run.attacks}
    protocols = list(by_attack[attack])
    jobs: list[tuple[Hashable, Callable[[], Any]]] = []
    # 2. this attack, the other protocols: what a protocol switch asks for anew (the longer wait)
    for name in protocols:
        if name == protocol:
            continue
        evs = {a: by_attack[a][name] for a in run.attacks}
        jobs.append(findings_view.findings_job(run, attack, evs[attack]))
        jobs += _tab_jobs(run, attack, evs, tab)
    # 3. the other attacks, this protocol: what an attack switch asks for anew (the every-attack
    # and agreement sections are the same for every attack)
    same = {a: by_attack[a][protocol] for a in run.attacks}
    for other in run.attacks:
        if other != attack:
            jobs.append(findings_view.findings_job(run, other, same[other]))
            if tab == findings_view.EXPOSURE_TAB:
                jobs += _tab_jobs(run, other, same, tab)
    # 4. honest only: this attack at the neighbouring fold counts (what the folds control asks for)
    if protocol == "honest":
        for k in neighbour_folds(folds):
            evs = {a: cache.protocol_evaluations(run, a, folds=k)["honest"] for a in run.attacks}
            jobs.append(findings_view.findings_job(run, attack, evs[attack]))
            jobs += _tab_jobs(run, attack, evs, tab)
    return jobs


def warm_neighbours(run: Run, attack: str, *, protocol: str, folds: int, tab: str = findings_view.EVERY_ATTACK_TAB,
                    into: warm.Warmer | None = None) -> None:
    """Queue :func:`neighbour_jobs` on the warm-up thread, behind what the pages asked for; a newer
    call for this run replaces the jobs not started yet. Returns at once."""
    store = lazy.results()
    w = warm.warmer() if into is None else into
    tasks = [(("findings-section", key), lambda key=key, fn=fn: store.fill(key, fn))
             for key, fn in neighbour_jobs(run, attack, protocol=protocol, folds=folds, tab=tab)]
    w.submit(tasks, front=False, group=("findings-neighbours", *cache.run_key(run.path)))
