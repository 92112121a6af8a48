"""Every geometry path on the d = 1024 SD-shaped decoder: products, floor, time, error vs an oracle.

Run from the repository root::

    nice -n 5 python -m benchmarks.bench_geometry_paths            # full (about 15-30 min on 2 cores)
    nice -n 5 python -m benchmarks.bench_geometry_paths --quick    # fewer samples / sizes (about 5 min)

Sections (printed as markdown tables, written to ``benchmarks/geometry_paths.json``):

1. ``paths``: a random AutoencoderKL with block_out_channels (32, 64), attention mid-block,
   RGB 32x32 images, latent 4x16x16 (d = 1024), 2 torch threads. Per path (exact, matrix-free
   top-k at k = 50 and k = 10, SLQ log-det, Hutchinson-n, auto = ``plan_geometry`` +
   ``decoder_geometry(plan=...)``): decoder products per sample (counted by the library),
   the measured cost of one product *at the chunk size that path uses*, the floor
   (products x that cost), the measured seconds per sample, their ratio, and the error against
   the oracle (float64 SVD / slogdet of the Jacobian from ``torch.func.jacrev``, reverse mode,
   independent of the library's forward-mode Jacobian).
2. ``spearman``: per-sample Spearman rank correlation of Hutchinson-n influence against the
   exact influence, on this decoder and on the demo decoder.
3. ``demo``: the exact path against ``benchmarks.reference_geometry`` on the demo decoder
   (4x8x8 latent, 1x32x32 image) at 1 thread (``bench_geometry.run_demo_geometry``).
4. ``d16384``: per-sample cost of top-k (matrix-free, k = 50) and log-det (SLQ) at
   d = 16384 (4x64x64 latent, SD-layout decoder to 3x512x512), with peak RSS, in a fresh
   process per path (``benchmarks.scaling_worker --mode paths``).
5. ``engines``: seconds per JVP / VJP of the layer-by-layer products
   (:mod:`ldminv_core.geometry.tangents`) against torch.func's, on both decoders, side by side.
6. ``speedups``: what the profile suggested, side by side (threads; torch.compile and
   channels_last under torch.func are tried and their failure recorded).

The machine is shared: every section records ``/proc/loadavg`` before it runs; times are the
fastest of ``repeats`` runs, per-product costs the fastest of ``repeats`` calls after warm-up.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks import common
from ldminv_core import geometry as geo

OUT = common.REPO / "benchmarks" / "geometry_paths.json"

#: The issue-12 decoder: 4x16x16 latent -> 3x32x32 image.
SD1024_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    layers_per_block=1, norm_num_groups=8, sample_size=32, mid_block_add_attention=True,
)
PROBE_COUNTS = (32, 64, 128, 256, 512)


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:  # pragma: no cover - non-Linux
        return [round(v, 2) for v in os.getloadavg()]


def sd1024_decoder(seed: int = 0):
    """(vae, decode) of the d = 1024 benchmark decoder (random weights, ``seed``)."""
    from diffusers import AutoencoderKL

    from ldminv_core.geometry.tangents import VaeDecoder

    torch.manual_seed(seed)
    vae = AutoencoderKL(**SD1024_VAE).eval().requires_grad_(False)
    return vae, VaeDecoder(vae, scaling_factor=1.0)


def oracle_jacobians(decode, z: torch.Tensor, chunk: int = 128) -> torch.Tensor:
    """(N, P, d) float64 Jacobians by ``torch.func.jacrev`` (reverse mode, ``chunk`` rows per call)."""
    d = int(z[0].numel())
    out = []
    with sdpa_kernel(SDPBackend.MATH):
        for z1 in z:
            f = lambda x: decode(x.unsqueeze(0)).reshape(-1)  # noqa: E731
            out.append(torch.func.jacrev(f, chunk_size=chunk)(z1).reshape(-1, d).double())
    return torch.stack(out)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.ravel(), b.ravel()).statistic)


# ----------------------------------------------------------------------------- product costs


def product_cost(decode, z1: torch.Tensor, kind: str, chunk: int, *, repeats: int = 3, warmup: int = 2,
                 engine: str = "auto") -> float:
    """Fastest seconds per direction of one ``kind`` ("jvp" | "vjp" | "gram") call of ``chunk``
    directions on the single latent z1 (1, C, h, w), after ``warmup`` calls, with the products of
    ``engine`` (``geometry.ENGINES``)."""
    with torch.no_grad():
        image_shape = tuple(decode(z1).shape[1:])
    prod = geo._Products(decode, z1, chunk, image_shape, engine)
    rows = torch.zeros(chunk, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    if kind == "vjp":
        vec = torch.randn(chunk, *image_shape, generator=gen)
    else:
        vec = torch.randn(chunk, *z1.shape[1:], generator=gen)
    fn = getattr(prod, kind)
    for _ in range(warmup):
        fn(rows, vec)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(rows, vec)
        best = min(best, time.perf_counter() - t0)
    return best / chunk


def timed_geometry(decode, z: torch.Tensor, repeats: int, **kw) -> tuple[float, geo.Geometry, dict]:
    """(fastest s per sample, Geometry, products per sample) of ``geo._geometry`` on z, one
    sample per call (as the benchmark measures per-sample cost)."""
    n = z.shape[0]
    best = math.inf
    outs: list[geo.Geometry] = []
    counts: dict = {}
    for r in range(repeats):
        t_total = 0.0
        outs = []
        counts = {}
        for i in range(n):
            c: dict = {}
            t0 = time.perf_counter()
            g = geo._geometry(decode, z[i : i + 1], sample_ids=[i], progress=None, counts=c, **kw)
            t_total += time.perf_counter() - t0
            outs.append(g)
            for key, v in c.items():
                counts[key] = counts.get(key, 0) + v
        best = min(best, t_total / n)
    cat = lambda xs: None if xs[0] is None else torch.cat(xs)  # noqa: E731
    g = geo.Geometry(log_volume=cat([o.log_volume for o in outs]), influence=cat([o.influence for o in outs]),
                     log_volume_method=outs[0].log_volume_method, influence_method=outs[0].influence_method,
                     log_volume_kind=outs[0].log_volume_kind, log_volume_error=cat([o.log_volume_error for o in outs]))
    return best, g, {k_: v // n for k_, v in counts.items()}


def _kw(**over) -> dict:
    base = dict(k=50, influence=None, log_volume_method="auto", kind="topk", probes=16, slq_probes=geo.SLQ_PROBES,
                slq_steps=geo.SLQ_STEPS, seed=0, chunk_size=None, oversample=None, iters=None)
    base.update(over)
    return base


def run_paths(z: torch.Tensor, *, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Section 1 on the d = 1024 decoder."""
    _, decode = sd1024_decoder()
    n, d = z.shape[0], int(z[0].numel())
    with torch.no_grad():
        p = int(decode(z[:1])[0].numel())
    out: dict[str, Any] = {"decoder": {k: (list(v) if isinstance(v, tuple) else v) for k, v in SD1024_VAE.items()},
                           "d": d, "pixels": p, "samples": n, "threads": torch.get_num_threads(),
                           "loadavg_before": loadavg()}
    log(f"  oracle: torch.func.jacrev Jacobians of {n} samples ...")
    t0 = time.perf_counter()
    jac = oracle_jacobians(decode, z)
    out["oracle_s_per_sample"] = (time.perf_counter() - t0) / n
    sv = torch.linalg.svdvals(jac)
    oracle_topk = {k: sv[:, :k].log().sum(1) for k in (10, 50)}
    oracle_logdet = torch.stack([0.5 * torch.linalg.slogdet(j.T @ j).logabsdet for j in jac])
    oracle_infl = (0.5 * torch.log(jac.square().sum(1) + geo.INFLUENCE_EPS)).reshape(n, *z.shape[1:])
    out["oracle"] = {"top50": oracle_topk[50].tolist(), "top10": oracle_topk[10].tolist(),
                     "logdet": oracle_logdet.tolist(), "sv_max": sv[:, 0].tolist(), "sv_min": sv[:, -1].tolist()}

    chunk = geo._auto_chunk(p)
    b50, b10 = geo._block_size(50, d, None), geo._block_size(10, d, None)
    log("  per-product costs at each path's chunk size ...")
    costs = {
        f"jvp@{chunk}": product_cost(decode, z[:1], "jvp", chunk),
        f"vjp@{chunk}": product_cost(decode, z[:1], "vjp", chunk),
        f"gram@{b50}": product_cost(decode, z[:1], "gram", b50),
        f"gram@{b10}": product_cost(decode, z[:1], "gram", b10),
        f"gram@{geo.SLQ_PROBES}": product_cost(decode, z[:1], "gram", geo.SLQ_PROBES),
    }
    out["product_seconds"] = costs

    def rel(lv, ref):
        return float(((lv.double() - ref).abs() / ref.abs()).max())

    def infl_rho(g):
        return [spearman(g.influence[i].numpy(), oracle_infl[i].numpy()) for i in range(n)]

    rows: list[dict] = []

    def add(name, s, g, counts, floor, extra=None):
        row = {"path": name, "products": counts, "floor_s": floor, "s_per_sample": s, "ratio_to_floor": s / floor,
               "loadavg": loadavg(), **(extra or {})}
        rows.append(row)
        log(f"    {name}: {s:.2f} s/sample, floor {floor:.2f} s, ratio {s / floor:.2f}, "
            + ", ".join(f"{k}={v:.3g}" for k, v in (extra or {}).items() if isinstance(v, float)))

    log("  exact (influence + top-50 from one Jacobian) ...")
    s, g, c = timed_geometry(decode, z, repeats, **_kw(influence="exact", log_volume_method="exact"))
    add("exact (influence + top-50)", s, g, c, c["jvp"] * costs[f"jvp@{chunk}"],
        {"rel_err_log_volume": rel(g.log_volume, oracle_topk[50]),
         "max_abs_err_influence": float((g.influence.double() - oracle_infl).abs().max())})
    s, g, c = timed_geometry(decode, z, 1, **_kw(kind="logdet", log_volume_method="exact"))
    add("exact log-det", s, g, c, c["jvp"] * costs[f"jvp@{chunk}"], {"rel_err_log_volume": rel(g.log_volume, oracle_logdet)})
    for k, bk in ((50, b50), (10, b10)):
        log(f"  matrix-free top-{k} ...")
        s, g, c = timed_geometry(decode, z, repeats, **_kw(k=k, log_volume_method="matrix_free"))
        add(f"matrix_free top-{k}", s, g, c, c["jvp"] * costs[f"gram@{bk}"],
            {"rel_err_log_volume": rel(g.log_volume, oracle_topk[k]),
             "reported_bound_rel": float((g.log_volume_error / oracle_topk[k].abs()).max()),
             "block": bk, "blocks": c["jvp"] / bk})
    log("  SLQ log-det ...")
    s, g, c = timed_geometry(decode, z, 1, **_kw(kind="logdet", log_volume_method="slq"))
    add(f"slq log-det ({geo.SLQ_PROBES} probes x {geo.SLQ_STEPS} steps)", s, g, c,
        c["jvp"] * costs[f"gram@{geo.SLQ_PROBES}"],
        {"rel_err_log_volume": rel(g.log_volume, oracle_logdet),
         "reported_se_rel": float((g.log_volume_error / oracle_logdet.abs()).max()), "rtol": geo.SLQ_RTOL})
    for m in (geo.HUTCHINSON_RANK_PROBES,):
        log(f"  Hutchinson-{m} ...")
        s, g, c = timed_geometry(decode, z, repeats, **_kw(k=None, influence="hutchinson", probes=m))
        rho = infl_rho(g)
        add(f"hutchinson-{m}", s, g, c, c["vjp"] * costs[f"vjp@{chunk}"],
            {"median_spearman": float(np.median(rho)), "min_spearman": float(min(rho))})

    log("  auto (plan_geometry + decoder_geometry(plan=...)) ...")
    t0 = time.perf_counter()
    plan = geo.plan_geometry(decode, z[:1], k=50)
    plan_s = time.perf_counter() - t0
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        gs = [geo.decoder_geometry(decode, z[i : i + 1], plan=plan, sample_ids=[i]) for i in range(n)]
        best = min(best, (time.perf_counter() - t0) / n)
    g = geo.Geometry(log_volume=torch.cat([x.log_volume for x in gs]), influence=torch.cat([x.influence for x in gs]),
                     log_volume_method=gs[0].log_volume_method, influence_method=gs[0].influence_method)
    infl_chunk_cost = costs[f"jvp@{chunk}"] if plan.influence_method == "exact" else costs[f"vjp@{chunk}"]
    if plan.log_volume_method == "exact":
        floor = plan.products["jvp"] * costs[f"jvp@{chunk}"]
    else:
        lv_prods = geo.log_volume_products(plan.log_volume_method, d=d, k=50)
        # the adaptive run's actual count: from the matrix-free row above
        mf_row = next(r for r in rows if r["path"] == "matrix_free top-50")
        infl_prods = plan.products["vjp"] - lv_prods["vjp"] if plan.influence_method == "hutchinson" else 0
        floor = mf_row["products"]["jvp"] * costs[f"gram@{b50}"] + infl_prods * infl_chunk_cost
    rho = infl_rho(g)
    add(f"auto -> {plan.describe()}", best, g, dict(plan.products), floor,
        {"rel_err_log_volume": rel(g.log_volume, oracle_topk[50]), "median_spearman": float(np.median(rho)),
         "min_spearman": float(min(rho)), "plan_s": plan_s,
         "predicted_s_per_sample": float(plan.predicted_seconds_per_sample)})
    out["plan"] = plan.as_dict()
    out["rows"] = rows
    out["jacobian"] = jac  # removed before JSON; reused by the Spearman section
    out["oracle_influence"] = oracle_infl
    return out


