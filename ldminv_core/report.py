"""The membership-inference report of a finished run (the JSON of the method reference, section 3).

For every attack of the run (or the one asked for), :func:`build_report` gives:

- ``per_t``: AUROC and TPR at 1% FPR of the baseline score (-sum of all terms) at each timestep;
- ``best_t``: the timestep of the best baseline AUROC, chosen on the evaluation set itself
  (the paper's optimistic protocol);
- at ``best_t``: ``baseline`` (AUROC, TPR@1%FPR, ASR, bootstrap 95% AUROC interval),
  ``masked`` (each sample drops its own ``drop`` % lowest-influence coordinates from the
  statistic) and ``random`` (the same number of coordinates dropped at random, seeded; the
  control);
- ``quartiles``: samples sorted by decoder log-volume (stable sort) and split into four
  near-equal groups (``numpy.array_split``), low to high, with the baseline AUROC in each.

PFAMI stores one score per sample: its ``baseline`` and ``quartiles`` are given and
``best_t``, ``per_t``, ``masked``, ``random`` are null. Every metric comes from
:mod:`ldminv_core.metrics` and every mask from :mod:`ldminv_core.masks`. NaN (a metric that is
undefined, e.g. a quartile holding one class only) is written as JSON null.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LdminvError, UnknownNameError
from .masks import masked_statistic, percentile_drop_mask, random_drop_mask
from .metrics import auroc, auroc_many, best_t_index, bootstrap_ci, evaluate, tpr_at_fpr
from .runstore import Run

__all__ = ["build_report", "format_report", "CI_LEVEL", "N_BOOT"]

CI_LEVEL = 0.95
N_BOOT = 1000


def _num(x: Any) -> float | None:
    """float, or None for NaN/inf (JSON has no NaN)."""
    v = float(x)
    return v if math.isfinite(v) else None


def _metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    m = evaluate(scores, labels)
    return {"auroc": _num(m.auroc), "tpr_at_1fpr": _num(m.tpr_at_1fpr), "asr": _num(m.asr)}


def quartile_groups(log_volume: np.ndarray) -> list[np.ndarray]:
    """Sample indices of the four log-volume quartiles, low to high: a stable argsort split
    into four near-equal parts by ``numpy.array_split``. ``log_volume`` (N,) -> 4 index arrays."""
    order = np.argsort(np.asarray(log_volume, dtype=np.float64), kind="stable")
    return np.array_split(order, 4)


def _quartiles(scores: np.ndarray, labels: np.ndarray, log_volume: np.ndarray) -> list[dict]:
    out = []
    for q, idx in enumerate(quartile_groups(log_volume), start=1):
        y = labels[idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a single-class quartile is reported as null
            value = auroc(scores[idx], y) if len(idx) else float("nan")
        out.append(
            {
                "q": q,
                "auroc": _num(value),
                "n": int(len(idx)),
                "n_members": int(y.sum()),
                "log_volume_min": _num(log_volume[idx].min()) if len(idx) else None,
                "log_volume_max": _num(log_volume[idx].max()) if len(idx) else None,
            }
        )
    return out


def _attack_report(run: Run, name: str, *, drop: float, seed: int) -> dict:
    labels = run.labels
    log_volume = run.log_volume
    if not run.is_maskable(name):
        scores = run.stored_scores(name)
        base = _metrics(scores, labels)
        base["auroc_ci"] = [_num(v) for v in bootstrap_ci(scores, labels, metric="auroc", n_boot=N_BOOT, level=CI_LEVEL, seed=seed)]
        return {
            "best_t": None,
            "per_t": None,
            "baseline": base,
            "masked": None,
            "random": None,
            "quartiles": _quartiles(scores, labels, log_volume),
        }
    terms = run.terms(name)
    timesteps = run.timesteps(name)
    scores_t = -masked_statistic(terms, None)  # (N, T)
    aurocs = np.atleast_1d(auroc_many(scores_t.T, labels))
    tprs = [tpr_at_fpr(scores_t[:, i], labels, max_fpr=0.01) for i in range(len(timesteps))]
    bi = best_t_index(aurocs)
    scores = scores_t[:, bi]
    base = _metrics(scores, labels)
    base["auroc_ci"] = [_num(v) for v in bootstrap_ci(scores, labels, metric="auroc", n_boot=N_BOOT, level=CI_LEVEL, seed=seed)]
    at_best = terms[:, bi : bi + 1]
    keep = percentile_drop_mask(run.influence, drop)
    masked = -masked_statistic(at_best, keep)[:, 0]
    rand_keep = random_drop_mask(keep.shape, drop, seed=seed)
    rand = -masked_statistic(at_best, rand_keep)[:, 0]
    return {
        "best_t": int(timesteps[bi]),
        "per_t": {
            "t": [int(t) for t in timesteps],
            "auroc": [_num(a) for a in aurocs],
            "tpr_at_1fpr": [_num(v) for v in tprs],
        },
        "baseline": base,
        "masked": {"drop_percent": float(drop), **_metrics(masked, labels)},
        "random": {"drop_percent": float(drop), "seed": int(seed), **_metrics(rand, labels)},
        "quartiles": _quartiles(scores, labels, log_volume),
    }


def build_report(run: Run | str | Path, *, attack: str | None = None, drop: float = 40.0, seed: int = 0) -> dict:
    """The report JSON object of a finished run.

    Args:
        run: a :class:`~ldminv_core.runstore.Run` or the path of a run folder.
        attack: report only this attack (default: every attack of the run).
        drop: percentage of coordinates dropped per sample for ``masked`` / ``random``.
        seed: seed of the random-drop control and of the bootstrap.

    Returns:
        ``{"run", "n_members", "n_heldout", "latent_shape", "drop_percent",
        "best_t_selection", "attacks": {name: {...}}}`` as described in the module docstring;
        JSON-serialisable (NaN -> None).

    Raises:
        RunError: the folder is not a finished run. UnknownNameError: ``attack`` not in the run.
    """
    if not isinstance(run, Run):
        run = Run.open(run)
    if isinstance(drop, bool) or not isinstance(drop, (int, float, np.integer, np.floating)) or not 0 <= float(drop) < 100:
        raise LdminvError(f"drop: expected a percentage in [0, 100), got {drop!r}")
    names = run.attacks
    if attack is not None:
        if attack not in names:
            raise UnknownNameError(f"attack: {attack!r} is not in run {run.path}; it holds {names}")
        names = [attack]
    return {
        "run": str(run.path),
        "n_members": run.n_members,
        "n_heldout": run.n_heldout,
        "latent_shape": list(run.latent_shape),
        "drop_percent": float(drop),
        "best_t_selection": "evaluation set (optimistic, as in the paper)",
        "attacks": {name: _attack_report(run, name, drop=float(drop), seed=int(seed)) for name in names},
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def format_report(report: dict) -> str:
    """A readable text table of :func:`build_report`'s dict."""
    lat = "x".join(map(str, report["latent_shape"]))
    lines = [
        f"run {report.get('run', '')}",
        f"{report['n_members']} members, {report['n_heldout']} held-out, latents {lat}; "
        f"metrics in % (AUROC, ASR, TPR at 1% FPR); best t chosen on the evaluation set",
        "",
    ]
    header = ("attack", "best t", "variant", "AUROC", "95% CI", "ASR", "TPR@1%FPR")
    rows: list[tuple[str, ...]] = []
    for name, a in report["attacks"].items():
        best = "-" if a["best_t"] is None else str(a["best_t"])
        b = a["baseline"]
        ci = b.get("auroc_ci") or [None, None]
        ci_text = "-" if None in ci else f"{_pct(ci[0])}-{_pct(ci[1])}"
        rows.append((name, best, "baseline", _pct(b["auroc"]), ci_text, _pct(b["asr"]), _pct(b["tpr_at_1fpr"])))
        for key in ("masked", "random"):
            m = a.get(key)
            if m is not None:
                label = f"{'drop' if key == 'masked' else 'random drop'} {m['drop_percent']:g}%"
                rows.append(("", "", label, _pct(m["auroc"]), "", _pct(m["asr"]), _pct(m["tpr_at_1fpr"])))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda r: "  ".join(v.ljust(w) if i < 3 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
    lines += [fmt(header), "  ".join("-" * w for w in widths), *[fmt(r) for r in rows]]
    lines += ["", "AUROC (%) by decoder log-volume quartile (Q1 = least distorted):"]
    qh = ("attack", "Q1", "Q2", "Q3", "Q4")
    qrows = [(name, *[_pct(q["auroc"]) for q in a["quartiles"]]) for name, a in report["attacks"].items()]
    qw = [max(len(h), *(len(r[i]) for r in qrows)) if qrows else len(h) for i, h in enumerate(qh)]
    qfmt = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, qw)))
    lines += [qfmt(qh), "  ".join("-" * w for w in qw), *[qfmt(r) for r in qrows]]
    return "\n".join(lines)
