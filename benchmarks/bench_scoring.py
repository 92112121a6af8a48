"""Live-scoring benchmark: what the dashboard recomputes after one control change.

The Masks & ROC page keeps the run's arrays and two DropSweep objects (per-sample influence
order and the seeded random order) in its cache; moving a control recomputes, from those
alone:

- a new drop percentage (:meth:`ScoringWorkload.drop_change`): masked and random statistics
  at the new drop (``DropSweep.statistic``), then ``metrics.evaluate`` (AUROC, TPR@1%FPR,
  TPR@0.1%FPR, ASR) and ``metrics.roc`` (the ROC curves) for baseline, masked and random;
- a manual mask (:meth:`ScoringWorkload.manual_change`): ``masks.masked_statistic`` with a
  (C, h, w) keep-mask over all timesteps, then evaluate + ROC for baseline and manual;
  (variants: only the displayed timestep's terms; a cached float64 copy of them);
- the AUROC-vs-drop curve (:meth:`ScoringWorkload.drop_curve`): ``DropSweep.statistics`` at
  0, 5, ..., 90 % for both sweeps + ``metrics.evaluate_many``.

Data are synthetic, shaped like a stored run: float16 terms (N, T, C, h, w) in a
memory-mapped .npy, float32 influence (N, C, h, w), half members. Times are medians of
repeated ``time.perf_counter`` measurements after one warm-up call.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks import common
from ldminv_core import masks, metrics

__all__ = ["DROP_PERCENTS", "synthetic_run", "ScoringWorkload", "run_scoring"]

#: Drop percentages of the AUROC-vs-drop curve: 0, 5, ..., 90.
DROP_PERCENTS: tuple[int, ...] = tuple(range(0, 95, 5))


def synthetic_run(
    folder: Path, *, n: int, t: int, latent_shape: tuple[int, int, int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write synthetic run arrays to ``folder`` and return them memory-mapped.

    Members (label 1, the first half after a seeded shuffle) have 15 % smaller noise on their
    high-influence coordinates, so every metric is informative. terms = eps^4 as float16
    (N, T, C, h, w) (memory-mapped, read-only), influence float32 (N, C, h, w), labels int8 (N,).
    """
    rng = np.random.default_rng(seed)
    d = int(np.prod(latent_shape))
    labels = np.zeros(n, dtype=np.int8)
    labels[rng.permutation(n)[: n // 2]] = 1
    influence = rng.standard_normal((n, d), dtype=np.float32)
    path = Path(folder) / f"terms_{n}x{t}x{d}.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, t, *latent_shape))
    block = max(1, (8 * 2**20) // (t * d))
    for start in range(0, n, block):
        stop = min(n, start + block)
        scale = 1.0 - 0.15 * (labels[start:stop, None] * (influence[start:stop] > 0))
        eps = rng.standard_normal((stop - start, t, d), dtype=np.float32) * scale[:, None, :].astype(np.float32)
        out[start:stop] = np.square(np.square(eps)).astype(np.float16).reshape(stop - start, t, *latent_shape)
    out.flush()
    del out
    terms = np.load(path, mmap_mode="r")
    return terms, influence.reshape(n, *latent_shape), labels


class ScoringWorkload:
    """Cached arrays + DropSweeps of one run, and the recomputations of one control change.

    Args:
        terms: (N, T, C, h, w) float16/float32 attack terms.
        influence: (N, C, h, w).
        labels: (N,) 1 = member.
        t_index: the displayed timestep (index into T).
        seed: seed of the random-drop sweep.
    """

    def __init__(self, terms: np.ndarray, influence: np.ndarray, labels: np.ndarray, *, t_index: int, seed: int = 0):
        self.terms = terms
        self.influence = influence
        self.labels = labels
        self.t_index = int(t_index)
        self.seed = seed
        self.latent_shape = tuple(terms.shape[2:])
        self.sweep_influence: masks.DropSweep | None = None
        self.sweep_random: masks.DropSweep | None = None
        self.terms_t64: np.ndarray | None = None

    def build(self) -> dict[str, float]:
        """The one-off cached step: both DropSweeps and a float64 copy of the displayed
        timestep's terms (N, 1, C, h, w); returns their build times in s ("total_s" = sweeps)."""
        t_inf, self.sweep_influence = common.time_call(lambda: masks.DropSweep.by_influence(self.terms, self.influence))
        t_rnd, self.sweep_random = common.time_call(lambda: masks.DropSweep.random(self.terms, seed=self.seed))
        t = self.t_index
        t_cache, self.terms_t64 = common.time_call(
            lambda: np.ascontiguousarray(self.terms[:, t : t + 1], dtype=np.float64)
        )
        return {"by_influence_s": t_inf, "random_s": t_rnd, "total_s": t_inf + t_rnd, "float64_terms_at_t_s": t_cache}

    def _panel(self, variants: dict[str, np.ndarray]) -> dict[str, tuple[metrics.Metrics, metrics.RocCurve]]:
        return {name: (metrics.evaluate(s, self.labels), metrics.roc(s, self.labels)) for name, s in variants.items()}

    def drop_change(self, drop_percent: float) -> dict[str, tuple[metrics.Metrics, metrics.RocCurve]]:
        """Everything shown after the drop slider moves: metrics + ROC of baseline/masked/random."""
        t = self.t_index
        base = -self.sweep_influence.statistic(0)[:, t]
        masked = -self.sweep_influence.statistic(drop_percent)[:, t]
        rand = -self.sweep_random.statistic(drop_percent)[:, t]
        return self._panel({"baseline": base, "masked": masked, "random": rand})

    def manual_change(self, channels: list[int]) -> dict[str, tuple[metrics.Metrics, metrics.RocCurve]]:
        """Everything shown after a manual channel mask changes: masked_statistic over all T."""
        mask = masks.manual_mask(self.latent_shape, channels=channels)
        stat = masks.masked_statistic(self.terms, mask)  # (N, T)
        base = -self.sweep_influence.statistic(0)[:, self.t_index]
        return self._panel({"baseline": base, "manual": -stat[:, self.t_index]})

    def manual_change_one_t(self, channels: list[int]) -> dict[str, tuple[metrics.Metrics, metrics.RocCurve]]:
        """As :meth:`manual_change`, reading only the displayed timestep's terms."""
        mask = masks.manual_mask(self.latent_shape, channels=channels)
        t = self.t_index
        stat = masks.masked_statistic(self.terms[:, t : t + 1], mask)[:, 0]
        base = -self.sweep_influence.statistic(0)[:, t]
        return self._panel({"baseline": base, "manual": -stat})

    def manual_change_cached(self, channels: list[int]) -> dict[str, tuple[metrics.Metrics, metrics.RocCurve]]:
        """As :meth:`manual_change_one_t`, from a cached float64 copy of the displayed timestep's terms."""
        mask = masks.manual_mask(self.latent_shape, channels=channels)
        stat = masks.masked_statistic(self.terms_t64, mask)[:, 0]
        base = -self.sweep_influence.statistic(0)[:, self.t_index]
        return self._panel({"baseline": base, "manual": -stat})

    def drop_curve(self) -> dict[str, dict[str, np.ndarray]]:
        """The four metrics against drop percentage (0..90 step 5) for masked and random."""
        t = self.t_index
        out = {}
        for name, sweep in (("masked", self.sweep_influence), ("random", self.sweep_random)):
            stats = sweep.statistics(DROP_PERCENTS)[:, :, t]  # (K, N)
            out[name] = metrics.evaluate_many(-stats, self.labels)
        return out

    def per_t_curve(self, drop_percent: float) -> dict[str, dict[str, np.ndarray]]:
        """The four metrics against timestep for baseline and masked at the current drop."""
        return {
            "baseline": metrics.evaluate_many(-self.sweep_influence.statistic(0).T, self.labels),
            "masked": metrics.evaluate_many(-self.sweep_influence.statistic(drop_percent).T, self.labels),
        }

    def bootstrap_table(self, drop_percent: float, *, n_boot: int = 1000) -> dict[str, dict[str, tuple]]:
        """Bootstrap intervals of the four metrics for baseline/masked/random (the metrics table)."""
        t = self.t_index
        variants = {
            "baseline": -self.sweep_influence.statistic(0)[:, t],
            "masked": -self.sweep_influence.statistic(drop_percent)[:, t],
            "random": -self.sweep_random.statistic(drop_percent)[:, t],
        }
        return {
            name: {m: metrics.bootstrap_ci(s, self.labels, metric=m, n_boot=n_boot) for m in metrics.METRIC_NAMES}
            for name, s in variants.items()
        }


def _best_t(terms: np.ndarray, labels: np.ndarray) -> int:
    stat = masks.masked_statistic(terms)  # (N, T)
    return int(np.argmax(metrics.auroc_many(-stat.T, labels)))


def _scale(
    name: str,
    *,
    n: int,
    t: int,
    latent_shape: tuple[int, int, int],
    repeats: int,
    bootstrap: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ldminv_bench_") as tmp:
        log(f"  scoring[{name}]: synthetic run N={n}, T={t}, latent {latent_shape} ...")
        terms, influence, labels = synthetic_run(Path(tmp), n=n, t=t, latent_shape=latent_shape)
        t_index = _best_t(terms, labels)
        work = ScoringWorkload(terms, influence, labels, t_index=t_index)
        build = work.build()
        # the masked AUROC must be the one of the explicit percentile mask (oracle check)
        check_p = 40
        explicit = masks.masked_statistic(terms, masks.percentile_drop_mask(influence, check_p))[:, t_index]
        check = abs(work.drop_change(check_p)["masked"][0].auroc - metrics.auroc(-explicit, labels)) < 1e-12
        drops = [p for p in range(5, 95, 5) if p != 40] + [40]
        channels = [[0], [1, 2], [0, 3], [2], [1, 2, 3], [0, 1]]
        log(f"  scoring[{name}]: timing ...")
        res = {
            "n": n,
            "t": t,
            "latent_shape": list(latent_shape),
            "d": int(np.prod(latent_shape)),
            "terms_dtype": str(terms.dtype),
            "terms_mb": terms.nbytes / 2**20,
            "t_index": t_index,
            "build": build,
            "sweep_mb": 2 * n * t * (int(np.prod(latent_shape)) + 1) * 8 / 2**20,
            "masked_auroc_matches_explicit_mask": bool(check),
            "drop_change": common.median_time(lambda i: work.drop_change(drops[i % len(drops)]), repeats=repeats),
            "manual_change": common.median_time(
                lambda i: work.manual_change(channels[i % len(channels)]), repeats=max(3, repeats // 2)
            ),
            "manual_change_one_t": common.median_time(
                lambda i: work.manual_change_one_t(channels[i % len(channels)]), repeats=max(3, repeats // 2)
            ),
            "manual_change_cached": common.median_time(
                lambda i: work.manual_change_cached(channels[i % len(channels)]), repeats=max(3, repeats // 2)
            ),
            "float64_terms_at_t_mb": work.terms_t64.nbytes / 2**20,
            "drop_curve": common.median_time(lambda i: work.drop_curve(), repeats=max(3, repeats // 2)),
            "per_t_curve": common.median_time(lambda i: work.per_t_curve(drops[i % len(drops)]), repeats=max(3, repeats // 2)),
        }
        if bootstrap:
            res["bootstrap_table"] = common.median_time(lambda i: work.bootstrap_table(40), repeats=3)
        del work, terms
    return res


def run_scoring(*, quick: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Demo scale (N=2000, 4x8x8, T=30) and Stable Diffusion scale (N=5000, 4x64x64, T=1)."""
    repeats = 9 if quick else 21
    demo = _scale("demo", n=2000, t=30, latent_shape=(4, 8, 8), repeats=repeats, bootstrap=True, log=log)
    sd = _scale("sd", n=5000, t=1, latent_shape=(4, 64, 64), repeats=repeats, bootstrap=True, log=log)
    ms = lambda r, key: 1000.0 * r[key]["median_s"]  # noqa: E731
    return {
        "method": "median of repeated time.perf_counter timings after one warm-up; synthetic float16 terms "
        "memory-mapped from a .npy, as a stored run",
        "demo": demo,
        "sd": sd,
        "single_change_ms_demo": ms(demo, "drop_change"),
        "single_change_ms_sd": ms(sd, "drop_change"),
        "manual_mask_ms_demo": ms(demo, "manual_change"),
        "manual_mask_ms_sd": ms(sd, "manual_change"),
        "manual_mask_one_t_ms_demo": ms(demo, "manual_change_one_t"),
        "manual_mask_one_t_ms_sd": ms(sd, "manual_change_one_t"),
        "manual_mask_cached_ms_demo": ms(demo, "manual_change_cached"),
        "manual_mask_cached_ms_sd": ms(sd, "manual_change_cached"),
        "all_drops_ms_demo": ms(demo, "drop_curve"),
        "all_drops_ms_sd": ms(sd, "drop_curve"),
        "build_s_demo": demo["build"]["total_s"],
        "build_s_sd": sd["build"]["total_s"],
    }