# ----------------------------------------------------------------------------- Spearman


def spearman_table(decode, z: torch.Tensor, exact_infl: torch.Tensor, counts=PROBE_COUNTS) -> dict[str, Any]:
    """Per-sample Spearman of Hutchinson-n against the exact influence, for each n in ``counts``."""
    res: dict[str, Any] = {"loadavg_before": loadavg(), "samples": int(z.shape[0]), "per_n": {}}
    for m in counts:
        est = geo.dim_influence(decode, z, method="hutchinson", probes=m, seed=0)
        rho = [spearman(est[i].numpy(), exact_infl[i].numpy()) for i in range(z.shape[0])]
        res["per_n"][str(m)] = {"median": float(np.median(rho)), "min": float(min(rho)), "per_sample": rho}
    return res


# ----------------------------------------------------------------------------- side by side


def engine_trials(log: Callable[[str], None]) -> dict[str, Any]:
    """Seconds per JVP / VJP of the layer-by-layer products against torch.func's, side by side
    (interleaved, fastest of 3 calls each), on the d = 1024 decoder at 1 and 2 threads and on
    the demo decoder at 1 thread, each at the chunk size the geometry uses there."""
    z_sd = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    model = common.load_demo_model()
    z_demo, _ = common.demo_latents(model, 1)
    cases = [("sd-1024 (4x16x16 -> 3x32x32)", sd1024_decoder()[1], z_sd, (1, 2)),
             (f"demo ({model.source}, 4x8x8 -> 1x32x32)", model.decode, z_demo, (1,))]
    out: dict[str, Any] = {"loadavg_before": loadavg(), "rows": []}
    before = torch.get_num_threads()
    for name, decode, z1, threads in cases:
        with torch.no_grad():
            chunk = geo._auto_chunk(int(decode(z1)[0].numel()))
        for t in threads:
            torch.set_num_threads(t)
            row = {"decoder": name, "threads": t, "chunk": chunk, "loadavg": loadavg()}
            for kind in ("jvp", "vjp"):
                for engine in ("layerwise", "torch.func"):
                    row[f"{kind}_{engine}_s"] = product_cost(decode, z1, kind, chunk, engine=engine)
                row[f"{kind}_speedup"] = row[f"{kind}_torch.func_s"] / row[f"{kind}_layerwise_s"]
            out["rows"].append(row)
            log(f"    {name}, {t} thread(s), chunk {chunk}: JVP {row['jvp_layerwise_s'] * 1e3:.2f} vs "
                f"{row['jvp_torch.func_s'] * 1e3:.2f} ms ({row['jvp_speedup']:.2f}x), VJP "
                f"{row['vjp_layerwise_s'] * 1e3:.2f} vs {row['vjp_torch.func_s'] * 1e3:.2f} ms ({row['vjp_speedup']:.2f}x)")
    torch.set_num_threads(before)
    return out


