"""Cost model of the decoder geometry: which paths "auto" takes, their products and cost.

:func:`plan_geometry` counts the decoder products (forward-mode JVPs, reverse-mode VJPs) each
combination of an influence path and a log-volume path needs per sample, times one product
of each kind at the chunk size geometry will use (on ``z[:1]``), and picks the cheapest
combination that meets the stated accuracy:

- influence: "exact" (d JVPs; rank correlation 1) or Hutchinson; its probe count is
  :data:`~ldminv_core.geometry.HUTCHINSON_RANK_PROBES` (the count measured to keep the median
  per-sample Spearman correlation with the exact influence >= 0.98) when ``probes`` is None
  ("auto"), and an explicit ``probes`` is used as given (:func:`probes_reason` says which, in
  words, for run.json and the dashboard);
- log-volume: "exact" (d JVPs + a float64 SVD; only when one (P, d) Jacobian fits
  :data:`~ldminv_core.geometry.EXACT_MAX_JACOBIAN_BYTES`), the block Krylov top-k
  ("matrix_free", :data:`~ldminv_core.geometry.MATRIX_FREE_TOL`) or SLQ for the log-det.

Sharing: one primal pass per chunk of directions serves all of them; the exact influence and
the exact log-volume share one Jacobian (d JVPs in all). Hutchinson's VJPs cannot double as
the Krylov ones: Krylov pulls back J v, Hutchinson needs Gaussian cotangents, so an unbiased
diag(J^T J) estimate from the Krylov products does not exist without extra products.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from .._validation import check_choice
from .checks import (
    _check_chunk,
    _check_count,
    _check_engine,
    _check_iters,
    _check_k,
    _check_kind,
    _check_latents,
    _probe_decoder,
    _warn_plain_callable,
)
from .constants import (
    _INFLUENCE_METHODS,
    _LOG_VOLUME_METHODS,
    EXACT_MAX_JACOBIAN_BYTES,
    HUTCHINSON_RANK_PROBES,
    SLQ_PROBES,
    SLQ_STEPS,
)
from .paths import log_volume_products, resolve_log_volume_method
from .products import _Products, _singular_values

__all__ = ["GeometryPlan", "plan_geometry", "probes_reason"]

#: A measured plan keeps the candidate with the fewest decoder products unless the measured
#: cheapest candidate is predicted to cost less than 1 / CHOICE_MARGIN of it: near-equal paths
#: are then chosen the same way on every machine and load, whatever the timing noise.
CHOICE_MARGIN = 1.25


@dataclass(frozen=True)
class GeometryPlan:
    """What :func:`ldminv_core.geometry.decoder_geometry` will do per sample, and its cost.

    Attributes:
        influence_method: "exact" | "hutchinson".
        log_volume_method: "exact" | "matrix_free" | "slq".
        log_volume_kind: "topk" | "logdet".
        k, probes, slq_probes, slq_steps, chunk_size: the settings to run with (``probes``
            is the Hutchinson probe count: the rank target when ``probes_requested`` is None,
            else the requested count).
        products: {"jvp": n, "vjp": n} decoder products per sample (matrix-free top-k:
            the typical adaptive count).
        jvp_seconds, vjp_seconds: measured seconds of one product at ``chunk_size``
            (None when not measured).
        svd_seconds: measured seconds of the float64 SVD of one (P, d) Jacobian (exact
            log-volume only; else 0).
        predicted_seconds_per_sample: products x measured cost + SVD (None when not measured).
        shared: what the chosen paths share.
        candidates: every combination considered, with its products and predicted seconds.
        engine: how the timed products were taken, "layerwise" (:mod:`ldminv_core.geometry.tangents`)
            or "torch.func" (None when not measured).
        probes_requested: the Hutchinson probe count asked for (None: "auto", the plan's choice).
    """

    influence_method: str
    log_volume_method: str
    log_volume_kind: str
    k: int
    probes: int
    slq_probes: int
    slq_steps: int
    chunk_size: int
    d: int
    pixels: int
    products: dict[str, int]
    jvp_seconds: float | None
    vjp_seconds: float | None
    svd_seconds: float
    predicted_seconds_per_sample: float | None
    shared: tuple[str, ...]
    candidates: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    engine: str | None = None
    probes_requested: int | None = None

    @property
    def probes_used(self) -> int | None:
        """Hutchinson probes per sample the geometry takes (None when the influence is exact)."""
        return self.probes if self.influence_method == "hutchinson" else None

    def probes_reason(self) -> str:
        """Why :attr:`probes_used` is what it is, in words (:func:`probes_reason`)."""
        return probes_reason(influence_method=self.influence_method, probes_requested=self.probes_requested,
                             probes_used=self.probes_used)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for run.json): plain str / int / float / None / list / dict values,
        including ``predicted_seconds_per_sample`` and ``description`` (:meth:`describe`)."""
        out = asdict(self)
        out["shared"] = list(self.shared)
        out["products"] = {str(k): int(v) for k, v in self.products.items()}
        out["candidates"] = [
            {**dict(c), "shared": list(c.get("shared", ())), "products": {str(k): int(v) for k, v in c["products"].items()}}
            for c in self.candidates
        ]
        out["description"] = self.describe()
        out["probes_used"] = self.probes_used
        out["probes_reason"] = self.probes_reason()
        return out

    def describe(self) -> str:
        """One-line summary, e.g. "influence exact, log-volume exact (topk k=50): 1,024 JVPs,
        predicted 2.1 s/sample"."""
        infl = self.influence_method
        if self.influence_method == "hutchinson":
            infl += f" ({self.probes} probes{', auto' if self.probes_requested is None else ''})"
        if self.log_volume_kind == "topk":
            kind = f"topk k={self.k}"
        else:
            kind = "logdet" + (f", {self.slq_probes} probes x {self.slq_steps} steps" if self.log_volume_method == "slq" else "")
        prods = " + ".join(f"{v:,} {k.upper()}s" for k, v in self.products.items() if v) or "no products"
        pred = self.predicted_seconds_per_sample
        tail = f", predicted {_per_sample(pred)} per sample" if pred is not None else ""
        if self.engine is not None:
            tail += f" ({'layer-by-layer' if self.engine == 'layerwise' else self.engine} products)"
        return f"influence {infl}, log-volume {self.log_volume_method} ({kind}): {prods}{tail}"


def _per_sample(seconds: float) -> str:
    """Seconds for a reader: "0.28 s", "4.10 s", "45 s", "8.2 min", "9.1 h"."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def _time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int = 2) -> dict[str, float]:
    """Fastest wall time of each callable over ``repeats`` rounds, after one warm-up call each.

    The callables run in turn within each round (jvp, vjp, jvp, vjp, ...), so a change of the
    machine's load hits all of them alike; the minimum is the least disturbed run.
    """
    for fn in fns.values():
        fn()  # warm-up (allocations, kernel selection for these shapes)
    best = {name: math.inf for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _measure(decode, z1: torch.Tensor, image_shape: tuple[int, ...], chunk: int, d: int, p: int,
             need_svd: bool, kind: str = "topk", engine: str = "auto") -> tuple[float, float, float, str]:
    """(s per JVP, s per VJP, s per float64 SVD of a (P, d) matrix, engine) at ``chunk``
    directions: 2 warm-up + 4 timed decoder calls of ``chunk`` directions in all (interleaved),
    with the products the geometry will take (``engine``: "layerwise" or "torch.func")."""
    prod = _Products(decode, z1, chunk, image_shape, engine)
    rows = torch.zeros(chunk, dtype=torch.long, device=z1.device)
    gen = torch.Generator().manual_seed(0)
    tang = torch.randn(chunk, *z1.shape[1:], generator=gen).to(z1)
    cot = torch.randn(chunk, *image_shape, generator=gen).to(z1)
    best = _time_interleaved({"jvp": lambda: prod.jvp(rows, tang), "vjp": lambda: prod.vjp(rows, cot)})
    svd_s = 0.0
    if need_svd:
        a = torch.randn(p, d, generator=gen, dtype=torch.float64)
        t0 = time.perf_counter()
        _singular_values(a[None], kind, 1)
        svd_s = time.perf_counter() - t0
    return best["jvp"] / chunk, best["vjp"] / chunk, svd_s, prod.engine


@dataclass(frozen=True)
class _Options:
    """The checked settings of one :func:`plan_geometry` call and the paths it weighs."""

    z1: torch.Tensor
    kind: str
    k: int
    probes: int
    requested: int | None
    slq_probes: int
    slq_steps: int
    iters: int | None
    d: int
    p: int
    image_shape: tuple[int, ...]
    chunk: int
    infl_options: list[tuple[str, int]]
    lv_options: list[str]


def _options(decode: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, k: int, influence: str,
             log_volume_method: str, log_volume: str, probes: int | None, slq_probes: int, slq_steps: int,
             chunk_size: int | None, iters: int | None) -> _Options:
    """Check the settings (in the order the errors are reported), probe the decoder on z[:1] and
    list the influence and log-volume paths that may run."""
    z = _check_latents(z)
    kind = _check_kind(log_volume)
    k = _check_k(k)
    requested = None if probes is None else _check_count(probes, "probes")
    probes = HUTCHINSON_RANK_PROBES if requested is None else requested
    slq_probes = _check_count(slq_probes, "slq_probes")
    slq_steps = _check_count(slq_steps, "slq_steps")
    iters = _check_iters(iters)
    check_choice(influence, "influence", _INFLUENCE_METHODS)
    check_choice(log_volume_method, "log_volume_method", _LOG_VOLUME_METHODS)
    d = math.prod(z.shape[1:])
    image_shape = _probe_decoder(decode, z)
    p = math.prod(image_shape)
    chunk = _check_chunk(chunk_size, p)
    fits = p * d * 4 <= EXACT_MAX_JACOBIAN_BYTES
    if influence == "auto":
        infl_options = [("exact", probes), ("hutchinson", probes)]
    else:
        infl_options = [(influence, probes)]
    free = "slq" if kind == "logdet" else "matrix_free"
    if log_volume_method == "auto":
        lv_options = (["exact"] if fits or (kind == "topk" and k >= d) else []) + [free]
    else:
        lv_options = [resolve_log_volume_method(log_volume_method, d=d, p=p, k=k, log_volume=kind)]
    return _Options(z1=z[:1], kind=kind, k=k, probes=probes, requested=requested, slq_probes=slq_probes, slq_steps=slq_steps,
                    iters=iters, d=d, p=p, image_shape=image_shape, chunk=chunk, infl_options=infl_options,
                    lv_options=lv_options)


def _candidates(o: _Options, *, oversample: int | None, timing: tuple[float, float, float] | None) -> list[dict]:
    """Every (influence, log-volume) combination with its products per sample, what it shares
    and, with ``timing`` (s per JVP, s per VJP, s per SVD), its predicted seconds per sample."""
    candidates = []
    for infl, n_probes in o.infl_options:
        for lv in o.lv_options:
            lv_prod = log_volume_products(lv, d=o.d, k=o.k, log_volume=o.kind, oversample=oversample, iters=o.iters,
                                          slq_probes=o.slq_probes, slq_steps=o.slq_steps)
            jvps, vjps = lv_prod["jvp"], lv_prod["vjp"]
            shared = ["one primal pass per chunk of directions"]
            if infl == "exact" and lv == "exact":
                shared.append("the Jacobian: its d JVP columns give the influence and the log-volume")
            elif infl == "exact":
                jvps += o.d
            else:
                vjps += n_probes
            seconds = None
            if timing is not None:
                jvp_s, vjp_s, svd_s = timing
                seconds = jvps * jvp_s + vjps * vjp_s + (svd_s if lv == "exact" else 0.0)
            candidates.append({
                "influence_method": infl, "probes": n_probes, "log_volume_method": lv,
                "products": {"jvp": int(jvps), "vjp": int(vjps)}, "predicted_seconds_per_sample": seconds,
                "shared": tuple(shared),
            })
    return candidates


def _choose(candidates: list[dict], *, measured: bool) -> dict:
    """The cheapest candidate (predicted seconds when measured, else products; the exact pair
    wins a tie), unless the one with the fewest products is within :data:`CHOICE_MARGIN` of it."""
    def cost(c: dict) -> tuple[float, int]:
        n = c["products"]["jvp"] + c["products"]["vjp"]
        exact_rank = 0 if (c["log_volume_method"] == "exact", c["influence_method"] == "exact") == (True, True) else 1
        return (c["predicted_seconds_per_sample"] if measured else float(n), exact_rank)

    best = min(candidates, key=cost)
    if measured:
        # timing noise must not flip the choice between runs, machines or process counts (the
        # arrays of two runs compared should come from the same paths): the path with fewer
        # products stays unless the measured cheapest is clearly cheaper
        by_count = min(candidates, key=lambda c: (c["products"]["jvp"] + c["products"]["vjp"], cost(c)[1]))
        if by_count["predicted_seconds_per_sample"] <= CHOICE_MARGIN * best["predicted_seconds_per_sample"]:
            best = by_count
    return best


def plan_geometry(
    decode: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    *,
    k: int = 50,
    influence: str = "auto",
    log_volume_method: str = "auto",
    log_volume: str = "topk",
    probes: int | None = None,
    slq_probes: int = SLQ_PROBES,
    slq_steps: int = SLQ_STEPS,
    chunk_size: int | None = None,
    oversample: int | None = None,
    iters: int | None = None,
    measure: bool = True,
    engine: str = "auto",
) -> GeometryPlan:
    """Cheapest geometry paths meeting the stated accuracy, with their per-sample cost.

    Args:
        decode: callable from latents (B, C, h, w) to images (B, *image).
        z: latents (N, C, h, w); only z[:1] is decoded (shape probe and timing).
        k, influence, log_volume_method, log_volume, slq_probes, slq_steps, chunk_size,
        oversample, iters: as in :func:`ldminv_core.geometry.decoder_geometry`.
        probes: Hutchinson probes per sample, used as given; None ("auto"):
            :data:`~ldminv_core.geometry.HUTCHINSON_RANK_PROBES`, the count that meets the
            influence rank target.
        measure: time one JVP and one VJP (and the SVD when the exact log-volume is a
            candidate) on z[:1] and pick the cheapest predicted combination, unless the one
            with the fewest products is within :data:`CHOICE_MARGIN` of it (then that one);
            without it the choice minimises the number of products.
        engine: how the timed products are taken (as in
            :func:`ldminv_core.geometry.decoder_geometry`; pass the same engine to both).

    Returns:
        :class:`GeometryPlan`; pass it as ``decoder_geometry(..., plan=plan)``.
    """
    # 1. check the settings and list the paths that may run
    o = _options(decode, z, k=k, influence=influence, log_volume_method=log_volume_method, log_volume=log_volume,
                 probes=probes, slq_probes=slq_probes, slq_steps=slq_steps, chunk_size=chunk_size, iters=iters)
    engine = _check_engine(engine)
    # 2. time one JVP and one VJP (and the SVD when the exact log-volume may run) on z[:1]
    if measure:
        _warn_plain_callable(decode, engine)
        jvp_s, vjp_s, svd_s, engine = _measure(decode, o.z1, o.image_shape, o.chunk, o.d, o.p,
                                               "exact" in o.lv_options, o.kind, engine)
    else:
        jvp_s = vjp_s = engine = None
        svd_s = 0.0
    # 3. every combination's products and predicted cost, and the choice
    candidates = _candidates(o, oversample=oversample, timing=(jvp_s, vjp_s, svd_s) if measure else None)
    best = _choose(candidates, measured=measure)
    # 4. the plan
    return GeometryPlan(
        influence_method=best["influence_method"],
        log_volume_method=best["log_volume_method"],
        log_volume_kind=o.kind,
        k=o.k,
        probes=int(best["probes"]),
        slq_probes=o.slq_probes,
        slq_steps=o.slq_steps,
        chunk_size=o.chunk,
        d=o.d,
        pixels=o.p,
        products=dict(best["products"]),
        jvp_seconds=jvp_s,
        vjp_seconds=vjp_s,
        svd_seconds=svd_s if best["log_volume_method"] == "exact" else 0.0,
        predicted_seconds_per_sample=best["predicted_seconds_per_sample"],
        shared=tuple(best["shared"]),
        candidates=tuple({**c, "shared": list(c["shared"])} for c in candidates),
        engine=engine,
        probes_requested=o.requested,
    )


def probes_reason(*, influence_method: str, probes_requested: int | None, probes_used: int | None) -> str:
    """The Hutchinson probe count of a geometry and why, in one sentence (run.json
    ``geometry.probes_reason``, the dashboard and the command line)."""
    target = HUTCHINSON_RANK_PROBES
    if influence_method != "hutchinson" or probes_used is None:
        unused = "" if probes_requested is None else f"; the {probes_requested} requested are not used"
        return f"no Hutchinson probes: the influence is exact (one decoder JVP per latent coordinate){unused}"
    if probes_requested is None:
        return (f"{probes_used} probes, chosen automatically: the count measured to keep the median per-sample rank "
                f"correlation with the exact influence >= 0.98")
    if probes_requested < target:
        return (f"{probes_used} probes as requested (fewer than the {target} that keep the median rank correlation "
                f"with the exact influence >= 0.98: a noisier influence ranking)")
    return f"{probes_used} probes as requested"
