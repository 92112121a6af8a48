"""The Compare page's parts: the runs on disk to pick from, the cached comparison
(:func:`ldminv_core.evaluation.compare.compare_runs`, keyed by every run's path and run.json
stamp, the protocol, folds and replicates), and its tables and exposure gallery. Only formats
what the evaluation layer returns.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st

from ldminv_core.choices import attack_label
from ldminv_core.evaluation import make_protocol
from ldminv_core.evaluation.compare import RunComparison, compare_runs
from ldminv_core.evaluation.wording import finding_title, metric_title
from ldminv_core.runs import default_runs_root, list_runs

from . import cache

__all__ = ["complete_runs", "comparison", "metrics_table", "findings_table", "exposure_gallery"]

_GALLERY = 24


def complete_runs(root: Path | None = None) -> list[str]:
    """The folders of the complete runs under the runs folder (the app's run catalog)."""
    return [str(i.path) for i in list_runs(root or default_runs_root()) if i.status == "complete"]


@st.cache_resource(max_entries=8, show_spinner=False)
def _comparison(keys: tuple[tuple[str, int], ...], protocol: str, folds: int, n_boot: int) -> tuple[RunComparison, ...]:
    runs = [cache._open_run(path, stamp) for path, stamp in keys]
    return compare_runs(runs, protocol=make_protocol(protocol, folds=folds), n_boot=n_boot)


def comparison(paths: list[str], *, protocol: str, folds: int) -> tuple[RunComparison, ...]:
    """Every later run of ``paths`` against the first under the session's protocol (cached)."""
    keys = tuple(cache.run_key(p) for p in paths)
    return _comparison(keys, protocol, int(folds) if protocol == "honest" else 5, cache.PAGE_N_BOOT)


def _v(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"


def _ci(ci: tuple[float, float], signed: bool = False) -> str:
    if not all(math.isfinite(c) for c in ci):
        return "n/a"
    f = "+.3f" if signed else ".3f"
    return f"[{ci[0]:{f}}, {ci[1]:{f}}]"


def metrics_table(cmp: RunComparison) -> pd.DataFrame:
    """One row per attack, arm and metric: A, B (each with its interval), B - A, paired CI, verdict."""
    return pd.DataFrame([{
        "attack": attack_label(m.attack), "arm": m.arm, "metric": metric_title(m.metric),
        "A": _v(m.a), "A CI": _ci(m.ci_a), "B": _v(m.b), "B CI": _ci(m.ci_b),
        "B − A": "n/a" if not math.isfinite(m.difference) else f"{m.difference:+.3f}",
        "paired CI": _ci(m.ci, True), "verdict": m.verdict} for m in cmp.metrics])


def findings_table(cmp: RunComparison) -> pd.DataFrame:
    """One row per attack and finding: each run's estimate and verdict, B - A, paired CI, verdict."""
    return pd.DataFrame([{
        "attack": attack_label(f.attack), "finding": finding_title(f.id), "A": _v(f.a), "A verdict": f.verdict_a,
        "B": _v(f.b), "B verdict": f.verdict_b,
        "B − A": "n/a" if not math.isfinite(f.difference) else f"{f.difference:+.3f}",
        "paired CI": _ci(f.ci, True), "verdict": f.verdict, "note": f.note} for f in cmp.findings])


def exposure_gallery(cmp: RunComparison, attack: str) -> None:
    """The images of ``attack`` flagged at the 1%-FPR threshold in B and not in A (thumbnails),
    and the count of those no longer flagged."""
    e = next(x for x in cmp.exposure if x.attack == attack)
    st.markdown(f"**{attack_label(attack)}**: flagged {int(e.flagged_a.sum())} in A, {int(e.flagged_b.sum())} in "
                f"B; **{e.newly_exposed.size} newly exposed**, {e.no_longer_exposed.size} no longer exposed.")
    ids = [int(i) for i in e.newly_exposed[:_GALLERY]]
    if not ids:
        return
    cols = st.columns(min(8, len(ids)))
    for k, i in enumerate(ids):
        split = "member" if cmp.labels[i] else "held-out"
        img = cache.thumbnail(cmp.paths[i])
        with cols[k % len(cols)]:
            if img is None:
                st.caption(f"#{i} ({split}): image missing")
            else:
                st.image(img, caption=f"#{i} · {split}")
    if e.newly_exposed.size > _GALLERY:
        st.caption(f"... and {e.newly_exposed.size - _GALLERY} more (sample ids in the CLI's --json output).")