def speedup_trials(z1: torch.Tensor, log: Callable[[str], None]) -> dict[str, Any]:
    """Threads (1 vs 2) for JVP / VJP; torch.compile of torch.func's batched JVP; channels_last
    under torch.func (the layer-by-layer products run channels-last already)."""
    from torch.func import jvp, vmap

    vae, decode = sd1024_decoder()
    chunk = geo._auto_chunk(3 * 32 * 32)
    out: dict[str, Any] = {"loadavg_before": loadavg(), "chunk": chunk}
    before = torch.get_num_threads()
    for t in (1, 2):
        torch.set_num_threads(t)
        out[f"threads_{t}"] = {kind: product_cost(decode, z1, kind, chunk) for kind in ("jvp", "vjp")}
        log(f"    {t} thread(s): " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in out[f"threads_{t}"].items()))
    torch.set_num_threads(before)
    tang = torch.randn(chunk, *z1.shape[1:], generator=torch.Generator().manual_seed(0))
    single = lambda x: decode(x.unsqueeze(0)).squeeze(0)  # noqa: E731
    batched = vmap(lambda v: jvp(single, (z1[0],), (v,))[1])
    for name, prepare in (("torch.compile(vmap(jvp))", lambda: torch.compile(batched)),
                          ("channels_last", lambda: (vae.to(memory_format=torch.channels_last), batched)[1])):
        try:
            fn = prepare()
            with sdpa_kernel(SDPBackend.MATH):
                t0 = time.perf_counter()
                fn(tang)
                first = time.perf_counter() - t0
                fn(tang)
                t0 = time.perf_counter()
                fn(tang)
                out[name] = {"ok": True, "first_call_s": first, "jvp_s": (time.perf_counter() - t0) / chunk}
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            out[name] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
        finally:
            vae.to(memory_format=torch.contiguous_format)
        log(f"    {name}: {out[name]}")
    return out


