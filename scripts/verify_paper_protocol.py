"""Check ``report --protocol paper`` against an independent recomputation of the paper's conventions.

The recomputation follows the metrics block of the paper's released code (VAE2Diffusion,
``ldm_light/attack_per_dim.py``) step by step, with the same library it uses, torchmetrics
(``pip install torchmetrics``; not a dependency of ldminv): held-out images are label 1 and the
statistic, divided by its maximum, is the score; AUROC from ``BinaryAUROC``; the ROC from
``BinaryROC``; TPR@1%FPR = ``tpr[(fpr < 0.01).sum() - 1]``; ASR = ``max((tpr + 1 - fpr) / 2)``;
each metric's own maximum over t; the drop mask ``influence > np.percentile(influence, p)`` per
sample; quartiles cut at pooled ``np.percentile(log_volume, [25, 50, 75])``. It reads only the run
folder's arrays (numpy), never ldminv's evaluation code.

    python scripts/verify_paper_protocol.py RUN [--attack sima] [--drop 40] [--tol 1e-6]

Prints the largest absolute difference per quantity and exits 1 when any exceeds ``--tol`` or
when a reported best t does not attain its metric.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchmetrics.classification import BinaryAUROC, BinaryROC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldminv_core.report import build_report  # noqa: E402


def paper_metrics(stat_members: np.ndarray, stat_heldout: np.ndarray) -> tuple[float, float, float]:
    """(AUROC, TPR@1%FPR, ASR) of one timestep, as in the paper's code (float64 here)."""
    sm = torch.from_numpy(stat_members)
    sn = torch.from_numpy(stat_heldout)
    scale = torch.max(sm.max(), sn.max()).clamp(min=1e-12)
    scores = torch.cat([sm / scale, sn / scale])
    labels = torch.cat([torch.zeros_like(sm), torch.ones_like(sn)]).long()
    auroc = BinaryAUROC()(scores, labels).item()
    fpr, tpr, _ = BinaryROC()(scores, labels)
    idx = max(int((fpr < 0.01).sum().item()) - 1, 0)
    return auroc, tpr[idx].item(), ((tpr + 1 - fpr) / 2).max().item()


def best_over_t(stat: np.ndarray, member: np.ndarray) -> dict[str, tuple[float, list[float]]]:
    """metric -> (max over t, per-t values) of the statistic (N, T)."""
    per_t = np.array([paper_metrics(stat[member, i], stat[~member, i]) for i in range(stat.shape[1])])
    return {m: (float(per_t[:, k].max()), per_t[:, k].tolist()) for k, m in enumerate(("auroc", "tpr_at_1fpr", "asr"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--attack", default="sima")
    ap.add_argument("--drop", type=float, default=40.0)
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    run = Path(args.run)
    settings = json.loads((run / "run.json").read_text())
    timesteps = settings["attacks"][args.attack]["timesteps"]
    samples = pd.read_parquet(run / "samples.parquet")
    member = (samples["split"] == "member").to_numpy()
    terms = np.load(run / "residuals" / f"{args.attack}.npy").astype(np.float64)
    n, t_count = terms.shape[:2]
    flat = terms.reshape(n, t_count, -1)
    contrib = np.load(run / "influence.npy").reshape(n, -1)
    log_volume = samples["log_volume"].to_numpy()

    baseline = flat.sum(axis=2)
    if args.drop > 0:
        keep = contrib > np.percentile(contrib, args.drop, axis=1, keepdims=True)
    else:
        keep = np.ones_like(contrib, dtype=bool)
    masked = np.einsum("ntd,nd->nt", flat, keep.astype(np.float64))
    q25, q50, q75 = np.percentile(log_volume, [25, 50, 75])
    bins = [log_volume <= q25, (log_volume > q25) & (log_volume <= q50),
            (log_volume > q50) & (log_volume <= q75), log_volume > q75]

    report = build_report(run, attack=args.attack, protocol="paper", drop=args.drop, n_boot=0)
    rep = report["attacks"][args.attack]
    rows, failed = [], False

    def compare(what: str, reported: dict, stat: np.ndarray, rows_sel: np.ndarray) -> None:
        nonlocal failed
        ref = best_over_t(stat[rows_sel], member[rows_sel])
        for m, (best, per_t) in ref.items():
            err = abs(reported[m] - best)
            t_ok = per_t[timesteps.index(reported["best_t"][m])] == best
            rows.append((what, m, reported[m], best, err, reported["best_t"][m], "yes" if t_ok else "NO"))
            failed |= err > args.tol or not t_ok

    everyone = np.ones(n, dtype=bool)
    compare("baseline", rep["baseline"], baseline, everyone)
    compare(f"masked {args.drop:g}%", rep["masked"], masked, everyone)
    for q, sel in enumerate(bins, start=1):
        compare(f"quartile Q{q}", rep["quartiles"][q - 1], baseline, sel)
        if rep["quartiles"][q - 1]["n"] != int(sel.sum()):
            failed = True
            rows.append((f"quartile Q{q} size", "n", rep["quartiles"][q - 1]["n"], int(sel.sum()), float("nan"), "-", "NO"))
    print(f"run {run}: {int(member.sum())} members, {int((~member).sum())} held-out, attack {args.attack}")
    print(f"{'arm':<16}{'metric':<13}{'ldminv':>12}{'recomputed':>12}{'abs diff':>11}  best t  attains")
    for what, m, got, ref, err, t, ok in rows:
        print(f"{what:<16}{m:<13}{got:>12.6f}{ref:>12.6f}{err:>11.2e}  {t!s:>6}  {ok}")
    worst = max(r[4] for r in rows if np.isfinite(r[4]))
    print(f"largest difference {worst:.2e} (tolerance {args.tol:g}): {'FAIL' if failed else 'ok'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