# ----------------------------------------------------------------------------- d = 16384


def run_d16384(paths: list[str], *, full: bool, timeout_s: float, log: Callable[[str], None]) -> dict[str, Any]:
    res: dict[str, Any] = {"loadavg_before": loadavg(), "paths": {}}
    for path in paths:
        cmd = [sys.executable, "-m", "benchmarks.scaling_worker", "--mode", "paths", "--path", path,
               "--latent-size", "64", "--threads", str(torch.get_num_threads())]
        if full:
            cmd.append("--full")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(common.REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        log(f"  d=16384 {path} in a fresh process{' (full run)' if full else ' (truncated run + extrapolation)'} ...")
        try:
            proc = subprocess.run(cmd, cwd=common.REPO, env=env, capture_output=True, text=True, timeout=timeout_s)
            if proc.returncode != 0:
                res["paths"][path] = {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
            else:
                res["paths"][path] = json.loads(proc.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            res["paths"][path] = {"error": f"timed out after {timeout_s:.0f} s"}
        log(f"    {res['paths'][path]}")
    return res


# ----------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    fmt = common.fmt
    lines = []
    p = results.get("paths")
    if p:
        lines.append(f"d = {p['d']} decoder, {p['pixels']} pixels, {p['samples']} samples, {p['threads']} threads, "
                     f"load average {p['loadavg_before']}; per-product costs (s/direction): "
                     + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in p["product_seconds"].items()))
        lines.append("")
        hdr = ["path", "JVPs", "VJPs", "floor s", "measured s/sample", "ratio", "rel err lv", "Spearman (median)", "load"]
        body = []
        for r in p["rows"]:
            body.append([r["path"], r["products"].get("jvp", 0), r["products"].get("vjp", 0), f"{r['floor_s']:.2f}",
                         f"{r['s_per_sample']:.2f}", f"{r['ratio_to_floor']:.2f}",
                         f"{r['rel_err_log_volume']:.1e}" if "rel_err_log_volume" in r else "-",
                         f"{r['median_spearman']:.4f}" if "median_spearman" in r else ("1 (exact)" if "max_abs_err_influence" in r else "-"),
                         r["loadavg"][0]])
        lines.append(common.markdown_table(hdr, body))
        lines.append("")
    sp = results.get("spearman")
    if sp:
        hdr = ["decoder", *[f"n={m}" for m in PROBE_COUNTS]]
        body = []
        for name, t in sp.items():
            body.append([f"{name} ({t['samples']} samples, load {t['loadavg_before'][0]})",
                         *[f"{t['per_n'][str(m)]['median']:.4f} (min {t['per_n'][str(m)]['min']:.4f})"
                           for m in PROBE_COUNTS if str(m) in t["per_n"]]])
        lines.append("Median (min) per-sample Spearman of Hutchinson-n vs exact influence:")
        lines.append("")
        lines.append(common.markdown_table(hdr, body))
        lines.append("")
    dm = results.get("demo")
    if dm:
        lines.append(f"Demo decoder ({dm['model']}, d = {dm['d']}), 1 thread, {dm['n_samples']} samples, load "
                     f"{dm.get('loadavg_before')}: ldminv exact ({dm.get('engine', 'torch.func')} products) "
                     f"{dm['ours_s_per_sample']:.3f} s/sample, reference "
                     f"{dm['reference_s_per_sample']:.3f} s/sample, speedup {dm['speedup_vs_reference']:.1f}x wall "
                     f"({dm['speedup_vs_reference_cpu_time']:.1f}x CPU time); rel err lv {dm['rel_err_log_volume']:.1e} "
                     f"(reference {dm['reference_rel_err_log_volume']:.1e})"
                     + (f"; with torch.func products {dm['torch_func_s_per_sample']:.3f} s/sample "
                        f"({dm['torch_func_speedup_vs_reference']:.1f}x)" if "torch_func_s_per_sample" in dm else ""))
        lines.append("")
    en = results.get("engines")
    if en:
        hdr = ["decoder", "threads", "chunk", "JVP layer-by-layer ms", "JVP torch.func ms", "x", "VJP layer-by-layer ms",
               "VJP torch.func ms", "x", "load"]
        body = [[r["decoder"], r["threads"], r["chunk"], f"{r['jvp_layerwise_s'] * 1e3:.2f}",
                 f"{r['jvp_torch.func_s'] * 1e3:.2f}", f"{r['jvp_speedup']:.2f}", f"{r['vjp_layerwise_s'] * 1e3:.2f}",
                 f"{r['vjp_torch.func_s'] * 1e3:.2f}", f"{r['vjp_speedup']:.2f}", r["loadavg"][0]] for r in en["rows"]]
        lines.append("Seconds per product (per direction), layer-by-layer vs torch.func:")
        lines.append("")
        lines.append(common.markdown_table(hdr, body))
        lines.append("")
    big = results.get("d16384")
    if big:
        hdr = ["path (d = 16384)", "products/sample", "s per product", "measured s", "per-sample s", "peak RSS MB", "how"]
        body = []
        for name, r in big["paths"].items():
            if "error" in r:
                body.append([name, "-", "-", "-", "-", "-", str(r["error"])])
                continue
            body.append([name, r["products_per_sample"], f"{r['s_per_product']:.3f}", f"{r['measured_s']:.1f}",
                         f"{r['s_per_sample']:.0f}", f"{r['peak_rss_mb']:.0f}", r["how"]])
        lines.append(f"d = 16384 (load {big['loadavg_before']}):")
        lines.append("")
        lines.append(common.markdown_table(hdr, body))
        lines.append("")
    tr = results.get("speedups")
    if tr:
        lines.append(f"Side by side (chunk {tr['chunk']}, load {tr['loadavg_before']}): "
                     + "; ".join(f"{t} thread(s): JVP {tr[f'threads_{t}']['jvp'] * 1e3:.2f} ms, VJP "
                                 f"{tr[f'threads_{t}']['vjp'] * 1e3:.2f} ms" for t in (1, 2))
                     + "; " + "; ".join(f"{k}: {('%.2f ms/JVP' % (v['jvp_s'] * 1e3)) if v.get('ok') else v.get('error')}"
                                        for k, v in tr.items() if isinstance(v, dict) and "ok" in v))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 samples, 1 repeat, truncated d=16384 runs")
    ap.add_argument("--sections", default="paths,spearman,demo,engines,d16384,speedups")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every section but demo (1 thread)")
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    n = args.samples or (2 if args.quick else 4)
    repeats = 1 if args.quick else 2
    sections = args.sections.split(",")
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    results: dict[str, Any] = {"machine": common.machine_info(), "quick": args.quick, "started": common.now_iso()}
    z = torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    path = Path(args.out)
    if path.is_file():  # keep sections not rerun
        try:
            old = json.loads(path.read_text())
            results.update({k: v for k, v in old.items() if k not in sections and k not in ("machine", "quick", "started")})
        except (OSError, json.JSONDecodeError):
            pass

    def save():
        path.write_text(json.dumps(results, indent=1, default=float))

    jac = infl = None
    if "paths" in sections:
        log("paths (d = 1024) ...")
        res = run_paths(z, repeats=repeats, log=log)
        jac, infl = res.pop("jacobian"), res.pop("oracle_influence")
        results["paths"] = res
        save()
    if "spearman" in sections:
        log("spearman ...")
        _, decode = sd1024_decoder()
        if infl is None:
            jac = oracle_jacobians(decode, z)
            infl = (0.5 * torch.log(jac.square().sum(1) + geo.INFLUENCE_EPS)).reshape(z.shape)
        sp = {"sd-1024 (4x16x16 -> 3x32x32)": spearman_table(decode, z, infl)}
        model = common.load_demo_model()
        zd, src = common.demo_latents(model, 4 if args.quick else 8)
        jd = oracle_jacobians(model.decode, zd)
        infl_d = (0.5 * torch.log(jd.square().sum(1) + geo.INFLUENCE_EPS)).reshape(zd.shape)
        sp[f"demo ({model.source}, 4x8x8 -> 1x32x32)"] = spearman_table(model.decode, zd, infl_d)
        results["spearman"] = sp
        save()
    if "demo" in sections:
        log("demo vs reference at 1 thread ...")
        from benchmarks import bench_geometry

        common.set_threads(1)
        la = loadavg()
        model = common.load_demo_model()
        dm = bench_geometry.run_demo_geometry(model, n_samples=2 if args.quick else 4, log=log)
        dm["loadavg_before"] = la
        dm["threads"] = 1
        results["demo"] = dm
        common.set_threads(args.threads)
        save()
    if "engines" in sections:
        log("layer-by-layer vs torch.func products ...")
        results["engines"] = engine_trials(log)
        save()
    if "d16384" in sections:
        log("d = 16384 ...")
        results["d16384"] = run_d16384(["topk", "logdet"], full=not args.quick, timeout_s=1800, log=log)
        save()
    if "speedups" in sections:
        log("side by side ...")
        results["speedups"] = speedup_trials(z[:1], log)
        save()
    results["finished"] = common.now_iso()
    save()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
